"""The three-node lab without VMs: alpha, bravo and charlie on this machine.

As root the nodes live in network namespaces `rplab-<tag>-alpha|bravo|charlie`, joined by a
bridge inside a hub namespace `rplab-<tag>-hub` (10.232.0.0/24): real multicast mDNS, and cables
that can be pulled. Nothing is created in the host's own network namespace. Without root (or
with --loopback / RPLAB_LOOPBACK=1) the nodes share the host's loopback, each `serve` on its own
port, with mDNS off and every node dialling the other two (`--peer`), so nothing is multicast.

    lab.py up [--no-console] [--loopback]  # workspace on alpha, bravo and charlie enrolled, three `serve`s, alpha's console
    lab.py console                         # alpha's console (again)
    lab.py scenario                        # partition charlie, post on both sides, carry a bundle, heal, converge
    lab.py status
    lab.py down                            # every process, namespace and file of the lab

Everything the lab keeps (homes, logs, pid files, the folder standing in for a USB stick) is in
--dir (default: .lab/ in the repository). The <tag> in namespace names is derived from that
directory's path, so `down` finds a crashed lab's namespaces even when its files are gone, and
labs in two directories (a developer's and a test's) never touch each other's namespaces.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DIR = REPO / ".lab"
NODE_USERS = {"alpha": "alice", "bravo": "bob", "charlie": "carol"}  # node name -> its first user
PARTITIONED = "charlie"
WORKSPACE = "lab"
CHANNEL = "general"
# A lab, not a deployment: every node's keys are sealed with this fixed passphrase, which is
# written in plain text into the lab directory so that every command can unlock them.
LAB_PASSPHRASE = "rallypoint-lab-only"
NS_PREFIX = "rplab-"
SUBNET = "10.232.0"  # node i at SUBNET.(i+1)/24 on the hub's bridge
MDNS_ROUTE = "224.0.0.0/4"
LAN_PORT = 7373  # each namespace has its own stack, so all three use the default port
LOOPBACK_PORT_BASE = 17000
LOOPBACK_PORT_SPREAD = 1000  # where a loopback lab starts looking for ports: BASE + (tag % SPREAD) * 3
COMMAND_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 60.0
CONVERGE_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 5.0
START_TIMEOUT_S = 10.0
CARRIER_TIMEOUT_S = 5.0
POLL_INTERVAL_S = 1.0
READ_LIMIT = 10_000  # the most one `read` page holds (a lab channel holds far fewer)
CONSOLE_PID_PREFIX = "console-"  # pid files: console-<pid> for each console opened, serve-<node>

Result = TypeVar("Result")


class LabError(Exception):
    """A step of the lab failed; the message says which, and where to look."""


@dataclass(frozen=True)
class LabNode:
    name: str
    user: str
    address: str
    port: int
    namespace: str | None  # None on loopback


@dataclass(frozen=True)
class LabState:
    mode: str  # "namespaces" | "loopback"
    nodes: tuple[LabNode, ...]

    def node(self, name: str) -> LabNode:
        return next(node for node in self.nodes if node.name == name)

    @property
    def names(self) -> list[str]:
        return [node.name for node in self.nodes]


class Lab:
    """Where one lab keeps its files, and the names of its namespaces."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory.resolve()
        self.tag = hashlib.sha256(str(self.dir).encode()).hexdigest()[:6]
        self.state_file = self.dir / "lab.json"
        self.passphrase_file = self.dir / "passphrase"
        self.stick = self.dir / "stick"
        self.pid_dir = self.dir / "pids"

    def namespace(self, name: str) -> str:
        return f"{NS_PREFIX}{self.tag}-{name}"

    def home(self, name: str) -> Path:
        return self.dir / name / "home"

    def log(self, name: str) -> Path:
        return self.dir / name / "serve.log"

    def serve_pid_file(self, name: str) -> Path:
        return self.pid_dir / f"serve-{name}"

    def load(self) -> LabState:
        if not self.state_file.exists():
            raise LabError(f"no lab in {self.dir}: `make lab` (or `lab.py up`) starts one")
        raw = json.loads(self.state_file.read_text())
        return LabState(raw["mode"], tuple(LabNode(**node) for node in raw["nodes"]))

    def save(self, state: LabState) -> None:
        self.state_file.write_text(json.dumps({"mode": state.mode, "nodes": [asdict(node) for node in state.nodes]}, indent=2) + "\n")


