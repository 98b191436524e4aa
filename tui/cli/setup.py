"""Commands that make a node and say who it is: `init`, `join`, `whoami`."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.files import read_regular_file
from tui.cli.output import emit
from tui.cli.parsing import Command
from tui.cli.unlock import read_passphrase, read_user_secret, with_node
from tui.errors import CliError

if TYPE_CHECKING:  # each command imports what it uses when it runs: `--help` loads none of it
    from appliance.node import Node


async def cmd_init(args: argparse.Namespace) -> None:
    from appliance.node import Node

    home = Path(args.home).expanduser()
    node_name = args.node_name or socket.gethostname().split(".")[0] or "node"
    passphrase = read_passphrase(args, confirm=True, prompt="New passphrase for this node: ")
    secret = read_user_secret(args)  # the first user's own secret; else the passphrase is it
    async with await Node.init(home, workspace_name=args.workspace, user_name=args.user, node_name=node_name, passphrase=passphrase, user_secret=secret) as node:
        me = node.identity.whoami()
        emit(
            args,
            {"workspace": me.workspace_name, "workspace_id": me.workspace_id, "node": me.node_name, "node_id": me.node_id, "user": me.user_name, "home": str(home)},
            f"Workspace {me.workspace_name} ({me.workspace_id}) created in {home}\nNode {me.node_name}: {me.node_id}\nYou are {me.user_name} (admin)",
        )


async def cmd_join(args: argparse.Namespace) -> None:
    from appliance import identity
    from appliance.node import MAX_ENROLLMENT_FILE_BYTES, Node

    try:
        data = read_regular_file(Path(args.file), MAX_ENROLLMENT_FILE_BYTES)
    except OSError as exc:
        raise CliError(f"cannot read enrollment file: {exc.strerror}") from exc
    code = args.code or os.environ.get("RALLYPOINT_ENROLLMENT_CODE")
    if not code:
        if not sys.stdin.isatty():
            raise CliError("no enrollment code: pass --code or run in a terminal")
        code = input("One-time code: ")
    passphrase = read_passphrase(args, confirm=True, prompt="New passphrase for this node: ")
    async with await Node.join(Path(args.home).expanduser(), data, code, passphrase, user_secret=read_user_secret(args)) as node:
        unconsumed = identity.consume_enrollment_file(Path(args.file), node.identity.node_id, node.identity.now())
        if unconsumed is not None:
            print(identity.UNCONSUMED_WARNING.format(reason=unconsumed), file=sys.stderr)
        me = node.identity.whoami()
        emit(
            args,
            {"workspace": me.workspace_name, "workspace_id": me.workspace_id, "node": me.node_name, "node_id": me.node_id, "user": me.user_name, "role": me.role},
            f"Joined workspace {me.workspace_name} ({me.workspace_id})\nNode {me.node_name}: {me.node_id}\nYou are {me.user_name} ({me.role})",
        )


async def cmd_whoami(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        me = node.identity.whoami()
        emit(
            args,
            {
                "workspace": me.workspace_name,
                "workspace_id": me.workspace_id,
                "node": me.node_name,
                "node_id": me.node_id,
                "user": me.user_name,
                "user_key": me.user_key.hex(),
                "role": me.role,
                "holds_workspace_key": me.holds_workspace_key,
            },
            f"workspace  {me.workspace_name}  {me.workspace_id}\nnode       {me.node_name}  {me.node_id}\nuser       {me.user_name} ({me.role})",
        )

    await with_node(args, run)


def _init_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--node-name", help="this node's name (default: the host name)")


def _join_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE")
    parser.add_argument("--code", help="the one-time code (prompted for when not given)")


INIT = Command("init", "create a new workspace; you become its first admin", cmd_init, _init_arguments)
JOIN = Command("join", "join a workspace with an enrollment file and its one-time code", cmd_join, _join_arguments)
WHOAMI = Command("whoami", "show this node's workspace, node id and user", cmd_whoami)
