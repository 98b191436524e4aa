"""The `rallypoint` command. Every subcommand takes --home, --passphrase-file, --as and --json;
human text by default, stable JSON with --json; any error is one line on stderr (a JSON
object under --json) and a non-zero exit status.

One module per area, each declaring its subcommands as `parsing.Command`s; this module
assembles the parser from them and is the boundary where errors become exit statuses:

    setup     init, join, whoami               chat      channel, post, read, edit, delete,
    admin     invite, user, config, audit,               react, search, file
              node                             courier   bundle, courier
    mfa       mfa (enrol, status, admin settings)
    custody   backup, restore                  lan       serve, peers, allow, deny
    compliance  compliance-export, compliance-schedule, verify-export, decrypt-export, export-key
    console   console                          unlock    the home, the passphrase, the open node
    terms     terms (publish, show, accept, status)
    output    results, errors, exit statuses   parsing   Command, the raising ArgumentParser

A command imports what it uses when it runs: `--help` and `--version` load no heavy library."""

from __future__ import annotations

import argparse
import sys

from appliance import __version__
from appliance.errors import NodeLocked, RallypointError
from sync.errors import SyncError
from tui.cli import admin, channels, chat, compliance, console, courier, custody, keys, lan, mfa, setup, terms
from tui.cli.output import EXIT_ERROR, EXIT_REJECTED, EXIT_USAGE, EXIT_WIPED, report_error, stdout_closed
from tui.cli.parsing import ArgumentParser, Command, common_options
from tui.cli.unlock import default_home
from tui.errors import CommandFailed, UsageError

__all__ = ["EXIT_ERROR", "EXIT_REJECTED", "EXIT_USAGE", "EXIT_WIPED", "build_parser", "main"]

COMMANDS: tuple[Command, ...] = (
    setup.INIT,
    admin.INVITE,
    setup.JOIN,
    setup.WHOAMI,
    admin.USER,
    terms.TERMS,
    mfa.MFA,
    channels.CHANNEL,
    channels.DM,
    chat.POST,
    chat.READ,
    chat.EDIT,
    chat.DELETE,
    chat.REACT,
    chat.SEARCH,
    chat.FILE,
    admin.CONFIG,
    admin.AUDIT,
    custody.BACKUP,
    custody.RESTORE,
    compliance.COMPLIANCE_EXPORT,
    compliance.COMPLIANCE_SCHEDULE,
    compliance.VERIFY_EXPORT,
    compliance.DECRYPT_EXPORT,
    compliance.EXPORT_KEY,
    keys.DATA_KEY,
    custody.RECOVERY_KIT,
    custody.RECOVER,
    custody.REPLACE_NODE,
    courier.BUNDLE,
    courier.COURIER,
    admin.NODE,
    lan.SERVE,
    lan.PEERS,
    lan.ALLOW,
    lan.DENY,
    console.CONSOLE,
)
"""Every subcommand, in the order `rallypoint --help` lists them."""


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = ArgumentParser(prog="rallypoint", description="Rallypoint: team channels that work without a network.", parents=[common])
    parser.add_argument("--version", action="version", version=f"rallypoint {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.name, parents=[common], help=command.help, description=command.help)
        p.set_defaults(handler=command.handler)
        command.arguments(p, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    as_json = "--json" in argv  # until the command line has parsed
    try:
        args = build_parser().parse_args(argv)
        for name, default in (("home", str(default_home())), ("passphrase_file", None), ("data_key_file", None), ("as_user", None), ("user_secret_file", None), ("totp", None), ("json", False)):
            if not hasattr(args, name):
                setattr(args, name, default)
        as_json = args.json
        outcome = args.handler(args)
        if outcome is not None:
            import asyncio  # not for --help and --version: a third of their start-up

            asyncio.run(outcome)
    except UsageError as exc:
        return report_error(as_json, EXIT_USAGE, "UsageError", str(exc), usage=exc.usage, prog=exc.prog)
    except CommandFailed as exc:
        return report_error(as_json, exc.exit_status, exc.kind, str(exc))
    except NodeLocked as exc:
        return report_error(as_json, EXIT_WIPED, type(exc).__name__, str(exc))
    except (RallypointError, SyncError) as exc:
        return report_error(as_json, EXIT_ERROR, type(exc).__name__, str(exc))
    except KeyboardInterrupt:
        return report_error(as_json, 130, "Interrupted", "interrupted")
    except BrokenPipeError:
        return stdout_closed()
    except SystemExit as exc:  # --help and --version
        return int(exc.code or 0)
    return 0
