"""Network namespaces for multi-node tests (root only), so that real multicast mDNS and real
partitions are exercised without a packet reaching the host's own interfaces.

    with netns() as ns:                       # one namespace, loopback with multicast
        proc = ns.run([sys.executable, "-m", "x"], stdout=subprocess.PIPE)

    with BridgeLan(3) as lan:                 # a hub holding a bridge, three nodes on it
        lan.nodes[0].address                  # "10.231.0.1"
        lan.nodes[1].run(["rallypoint", "serve"], env=...)
        lan.link_down(lan.nodes[2])           # pull node 2's cable ...
        lan.link_up(lan.nodes[2])             # ... and plug it back

Namespaces are named `rptest-<pid>-<n>`. Leaving a context terminates every process started
with `run` (then any other process still inside the namespace) and deletes the namespaces; the
first namespace a process makes also deletes leftovers of crashed earlier runs (names whose pid
part is no longer a live process). Mark tests that need this with `requires_root`; they skip
with ROOT_REASON when not root or when `ip netns` does not work here.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import pytest

PREFIX = "rptest-"
SUBNET = "10.231.0"  # bridge LAN: node i has SUBNET.(i+1)/24
MDNS_ROUTE = "224.0.0.0/4"
COMMAND_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0

_NAME = re.compile(rf"^{re.escape(PREFIX)}(\d+)-[a-z0-9]+$")
_counter = itertools.count()
_swept = False
_sweep_lock = threading.Lock()


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs `ip ARGS` with a bounded wait; raises with ip's own message when it fails."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result


@functools.cache
def _root_reason() -> str | None:
    if os.name != "posix" or os.geteuid() != 0:
        return "needs root: creates network namespaces (run the tests as root, e.g. in CI)"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` to create network namespaces"
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        made = ip("netns", "add", probe, check=False)
        if made.returncode != 0:
            return f"`ip netns add` does not work here: {made.stderr.strip()}"
        ip("netns", "del", probe, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`ip netns` does not work here: {exc}"
    return None


ROOT_REASON = _root_reason()
requires_root = pytest.mark.skipif(ROOT_REASON is not None, reason=ROOT_REASON or "")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _namespace_names() -> list[str]:
    listing = ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in listing.splitlines() if line.strip()]


def _kill_inside(name: str) -> None:
    """Kills the processes still inside a namespace of ours (by pid, as `ip netns pids` lists them):
    a namespace with a live process in it survives `ip netns del`."""
    pids = [int(p) for p in ip("netns", "pids", name, check=False).stdout.split() if p.isdigit()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _pid_alive(p) and not _is_zombie(p)]
        time.sleep(0.02)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _delete(name: str) -> None:
    _kill_inside(name)
    ip("netns", "del", name, check=False)


def sweep_leftovers() -> list[str]:
    """Deletes namespaces of ours left by runs whose process is gone; returns their names."""
    removed = []
    for name in _namespace_names():
        match = _NAME.match(name)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            _delete(name)
            removed.append(name)
    return removed


def _new_name() -> str:
    global _swept
    with _sweep_lock:
        if not _swept:
            _swept = True
            sweep_leftovers()
    return f"{PREFIX}{os.getpid()}-{next(_counter)}"


class Netns:
    """One network namespace of ours. `address` is its address on a BridgeLan (None otherwise)."""

    def __init__(self, name: str, address: str | None = None) -> None:
        self.name = name
        self.address = address
        self._procs: list[subprocess.Popen[Any]] = []

    def __repr__(self) -> str:
        return f"Netns({self.name!r}, {self.address!r})"

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`ip -n NAME ARGS`: configures this namespace."""
        return ip("-n", self.name, *args, check=check)

    def run(self, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Starts argv inside the namespace; it is stopped when the namespace is deleted."""
        proc = run_in(self, argv, **popen_kwargs)
        self._procs.append(proc)
        return proc

    def check(self, argv: Sequence[str], timeout: float = COMMAND_TIMEOUT_S, **run_kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Runs argv inside the namespace to completion (bounded), capturing its text output."""
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], capture_output=True, text=True, timeout=timeout, **run_kwargs)

    def stop_processes(self) -> None:
        """SIGTERM to what `run` started, SIGKILL after STOP_TIMEOUT_S, then anything left inside."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
        self._procs.clear()
        _kill_inside(self.name)

    def delete(self) -> None:
        self.stop_processes()
        ip("netns", "del", self.name, check=False)


def run_in(ns: Netns | str, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
    """subprocess.Popen of argv inside the namespace (`ip netns exec`, which execs argv in place,
    so the Popen's pid is argv's own). Not tracked: prefer `Netns.run`, which is cleaned up."""
    name = ns.name if isinstance(ns, Netns) else ns
    return subprocess.Popen(["ip", "netns", "exec", name, *argv], **popen_kwargs)


def _loopback_multicast(ns: Netns) -> None:
    ns.ip("link", "set", "lo", "up")
    ns.ip("link", "set", "lo", "multicast", "on")


class netns:  # noqa: N801 - used like a function: `with netns() as ns:`
    """A fresh namespace whose loopback carries multicast (so mDNS works on 127.0.0.1 inside)."""

    def __init__(self) -> None:
        self._ns: Netns | None = None

    def __enter__(self) -> Netns:
        ns = Netns(_new_name())
        ip("netns", "add", ns.name)
        self._ns = ns
        try:
            _loopback_multicast(ns)
            ns.ip("route", "add", MDNS_ROUTE, "dev", "lo")
        except BaseException:
            ns.delete()
            raise
        return ns

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._ns is not None:
            self._ns.delete()
            self._ns = None


class BridgeLan:
    """A `hub` namespace holding a bridge and `count` node namespaces, each joined to it by a veth
    pair: `eth0` inside the node (address `subnet`.(i+1)/24, multicast routed through it), `vethI`
    on the hub. Nothing is created in the host's own namespace."""

    def __init__(self, count: int, subnet: str = SUBNET) -> None:
        if not 1 <= count <= 250:
            raise ValueError("between 1 and 250 nodes")
        self.count = count
        self.subnet = subnet
        self.hub: Netns | None = None
        self.nodes: list[Netns] = []

    def __enter__(self) -> Self:
        try:
            hub = Netns(_new_name())
            ip("netns", "add", hub.name)
            self.hub = hub
            _loopback_multicast(hub)
            hub.ip("link", "add", "br0", "type", "bridge")
            # Snooping would hold multicast back until IGMP reports are seen; a LAN switch floods it.
            hub.ip("link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
            hub.ip("link", "set", "br0", "up")
            for i in range(self.count):
                node = Netns(_new_name(), f"{self.subnet}.{i + 1}")
                ip("netns", "add", node.name)
                self.nodes.append(node)
                _loopback_multicast(node)
                hub.ip("link", "add", self._hub_port(node), "type", "veth", "peer", "name", "eth0", "netns", node.name)
                hub.ip("link", "set", self._hub_port(node), "master", "br0")
                hub.ip("link", "set", self._hub_port(node), "up")
                node.ip("addr", "add", f"{node.address}/24", "dev", "eth0")
                node.ip("link", "set", "eth0", "multicast", "on")
                node.ip("link", "set", "eth0", "up")
                node.ip("route", "add", MDNS_ROUTE, "dev", "eth0")
        except BaseException:
            self._teardown()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._teardown()

    def _teardown(self) -> None:
        for node in self.nodes:
            node.delete()
        self.nodes = []
        if self.hub is not None:
            self.hub.delete()
            self.hub = None

    def _hub_port(self, node: Netns | int) -> str:
        index = node if isinstance(node, int) else self.nodes.index(node)
        return f"veth{index}"

    def link_down(self, node: Netns | int) -> None:
        """Pulls the node's cable: its hub port goes down, so nothing passes either way (the node
        keeps its address and sees no carrier, as with a real unplugged cable)."""
        assert self.hub is not None
        self.hub.ip("link", "set", self._hub_port(node), "down")

    def link_up(self, node: Netns | int) -> None:
        assert self.hub is not None
        self.hub.ip("link", "set", self._hub_port(node), "up")

    def wait_link_up(self, node: Netns | int, timeout: float = 5.0) -> None:
        """Waits (bounded) until the node's eth0 has carrier again after `link_up`."""
        target = node if isinstance(node, Netns) else self.nodes[node]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "LOWER_UP" in target.ip("link", "show", "eth0").stdout:
                return
            time.sleep(0.05)
        raise TimeoutError(f"eth0 of {target.name} has no carrier after {timeout}s")
