"""mDNS discovery with real multicast, inside network namespaces the tests create (root only).

Every node is a tests/discovery_driver.py process printing its events as JSON lines; every wait
is bounded. Nothing is sent outside the test namespaces."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance import ids
from sync.discovery import SERVICE_TYPE, Advert, PeerSeen, is_key_id, parse_txt, peer_from_info
from tests.netns import BridgeLan, Netns, netns, requires_root

DRIVER = str(Path(__file__).resolve().parents[2] / "tests" / "discovery_driver.py")
WS1, WS2 = ids.key_id(b"workspace one"), ids.key_id(b"workspace two")
A, B, C, D = (ids.key_id(name.encode()) for name in ("node a", "node b", "node c", "node d"))
SEE_TIMEOUT_S = 10.0


# --- pure checks (no network) -------------------------------------------------------------------


def txt(*items: bytes) -> bytes:
    return b"".join(bytes([len(i)]) + i for i in items)


GOOD_TXT = txt(b"v=1", b"node=" + A.encode(), b"ws=" + WS1.encode())


def test_a_valid_advert_is_accepted() -> None:
    peer = peer_from_info(f"{A}.{SERVICE_TYPE}", 4242, GOOD_TXT + txt(b"later=extension"), ["10.0.0.2", "10.0.0.1"])
    assert peer == PeerSeen(A, WS1, ("10.0.0.1", "10.0.0.2"), 4242, 1)


@pytest.mark.parametrize(
    ("name", "port", "text", "addresses"),
    [
        (f"junk.{SERVICE_TYPE}", 4242, GOOD_TXT, ["10.0.0.1"]),  # instance is not a node id
        (f"{A.lower()}.{SERVICE_TYPE}", 4242, GOOD_TXT, ["10.0.0.1"]),  # not canonical
        (f"{B}.{SERVICE_TYPE}", 4242, GOOD_TXT, ["10.0.0.1"]),  # TXT node is another node
        (f"{A}.{SERVICE_TYPE}", 4242, txt(b"v=2", b"node=" + A.encode(), b"ws=" + WS1.encode()), ["10.0.0.1"]),
        (f"{A}.{SERVICE_TYPE}", 4242, txt(b"v", b"node=" + A.encode(), b"ws=" + WS1.encode()), ["10.0.0.1"]),
        (f"{A}.{SERVICE_TYPE}", 4242, GOOD_TXT + txt(b"NODE=" + B.encode()), ["10.0.0.1"]),  # key twice
        (f"{A}.{SERVICE_TYPE}", 4242, txt(b"v=1", b"node=" + A.encode()), ["10.0.0.1"]),  # no ws
        (f"{A}.{SERVICE_TYPE}", 4242, txt(b"v=1", b"node=" + A.encode(), b"ws=" + WS1[:-1].encode() + b"A"), ["10.0.0.1"]),
        (f"{A}.{SERVICE_TYPE}", 4242, GOOD_TXT[:-3], ["10.0.0.1"]),  # truncated
        (f"{A}.{SERVICE_TYPE}", 4242, txt(b"v=1", b"node=" + A.encode(), b"ws=\xff"), ["10.0.0.1"]),
        (f"{A}.{SERVICE_TYPE}", 0, GOOD_TXT, ["10.0.0.1"]),
        (f"{A}.{SERVICE_TYPE}", None, GOOD_TXT, ["10.0.0.1"]),
        (f"{A}.{SERVICE_TYPE}", 4242, GOOD_TXT, []),
        (f"{A}.{SERVICE_TYPE}", 4242, GOOD_TXT, ["0.0.0.0", "224.0.0.251", "255.255.255.255"]),
        (f"{A}._other._tcp.local.", 4242, GOOD_TXT, ["10.0.0.1"]),
    ],
)
def test_a_broken_advert_is_refused(name: str, port: int | None, text: bytes, addresses: list[str]) -> None:
    with pytest.raises(ValueError):
        peer_from_info(name, port, text, addresses)


def test_ids_and_txt_helpers() -> None:
    assert is_key_id(A) and not is_key_id(A.lower()) and not is_key_id(A + "A") and not is_key_id("")
    assert parse_txt(b"\x00") == {} and parse_txt(b"") == {}
    with pytest.raises(ValueError):
        Advert(A.lower(), WS1, 4242)
    with pytest.raises(ValueError):
        Advert(A, WS1, 70000)


# --- drivers in namespaces -------------------------------------------------------------------------


class Driver:
    """A tests/discovery_driver.py process in a namespace; its JSON lines collected by a thread."""

    def __init__(self, ns: Netns, argv: list[str]) -> None:
        self.proc = ns.run([sys.executable, DRIVER, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.events: list[dict[str, Any]] = []
        self.noise: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @classmethod
    def node(cls, ns: Netns, node: str, ws: str, port: int, interface: str | None = "127.0.0.1", *extra: str, duration: float = 40) -> Driver:
        """A discovery node; `interface` None binds all the namespace's interfaces."""
        bind = ["--interface", interface] if interface is not None else []
        return cls(ns, ["run", "--node", node, "--ws", ws, "--port", str(port), *bind, "--duration", str(duration), *extra])

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                try:
                    self.events.append(json.loads(line))
                except ValueError:
                    self.noise.append(line.rstrip())
                self._changed.notify_all()

    def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout: float = SEE_TIMEOUT_S, what: str = "event") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events:
                    if match(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no {what} within {timeout}s; events {self.events[-20:]}; other output {self.noise[-20:]}")
                self._changed.wait(min(remaining, 0.2))

    def wait_seen(self, node: str, timeout: float = SEE_TIMEOUT_S, **fields: Any) -> dict[str, Any]:
        return self.wait_for(lambda e: e["event"] == "seen" and e["node_id"] == node and all(e[k] == v for k, v in fields.items()), timeout, f"PeerSeen {node} {fields}")

    def wait_gone(self, node: str, timeout: float = SEE_TIMEOUT_S) -> dict[str, Any]:
        return self.wait_for(lambda e: e["event"] == "gone" and e["node_id"] == node, timeout, f"PeerGone {node}")

    def gone(self, node: str) -> bool:
        with self._changed:
            return any(e["event"] == "gone" and e["node_id"] == node for e in self.events)

    def seen(self, node: str) -> list[dict[str, Any]]:
        with self._changed:
            return [e for e in self.events if e["event"] == "seen" and e["node_id"] == node]

    def stop(self, timeout: float = 10.0) -> dict[str, Any]:
        """SIGTERM (a clean stop: goodbye sent), then the final stats."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.wait_for(lambda e: e["event"] == "exit", timeout, "exit")
        self.proc.wait(timeout=timeout)
        return [e for e in self.events if e["event"] == "stats"][-1]


@requires_root
@pytest.mark.timeout(60)
def test_nodes_on_one_lan_see_each_other_and_their_goodbyes() -> None:
    with netns() as ns:
        a = Driver.node(ns, A, WS1, 1111)
        b = Driver.node(ns, B, WS1, 2222)
        c = Driver.node(ns, C, WS2, 3333)  # another workspace: reported, with its workspace id
        for me, others in ((a, [(B, WS1, 2222), (C, WS2, 3333)]), (b, [(A, WS1, 1111), (C, WS2, 3333)]), (c, [(A, WS1, 1111), (B, WS1, 2222)])):
            for node, ws, port in others:
                me.wait_seen(node, workspace_id=ws, port=port, addresses=["127.0.0.1"], version=1)
        assert not a.seen(A) and not b.seen(B) and not c.seen(C)  # nobody reports itself
        stats = b.stop()
        assert stats["peers"] == sorted([A, C]) and stats["stats"]["invalid"] == 0
        a.wait_gone(B, timeout=5)
        c.wait_gone(B, timeout=5)
        assert not a.gone(C) and not c.gone(A)
        assert a.stop()["peers"] == [C]
        c.wait_gone(A, timeout=5)
        c.stop()


@requires_root
@pytest.mark.timeout(60)
def test_nodes_on_a_bridge_and_a_pulled_cable() -> None:
    """Two namespaces joined by a bridge: discovery over veth addresses (A bound to all interfaces,
    B to its veth address); a node that leaves while its cable is out cannot say goodbye, and its
    return with a new port is reported."""
    with BridgeLan(2) as lan:
        first, second = lan.nodes
        a = Driver.node(first, A, WS1, 1111, None)  # advertises its non-loopback address only
        b = Driver.node(second, B, WS1, 2222, second.address)
        a.wait_seen(B, port=2222, addresses=[second.address])
        b.wait_seen(A, port=1111, addresses=[first.address])
        lan.link_down(second)
        b.stop()
        time.sleep(1.5)  # a goodbye would arrive well within this
        assert not a.gone(B)
        lan.link_up(second)
        lan.wait_link_up(second)
        b = Driver.node(second, B, WS1, 2223, second.address)
        a.wait_seen(B, port=2223)
        b.wait_seen(A, port=1111)
        b.stop()
        a.wait_gone(B, timeout=5)
        a.stop()


@requires_root
@pytest.mark.timeout(60)
def test_a_second_node_with_the_same_id_and_an_unbindable_address_are_refused() -> None:
    """On separate hosts (namespaces on a bridge): on one host, mDNS replies sent by unicast to
    port 5353 reach only one of the sockets sharing it, so conflicts there are found by chance."""
    with BridgeLan(2) as lan:
        first, second = lan.nodes
        a = Driver.node(first, A, WS1, 1111, first.address)
        a.wait_for(lambda e: e["event"] == "ready")
        twin = second.check([sys.executable, DRIVER, "run", "--node", A, "--ws", WS1, "--port", "2222", "--interface", second.address or "", "--duration", "5"], timeout=30)
        assert twin.returncode == 2 and f'"another node on this LAN already advertises node id {A}"' in twin.stdout, twin
        nowhere = second.check([sys.executable, DRIVER, "run", "--node", B, "--ws", WS1, "--port", "2222", "--interface", "10.9.9.9", "--duration", "5"], timeout=30)
        assert nowhere.returncode == 2 and '"cannot start mDNS on 10.9.9.9: ' in nowhere.stdout, nowhere
        assert a.stop()["peers"] == [] and not a.seen(A)


# --- a standard mDNS browser -------------------------------------------------------------------------

AVAHI_TOOLS = ("avahi-daemon", "avahi-browse", "dbus-daemon")
AVAHI_REASON = "needs avahi-daemon, avahi-browse and dbus-daemon (Debian: apt-get install avahi-daemon avahi-utils dbus)"

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

AVAHI_CONFIG = """[server]
host-name=rptest-avahi
use-ipv4=yes
use-ipv6=no
allow-interfaces=lo
enable-dbus=yes
ratelimit-interval-usec=0
[wide-area]
enable-wide-area=no
[publish]
publish-addresses=yes
publish-workstation=no
publish-hinfo=no
"""


@pytest.fixture
def avahi(tmp_path: Path) -> Iterator[tuple[Netns, dict[str, str]]]:
    """A namespace running a private D-Bus system bus and an avahi-daemon on its loopback; yields
    the namespace and the environment that points avahi's tools at that bus."""
    missing = [tool for tool in AVAHI_TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{AVAHI_REASON}; missing {', '.join(missing)}")
    socket_path = tmp_path / "bus"
    (tmp_path / "bus.conf").write_text(BUS_CONFIG.format(socket=socket_path))
    (tmp_path / "avahi.conf").write_text(AVAHI_CONFIG)
    (tmp_path / "run").mkdir()
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={socket_path}"}
    log = open(tmp_path / "daemons.log", "w")  # noqa: SIM115 - closed below
    with netns() as ns, log:
        ns.run(["dbus-daemon", f"--config-file={tmp_path / 'bus.conf'}", "--nofork", "--nopidfile"], stdout=log, stderr=log, env=env)
        _wait(lambda: socket_path.exists(), 5, "the private D-Bus socket")
        # avahi keeps its pid file in /run/avahi-daemon: give it a private /run in a private mount
        # namespace, so it neither clashes with nor touches the host's.
        script = f"mount --bind {tmp_path / 'run'} /run && exec avahi-daemon -f {tmp_path / 'avahi.conf'} --no-drop-root --no-chroot --no-rlimits"
        ns.run(["unshare", "-m", "sh", "-c", script], stdout=log, stderr=log, env=env)
        _wait(lambda: "Server startup complete" in (tmp_path / "daemons.log").read_text(), 10, "avahi-daemon to start")
        yield ns, env


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@requires_root
@pytest.mark.timeout(60)
def test_avahi_browse_sees_the_service_and_its_txt_records(avahi: tuple[Netns, dict[str, str]]) -> None:
    ns, env = avahi
    a = Driver.node(ns, A, WS2, 4242)
    a.wait_for(lambda e: e["event"] == "ready")
    resolved: list[str] = []
    for _ in range(5):
        result = ns.check(["avahi-browse", "--resolve", "--parsable", "--terminate", "_rallypoint._tcp"], timeout=15, env=env)
        resolved = [line for line in result.stdout.splitlines() if line.startswith("=")]
        if resolved:
            break
        time.sleep(0.5)
    assert len(resolved) == 1, (result.stdout, result.stderr)
    fields = resolved[0].split(";")
    # =;interface;protocol;instance;type;domain;host;address;port;txt
    assert fields[2:6] == ["IPv4", A, "_rallypoint._tcp", "local"]
    assert fields[7:9] == ["127.0.0.1", "4242"]
    assert sorted(fields[9].split(" ")) == sorted(['"v=1"', f'"node={A}"', f'"ws={WS2}"'])
    a.stop()


# --- flood ---------------------------------------------------------------------------------------------

MAX_PEERS, MAX_PENDING = 32, 8


def flood(names: int, valid_every: int, newcomer: bool) -> tuple[dict[str, Any], dict[str, Any], Driver]:
    """A (bounded tables, memory traced) and legit B on one LAN; then `names` spoofed names for 4 s
    (and, if `newcomer`, legit D starting during the flood). Returns A's stats before the flood,
    after it (settled: two prune intervals later) and A."""
    with netns() as ns:
        a = Driver.node(ns, A, WS1, 1111, "127.0.0.1", "--max-peers", str(MAX_PEERS), "--max-pending", str(MAX_PENDING), "--trace-memory", "--stats-every", "0.5")
        b = Driver.node(ns, B, WS1, 2222)
        a.wait_seen(B)
        before = a.wait_for(lambda e: e["event"] == "stats" and B in e["peers"])
        spoofer = ns.run([sys.executable, DRIVER, "spoof", "--names", str(names), "--seconds", "4", "--valid-every", str(valid_every)], stdout=subprocess.PIPE, text=True)
        d = Driver.node(ns, D, WS1, 4444) if newcomer else None
        out, _ = spoofer.communicate(timeout=30)
        assert json.loads(out)["event"] == "spoofed"
        time.sleep(3)  # let the last prunes run
        after = a.stop()
        assert not a.gone(B)
        b.stop()
        if d is not None:
            d.stop()
        return before, after, a


@requires_root
@pytest.mark.timeout(90)
def test_a_flood_of_spoofed_adverts_costs_bounded_memory() -> None:
    before_small, small, a_small = flood(2_000, valid_every=10, newcomer=False)
    before_large, large, a_large = flood(20_000, valid_every=1_000, newcomer=True)
    for before, after in ((before_small, small), (before_large, large)):
        assert B in after["peers"] and len(after["peers"]) <= MAX_PEERS
        assert after["stats"]["invalid"] > 0 and after["stats"]["pruned_records"] > 0
        # What zeroconf holds settles back to what the peers need, whatever the flood's size.
        assert after["cache_records"] <= 8 * (MAX_PEERS + MAX_PENDING) + 16, after
        assert after["scheduled_aliases"] <= MAX_PEERS + MAX_PENDING + 1, after
        assert after["scheduled"] <= 2 * (MAX_PEERS + MAX_PENDING + 1) + 64, after
        assert after["traced_kb"] - before["traced_kb"] < 2048, (before, after)
        assert after["rss_kb"] - before["rss_kb"] < 16 * 1024, (before, after)
    # 200 valid-looking spoofed names filled the table; the peer seen before the flood kept its place.
    assert len(small["peers"]) == MAX_PEERS and small["stats"]["dropped_full"] > 0
    # Ten times the names cost no more memory than the small flood; a peer starting mid-flood is found.
    assert large["traced_kb"] - before_large["traced_kb"] < small["traced_kb"] - before_small["traced_kb"] + 1024, (small, large)
    assert D in large["peers"] and a_large.seen(D)
    assert large["stats"]["invalid"] > small["stats"]["invalid"]
