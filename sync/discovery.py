"""mDNS discovery of Rallypoint nodes on the LAN (DESIGN.md, "LAN: discovery and live sync").

Every node advertises one `_rallypoint._tcp.local.` service whose instance name is its node id,
with TXT records `v` (DISCOVERY_VERSION), `node` (node id) and `ws` (workspace id) and the port of
its LAN session listener. Nothing secret goes in mDNS, and any standard browser (avahi-browse,
dns-sd) can see the service. A `Discovery` advertises this node and browses for the others; it
calls `on_event` (in the event loop thread) with a `PeerSeen` when a peer appears or its advert
changes and with a `PeerGone` when the peer says goodbye (or its records expire). Peers of other
workspaces are reported too, with their workspace id: the caller may list them but must not sync.

mDNS is unauthenticated: anyone on the LAN can announce anything, so a PeerSeen is only a hint of
where to connect; the LAN session authenticates before anything is trusted. What discovery must
guarantee is that a hostile or broken neighbour costs bounded memory and time:

- adverts are validated strictly (the instance name must be the node id of the TXT record, ids
  must pass their check character, one value per key, a real port and address); anything else is
  counted in `stats` and ignored, with at most one warning per WARN_INTERVAL_S in the log;
- the peer table holds at most `max_peers` entries; when it is full, new names are dropped and a
  peer already in the table is never evicted for a newcomer (only its own goodbye removes it);
- at most `max_pending` adverts are resolved over the network at once (adverts that arrive
  complete are validated straight from the cache); more are dropped and picked up again when
  re-announced, or by a re-query at most every REQUERY_INTERVAL_S;
- zeroconf's DNS cache is capped by zeroconf (10,000 records, evicting the record closest to
  expiry) but a flood of names with long TTLs would fill it, push our peers' records out, and
  leave an entry per name in the browser's refresh scheduler, which zeroconf never trims. So every
  PRUNE_INTERVAL_S, and after every PRUNE_AFTER_UPDATES received records, the cache is pruned to
  what this node needs (records of known peers, of adverts being resolved, and their hosts'
  addresses) and the scheduler forgets every other name.

IPv4 only: the LAN session listens on IPv4 and a field LAN always has IPv4 (link-local at least),
while binding mDNS on IPv6 needs interface indexes rather than addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Self

import ifaddr  # zeroconf's own dependency, and how zeroconf itself lists interface addresses
from zeroconf import (  # type: ignore[attr-defined]  # the DNS record classes are exported, but left out of __all__
    DNSPointer,
    DNSRecord,
    DNSService,
    InterfaceChoice,
    IPVersion,
    NonUniqueNameException,
    RecordUpdateListener,
    ServiceInfo,
    ServiceStateChange,
    current_time_millis,
)
from zeroconf import Error as ZeroconfError
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from appliance.errors import InvalidInput
from appliance.ids import normalise_key_id
from sync.errors import DiscoveryError

log = logging.getLogger(__name__)

SERVICE_TYPE = "_rallypoint._tcp.local."
DISCOVERY_VERSION = 1

RESOLVE_TIMEOUT_S = 3.0  # an advert not complete after this long is dropped until re-announced
PRUNE_INTERVAL_S = 2.0
PRUNE_AFTER_UPDATES = 1_000  # received records between prunes under a flood (zeroconf's cap is 10,000)
REQUERY_INTERVAL_S = 20.0  # at most one extra PTR query this often, and only after adverts were dropped
WARN_INTERVAL_S = 60.0
MAX_ADDRESSES = 8  # per peer; more A records than this for one host are ignored
CLOSE_TIMEOUT_S = 5.0

_KEY_ID_CHARS = 23  # "ABCDEFG-HIJKLMN-OPQRSTC"
_MAX_TXT_BYTES = 1_300
_SHOWN_NAME_CHARS = 80


@dataclass(frozen=True)
class Advert:
    """What this node announces: its node id, its workspace id and its LAN session port."""

    node_id: str
    workspace_id: str
    port: int

    def __post_init__(self) -> None:
        if not is_key_id(self.node_id):
            raise ValueError(f"not a canonical node id: {self.node_id!r}")
        if not is_key_id(self.workspace_id):
            raise ValueError(f"not a canonical workspace id: {self.workspace_id!r}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port out of range: {self.port}")


@dataclass(frozen=True)
class PeerSeen:
    """A peer's validated advert: an event, and an entry of `Discovery.peers()`."""

    node_id: str
    workspace_id: str
    addresses: tuple[str, ...]
    port: int
    version: int


