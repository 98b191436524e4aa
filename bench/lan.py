"""LAN benchmark: discovery, live propagation and initial sync between Rallypoint nodes on
loopback, beside Syncthing moving the same messages as files between two folders.

  discovery     two `rallypoint serve` processes started together (real mDNS on loopback):
                time from launch until each lists the other, and until their session is up.
  propagation   node A runs in this process (as in the console) with sessions to B and C,
                two `rallypoint serve` processes; A posts a message, and the time from the
                post() call until B and C each have it stored (the wall-clock stamp of their
                `Received` event, emitted once the import's transaction committed) is its
                latency. p50 and p99 over the posts (two latencies per post).
  initial sync  A (a `serve` process) holds N messages; B, empty and enrolled, starts its service
                in this process (and, as a running service, its import workers) and dials A:
                time from the dial until B has stored all N and reads the last one,
                and the bytes of the session on the wire (both directions, frames included).
  floor         for each initial sync size, what the pinned Automerge binding alone takes to
                apply those messages' changes as import does and read every message back as
                materialising the view does (bench/automerge_floor.py): no store, no
                signatures, no network, one core (the binding holds the GIL). No receiver
                that shows every message it was sent can sync faster on one core.
  syncthing     two Syncthing instances on loopback (discovery, relays, NAT off): one small
                file with a rescan requested at once, one with the default watcher (full run
                only), and N message files of the same text (bench/syncthing_side.py).

    python bench/lan.py [--quick] [--json] [--sizes 10000,100000] [--posts 300]
                        [--systems rallypoint,syncthing] [--home DIR]

Multicast needs a loopback that carries it: as root the script re-runs itself inside a fresh
network namespace whose loopback does (nothing leaves the machine); otherwise, if the host's
loopback has no MULTICAST flag, discovery is skipped and the nodes dial each other directly.
Syncthing comes from the Debian package `syncthing`; without it only Rallypoint is measured.
With --json the last line of output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `tests.netns` when run as a script

from automerge_floor import measure_floor  # noqa: E402
from chat import chat_lines  # noqa: E402
from syncthing_side import SyncthingFigures, measure_syncthing, messages_needed, syncthing_missing_hint  # noqa: E402

from appliance import crypto  # noqa: E402
from appliance.model import RecoveryKit  # noqa: E402
from appliance.node import SEGMENT_SIZE, Node  # noqa: E402
from sync.lan import LanConfig, LanEvent, LanService, Received, SessionUp  # noqa: E402

CHANNEL = "general"
PASSPHRASE = "bench passphrase"
KDF = crypto.KdfParams(1, 8192)  # cheap on purpose: unlock is not what is measured
FILL_CHUNK = 10 * SEGMENT_SIZE
INSIDE_FLAG = "--inside-netns"
TARGET_P50_MS, TARGET_P99_MS = 40.0, 100.0
TARGET_SYNC_S = {10_000: 0.5, 100_000: 3.0}  # issue 15
SYSTEMS = ("rallypoint", "syncthing")


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def loopback_multicast() -> bool:
    try:
        return int(Path("/sys/class/net/lo/flags").read_text(), 16) & 0x1000 != 0  # IFF_MULTICAST
    except (OSError, ValueError):
        return False


# --- nodes ------------------------------------------------------------------------------


async def make_workspace(root: Path, names: list[str], fill: int, bodies: list[str], kits: dict[str, RecoveryKit] | None = None) -> list[Path]:
    """A workspace made on the first home, the others enrolled; the first holds `fill` messages.
    The recovery kits made with the invitations go into `kits`, by name, when given."""
    first = await Node.init(root / names[0], workspace_name="bench", user_name="alice", node_name=names[0], passphrase=PASSPHRASE, kdf=KDF)
    async with first:
        for name in names[1:]:
            enrollment = await first.enrollment.invite(name, f"user-{name}", kdf=KDF)
            if kits is not None and enrollment.kit is not None:
                kits[name] = enrollment.kit
            await (await Node.join(root / name, enrollment.data, enrollment.code, PASSPHRASE, kdf=KDF)).close()
        await first.chat.create_channel(CHANNEL)
        start = time.perf_counter()
        for done in range(0, fill, FILL_CHUNK):
            await first.chat.post_many(CHANNEL, bodies[done : min(fill, done + FILL_CHUNK)])
        if fill:
            progress(f"{names[0]} filled with {fill:,} messages in {time.perf_counter() - start:.1f} s")
    return [root / name for name in names]


class ServeProcess:
    """`rallypoint serve --json`; a thread timestamps each event line as it arrives."""

    def __init__(self, home: Path, *, mdns: bool, peers: Sequence[str] = ()) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RALLYPOINT_")}
        env |= {"RALLYPOINT_HOME": str(home), "RALLYPOINT_PASSPHRASE": PASSPHRASE, "PYTHONUNBUFFERED": "1"}
        executable = shutil.which("rallypoint", path=str(Path(sys.executable).parent))
        command = [executable] if executable else [sys.executable, "-m", "tui.cli"]
        args = ["serve", "--port", "0", "--bind", "127.0.0.1", "--json", *(["--no-mdns"] if not mdns else [])]
        for peer in peers:
            args += ["--peer", peer]
        self.launched = time.perf_counter()
        self.proc = subprocess.Popen([*command, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.events: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self.history: list[tuple[float, dict[str, Any]]] = []
        self.listeners: list[Callable[[float, dict[str, Any]], None]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                stamp, event = time.perf_counter(), json.loads(line)
                for listener in list(self.listeners):
                    listener(stamp, event)
                self.events.put((stamp, event))

    def wait_for(self, event: str, timeout: float, **fields: Any) -> tuple[float, dict[str, Any]]:
        """The first such event, whether it already came (events can come in any order) or not."""

        def matches(seen: dict[str, Any]) -> bool:
            return seen["event"] == event and all(seen.get(k) == v for k, v in fields.items())

        for stamp, seen in self.history:
            if matches(seen):
                return stamp, seen
        deadline = time.perf_counter() + timeout
        while (left := deadline - time.perf_counter()) > 0:
            try:
                stamp, seen = self.events.get(timeout=left)
            except queue.Empty:
                break
            self.history.append((stamp, seen))
            if matches(seen):
                return stamp, seen
        raise RuntimeError(f"serve: no {event} {fields or ''} within {timeout:.0f} s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- figures ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Discovery:
    listening_s: float  # launch until the process listens (Python start, unlock, mDNS registration)
    discovered_s: float  # launch until each has discovered the other (the later of the two)
    session_s: float  # launch until their session is up


@dataclass(frozen=True)
class Propagation:
    posts: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    post_p50_ms: float  # A's own post() (commit on A), included in the latencies


@dataclass(frozen=True)
class InitialSync:
    messages: int
    seconds: float
    wire_bytes: int

    @property
    def bytes_per_message(self) -> float:
        return self.wire_bytes / self.messages


def measure_discovery(work: Path, bodies: list[str]) -> Discovery:
    homes = asyncio.run(make_workspace(work / "discovery", ["alpha", "bravo"], 10, bodies))
    nodes = [ServeProcess(home, mdns=True) for home in homes]
    try:
        listening = [n.wait_for("Listening", 30) for n in nodes]
        ids = [event["node_id"] for _, event in listening]
        discovered = [n.wait_for("PeerDiscovered", 30, node_id=ids[1 - i])[0] - n.launched for i, n in enumerate(nodes)]
        session = [n.wait_for("SessionUp", 30)[0] - n.launched for n in nodes]
        return Discovery(max(stamp - n.launched for n, (stamp, _) in zip(nodes, listening, strict=True)), max(discovered), max(session))
    finally:
        for node in nodes:
            node.stop()


async def measure_propagation(work: Path, bodies: list[str], posts: int, mdns: bool) -> Propagation:
    homes = await make_workspace(work / "propagation", ["alpha", "bravo", "charlie"], 100, bodies)
    alpha = await Node.open(homes[0], PASSPHRASE)
    peers: list[ServeProcess] = []
    sessions: set[str] = set()

    def on_event(event: LanEvent) -> None:
        if isinstance(event, SessionUp):
            sessions.add(event.node_id)

    config = LanConfig(bind="127.0.0.1", port=0, discovery=mdns)
    try:
        async with alpha, LanService(alpha, config, on_event=on_event) as service:
            peers = [ServeProcess(home, mdns=mdns, peers=[] if mdns else [f"127.0.0.1:{service.port}"]) for home in homes[1:]]
            deadline = time.perf_counter() + 60
            while len(sessions) < 2 and time.perf_counter() < deadline:
                await asyncio.sleep(0.05)
            if len(sessions) < 2:
                raise RuntimeError("A did not get sessions with both peers within 60 s")
            await asyncio.sleep(1.0)  # let the initial exchange settle
            loop = asyncio.get_running_loop()
            arrivals: asyncio.Queue[tuple[int, float]] = asyncio.Queue()

            def arrival_at(index: int) -> Callable[[float, dict[str, Any]], None]:
                def listener(stamp: float, event: dict[str, Any]) -> None:
                    if event["event"] == "Received" and event["messages"]:
                        loop.call_soon_threadsafe(arrivals.put_nowait, (index, event["at"]))

                return listener

            for index, peer in enumerate(peers):
                peer.listeners.append(arrival_at(index))
            latencies: list[float] = []
            post_times: list[float] = []
            for n in range(posts):
                start, clock = time.time(), time.perf_counter()  # the peers stamp arrivals with the same wall clock
                await alpha.chat.post(CHANNEL, bodies[n % len(bodies)])
                post_times.append(time.perf_counter() - clock)
                got: set[int] = set()
                while len(got) < 2:
                    index, stamp = await asyncio.wait_for(arrivals.get(), 10)
                    if index not in got:
                        got.add(index)
                        latencies.append(stamp - start)
                await asyncio.sleep(0.01)
    finally:
        for peer in peers:
            peer.stop()
    ms = sorted(x * 1000 for x in latencies)
    return Propagation(posts, statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))], ms[-1], statistics.median(post_times) * 1000)


async def lan_fill(node: Node, port: int, size: int, bodies: list[str], timeout: float = 900) -> tuple[float, int]:
    """Dials the node serving at `port` and waits until `node` has stored `size` messages:
    the seconds it took and the bytes the sessions moved. The last message must read back."""
    received = 0
    done = asyncio.Event()

    def on_event(event: LanEvent) -> None:
        nonlocal received
        if isinstance(event, Received):
            received += event.messages
            if received >= size:
                done.set()

    async with LanService(node, LanConfig(bind="127.0.0.1", port=0, discovery=False), on_event=on_event) as service:
        # B is a running service, as a daemon or console would be long before a peer turns up:
        # the workers it starts with are up before the timed sync (waits for them).
        await node.intake.warm_workers()
        start = time.perf_counter()
        service.dial("127.0.0.1", port)
        await asyncio.wait_for(done.wait(), timeout)
        last = await node.views.read(CHANNEL, limit=1, mark_read=False)
        seconds = time.perf_counter() - start
        if not last or last[-1].text != bodies[size - 1]:
            raise RuntimeError("B does not read the last message sent")
        return seconds, sum(s.bytes_sent + s.bytes_received for s in service.sessions())


async def measure_initial_sync(work: Path, bodies: list[str], size: int) -> InitialSync:
    homes = await make_workspace(work / f"sync-{size}", ["alpha", "bravo"], size, bodies)
    source = ServeProcess(homes[0], mdns=False)
    try:
        _, listening = source.wait_for("Listening", 60)
        async with await Node.open(homes[1], PASSPHRASE) as bravo:
            seconds, wire = await lan_fill(bravo, listening["port"], size, bodies, timeout=600)
        return InitialSync(size, seconds, wire)
    finally:
        source.stop()


# --- the run ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run that ends within a minute")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of every figure")
    parser.add_argument("--sizes", help="initial sync sizes, comma-separated (default 10000,100000; quick 2000)")
    parser.add_argument("--posts", type=int, help="posts timed for propagation (default 300; quick 40)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="rallypoint,syncthing")
    parser.add_argument("--home", help="keep the nodes' homes here (default: a temporary directory)")
    parser.add_argument(INSIDE_FLAG, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if os.geteuid() == 0 and not getattr(args, INSIDE_FLAG[2:].replace("-", "_")) and shutil.which("ip"):
        sys.exit(rerun_in_namespace())

    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([2_000] if args.quick else [10_000, 100_000])
    posts = args.posts or (40 if args.quick else 300)
    systems = tuple(s for s in args.systems.split(",") if s)
    mdns = loopback_multicast()
    bodies = chat_lines(max(sizes + [posts, 1_000]))
    started = time.perf_counter()
    figures: dict[str, Any] = {"quick": args.quick, "python": platform.python_version(), "rallypoint_version": version("rallypoint"), "mdns": mdns}

    with tempfile.TemporaryDirectory(prefix="rp-bench-lan-") as temp:
        work = Path(args.home or temp)
        work.mkdir(parents=True, exist_ok=True)
        if "rallypoint" in systems:
            if mdns:
                progress("discovery: two serve processes")
                figures["discovery"] = asdict(measure_discovery(work, bodies))
            else:
                progress("discovery skipped: this loopback carries no multicast (run as root to measure it in a namespace)")
            progress(f"propagation: {posts} posts from A to B and C")
            figures["propagation"] = asdict(asyncio.run(measure_propagation(work, bodies, posts, mdns)))
            figures["initial_sync"] = []
            for size in sizes:
                progress(f"initial sync of {size:,} messages")
                run = asyncio.run(measure_initial_sync(work, bodies, size))
                floor = measure_floor(bodies[:size])
                figures["initial_sync"].append({**asdict(run), "bytes_per_message": run.bytes_per_message, "floor_apply_s": floor.apply_s, "floor_read_s": floor.read_s})
        if "syncthing" in systems:
            progress("syncthing: two instances on loopback")
            counts = [min(s, 1_000) for s in sizes] if args.quick else [s for s in sizes if s <= 10_000]
            # The same chat text, one file per message; as many distinct lines as files, so that
            # Syncthing cannot copy a repeated file from data it already holds.
            lines = chat_lines(messages_needed(counts, watcher=not args.quick))
            st = measure_syncthing([line.encode() for line in lines], counts, watcher=not args.quick, timeout_s=600)
            figures["syncthing"] = None if st is None else syncthing_json(st)
            if st is None:
                progress(syncthing_missing_hint())
    figures["ratios"] = ratios(figures)
    figures["elapsed_s"] = time.perf_counter() - started
    print("\n".join(report(figures)))
    if args.json:
        print(json.dumps(figures, sort_keys=True))


def rerun_in_namespace() -> int:
    """Runs this script again inside a namespace of its own, whose loopback carries multicast."""
    from tests.netns import netns

    with netns() as ns:
        proc = ns.run([sys.executable, *sys.argv, INSIDE_FLAG], cwd=os.getcwd())
        return proc.wait()


def syncthing_json(st: SyncthingFigures) -> dict[str, Any]:
    return {
        "version": st.version,
        "single_file_rescan_ms": st.single_file_rescan_ms,
        "single_file_watcher_ms": st.single_file_watcher_ms,
        "bulk": [{**asdict(b), "bytes_per_message": b.wire_bytes / b.messages} for b in st.bulk],
    }


def ratios(figures: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    st, prop = figures.get("syncthing"), figures.get("propagation")
    if st and prop:
        out["syncthing_rescan_over_rallypoint_p50"] = st["single_file_rescan_ms"] / prop["p50_ms"]
        if st["single_file_watcher_ms"]:
            out["syncthing_watcher_over_rallypoint_p50"] = st["single_file_watcher_ms"] / prop["p50_ms"]
    if st:
        ours = {r["messages"]: r for r in figures.get("initial_sync", [])}
        for bulk in st["bulk"]:
            if bulk["messages"] in ours:
                mine = ours[bulk["messages"]]
                out[f"syncthing_over_rallypoint_time_{bulk['messages']}"] = bulk["seconds"] / mine["seconds"]
                out[f"syncthing_over_rallypoint_bytes_{bulk['messages']}"] = bulk["wire_bytes"] / mine["wire_bytes"]
    return out


def report(figures: dict[str, Any]) -> list[str]:
    lines = [f"LAN benchmark ({'quick' if figures['quick'] else 'full'} run, {figures['elapsed_s']:.0f} s)", ""]
    if d := figures.get("discovery"):
        lines.append(f"discovery   launch→listening {d['listening_s']:.2f} s   launch→peer discovered {d['discovered_s']:.2f} s   launch→session up {d['session_s']:.2f} s")
    if p := figures.get("propagation"):
        verdict = "meets" if p["p50_ms"] <= TARGET_P50_MS and p["p99_ms"] <= TARGET_P99_MS else "misses"
        lines.append(
            f"propagation {p['posts']} posts to 2 peers: p50 {p['p50_ms']:.1f} ms  p99 {p['p99_ms']:.1f} ms  max {p['max_ms']:.1f} ms"
            f"  (A's post itself p50 {p['post_p50_ms']:.1f} ms; target p50 ≤ {TARGET_P50_MS:.0f}, p99 ≤ {TARGET_P99_MS:.0f}: {verdict})"
        )
    for run in figures.get("initial_sync", []):
        target = TARGET_SYNC_S.get(run["messages"])
        verdict = f"  (target ≤ {target:g} s: {'meets' if run['seconds'] <= target else 'misses'})" if target else ""
        lines.append(f"initial sync {run['messages']:>7,} messages: {run['seconds']:6.2f} s  {run['wire_bytes'] / 1e6:7.2f} MB on the wire  {run['bytes_per_message']:5.0f} B/message{verdict}")
        floor = run["floor_apply_s"] + run["floor_read_s"]
        against = f"; the target is {'above' if target and target >= floor else 'below'} this floor" if target else ""
        lines.append(f"  floor: automerge alone applies them in {run['floor_apply_s']:.2f} s and reads them back in {run['floor_read_s']:.2f} s = {floor:.2f} s{against}")
    if st := figures.get("syncthing"):
        lines.append("")
        watcher = f"{st['single_file_watcher_ms']:.0f} ms" if st["single_file_watcher_ms"] else "not measured (quick)"
        lines.append(f"syncthing {st['version']}: one file, rescan requested {st['single_file_rescan_ms']:.0f} ms; default watcher {watcher}")
        for bulk in st["bulk"]:
            lines.append(f"syncthing {bulk['messages']:>7,} files: {bulk['seconds']:6.2f} s  {bulk['wire_bytes'] / 1e6:7.2f} MB on the wire  {bulk['bytes_per_message']:5.0f} B/message")
    elif "syncthing" in figures:
        lines.append(f"syncthing: not measured - {syncthing_missing_hint()}")
    if figures["ratios"]:
        lines.append("")
        lines.extend(f"ratio {name.replace('_', ' ')}: {value:.1f}x" for name, value in sorted(figures["ratios"].items()))
    return lines


if __name__ == "__main__":
    main()
