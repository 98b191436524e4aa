"""Syncthing side of the LAN benchmark: how fast and at what wire cost Syncthing moves chat
messages, one small file per message, between two folders on loopback.

Syncthing is the tool a team would otherwise reach for to share files between machines on a
LAN with no server. Two instances run in temporary homes on 127.0.0.1, each knowing the other
at an explicit address, sharing a folder (`sendreceive`); nothing else is reachable: global
and local discovery, relays, NAT traversal, usage reporting, crash reporting and upgrades are
all off (and checked through the REST API once the instances are up). Figures:

  single file, rescan    one ~200-byte file written on A (into a folder holding only the
                         earlier trials' files), `POST /rest/db/scan?folder=` sent at
                         once (it returns when A's scan is done), time until the file exists
                         on B with its full content (Syncthing renames a finished temporary
                         file into place, so existence with the right bytes means delivered).
                         Median of SINGLE_TRIALS after one untimed warm-up.
  single file, watcher   the same with no scan request, relying on Syncthing's default
                         filesystem watcher (it batches changes for fsWatcherDelayS = 10 s),
                         in a second shared folder with the watcher on. Median of
                         WATCHER_TRIALS. Optional: ~10 s a trial.
  bulk                   per count N: N files (one message each) written on A into a new
                         directory, 1,000 files to a subdirectory (see FILES_PER_DIR), then
                         a scan requested: seconds until all N exist on B
                         (content checked afterwards, untimed), and the bytes on the wire for
                         it: the delta of A's in + out byte totals for its connection to B in
                         `/rest/system/connections`, read once both sides are idle and the
                         totals have stopped moving. These are Syncthing's protocol bytes
                         (index updates, requests, file data; metadata compressed, file data
                         not, Syncthing's default) under TLS: TLS records and TCP/IP headers
                         are not counted.

The instances run with Syncthing's defaults otherwise (fsync on, random pull order, low
process priority). Every file's content must be distinct: Syncthing copies a block it already
holds locally instead of fetching it, so repeated messages would flatter its wire bytes; pass
at least `messages_needed(counts, watcher=...)` messages (they are used in order, reused
cyclically if there are too few).

    python bench/syncthing_side.py [--quick] [--json] [--counts 1000,10000]

Syncthing is the Debian package `syncthing` (apt-get install syncthing); this module installs
nothing: without the binary `measure_syncthing` returns None and the script says how to get
it. With --json the last line of output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["BulkFigure", "SyncthingFigures", "measure_syncthing", "messages_needed", "syncthing_missing_hint"]

FOLDER = "chat"  # watcher off, rescanned on request: single-file rescan and bulk
WATCHED = "watched"  # watcher on (Syncthing's default): single-file watcher figure only
SINGLE_TRIALS = 5
WATCHER_TRIALS = 3
RESCAN_INTERVAL_S = 86_400  # a day: no periodic scan lands inside a measurement
WATCHER_DELAY_S = 10  # Syncthing's default fsWatcherDelayS, kept
POLL_S = 0.002  # B's disk, while timing
REST_POLL_S = 0.1  # REST, while waiting for quiet
TEMP_PREFIX = ".syncthing."  # Syncthing's in-progress files on B: not delivered yet
# Bulk files go 1,000 to a directory (as a file-based chat would shard them by channel or day).
# One flat directory is much slower and grows worse than linearly: with the default
# caseSensitiveFS=false, Syncthing checks each pulled file's name against its directory's
# listing, so 10,000 files in one directory took 56 s here, against 25 s sharded (and 22 s flat
# with caseSensitiveFS=true, a non-default setting).
FILES_PER_DIR = 1_000

# Bulk counts for the standalone script. 100,000 files is left out of the full run: it adds
# ~4 minutes (measured here on 2 cores: 198 s until all were on B, plus ~26 s of writing and
# scanning on A inside that and ~50 s of setup, checking and settling) for no new information:
# sharded 1,000 to a directory, Syncthing's rate stays flat (504 files/s at 100k, 380-400 at
# 10k, on a machine shared with other jobs), so the figure is ten times the 10k one, and 53 MB
# on the wire is ~533 bytes/file, as at 10k (~525). `--counts 100000` still runs it.
QUICK_COUNTS = (1_000,)
FULL_COUNTS = (1_000, 10_000)

# Options set in both config.xml files: loopback only, nothing phones home.
OPTIONS = {
    "globalAnnounceEnabled": "false",
    "localAnnounceEnabled": "false",
    "relaysEnabled": "false",
    "natEnabled": "false",
    "urAccepted": "-1",
    "autoUpgradeIntervalH": "0",
    "crashReportingEnabled": "false",
    "announceLANAddresses": "false",
    "startBrowser": "false",
    "reconnectionIntervalS": "5",  # if the first dial raced the peer's start, retry soon
}
# What the running instances must report back through /rest/config/options.
EXPECTED_OPTIONS = {
    "globalAnnounceEnabled": False,
    "localAnnounceEnabled": False,
    "relaysEnabled": False,
    "natEnabled": False,
    "urAccepted": -1,
    "autoUpgradeIntervalH": 0,
    "crashReportingEnabled": False,
}


@dataclass(frozen=True)
class BulkFigure:
    messages: int
    seconds: float  # writing N files on A + scan request + until all N exist on B
    wire_bytes: int  # A<->B protocol bytes, both directions, for the whole transfer


@dataclass(frozen=True)
class SyncthingFigures:
    version: str
    single_file_rescan_ms: float  # median of SINGLE_TRIALS
    single_file_watcher_ms: float | None  # median of WATCHER_TRIALS; None when not measured
    bulk: list[BulkFigure]


def syncthing_missing_hint() -> str:
    return "Syncthing not found (no `syncthing` on PATH): install it with `apt-get install syncthing` (Debian/Ubuntu)."


def messages_needed(counts: Sequence[int], *, watcher: bool) -> int:
    """Messages `measure_syncthing` writes in all, one distinct file each."""
    return 1 + SINGLE_TRIALS + sum(counts) + (WATCHER_TRIALS if watcher else 0)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] syncthing: {message}", file=sys.stderr, flush=True)


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (all held open while picking, so none repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, interval_s: float = REST_POLL_S) -> Any:
    """Poll `check` until it returns something truthy, or raise TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"syncthing: timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