@dataclass(frozen=True)
class PeerGone:
    node_id: str


DiscoveryEvent = PeerSeen | PeerGone


@dataclass
class DiscoveryStats:
    """Counters of what discovery ignored, so a flood or a broken neighbour shows without log spam."""

    invalid: int = 0  # adverts that failed validation (bad instance name, TXT, port or address)
    resolve_failed: int = 0  # adverts not complete within RESOLVE_TIMEOUT_S
    dropped_full: int = 0  # new names ignored because the peer table was full
    dropped_busy: int = 0  # adverts ignored because max_pending resolutions were running
    pruned_records: int = 0  # records removed from zeroconf's cache
    requeries: int = 0  # extra PTR queries sent to pick up dropped adverts


def is_key_id(text: str) -> bool:
    """True for a node or workspace id in its canonical form (upper case, dashes, check character)."""
    if len(text) != _KEY_ID_CHARS:
        return False
    try:
        return normalise_key_id(text) == text
    except InvalidInput:
        return False


def instance_of(name: str) -> str | None:
    """The instance part of a full service name of our type, or None for another type."""
    suffix = "." + SERVICE_TYPE
    if len(name) <= len(suffix) or not name.lower().endswith(suffix):
        return None
    return name[: -len(suffix)]


def parse_txt(text: bytes) -> dict[str, str]:
    """The TXT record as `key=value` strings, strictly: ASCII keys (compared without case, as
    RFC 6763 says), UTF-8 values, every key once. Raises ValueError otherwise."""
    if len(text) > _MAX_TXT_BYTES:
        raise ValueError("TXT record too long")
    items: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        length = text[pos]
        item = text[pos + 1 : pos + 1 + length]
        if len(item) != length:
            raise ValueError("TXT record truncated")
        pos += 1 + length
        if not item:
            continue  # an empty string is how an empty TXT record is written
        key, sep, value = item.partition(b"=")
        if not sep or not key or not key.isascii() or not key.decode().isprintable():
            raise ValueError("TXT item without a key=value form")
        name = key.decode().lower()
        if name in items:
            raise ValueError(f"TXT key {name!r} given twice")
        items[name] = value.decode("utf-8")  # UnicodeDecodeError is a ValueError
    return items


def peer_from_info(name: str, port: int | None, text: bytes, addresses: Sequence[str]) -> PeerSeen:
    """A resolved advert checked field by field; raises ValueError saying what is wrong.
    Unknown TXT keys are allowed, so a later version can add some without breaking this one."""
    instance = instance_of(name)
    if instance is None or not is_key_id(instance):
        raise ValueError("instance name is not a node id")
    txt = parse_txt(text)
    if txt.get("v") != str(DISCOVERY_VERSION):
        raise ValueError(f"unsupported version {txt.get('v')!r}")
    node_id, workspace_id = txt.get("node", ""), txt.get("ws", "")
    if not is_key_id(node_id) or node_id != instance:
        raise ValueError("TXT node is not the instance name's node id")
    if not is_key_id(workspace_id):
        raise ValueError("TXT ws is not a workspace id")
    if port is None or not 1 <= port <= 65535:
        raise ValueError(f"port out of range: {port}")
    usable = set()
    for text_address in addresses:
        address = ipaddress.ip_address(text_address)
        if address.version == 4 and not (address.is_unspecified or address.is_multicast or address == ipaddress.IPv4Address("255.255.255.255")):
            usable.add(address)
    if not usable:
        raise ValueError("no usable IPv4 address")
    shown = tuple(str(a) for a in sorted(usable)[:MAX_ADDRESSES])
    return PeerSeen(node_id=node_id, workspace_id=workspace_id, addresses=shown, port=port, version=DISCOVERY_VERSION)


