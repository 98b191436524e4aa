"""`rallypoint mfa`: enrol an authenticator app (URI, QR code and secret printed, a code from
the app confirms, ten recovery codes shown once), see one's status, and - admins - reset a
user's MFA, require MFA for everyone or a role, and set the accepted clock skew."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from tui.cli.output import emit
from tui.cli.parsing import Command
from tui.cli.unlock import with_node
from tui.errors import CliError
from tui.text import printable

if TYPE_CHECKING:  # each command imports what it uses when it runs: `--help` loads none of it
    from appliance.node import Node


def _read_code() -> str:
    """The confirming code, from stdin (a prompt in a terminal; a line when piped)."""
    if sys.stdin.isatty():
        return input("Code the app shows now: ")
    line = sys.stdin.readline()
    if not line:
        raise CliError("no code to confirm the enrolment: type the code the app shows")
    return line.strip()


async def cmd_mfa(args: argparse.Namespace) -> None:
    from appliance import totp
    from appliance.services.mfa import EVERYONE
    from appliance.services.signed_in import SignInStep
    from tui.qr import qr_lines

    async def run(node: Node) -> None:
        if args.mfa_command == "enrol":
            enrolment = node.signin.mfa.begin_enrol()
            shown = sys.stderr if args.json else sys.stdout  # under --json, stdout holds the result alone
            print("\n".join(qr_lines(enrolment.uri)), file=shown)
            print(f"\n{printable(enrolment.uri)}\n\nOr type this secret into the app: {totp.grouped(enrolment.secret)}\n", file=shown, flush=True)
            codes, _ = await node.signin.mfa.confirm_enrol(_read_code())
            emit(
                args,
                {"user": enrolment.user, "enrolled": True, "recovery_codes": codes},
                "MFA enrolled. Recovery codes - each works once in place of a code; keep them apart from the device:\n\n"
                + "\n".join(f"    {code}" for code in codes),
            )
        elif args.mfa_command == "status":
            status = await node.signin.mfa.status()
            policy = await node.signin.mfa.policy()
            emit(
                args,
                {
                    "user": status.user,
                    "enrolled": status.enrolled,
                    "recovery_codes_left": status.recovery_codes_left,
                    "required": status.required,
                    "required_for": policy.required,
                    "window": policy.window,
                },
                f"{printable(status.user)}: {'enrolled' if status.enrolled else 'not enrolled'}"
                + (f", {status.recovery_codes_left} recovery codes left" if status.enrolled else "")
                + f"\nMFA required for: {policy.required or 'nobody'}; codes accepted within {policy.window} step(s) of 30 s",
            )
        elif args.mfa_command == "reset":
            await node.signin.mfa.reset(args.name)
            emit(args, {"user": args.name, "reset": True}, f"{printable(args.name)}'s MFA removed: they sign in with their secret alone (and enrol again if MFA is required)")
        elif args.mfa_command == "require":
            policy = await node.signin.mfa.require(None if args.scope == "off" else args.scope)
            emit(args, {"required_for": policy.required}, f"MFA required for: {'everyone' if policy.required == EVERYONE else policy.required or 'nobody'}")
        else:
            policy = await node.signin.mfa.set_window(args.steps)
            emit(args, {"window": policy.window}, f"codes accepted within {policy.window} step(s) of 30 s either side of this node's clock")

    allow = frozenset({SignInStep.ENROL_MFA}) if args.mfa_command == "enrol" else frozenset()
    await with_node(args, run, allow)


def _mfa_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="mfa_command", required=True, metavar="ACTION")
    sub.add_parser("enrol", parents=[common], help="enrol an authenticator app (prints a QR code; asks for a code)")
    sub.add_parser("status", parents=[common], help="your enrolment and the node's MFA policy")
    q = sub.add_parser("reset", parents=[common], help="admin: remove a user's authenticator and recovery codes")
    q.add_argument("name")
    q = sub.add_parser("require", parents=[common], help="admin: require MFA for everyone, a role, or nobody")
    q.add_argument("scope", choices=["all", "admin", "member", "observer", "off"])
    q = sub.add_parser("window", parents=[common], help="admin: accepted clock skew, in 30 s steps either side (default 1)")
    q.add_argument("steps", type=int)


MFA = Command("mfa", "two-factor sign-in with an authenticator app (TOTP)", cmd_mfa, _mfa_arguments)