# --- one instance -------------------------------------------------------------------


class Instance:
    """One Syncthing in its own home, REST on 127.0.0.1 with a known API key."""

    def __init__(self, name: str, root: Path, gui_port: int, listen_port: int) -> None:
        self.name = name
        self.home = root / f"home-{name}"
        self.data = root / f"data-{name}"  # the shared folders live here
        self.api_key = secrets.token_hex(16)
        self.gui_port, self.listen_port = gui_port, listen_port
        self.device_id = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / f"{name}.log"

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.listen_port}"

    def folder(self, folder_id: str) -> Path:
        return self.data / folder_id

    def generate(self, timeout_s: float) -> None:
        out = subprocess.run(
            ["syncthing", "generate", f"--home={self.home}", "--no-default-folder"],
            env=syncthing_env(), capture_output=True, text=True, timeout=timeout_s, check=True,
        )
        # "Device ID: XXXXXXX-..." is logged; the config has it too, which is what we trust
        self.device_id = ET.parse(self.home / "config.xml").getroot().find("device").get("id")  # type: ignore[union-attr]
        assert self.device_id and self.device_id in out.stdout + out.stderr, "syncthing generate printed another device id"

    def configure(self, peer: Instance, folders: dict[str, bool]) -> None:
        """Rewrite config.xml: loopback GUI/REST and listener, nothing announced or reported,
        `peer` at its explicit address, `folders` (id -> fsWatcherEnabled) shared with it."""
        path = self.home / "config.xml"
        tree = ET.parse(path)
        root = tree.getroot()
        gui = root.find("gui")
        assert gui is not None
        gui.set("tls", "false")
        gui.find("address").text = f"127.0.0.1:{self.gui_port}"  # type: ignore[union-attr]
        gui.find("apikey").text = self.api_key  # type: ignore[union-attr]
        options = root.find("options")
        assert options is not None
        for listen in options.findall("listenAddress"):
            options.remove(listen)
        ET.SubElement(options, "listenAddress").text = self.address
        for key, value in OPTIONS.items():
            element = options.find(key)
            if element is None:
                element = ET.SubElement(options, key)
            element.text = value
        me = root.find("device")
        assert me is not None and me.get("id") == self.device_id
        me.set("name", self.name)
        me.find("address").text = self.address  # type: ignore[union-attr]
        defaults = root.find("defaults")
        assert defaults is not None
        other = copy.deepcopy(defaults.find("device"))
        assert other is not None
        other.set("id", peer.device_id)
        other.set("name", peer.name)
        other.find("address").text = peer.address  # type: ignore[union-attr]
        root.insert(list(root).index(me) + 1, other)
        for position, (folder_id, watcher) in enumerate(folders.items()):
            folder = copy.deepcopy(defaults.find("folder"))
            assert folder is not None
            path_ = self.folder(folder_id)
            (path_ / ".stfolder").mkdir(parents=True, exist_ok=True)  # the folder marker
            folder.attrib.update(
                id=folder_id, label=folder_id, path=str(path_), type="sendreceive",
                rescanIntervalS=str(RESCAN_INTERVAL_S), fsWatcherEnabled=str(watcher).lower(), fsWatcherDelayS=str(WATCHER_DELAY_S),
            )
            for device in folder.findall("device"):
                folder.remove(device)
            for device_id in (self.device_id, peer.device_id):
                device = ET.Element("device", id=device_id, introducedBy="")
                ET.SubElement(device, "encryptionPassword")
                folder.insert(0, device)
            root.insert(position, folder)
        tree.write(path, encoding="utf-8", xml_declaration=False)

    def start(self) -> None:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["syncthing", "serve", f"--home={self.home}", "--no-browser", "--no-restart", "--no-upgrade", "--no-default-folder", "--skip-port-probing"],
                env=syncthing_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def rest(self, method: str, endpoint: str, timeout_s: float = 10, **query: str) -> Any:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"syncthing {self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
        url = f"http://127.0.0.1:{self.gui_port}{endpoint}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        request = urllib.request.Request(url, method=method, headers={"X-API-Key": self.api_key})
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read()
        return json.loads(body) if body.strip() else None

    def alive(self) -> bool:
        try:
            return self.rest("GET", "/rest/system/ping", timeout_s=2) == {"ping": "pong"}
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def connection(self, peer: Instance) -> dict[str, Any]:
        return self.rest("GET", "/rest/system/connections")["connections"].get(peer.device_id, {})

    def wire_bytes(self, peer: Instance) -> int:
        c = self.connection(peer)
        return int(c.get("inBytesTotal", 0)) + int(c.get("outBytesTotal", 0))

    def scan(self, folder_id: str, timeout_s: float) -> None:
        """Returns once the scan is done (Syncthing answers the POST after scanning)."""
        self.rest("POST", "/rest/db/scan", timeout_s=timeout_s, folder=folder_id)

    def status(self, folder_id: str) -> dict[str, Any]:
        return self.rest("GET", "/rest/db/status", folder=folder_id)