def show(path: Path) -> str:
    """A path as the user would type it from the repository."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


# --- the rallypoint command, run for one node ---------------------------------------------


def rallypoint_argv() -> list[str]:
    executable = shutil.which("rallypoint", path=str(Path(sys.executable).parent))
    return [executable] if executable else [sys.executable, "-m", "tui.cli"]


def cli_env() -> dict[str, str]:
    """The caller's environment without RALLYPOINT_* (a developer's own node must not leak in)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RALLYPOINT_")} | {"PYTHONUNBUFFERED": "1"}


def node_argv(lab: Lab, name: str, *args: str) -> list[str]:
    return [*rallypoint_argv(), "--home", str(lab.home(name)), "--passphrase-file", str(lab.passphrase_file), *args]


def run_node(lab: Lab, name: str, *args: str, allowed_codes: Sequence[int] = (0,)) -> subprocess.CompletedProcess[str]:
    """Runs `rallypoint ARGS` on a node's home. Commands only touch the node's files, so they run
    in the host's namespace even when the node's `serve` runs in its own."""
    result = subprocess.run(node_argv(lab, name, *args), capture_output=True, text=True, env=cli_env(), cwd=REPO, timeout=COMMAND_TIMEOUT_S)
    if result.returncode not in allowed_codes:
        raise LabError(f"{name}: `rallypoint {' '.join(args)}` failed: {result.stderr.strip() or result.returncode}")
    return result


def run_json(lab: Lab, name: str, *args: str) -> Any:
    return json.loads(run_node(lab, name, "--json", *args).stdout)


def on_every_node(state: LabState, query: Callable[[str], Result]) -> dict[str, Result]:
    """The same query on every node at once: each is a process that spends most of its time
    unlocking keys, so three in parallel cost little more than one."""
    with ThreadPoolExecutor(len(state.nodes)) as pool:
        return dict(zip(state.names, pool.map(query, state.names), strict=True))


def messages(lab: Lab, state: LabState) -> dict[str, dict[str, str]]:
    """Every node's messages in the lab's channel: id -> text."""

    def read(name: str) -> dict[str, str]:
        return {m["id"]: m["text"] for m in run_json(lab, name, "read", CHANNEL, "--limit", str(READ_LIMIT))}

    return on_every_node(state, read)


def post(lab: Lab, name: str, text: str) -> str:
    posted = run_json(lab, name, "post", CHANNEL, text)
    print(f"  {name} ({NODE_USERS[name]}) posted: {text}")
    return str(posted["id"])


# --- network namespaces ---------------------------------------------------------------------


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    if check and result.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result


def hub_port(name: str) -> str:
    return f"veth-{name}"  # at most 15 characters, the kernel's limit for interface names


