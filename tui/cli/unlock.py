"""Where a command finds its node and how it unlocks it: the home folder, the passphrase's
sources (environment, file, prompt), who signs in (`--as`, their secret and TOTP code from the
environment, a file or a prompt), and opening the node around a command's action."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.errors import MfaCodeRequired, NotInitialised
from tui.errors import CliError
from tui.text import printable

if TYPE_CHECKING:  # the node loads when a command runs: `--help` loads none of it
    from appliance.node import Node
    from appliance.services.signed_in import SignInStep


def default_home() -> Path:
    if os.environ.get("RALLYPOINT_HOME"):
        return Path(os.environ["RALLYPOINT_HOME"]).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "rallypoint"


def given_secret(variable: str, path: str | None, what: str) -> str | None:
    """A secret from the environment `variable`, else from the file at `path` (its last line
    break dropped); None when neither gives one."""
    if os.environ.get(variable):
        return os.environ[variable]
    if path:
        try:
            return Path(path).read_text().rstrip("\r\n")
        except OSError as exc:
            raise CliError(f"cannot read {what} file: {exc.strerror}") from exc
    return None


def read_passphrase(args: argparse.Namespace, *, confirm: bool = False, prompt: str = "Passphrase: ") -> str:
    given = given_secret("RALLYPOINT_PASSPHRASE", args.passphrase_file, "passphrase")
    if given is not None:
        return given
    if not sys.stdin.isatty():
        raise CliError("no passphrase: set RALLYPOINT_PASSPHRASE, use --passphrase-file, or run in a terminal")
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat passphrase: ") != first:
        raise CliError("the passphrases do not match")
    return first


def read_user_secret(args: argparse.Namespace) -> str | None:
    """The secret of the user signing in: $RALLYPOINT_USER_SECRET, --user-secret-file, or - with
    `--as` in a terminal - a prompt; None without `--as` (the passphrase is the node's own
    user's secret until they change it)."""
    given = given_secret("RALLYPOINT_USER_SECRET", args.user_secret_file, "user secret")
    if given is not None:
        return given
    if args.as_user is None:
        return None
    if not sys.stdin.isatty():
        raise CliError(f"no secret for {args.as_user}: set RALLYPOINT_USER_SECRET, use --user-secret-file, or run in a terminal")
    return getpass.getpass(f"{args.as_user}'s secret: ")


def read_totp(args: argparse.Namespace) -> str | None:
    return os.environ.get("RALLYPOINT_TOTP") or args.totp


def pending_message(user: str, step: SignInStep) -> str:
    """What a user who still has `step` to take is told to run."""
    from appliance.services.signed_in import SignInStep

    if step is SignInStep.CHANGE_SECRET:
        return f"{user} must set a secret of their own first: run `rallypoint user change-secret --as {user}`"
    return f"MFA is required for {user}, who has not enrolled: run `rallypoint mfa enrol --as {user}` first"


async def open_node(args: argparse.Namespace, sign_in: bool = True) -> Node:
    """Unlocks the node and signs the user in, asking for a TOTP code in a terminal if needed;
    without `sign_in`, nobody (the LAN service signs as the node)."""
    from appliance.node import Node

    home = Path(args.home).expanduser()
    if not Node.exists(home):
        raise NotInitialised(f"no node in {home}: run `rallypoint init` or `rallypoint join` first")
    if args.data_key_file:
        return await _open_with_data_key(args, home, sign_in)
    passphrase = read_passphrase(args)
    if not sign_in:
        return await Node.open(home, passphrase, sign_in=False)
    secret, code = read_user_secret(args), read_totp(args)
    try:
        return await Node.open(home, passphrase, as_user=args.as_user, user_secret=secret, totp_code=code)
    except MfaCodeRequired as exc:
        if code is not None or not sys.stdin.isatty():
            raise CliError(f"{exc}: pass --totp CODE or set RALLYPOINT_TOTP") from exc
        code = input("Code from the authenticator app (or a recovery code): ")
    return await Node.open(home, passphrase, as_user=args.as_user, user_secret=secret, totp_code=code)


async def _open_with_data_key(args: argparse.Namespace, home: Path, sign_in: bool) -> Node:
    """An unattended relay: the data key from its root-only file; a user signs in only with
    their own secret (there is no passphrase to stand for it)."""
    import asyncio

    from appliance.keystore import read_data_key_file
    from appliance.node import Node

    data_key = await asyncio.to_thread(read_data_key_file, Path(args.data_key_file).expanduser())
    if not sign_in:
        return await Node.open(home, "", data_key=data_key, sign_in=False)
    secret = read_user_secret(args)
    if secret is None:
        raise CliError("with --data-key-file a user signs in with their own secret: set RALLYPOINT_USER_SECRET or use --user-secret-file")
    return await Node.open(home, "", data_key=data_key, as_user=args.as_user, user_secret=secret, totp_code=read_totp(args))


def start_workers_early(*, for_export: bool = False) -> None:
    """An import or a compliance export is coming: the process the node's workers fork from
    boots while the node unlocks, not when the first segment is read."""
    from appliance.workers import start_fork_server

    start_fork_server(for_export=for_export)


async def with_node(args: argparse.Namespace, action: Callable[[Node], Awaitable[None]], allow: frozenset[SignInStep] = frozenset(), *, sign_in: bool = True) -> None:
    """Opens the node, runs the action on it, closes it; the writes it skipped are warned of last.
    A user with a step still due (a secret to change, MFA to enrol) runs only the commands that
    take it (`allow`); without `sign_in` nobody signs in (`serve`)."""
    node = await open_node(args, sign_in)
    try:
        async with node:
            result = node.signin.result
            due = [step for step in (result.steps if result else ()) if step not in allow]
            if result is not None and due:
                raise CliError(pending_message(result.user, due[0]))
            await action(node)
    finally:
        for skipped in node.replica.skipped_writes:  # after what was done was said, and on any exit
            print(f"rallypoint: warning: {printable(skipped)}", file=sys.stderr)