def syncthing_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(STNOUPGRADE="1", STNORESTART="1", STNODEFAULTFOLDER="1")
    return env


def check_offline(instance: Instance) -> None:
    """The running instance must report the loopback-only settings it was given."""
    options = instance.rest("GET", "/rest/config/options")
    wrong = {k: options.get(k) for k, v in EXPECTED_OPTIONS.items() if options.get(k) != v}
    if options.get("listenAddresses") != [instance.address]:
        wrong["listenAddresses"] = options.get("listenAddresses")
    if wrong:
        raise RuntimeError(f"syncthing {instance.name} is not configured loopback-only: {wrong}")


# --- measurements -------------------------------------------------------------------


class Messages:
    """Hands out the caller's messages in order, cycling if there are too few."""

    def __init__(self, messages: Sequence[bytes]) -> None:
        if not messages:
            raise ValueError("measure_syncthing needs at least one message")
        self.messages, self.used = messages, 0

    def take(self, count: int) -> list[bytes]:
        out = [self.messages[(self.used + i) % len(self.messages)] for i in range(count)]
        self.used += count
        return out


def delivered(path: Path, content: bytes) -> bool:
    try:
        return path.read_bytes() == content
    except FileNotFoundError:
        return False


def single_file_ms(a: Instance, b: Instance, folder_id: str, name: str, content: bytes, *, rescan: bool, timeout_s: float) -> float:
    """Write one file on A (and ask for a scan unless the watcher is to find it): ms until B has it."""
    target = b.folder(folder_id) / name
    start = time.perf_counter()
    (a.folder(folder_id) / name).write_bytes(content)
    if rescan:
        a.scan(folder_id, timeout_s)
    wait_for(f"{name} on B", lambda: delivered(target, content), timeout_s, POLL_S)
    return (time.perf_counter() - start) * 1000


