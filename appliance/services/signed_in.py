"""Who is signed in at this moment, and what they still have to do before they may act: the
sign-in service opens a session, the MFA service and the secret change finish its steps."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import nacl.signing

from appliance.errors import NotSignedIn
from appliance.services.identity import IdentityService


class SignInStep(enum.StrEnum):
    """What a user must still do after their secret (and code) were right, in this order. A
    later step (accepting terms of service) is one more member and one more check."""

    CHANGE_SECRET = "change_secret"  # an initial or reset secret: the user sets their own
    ENROL_MFA = "enrol_mfa"  # MFA is required for them and they have no authenticator yet


@dataclass(frozen=True)
class SignInResult:
    user: str
    steps: tuple[SignInStep, ...]  # empty: signed in, the user acts

    @property
    def complete(self) -> bool:
        return not self.steps


@dataclass
class Session:
    """The signed-in user's secrets in memory: their signing key and their secret-derived key
    (what seals their TOTP secret). Dropped on sign-out."""

    user: bytes
    name: str
    key: nacl.signing.SigningKey
    derived: bytes
    salt: bytes
    steps: list[SignInStep]

    def result(self) -> SignInResult:
        return SignInResult(self.name, tuple(self.steps))


class SignedIn:
    """The one session of this node (a console or a command is one person at a time)."""

    def __init__(self, identity: IdentityService) -> None:
        self._identity = identity
        self._session: Session | None = None

    @property
    def session(self) -> Session | None:
        return self._session

    def require(self, user: bytes | None = None) -> Session:
        """The open session (with or without steps due); NotSignedIn without one."""
        if self._session is None or (user is not None and self._session.user != user):
            raise NotSignedIn("nobody is signed in on this node: sign in first")
        return self._session

    def open(self, session: Session) -> SignInResult:
        self._session = session
        if session.steps:
            self._identity.sign_out()
        else:
            self._identity.sign_in_as(session.user, session.key)
        return session.result()

    def done(self, step: SignInStep) -> SignInResult:
        """Marks `step` done; with none left, the user acts from now on."""
        session = self.require()
        if step in session.steps:
            session.steps.remove(step)
        if not session.steps:
            self._identity.sign_in_as(session.user, session.key)
        return session.result()

    def close(self) -> None:
        self._session = None
        self._identity.sign_out()
