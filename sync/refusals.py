"""How refused LAN connections are reported without a flood of them flooding the audit log,
the event stream (the console, `serve`'s log) or the store's writer.

A refusal is reported on its own (an event and an audit entry) if no refusal of the same kind
from the same address was reported in the last `repeat_s`, and at most `per_interval` are
reported on their own per interval; the rest are counted, and each interval ends with one
summary per kind: "refused 1,234 connections from 57 addresses in the last 10 s: unknown
node". Memory is bounded whatever the flood: the addresses remembered and counted are capped.

Pure: time is a parameter; the service calls `summaries` once per interval."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

MAX_REMEMBERED = 1024  # (address, kind) pairs whose last report is remembered
MAX_ADDRESSES_COUNTED = 4096  # distinct addresses counted per kind and interval; beyond, "4,096+"


@dataclass(frozen=True)
class RefusalSummary:
    kind: str
    refusals: int
    addresses: int
    addresses_capped: bool
    seconds: float

    def text(self) -> str:
        addresses = f"{self.addresses:,}{'+' if self.addresses_capped else ''} address{'es' if self.addresses != 1 else ''}"
        return f"refused {self.refusals:,} connection{'s' if self.refusals != 1 else ''} from {addresses} in the last {self.seconds:.0f} s: {self.kind}"


@dataclass
class _Count:
    refusals: int = 0
    addresses: set[str] = field(default_factory=set)


class RefusalLog:
    def __init__(self, now: float, *, per_interval: int = 10, repeat_s: float = 60.0) -> None:
        self.per_interval = per_interval
        self.repeat_s = repeat_s
        self._interval_start = now
        self._reported = 0
        self._last_report: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._unreported: dict[str, _Count] = {}

    def note(self, address: str, kind: str, now: float) -> bool:
        """Counts a refusal; True if it is to be reported on its own."""
        key = (address, kind)
        last = self._last_report.get(key)
        if (last is None or now - last >= self.repeat_s) and self._reported < self.per_interval:
            self._reported += 1
            self._last_report[key] = now
            self._last_report.move_to_end(key)
            while len(self._last_report) > MAX_REMEMBERED:
                self._last_report.popitem(last=False)
            return True
        count = self._unreported.setdefault(kind, _Count())
        count.refusals += 1
        if len(count.addresses) < MAX_ADDRESSES_COUNTED:
            count.addresses.add(address)
        return False

    def summaries(self, now: float) -> list[RefusalSummary]:
        """What was refused but not reported since the last call, by kind; starts a new interval."""
        seconds = now - self._interval_start
        out = [
            RefusalSummary(kind, count.refusals, len(count.addresses), len(count.addresses) >= MAX_ADDRESSES_COUNTED, seconds)
            for kind, count in sorted(self._unreported.items())
        ]
        self._interval_start, self._reported, self._unreported = now, 0, {}
        return out