def count_files(directory: Path) -> int:
    try:
        return sum(1 for e in os.scandir(directory) if not e.name.startswith(TEMP_PREFIX))
    except FileNotFoundError:
        return 0


def wait_quiet(a: Instance, b: Instance, folder_id: str, timeout_s: float) -> None:
    """Both sides idle, A sees B complete, and the connection's byte totals have stopped moving."""

    def settled() -> bool:
        sa, sb = a.status(folder_id), b.status(folder_id)
        done = a.rest("GET", "/rest/db/completion", folder=folder_id, device=b.device_id)
        return sa["state"] == sb["state"] == "idle" and sb["needFiles"] == 0 and done.get("needItems", 1) == 0 and sb["localFiles"] == sa["localFiles"]

    wait_for("both instances idle", settled, timeout_s)
    last = [-1]

    def stable() -> bool:
        now = a.wire_bytes(b)
        same, last[0] = now == last[0], now
        return same

    wait_for("connection byte totals to settle", stable, timeout_s, 0.5)


def bulk(a: Instance, b: Instance, contents: list[bytes], timeout_s: float) -> BulkFigure:
    n = len(contents)
    sub = f"bulk-{n}-{secrets.token_hex(3)}"
    src, dst = a.folder(FOLDER) / sub, b.folder(FOLDER) / sub
    paths = [Path(f"{i // FILES_PER_DIR:04d}", f"msg-{i:07d}.txt") for i in range(n)]
    wait_quiet(a, b, FOLDER, timeout_s)
    wire_before = a.wire_bytes(b)
    start = time.perf_counter()
    for i in range(0, n, FILES_PER_DIR):
        (src / paths[i].parent).mkdir(parents=True)
    for path, content in zip(paths, contents, strict=True):
        (src / path).write_bytes(content)
    a.scan(FOLDER, timeout_s)
    scanned = time.perf_counter() - start
    # Listing B's directory costs CPU the instances need (~5 ms per 10k entries on 2 cores),
    # so poll at 1% of the time elapsed so far (10 ms to 1 s): the figure is off by <= 1%.
    deadline = time.monotonic() + timeout_s
    shards = [dst / paths[i].parent for i in range(0, n, FILES_PER_DIR)]
    while (on_b := sum(map(count_files, shards))) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"syncthing: timed out after {timeout_s:.0f} s with {on_b:,} of {n:,} files on B")
        time.sleep(min(1.0, max(0.01, 0.01 * (time.perf_counter() - start))))
    seconds = time.perf_counter() - start
    wrong = [path for path, content in zip(paths, contents, strict=True) if (dst / path).read_bytes() != content]
    if wrong:
        raise RuntimeError(f"syncthing: {len(wrong)} of {n} files differ on B")
    wait_quiet(a, b, FOLDER, timeout_s)
    figure = BulkFigure(messages=n, seconds=seconds, wire_bytes=a.wire_bytes(b) - wire_before)
    progress(f"{n:,} files on B in {seconds:.2f} s (written and scanned on A in {scanned:.2f} s), {figure.wire_bytes:,} bytes on the wire")
    return figure