def _host_addresses() -> list[str]:
    """The IPv4 addresses to advertise when bound to all interfaces: every non-loopback one
    (link-local included: a field LAN may have no DHCP), or loopback when there is nothing else."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and ip.ip not in found:
                found.append(ip.ip)
    outside = [a for a in found if not ipaddress.IPv4Address(a).is_loopback]
    return outside or found


def _shown(name: str) -> str:
    return repr(name[:_SHOWN_NAME_CHARS])  # repr: names come from the network and may hold control characters


class _RecordCounter(RecordUpdateListener):
    """Counts every record zeroconf receives, so a flood triggers a prune before the cache fills."""

    def __init__(self, threshold: int, on_threshold: Callable[[], None]) -> None:
        super().__init__()
        self._threshold = threshold
        self._on_threshold = on_threshold
        self._count = 0

    def async_update_records(self, zc: Any, now: float, records: list[Any]) -> None:
        self._count += len(records)
        if self._count >= self._threshold:
            self._count = 0
            self._on_threshold()

    def async_update_records_complete(self) -> None:
        pass


class Discovery:
    """Advertises this node and reports its peers; an async context manager.

    `interfaces` are the IPv4 addresses to bind mDNS to (e.g. ["127.0.0.1"] or a namespace's veth
    address), which are also the addresses advertised; None binds all interfaces and advertises
    every non-loopback IPv4 address of the host."""

    def __init__(
        self,
        advert: Advert,
        on_event: Callable[[DiscoveryEvent], None],
        *,
        interfaces: Sequence[str] | None = None,
        max_peers: int = 256,
        max_pending: int = 32,
    ) -> None:
        if max_peers < 1 or max_pending < 1:
            raise ValueError("max_peers and max_pending must be at least 1")
        if interfaces is not None:
            if not interfaces:
                raise DiscoveryError("no network interface given for mDNS")
            for address in interfaces:
                try:
                    ipaddress.IPv4Address(address)
                except ValueError:
                    raise DiscoveryError(f"mDNS binds IPv4 addresses only, not {address!r}") from None
        self._advert = advert
        self._on_event = on_event
        self._interfaces = list(interfaces) if interfaces is not None else None
        self._max_peers = max_peers
        self._max_pending = max_pending
        self._own_name = f"{advert.node_id}.{SERVICE_TYPE}"
        self._own_key = self._own_name.lower()
        self._peers: dict[str, PeerSeen] = {}  # by lower-cased service name, as zeroconf keys its cache
        self._pending: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()  # names whose records changed while being resolved
        self._stats = DiscoveryStats()
        self._azc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._counter: _RecordCounter | None = None
        self._info: AsyncServiceInfo | None = None
        self._registered = False
        self._closing = False
        self._tick_handle: asyncio.TimerHandle | None = None
        self._prune_soon = False
        self._missed = False  # adverts were dropped that a re-query could pick up
        self._last_requery = -REQUERY_INTERVAL_S
        self._last_invalid_warning = -WARN_INTERVAL_S  # monotonic time may start near zero
        self._last_full_warning = -WARN_INTERVAL_S

    # --- public -----------------------------------------------------------------------------

    def peers(self) -> list[PeerSeen]:
        return sorted(self._peers.values(), key=lambda p: p.node_id)

    @property
    def stats(self) -> DiscoveryStats:
        return replace(self._stats)

    async def __aenter__(self) -> Self:
        where = ", ".join(self._interfaces) if self._interfaces is not None else "all interfaces"
        try:
            addresses = self._interfaces if self._interfaces is not None else _host_addresses()
            if not addresses:
                raise DiscoveryError("no IPv4 address to advertise over mDNS")
            try:
                self._azc = AsyncZeroconf(
                    interfaces=self._interfaces if self._interfaces is not None else InterfaceChoice.All,
                    ip_version=IPVersion.V4Only,
                )
            except (ZeroconfError, OSError, ValueError, RuntimeError) as exc:  # RuntimeError: no usable interface
                raise DiscoveryError(f"cannot start mDNS on {where}: {exc}") from exc
            zc = self._azc.zeroconf
            try:
                await zc.async_wait_for_start(timeout=CLOSE_TIMEOUT_S)
            except (ZeroconfError, OSError) as exc:
                raise DiscoveryError(f"cannot start mDNS on {where}: {exc}") from exc
            if not zc.engine.senders:  # zeroconf logs and skips an interface it cannot join
                raise DiscoveryError(f"cannot start mDNS on {where}: no interface could be bound")
            loop = asyncio.get_running_loop()
            self._counter = _RecordCounter(PRUNE_AFTER_UPDATES, self._request_prune)
            zc.async_add_listener(self._counter, None)
            self._browser = AsyncServiceBrowser(zc, [SERVICE_TYPE], handlers=[self._on_service_state_change])
            self._info = AsyncServiceInfo(
                SERVICE_TYPE,
                self._own_name,
                port=self._advert.port,
                properties={"v": str(DISCOVERY_VERSION), "node": self._advert.node_id, "ws": self._advert.workspace_id},
                server=f"rp-{self._advert.node_id.lower()}.local.",
                parsed_addresses=list(addresses),
            )
            try:
                await (await self._azc.async_register_service(self._info))
            except NonUniqueNameException as exc:
                raise DiscoveryError(f"another node on this LAN already advertises node id {self._advert.node_id}") from exc
            except (ZeroconfError, OSError) as exc:
                raise DiscoveryError(f"cannot advertise on mDNS ({where}): {exc}") from exc
            self._registered = True
            self._tick_handle = loop.call_later(PRUNE_INTERVAL_S, self._tick)
        except BaseException:
            with contextlib.suppress(DiscoveryError):
                await self._shutdown()  # the error that stopped the start is the one to report
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            await self._shutdown()
        except DiscoveryError:
            if exc is None:
                raise
            log.warning("mDNS discovery did not stop cleanly", exc_info=True)

    # --- browsing ---------------------------------------------------------------------------

    def _on_service_state_change(self, zeroconf: Any, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        """Called by the browser in the event loop for every added, updated or removed name."""
        if self._closing:
            return
        key = name.lower()
        if key == self._own_key:
            return  # our own advert, looped back
        if state_change is ServiceStateChange.Removed:
            self._forget(key)
            return
        if key in self._pending:
            self._again.add(key)
            return
        instance = instance_of(name)
        if instance is None or not is_key_id(instance):
            self._note_invalid(name, "instance name is not a node id")  # cheap check first: costs no resolution slot
            return
        if key not in self._peers and len(self._peers) >= self._max_peers:
            self._note_full()
            return
        assert self._azc is not None
        try:
            info = AsyncServiceInfo(SERVICE_TYPE, name)
        except ZeroconfError:
            self._note_invalid(name, "malformed service name")
            return
        if info.load_from_cache(self._azc.zeroconf):
            self._conclude(key, name, info)  # an announcement carries the whole advert: no slot needed
            return
        # Known peers always get their update resolved; they are bounded by max_peers already.
        if key not in self._peers and len(self._pending) >= self._max_pending:
            self._stats.dropped_busy += 1
            self._missed = True
            return
        self._pending[key] = asyncio.get_running_loop().create_task(self._resolve(key, name, info))

    async def _resolve(self, key: str, name: str, info: AsyncServiceInfo) -> None:
        assert self._azc is not None
        try:
            while True:
                complete = await info.async_request(self._azc.zeroconf, RESOLVE_TIMEOUT_S * 1000)
                if self._closing:
                    return
                if not complete:
                    self._stats.resolve_failed += 1
                    self._missed = True
                    return
                self._conclude(key, name, info)
                if key not in self._again:
                    return
                self._again.discard(key)
                info = AsyncServiceInfo(SERVICE_TYPE, name)
        except ZeroconfError as exc:
            self._note_invalid(name, f"resolution failed: {exc}")
        finally:
            self._again.discard(key)
            if self._pending.get(key) is asyncio.current_task():
                del self._pending[key]

    def _conclude(self, key: str, name: str, info: ServiceInfo) -> None:
        """Validates a complete advert and updates the peer table."""
        try:
            peer = peer_from_info(name, info.port, info.text or b"", info.parsed_addresses(IPVersion.V4Only))
        except ValueError as exc:
            self._note_invalid(name, str(exc))  # a known peer keeps its last good advert
            return
        old = self._peers.get(key)
        if old is None and len(self._peers) >= self._max_peers:
            self._note_full()
            return
        if old == peer:
            return
        self._peers[key] = peer
        self._emit(peer)

    def _forget(self, key: str) -> None:
        task = self._pending.pop(key, None)
        if task is not None:
            task.cancel()
        self._again.discard(key)
        peer = self._peers.pop(key, None)
        if peer is not None:
            self._emit(PeerGone(peer.node_id))

    def _emit(self, event: DiscoveryEvent) -> None:
        try:
            self._on_event(event)
        except Exception:
            log.exception("discovery event handler failed on %r", event)

    def _note_invalid(self, name: str, reason: str) -> None:
        self._stats.invalid += 1
        log.debug("ignored mDNS advert %s: %s", _shown(name), reason)
        now = time.monotonic()
        if now - self._last_invalid_warning >= WARN_INTERVAL_S:
            self._last_invalid_warning = now
            log.warning("ignoring invalid mDNS adverts (%d so far; latest %s: %s)", self._stats.invalid, _shown(name), reason)

    def _note_full(self) -> None:
        self._stats.dropped_full += 1
        now = time.monotonic()
        if now - self._last_full_warning >= WARN_INTERVAL_S:
            self._last_full_warning = now
            log.warning("peer table full (%d peers): ignoring new mDNS adverts (%d so far)", self._max_peers, self._stats.dropped_full)

    # --- keeping zeroconf's state bounded -----------------------------------------------------

    def _tick(self) -> None:
        self._tick_handle = None
        if self._closing or self._azc is None:
            return
        try:
            self._prune()
            now = time.monotonic()
            if self._missed and now - self._last_requery >= REQUERY_INTERVAL_S:
                self._requery(now)
        except Exception:  # a bug here must not stop the pruning that keeps memory bounded
            log.exception("mDNS discovery housekeeping failed")
        finally:
            self._tick_handle = asyncio.get_running_loop().call_later(PRUNE_INTERVAL_S, self._tick)

    def _request_prune(self) -> None:
        if not self._prune_soon and not self._closing:
            self._prune_soon = True
            asyncio.get_running_loop().call_soon(self._prune)

    def _prune(self) -> None:
        """Removes every cached record this node does not need, and the browser's refresh schedule
        for every name it does not track. This zeroconf instance serves discovery alone, so other
        service types and hosts are not needed either."""
        self._prune_soon = False
        if self._closing or self._azc is None:
            return
        cache = self._azc.zeroconf.cache
        keep = {self._own_key, *self._peers, *self._pending}
        hosts = set()
        for key in keep:
            for record in cache.async_entries_with_name(key):
                if isinstance(record, DNSService):
                    hosts.add(record.server_key)
        type_key = SERVICE_TYPE.lower()
        doomed: list[DNSRecord] = []
        for name in cache.names():
            if name in keep or name in hosts:
                continue
            records = cache.async_entries_with_name(name)
            if name == type_key:
                doomed.extend(r for r in records if not (isinstance(r, DNSPointer) and r.alias.lower() in keep))
            else:
                doomed.extend(records)
        if doomed:
            cache.async_remove_records(doomed)
            self._stats.pruned_records += len(doomed)
        self._prune_scheduler(keep)

    def _prune_scheduler(self, keep: set[str]) -> None:
        """zeroconf's browser schedules a refresh query per PTR it has seen and only forgets one when
        that refresh falls due (75% of a TTL a spoofer may set to decades) or the PTR says goodbye.
        The two attributes used here are public in zeroconf's compiled class (pinned version);
        should a later version drop them this does nothing rather than fail."""
        assert self._browser is not None
        scheduler = self._browser.query_scheduler
        by_alias = getattr(scheduler, "_next_scheduled_for_alias", None)
        heap = getattr(scheduler, "_query_heap", None)
        if not isinstance(by_alias, dict) or not isinstance(heap, list):
            return
        for alias in [a for a in by_alias if a.lower() not in keep]:
            by_alias.pop(alias).cancelled = True
        if len(heap) > 2 * len(by_alias) + 64:
            heap[:] = [query for query in heap if not query.cancelled]
            heapq.heapify(heap)

    def _requery(self, now: float) -> None:
        """Asks for our service type again, listing the peers we know as known answers (so only the
        others reply): picks up adverts dropped while the table or the resolution slots were busy."""
        assert self._browser is not None
        self._missed = False
        self._last_requery = now
        self._stats.requeries += 1
        self._browser.query_scheduler.async_send_ready_queries(False, current_time_millis(), {SERVICE_TYPE})

    # --- shutdown ---------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        """Stops browsing, says goodbye (so peers report PeerGone at once) and closes the sockets."""
        self._closing = True
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        tasks = list(self._pending.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._pending.clear()
        azc, self._azc = self._azc, None
        if azc is None:
            return
        problem: BaseException | None = None
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                if self._browser is not None:
                    await self._browser.async_cancel()
                    self._browser = None
                if self._counter is not None:
                    azc.zeroconf.async_remove_listener(self._counter)
                    self._counter = None
                if self._registered and self._info is not None:
                    self._registered = False
                    await (await azc.async_unregister_service(self._info))
        except (ZeroconfError, OSError, TimeoutError) as exc:
            problem = exc
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await azc.async_close()
        except (ZeroconfError, OSError, TimeoutError) as exc:
            problem = problem or exc
        if problem is not None:
            raise DiscoveryError(f"mDNS discovery did not stop cleanly: {problem or type(problem).__name__}") from problem
