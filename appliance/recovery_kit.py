"""Recovery kits: what makes a node that node, sealed under a recovery code.

Two kinds. A node's own kit (`rallypoint recovery-kit`, KitKind.NODE) holds the node's key (and the workspace key, on the node that has it), its name,
workspace and incarnation, the Argon2id cost its users' secrets are sealed at, each local
user's key exactly as the node keeps it - sealed under that user's own secret, so the kit and
its code do not let anyone act as a user - with their MFA rows (sealed the same way), and the
directory's signed changes (the certificates that say who the node and its users are). Sealed
like an enrollment file: Argon2id on a 16-character code shown once, XSalsa20-Poly1305.

The kit an admin makes at enrollment (`rallypoint invite`, KitKind.ENROLLMENT) holds what the
enrollment file holds - the node's key and its first user's key, in the clear inside the sealed
kit, as the admin's node had them - and an incarnation of its own that the node's certificate
commits to (certs.recovery_commitment): no user secret exists yet when it is made, and the
incarnation the node will pick at join is not known. It brings back the node and its first user
only; users added on the node later come back from a node's own kit or by `user reset-secret`.

Format 2 names the kind; format 1 (node kits of the previous release) is still read.

Pure: bytes and values in, bytes and values out; randomness and time are parameters."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from appliance import cbor, coded, crypto, ids
from appliance.errors import ApplianceError, InvalidInput, WrongPassphrase

KIT_FORMAT = "rallypoint-recovery-kit/2"
OLD_KIT_FORMATS = ("rallypoint-recovery-kit/1",)  # node kits only, no "kind"
REPLACED_KIT_FORMAT = "rallypoint-recovery-kit-replaced/1"  # what `replace-node` leaves of the lost node's kit
KIT_CODE_CHARS = 16  # 80 bits behind Argon2id "moderate": the kit may sit in a drawer for years
MAX_KIT_BYTES = 16 * 1024 * 1024


class KitRejected(ApplianceError):
    """A recovery kit that is damaged, of another format, or opened with a wrong code."""


class KitKind(StrEnum):
    """Who made a recovery kit, and so what it brings back."""

    NODE = "node"  # the node itself: every local user, sealed under their own secrets
    ENROLLMENT = "enrollment"  # the admin, at invite: the node and its first user's key


@dataclass(frozen=True)
class SealedUser:
    """A local user's key as the node keeps it (user_secrets), and their MFA row if any."""

    public_key: bytes
    salt: bytes
    sealed: bytes
    must_change: bool
    changed_at: int
    mfa: tuple[bytes, int, int] | None  # sealed secret, enrolled at, last step


@dataclass(frozen=True)
class KitContents:
    workspace_name: str
    workspace_key: bytes
    node_name: str
    node_seed: bytes
    workspace_seed: bytes | None
    default_user: bytes
    incarnation: bytes
    kdf: crypto.KdfParams
    users: tuple[SealedUser, ...]
    directory: tuple[tuple[bytes, bytes | None], ...]  # signed changes of the directory document
    made_at: int
    kind: KitKind = KitKind.NODE
    first_user_seed: bytes | None = None  # ENROLLMENT: `default_user`'s key, as the enrollment file holds it

    @property
    def user_keys(self) -> tuple[bytes, ...]:
        """The users the kit brings back."""
        sealed = tuple(user.public_key for user in self.users)
        return sealed if self.first_user_seed is None or self.default_user in sealed else (*sealed, self.default_user)


def new_code(random_index: list[int]) -> str:
    """The recovery code from KIT_CODE_CHARS random indexes into the Crockford alphabet."""
    return "".join(ids.CROCKFORD[i % len(ids.CROCKFORD)] for i in random_index[:KIT_CODE_CHARS])


def encode_contents(kit: KitContents) -> bytes:
    return cbor.encode(
        {
            "workspace_name": kit.workspace_name,
            "workspace_key": kit.workspace_key,
            "node_name": kit.node_name,
            "node_seed": kit.node_seed,
            "workspace_seed": kit.workspace_seed or b"",
            "default_user": kit.default_user,
            "incarnation": kit.incarnation,
            "kdf": [kit.kdf.opslimit, kit.kdf.memlimit],
            "users": [[u.public_key, u.salt, u.sealed, int(u.must_change), u.changed_at, list(u.mfa) if u.mfa else []] for u in kit.users],
            "directory": [[data, signature or b""] for data, signature in kit.directory],
            "made_at": kit.made_at,
            "kind": str(kit.kind),
            "first_user_seed": kit.first_user_seed or b"",
        }
    )