def measure_syncthing(messages: Sequence[bytes], counts: Sequence[int], *, watcher: bool, timeout_s: float) -> SyncthingFigures | None:
    """Run two Syncthing instances on loopback and measure them (see the module docstring).

    `messages`: chat messages, one file each, used in order (distinct ones: see messages_needed);
    `counts`: file counts for the bulk figures, one fresh directory each; `watcher`: also time a
    single file picked up by the filesystem watcher alone (~10 s a trial); `timeout_s`: bound on
    every wait (start, connect, each trial, each bulk count), beyond which TimeoutError.
    Returns None if the `syncthing` binary is missing. Processes and temporary directories are
    always removed."""
    if shutil.which("syncthing") is None:
        return None
    supply = Messages(messages)
    if len(messages) < messages_needed(counts, watcher=watcher):
        progress(f"only {len(messages):,} messages for {messages_needed(counts, watcher=watcher):,} files: reused, so some transfers are local block copies")
    root = Path(tempfile.mkdtemp(prefix="rallypoint-syncthing-"))
    ports = free_ports(4)
    a, b = Instance("alpha", root, *ports[:2]), Instance("bravo", root, *ports[2:])
    try:
        folders = {FOLDER: False, **({WATCHED: True} if watcher else {})}
        for me in (a, b):
            me.generate(timeout_s)
        for me, peer in ((a, b), (b, a)):
            me.configure(peer, folders)
        for me in (a, b):
            me.start()
        for me in (a, b):
            wait_for(f"{me.name}'s REST API", me.alive, timeout_s)
            check_offline(me)
        version = a.rest("GET", "/rest/system/version")["version"]
        wait_for("A and B to connect", lambda: a.connection(b).get("connected") and b.connection(a).get("connected"), timeout_s)
        for folder_id in folders:
            wait_quiet(a, b, folder_id, timeout_s)
        progress(f"{version}: A and B connected on 127.0.0.1; folders {', '.join(folders)}")

        warm = single_file_ms(a, b, FOLDER, "warm-up.txt", supply.take(1)[0], rescan=True, timeout_s=timeout_s)
        rescans = []
        for trial, content in enumerate(supply.take(SINGLE_TRIALS)):
            wait_quiet(a, b, FOLDER, timeout_s)
            rescans.append(single_file_ms(a, b, FOLDER, f"single-{trial}.txt", content, rescan=True, timeout_s=timeout_s))
        progress(f"single file with a scan request: {', '.join(f'{ms:.0f}' for ms in rescans)} ms (warm-up {warm:.0f} ms)")

        figures = [bulk(a, b, supply.take(n), timeout_s) for n in counts]

        watched = None
        if watcher:
            times = []
            for trial, content in enumerate(supply.take(WATCHER_TRIALS)):
                wait_quiet(a, b, WATCHED, timeout_s)
                times.append(single_file_ms(a, b, WATCHED, f"watched-{trial}.txt", content, rescan=False, timeout_s=timeout_s))
            watched = statistics.median(times)
            progress(f"single file, watcher only: {', '.join(f'{ms:.0f}' for ms in times)} ms")
        return SyncthingFigures(version=version, single_file_rescan_ms=statistics.median(rescans), single_file_watcher_ms=watched, bulk=figures)
    except BaseException:
        for me in (a, b):
            progress(f"{me.name}'s log, last lines:\n{me.log_tail()}")
        raise
    finally:
        for me in (a, b):
            me.stop()
        shutil.rmtree(root, ignore_errors=True)


# --- standalone ---------------------------------------------------------------------