def create_network(lab: Lab, nodes: Sequence[LabNode]) -> None:
    """The hub namespace with a bridge, and one namespace per node cabled to it by a veth pair
    (`eth0` inside the node, `veth-<node>` on the bridge)."""
    hub = lab.namespace("hub")
    ip("netns", "add", hub)
    ip("-n", hub, "link", "set", "lo", "up")
    ip("-n", hub, "link", "add", "br0", "type", "bridge")
    # Snooping would hold multicast back until IGMP reports are seen; a LAN switch floods it.
    ip("-n", hub, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
    ip("-n", hub, "link", "set", "br0", "up")
    for node in nodes:
        assert node.namespace is not None
        ip("netns", "add", node.namespace)
        ip("-n", node.namespace, "link", "set", "lo", "up")
        ip("-n", hub, "link", "add", hub_port(node.name), "type", "veth", "peer", "name", "eth0", "netns", node.namespace)
        ip("-n", hub, "link", "set", hub_port(node.name), "master", "br0")
        ip("-n", hub, "link", "set", hub_port(node.name), "up")
        ip("-n", node.namespace, "addr", "add", f"{node.address}/24", "dev", "eth0")
        ip("-n", node.namespace, "link", "set", "eth0", "multicast", "on")
        ip("-n", node.namespace, "link", "set", "eth0", "up")
        ip("-n", node.namespace, "route", "add", MDNS_ROUTE, "dev", "eth0")


def lab_namespaces(lab: Lab) -> list[str]:
    if shutil.which("ip") is None:
        return []
    listing = ip("netns", "list", check=False).stdout
    names = [line.split()[0] for line in listing.splitlines() if line.strip()]
    return [name for name in names if name.startswith(lab.namespace(""))]


def delete_namespace(name: str) -> None:
    """Stops what still runs inside (a namespace with a live process survives `ip netns del`),
    then deletes it."""
    for pid in [int(p) for p in ip("netns", "pids", name, check=False).stdout.split() if p.isdigit()]:
        stop_process(pid)
    ip("netns", "del", name)


def set_link(lab: Lab, name: str, up: bool) -> None:
    """Plugs or pulls a node's cable: its port on the hub's bridge goes up or down."""
    ip("-n", lab.namespace("hub"), "link", "set", hub_port(name), "up" if up else "down")


def link_flags(namespace: str, device: str) -> list[str]:
    shown = json.loads(ip("-j", "-n", namespace, "link", "show", "dev", device).stdout)
    return list(shown[0]["flags"])


def wait_for_carrier(lab: Lab, node: LabNode) -> None:
    assert node.namespace is not None
    deadline = time.monotonic() + CARRIER_TIMEOUT_S
    while "LOWER_UP" not in link_flags(node.namespace, "eth0"):
        if time.monotonic() > deadline:
            raise LabError(f"{node.name}'s eth0 has no carrier {CARRIER_TIMEOUT_S:.0f} s after its cable went back in")
        time.sleep(0.05)


# --- processes ------------------------------------------------------------------------------


def process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def lab_process(lab: Lab, pid: int) -> bool:
    """Whether pid is a live process of this lab (its command line names the lab directory), so
    that a pid file outliving its process never leads to killing an unrelated one."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return f"{lab.dir}{os.sep}" in cmdline and process_alive(pid)


def stop_process(pid: int, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGKILL)) -> None:
    """Each signal in turn until the process is gone, waiting up to STOP_TIMEOUT_S after each
    (SIGTERM lets a node close its store cleanly)."""
    for signum in signals:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not process_alive(pid):
            return
    raise LabError(f"process {pid} survived {signals[-1].name} for {STOP_TIMEOUT_S:.0f} s")


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def serve_pid(lab: Lab, name: str) -> int | None:
    """The pid of the node's running `serve`, or None."""
    pid = read_pid(lab.serve_pid_file(name))
    return pid if pid is not None and lab_process(lab, pid) else None


def start_serve(lab: Lab, state: LabState, node: LabNode) -> None:
    """`rallypoint serve` in the background, in its own session (a ctrl+c in the console's
    terminal must not reach it), appending to the node's log."""
    argv = node_argv(lab, node.name, "serve", "--bind", node.address, "--port", str(node.port))
    if node.namespace is not None:
        argv = ["ip", "netns", "exec", node.namespace, *argv]  # execs in place: the pid is serve's own
    else:
        others = [other for other in state.nodes if other.name != node.name]
        argv += ["--no-mdns", *(arg for other in others for arg in ("--peer", f"{other.address}:{other.port}"))]
    with lab.log(node.name).open("ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=cli_env(), cwd=REPO)
    lab.pid_dir.mkdir(exist_ok=True)
    lab.serve_pid_file(node.name).write_text(f"{proc.pid}\n")
    # Right after exec the kernel may still show an empty command line; later checks recognise
    # the process by it, so return only once it is there.
    deadline = time.monotonic() + START_TIMEOUT_S
    while not lab_process(lab, proc.pid):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise LabError(f"{node.name}'s serve did not start; the end of {show(lab.log(node.name))}:\n{log_tail(lab, node.name)}")
        time.sleep(0.01)


def stop_serve(lab: Lab, name: str) -> None:
    pid = serve_pid(lab, name)
    if pid is not None:
        stop_process(pid)
    lab.serve_pid_file(name).unlink(missing_ok=True)


def log_tail(lab: Lab, name: str, lines: int = 15) -> str:
    try:
        tail = lab.log(name).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "(no log)"
    return "\n".join(f"    {line}" for line in tail) or "    (empty log)"


def check_serving(lab: Lab, state: LabState, names: Sequence[str]) -> None:
    for name in names:
        if serve_pid(lab, name) is None:
            raise LabError(f"{name}'s serve is not running (`make lab` starts the lab afresh); the end of {show(lab.log(name))}:\n{log_tail(lab, name)}")


# --- waiting for the nodes -------------------------------------------------------------------


def wait_until_peers_synced(lab: Lab, state: LabState) -> None:
    """Until every node has had a session with both others (`rallypoint peers`: last sync)."""
    print(f"Waiting for the nodes to find each other and sync (at most {READY_TIMEOUT_S:.0f} s):")
    start = time.monotonic()

    def synced_with(name: str) -> set[str]:
        return {p["name"] for p in run_json(lab, name, "peers") if p["trusted"] and p["last_sync"]}

    last_line = ""
    while True:
        check_serving(lab, state, state.names)
        seen = on_every_node(state, synced_with)
        line = " · ".join(f"{name} ↔ {', '.join(sorted(seen[name])) or '-'}" for name in state.names)
        if line != last_line:
            print(f"  {time.monotonic() - start:5.1f} s  {line}")
            last_line = line
        if all(seen[name] >= set(state.names) - {name} for name in state.names):
            return
        if time.monotonic() - start > READY_TIMEOUT_S:
            raise LabError(f"the nodes did not all sync with each other within {READY_TIMEOUT_S:.0f} s; see the logs in {show(lab.dir)}/*/serve.log")
        time.sleep(POLL_INTERVAL_S)


def wait_converged(lab: Lab, state: LabState, expected: set[str], among: Sequence[str] = ()) -> dict[str, dict[str, str]]:
    """Until the nodes `among` (default: all) hold the same messages, the expected ids among
    them. Prints every node's count at each poll; returns every node's messages."""
    among = among or state.names
    start = time.monotonic()
    while True:
        held = messages(lab, state)
        wanted = expected.union(*(held[name].keys() for name in among))
        print(f"  {time.monotonic() - start:5.1f} s  " + "   ".join(f"{name} {len(held[name])}" for name in state.names))
        if all(held[name].keys() == wanted for name in among):
            return held
        if time.monotonic() - start > CONVERGE_TIMEOUT_S:
            texts = {i: t for h in held.values() for i, t in h.items()}
            lacking = "; ".join(f"{name} lacks {', '.join(repr(texts.get(i, i)) for i in sorted(wanted - held[name].keys()))}" for name in among if wanted - held[name].keys())
            raise LabError(f"{' and '.join(among)} not converged after {CONVERGE_TIMEOUT_S:.0f} s: {lacking}; see the logs in {show(lab.dir)}/*/serve.log")
        time.sleep(POLL_INTERVAL_S)


# --- commands -------------------------------------------------------------------------------


def choose_mode(loopback: bool) -> tuple[str, str]:
    """The lab's mode, and why."""
    if loopback:
        return "loopback", "forced by --loopback or RPLAB_LOOPBACK=1"
    if os.geteuid() != 0:
        return "loopback", "not root, so no network namespaces"
    if shutil.which("ip") is None:
        return "loopback", "no `ip` command (iproute2), so no network namespaces"
    return "namespaces", "root"


def plan_nodes(lab: Lab, mode: str) -> tuple[LabNode, ...]:
    if mode == "namespaces":
        return tuple(LabNode(name, user, f"{SUBNET}.{i + 1}", LAN_PORT, lab.namespace(name)) for i, (name, user) in enumerate(NODE_USERS.items()))
    ports = free_loopback_ports(lab, len(NODE_USERS))
    return tuple(LabNode(name, user, "127.0.0.1", port, None) for (name, user), port in zip(NODE_USERS.items(), ports, strict=True))


def free_loopback_ports(lab: Lab, count: int) -> list[int]:
    """Free ports below the kernel's ephemeral range, so that no outgoing connection (a serve
    dialling another) takes one before its serve binds it or while charlie's serve is stopped.
    The search starts at a point derived from the lab's tag: two labs do not pick the same ports."""
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    start = LOOPBACK_PORT_BASE + int(lab.tag, 16) % LOOPBACK_PORT_SPREAD * count
    ports: list[int] = []
    for port in [*range(start, 65536), *range(LOOPBACK_PORT_BASE, start)]:
        if low <= port <= high:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise LabError(f"fewer than {count} free TCP ports on loopback outside the ephemeral range {low}-{high}")


def up(lab: Lab, *, loopback: bool, console: bool) -> None:
    if lab.state_file.exists():
        state = lab.load()
        if all(serve_pid(lab, name) is not None for name in state.names):
            print(f"The lab in {show(lab.dir)} is already running ({state.mode}); `make lab-down` removes it.")
            if console:
                open_console(lab, state)
            return
        print(f"The lab in {show(lab.dir)} is only partly running: removing it and starting afresh.")
    down(lab, quiet=True)  # also clears what a crashed lab left without files

    mode, why = choose_mode(loopback)
    lab.dir.mkdir(parents=True)
    state = LabState(mode, plan_nodes(lab, mode))
    lab.save(state)  # first, so that `down` recognises the directory as a lab's whatever happens next
    with os.fdopen(os.open(lab.passphrase_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as passphrase:
        passphrase.write(LAB_PASSPHRASE + "\n")
    if mode == "namespaces":
        try:
            create_network(lab, state.nodes)
        except LabError as exc:
            for name in lab_namespaces(lab):
                delete_namespace(name)
            mode, why = "loopback", f"network namespaces failed here ({exc})"
            state = LabState(mode, plan_nodes(lab, mode))
            lab.save(state)
    print(f"Lab in {show(lab.dir)}: {mode} ({why})")

    alpha, *joiners = state.names
    for name in state.names:
        lab.home(name).parent.mkdir()
    run_node(lab, alpha, "init", "--workspace", WORKSPACE, "--user", NODE_USERS[alpha], "--node-name", alpha)
    run_node(lab, alpha, "channel", "create", CHANNEL, "--purpose", "the lab's channel")
    print(f"  workspace {WORKSPACE!r} created on {alpha}, #{CHANNEL} in it, {NODE_USERS[alpha]} its admin")
    for name in joiners:
        enrollment = lab.dir / name / "enroll"
        invited = run_json(lab, alpha, "invite", name, "--user", NODE_USERS[name], "--out", str(enrollment))
        run_node(lab, name, "join", str(enrollment), "--code", str(invited["code"]))
        enrollment.unlink()
        print(f"  {name} enrolled (one-time code {invited['code']}), user {NODE_USERS[name]}")
    welcome = post(lab, alpha, f"Welcome to the lab, {', '.join(NODE_USERS.values())}!")

    for node in state.nodes:
        start_serve(lab, state, node)
    wait_until_peers_synced(lab, state)
    print("Waiting for the welcome message on every node:")
    wait_converged(lab, state, {welcome})
    describe(lab, state)
    if console:
        open_console(lab, state)


def describe(lab: Lab, state: LabState) -> None:
    if state.mode == "namespaces":
        print(f"\nThe lab is up: namespaces {lab.namespace('{hub,' + ','.join(state.names) + '}')}, bridge {SUBNET}.0/24 in the hub")
    else:
        print("\nThe lab is up on loopback (mDNS off; every node dials the other two)")
    for node in state.nodes:
        print(f"  {node.name:<8} {node.address}:{node.port:<6} user {node.user:<6} home {show(lab.home(node.name))}  log {show(lab.log(node.name))}")
    print(f"Every lab node's passphrase is in {show(lab.passphrase_file)} (a fixed lab passphrase: never use it for a real node).")
    as_bravo = " ".join(show(Path(arg)) if os.sep in arg else arg for arg in node_argv(lab, "bravo", "post", CHANNEL))
    print(f"Post as bravo:  {as_bravo} 'hello'")
    print("Then: make lab-scenario (in another terminal while the console is open), make lab-down")


def open_console(lab: Lab, state: LabState) -> None:
    """Replaces this process with alpha's console (in alpha's namespace when there is one). It runs
    --no-lan: alpha's `serve` does the syncing, the console shows what serve writes to the store."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise LabError("alpha's console needs a terminal: run `make lab` (or `lab.py console`) in one; `lab.py up --no-console` starts the lab without it")
    alpha = state.nodes[0]
    argv = node_argv(lab, alpha.name, "console", "--no-lan")
    if alpha.namespace is not None:
        argv = ["ip", "netns", "exec", alpha.namespace, *argv]
    lab.pid_dir.mkdir(exist_ok=True)
    (lab.pid_dir / f"{CONSOLE_PID_PREFIX}{os.getpid()}").write_text(f"{os.getpid()}\n")  # exec keeps the pid
    print(f"Opening {alpha.name}'s console (ctrl+q quits it; the lab keeps running, `make lab` reopens it)")
    sys.stdout.flush()
    os.execvpe(argv[0], argv, cli_env())


def console(lab: Lab) -> None:
    state = lab.load()
    check_serving(lab, state, state.names)
    open_console(lab, state)


def scenario(lab: Lab) -> None:
    state = lab.load()
    connected = [name for name in state.names if name != PARTITIONED]
    if heal(lab, state):
        print(f"({PARTITIONED} was still cut off by an earlier scenario, interrupted: healed first)")
    check_serving(lab, state, state.names)
    stamp = time.strftime("%H:%M:%S")

    print("1. All three nodes in sync before the partition:")
    wait_converged(lab, state, set())

    if state.mode == "namespaces":
        print(f"2. Partition: {PARTITIONED}'s cable is pulled (its port on the hub's bridge goes down; its serve keeps running)")
        set_link(lab, PARTITIONED, up=False)
    else:
        print(f"2. Partition: {PARTITIONED}'s serve is stopped (on loopback there is no cable to pull)")
        stop_serve(lab, PARTITIONED)

    print("3. Both sides post:")
    posted = {name: post(lab, name, f"[{stamp}] {NODE_USERS[name]} on {name}, during the partition") for name in state.names}
    print(f"   the connected side ({' and '.join(connected)}) syncs live:")
    seen = wait_converged(lab, state, {posted[name] for name in connected}, among=connected)
    if seen[PARTITIONED].keys() & {posted[name] for name in connected} or posted[PARTITIONED] in seen[connected[0]]:
        raise LabError(f"the partition did not hold: {PARTITIONED} and the others exchanged messages while cut off")
    print(f"   {PARTITIONED} has {len(seen[PARTITIONED])} messages, the others {len(seen[connected[0]])}: the partition holds")

    print(f"4. A courier: {PARTITIONED} writes a bundle for {connected[0]} on the stick ({show(lab.stick)}), {connected[0]} imports it")
    lab.stick.mkdir(exist_ok=True)
    exported = run_node(lab, PARTITIONED, "bundle", "export", "--to", str(lab.stick), "--for", connected[0])
    print(indent(exported.stdout))
    imported = run_node(lab, connected[0], "bundle", "import", "--from", str(lab.stick), allowed_codes=(0, 3))
    print(indent(imported.stdout))
    if imported.returncode == 3:
        raise LabError(f"{connected[0]} rejected a bundle from {PARTITIONED}: {imported.stderr.strip()}")
    if posted[PARTITIONED] not in messages(lab, state)[connected[0]]:
        raise LabError(f"{connected[0]} imported the bundle but does not hold {PARTITIONED}'s message")
    print(f"   {connected[0]} now holds {PARTITIONED}'s message (and passes it on to {', '.join(connected[1:])} live)")

    print(f"5. Heal: {'the cable goes back in' if state.mode == 'namespaces' else f'{PARTITIONED} serves again'}")
    heal(lab, state)
    print(f"6. Waiting for all three to converge (at most {CONVERGE_TIMEOUT_S:.0f} s):")
    start = time.monotonic()
    held = wait_converged(lab, state, set(posted.values()))
    counts = ", ".join(f"{name} {len(held[name])}" for name in state.names)
    print(f"Converged in {time.monotonic() - start:.1f} s: {counts} messages, the same on all three.")


def heal(lab: Lab, state: LabState) -> bool:
    """Cable back in (namespaces) or serve started again (loopback) for the partitioned node;
    False when it was not cut off."""
    node = state.node(PARTITIONED)
    if node.namespace is not None:
        if "UP" in link_flags(lab.namespace("hub"), hub_port(node.name)):
            return False
        set_link(lab, node.name, up=True)
        wait_for_carrier(lab, node)
        return True
    if serve_pid(lab, node.name) is not None:
        return False
    start_serve(lab, state, node)
    return True


def indent(text: str) -> str:
    return "\n".join(f"     {line}" for line in text.strip().splitlines())


def status(lab: Lab) -> None:
    state = lab.load()
    print(f"Lab in {show(lab.dir)}: {state.mode}")
    held = messages(lab, state)

    def synced_with(name: str) -> str:
        listed = run_json(lab, name, "peers")
        return ", ".join(f"{p['name']} {p['last_sync'][11:19]}" for p in listed if p["trusted"] and p["last_sync"]) or "-"

    last_sync = on_every_node(state, synced_with)
    for node in state.nodes:
        pid = serve_pid(lab, node.name)
        serving = f"serve pid {pid}" if pid else "serve stopped"
        cable = ""
        if node.namespace is not None:
            cable = " cable in " if "UP" in link_flags(lab.namespace("hub"), hub_port(node.name)) else " cable OUT"
        print(f"  {node.name:<8} {node.address}:{node.port:<6} {serving:<16}{cable} {len(held[node.name]):>4} messages   last sync (UTC): {last_sync[node.name]}")


def down(lab: Lab, *, quiet: bool = False) -> None:
    """Stops every process of the lab (pid files, then whatever is left in its namespaces),
    deletes its namespaces and its directory."""
    stopped = 0
    found = lab.dir.exists()
    if lab.pid_dir.is_dir():
        for pid_file in sorted(lab.pid_dir.iterdir()):
            pid = read_pid(pid_file)
            if pid is not None and lab_process(lab, pid):
                # SIGINT makes a console give the terminal back; SIGTERM would leave it in the console's screen mode.
                console_running = pid_file.name.startswith(CONSOLE_PID_PREFIX)
                stop_process(pid, (signal.SIGINT, signal.SIGTERM, signal.SIGKILL) if console_running else (signal.SIGTERM, signal.SIGKILL))
                stopped += 1
    namespaces = lab_namespaces(lab)
    if namespaces and os.geteuid() != 0:
        raise LabError(f"namespaces {', '.join(namespaces)} are left and only root can delete them: run `sudo make lab-down`")
    for name in namespaces:
        delete_namespace(name)
    if lab.dir.exists():
        if not lab.state_file.exists() and any(lab.dir.iterdir()):
            raise LabError(f"{lab.dir} holds no lab.json, so it is not a lab's directory: not removing it")
        shutil.rmtree(lab.dir)
    if quiet:
        return
    if found or namespaces:
        print(f"Lab removed: {stopped} process(es) stopped, {len(namespaces)} namespace(s) deleted, {show(lab.dir)} deleted")
    else:
        print(f"No lab in {show(lab.dir)}: nothing to remove")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab.py", description="Three Rallypoint nodes on this machine (see images/lab/README.md).")
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("RPLAB_DIR") or DEFAULT_DIR), help=f"the lab's state directory (default: $RPLAB_DIR or {show(DEFAULT_DIR)})")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("up", help="start the lab (or find it running), then open alpha's console")
    p.add_argument("--no-console", action="store_true", help="return once the nodes are in sync")
    p.add_argument("--loopback", action="store_true", default=os.environ.get("RPLAB_LOOPBACK") == "1", help="loopback even as root (also RPLAB_LOOPBACK=1)")
    sub.add_parser("console", help="open alpha's console")
    sub.add_parser("scenario", help="partition charlie, post on both sides, carry a bundle, heal, converge")
    sub.add_parser("status", help="processes, cables, message counts, last syncs")
    sub.add_parser("down", help="remove every process, namespace and file of the lab")
    args = parser.parse_args(argv)
    lab = Lab(args.dir)
    try:
        if args.command == "up":
            up(lab, loopback=args.loopback, console=not args.no_console)
        elif args.command == "console":
            console(lab)
        elif args.command == "scenario":
            scenario(lab)
        elif args.command == "status":
            status(lab)
        else:
            down(lab)
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    except subprocess.TimeoutExpired as exc:
        print(f"lab: `{' '.join(map(str, exc.cmd))}` did not finish within {exc.timeout:.0f} s", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lab: interrupted; `make lab-down` removes what the lab made", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