def decode_contents(data: bytes) -> KitContents:
    try:
        obj: dict[str, Any] = cbor.decode(data, "recovery kit contents")
        contents = KitContents(
            workspace_name=str(obj["workspace_name"]),
            workspace_key=bytes(obj["workspace_key"]),
            node_name=str(obj["node_name"]),
            node_seed=bytes(obj["node_seed"]),
            workspace_seed=bytes(obj["workspace_seed"]) or None,
            default_user=bytes(obj["default_user"]),
            incarnation=bytes(obj["incarnation"]),
            kdf=crypto.KdfParams(int(obj["kdf"][0]), int(obj["kdf"][1])),
            users=tuple(
                SealedUser(bytes(u[0]), bytes(u[1]), bytes(u[2]), bool(u[3]), int(u[4]), (bytes(u[5][0]), int(u[5][1]), int(u[5][2])) if u[5] else None) for u in obj["users"]
            ),
            directory=tuple((bytes(c[0]), bytes(c[1]) or None) for c in obj["directory"]),
            made_at=int(obj["made_at"]),
            kind=KitKind(obj.get("kind", KitKind.NODE)),
            first_user_seed=bytes(obj.get("first_user_seed", b"")) or None,
        )
    except (InvalidInput, KeyError, TypeError, ValueError, IndexError) as exc:
        raise KitRejected("the recovery kit's contents are damaged") from exc
    if (contents.kind == KitKind.ENROLLMENT) != (contents.first_user_seed is not None):
        raise KitRejected("the recovery kit's contents are damaged (its kind and its keys disagree)")
    if contents.first_user_seed is not None and _public(contents.first_user_seed) != contents.default_user:
        raise KitRejected("the recovery kit's contents are damaged (its first user's key does not match)")
    return contents


def _public(seed: bytes) -> bytes | None:
    try:
        return bytes(crypto.new_signing_key(seed).verify_key)
    except ValueError:  # PyNaCl's own ValueError for a seed of the wrong length is one too
        return None


def seal_kit(contents: bytes, code: str, salt: bytes, nonce: bytes, kdf: crypto.KdfParams) -> bytes:
    """The kit file: `contents` sealed under `code` (blocking: Argon2id)."""
    return coded.seal(KIT_FORMAT, contents, normalise(code), salt, nonce, kdf)


def seal_new_kit(contents: KitContents, code_index: bytes, salt: bytes, nonce: bytes, kdf: crypto.KdfParams) -> tuple[bytes, str]:
    """A new kit file of `contents` and the code it opens with, drawn from `code_index`
    (KIT_CODE_CHARS random bytes), as typed (blocking: Argon2id)."""
    code = new_code(list(code_index))
    return seal_kit(encode_contents(contents), code, salt, nonce, kdf), code


def open_kit(data: bytes, code: str) -> KitContents:
    """The contents of a kit file; KitRejected for another file, a damaged one or a wrong code
    (blocking: Argon2id)."""
    if len(data) > MAX_KIT_BYTES:
        raise KitRejected(f"a recovery kit is at most {MAX_KIT_BYTES:,} bytes")
    try:
        outer = cbor.decode(data, "recovery kit")
    except InvalidInput as exc:
        raise KitRejected(f"not a recovery kit ({exc})") from exc
    if isinstance(outer, dict) and outer.get("format") == REPLACED_KIT_FORMAT:
        at = outer.get("replaced_at")
        when = f" at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(at / 1000))}" if isinstance(at, int) else ""
        raise KitRejected(
            f"this recovery kit's node {str(outer.get('node'))[:40]} was revoked and replaced by node {str(outer.get('by'))[:40]}{when}: recover with the new identity's kit"
        )
    if not isinstance(outer, dict) or outer.get("format") not in (KIT_FORMAT, *OLD_KIT_FORMATS):
        raise KitRejected("not a Rallypoint recovery kit (or an unsupported version)")
    try:
        inner = coded.unseal(outer, normalise(code))
    except InvalidInput as exc:
        raise KitRejected("the recovery kit asks for an unreasonable key-derivation cost") from exc
    except WrongPassphrase as exc:
        raise KitRejected("wrong recovery code (or the kit was altered)") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise KitRejected("damaged recovery kit") from exc
    return decode_contents(inner)


def replaced_marker(node_id: str, by: str, replaced_at: int) -> bytes:
    """What the kit of a replaced node holds afterwards (identity.overwrite_with_marker)."""
    return cbor.encode({"format": REPLACED_KIT_FORMAT, "node": node_id, "by": by, "replaced_at": replaced_at})


def normalise(code: str) -> str:
    """As typed: dashes and spaces dropped, the letters Crockford's alphabet reads as digits."""
    return "".join(ch for ch in code if ch not in " -\t").upper().replace("O", "0").replace("I", "1").replace("L", "1")