def standalone_messages(count: int) -> list[bytes]:
    """~200-byte chat messages as a file-based chat would store them: the shared generated text
    (bench/chat.py) in a small JSON envelope, each one distinct."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from chat import chat_lines

    authors = ("alice", "bob", "carol", "dmitri", "eve")
    return [
        json.dumps({"id": f"{i:016x}", "channel": "general", "author": authors[i % len(authors)], "ts": 1_717_200_000_000 + i * 1_000, "text": text}, ensure_ascii=False).encode()
        for i, text in enumerate(chat_lines(count))
    ]


def report(figures: SyncthingFigures, quick: bool, message_bytes: float, elapsed_s: float) -> list[str]:
    watcher = f"{figures.single_file_watcher_ms:,.0f} ms (median of {WATCHER_TRIALS})" if figures.single_file_watcher_ms is not None else "not measured (--quick)"
    lines = [
        f"Syncthing {figures.version} on loopback ({'quick' if quick else 'full'}), {os.cpu_count()} cores: one file per message, "
        f"{message_bytes:.0f} bytes each on average; {elapsed_s:.0f} s in all",
        f"  single file, scan requested via REST, until on B   {figures.single_file_rescan_ms:>10,.1f} ms (median of {SINGLE_TRIALS})",
        f"  single file, filesystem watcher only, until on B   {watcher:>10}",
        "",
        f"  {'files':>10}{'seconds':>10}{'files/s':>10}{'wire bytes':>14}{'bytes/file':>12}",
    ]
    for f in figures.bulk:
        lines.append(f"  {f.messages:>10,}{f.seconds:>10.2f}{f.messages / f.seconds:>10,.0f}{f.wire_bytes:>14,}{f.wire_bytes / f.messages:>12,.0f}")
    lines.append("  (bulk: writing the files on A + scan request until all are on B; wire: protocol bytes both ways, under TLS)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description="Syncthing moving chat messages, one file each, between two folders on loopback.")
    parser.add_argument("--quick", action="store_true", help=f"bulk {', '.join(f'{n:,}' for n in QUICK_COUNTS)} files, no watcher figure (well under a minute)")
    parser.add_argument("--json", action="store_true", help="end with one line of JSON")
    parser.add_argument("--counts", type=lambda s: sorted({int(x) for x in s.split(",")}), help="comma-separated bulk file counts")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds any single wait may take (default 300)")
    args = parser.parse_args()
    counts = args.counts or list(QUICK_COUNTS if args.quick else FULL_COUNTS)
    watcher = not args.quick
    messages = standalone_messages(messages_needed(counts, watcher=watcher))
    message_bytes = sum(map(len, messages)) / len(messages)
    start = time.perf_counter()
    figures = measure_syncthing(messages, counts, watcher=watcher, timeout_s=args.timeout)
    elapsed = time.perf_counter() - start
    if figures is None:
        print(syncthing_missing_hint(), flush=True)
    else:
        print("\n".join(report(figures, args.quick, message_bytes, elapsed)), flush=True)
    if args.json:
        print(json.dumps({
            "quick": args.quick,
            "counts": counts,
            "message_bytes": round(message_bytes, 1),
            "single_trials": SINGLE_TRIALS,
            "watcher_trials": WATCHER_TRIALS if watcher else 0,
            "elapsed_s": round(elapsed, 1),
            "syncthing": None if figures is None else {
                **asdict(figures),
                "single_file_rescan_ms": round(figures.single_file_rescan_ms, 2),
                "single_file_watcher_ms": None if figures.single_file_watcher_ms is None else round(figures.single_file_watcher_ms, 1),
                "bulk": [
                    {**asdict(f), "seconds": round(f.seconds, 4), "files_per_s": round(f.messages / f.seconds, 1), "wire_bytes_per_message": round(f.wire_bytes / f.messages, 1)}
                    for f in figures.bulk
                ],
            },
            "note": syncthing_missing_hint() if figures is None else None,
        }), flush=True)


if __name__ == "__main__":
    main()
