"""Human formatting for the console: times, ages and sizes, in one place."""

from __future__ import annotations

from datetime import datetime


def clock_time(ms: int) -> str:
    """Local HH:MM, with the date in front when it is not today."""
    moment = datetime.fromtimestamp(ms / 1000)
    return moment.strftime("%H:%M") if moment.date() == datetime.now().date() else moment.strftime("%Y-%m-%d %H:%M")


def short_time(ms: int) -> str:
    """Month, day and time: a table column (the admin screen's audit log)."""
    return datetime.fromtimestamp(ms / 1000).strftime("%m-%d %H:%M")


def date_time(seconds: float) -> str:
    """A file's time (seconds since the epoch), local: the courier's quarantine list."""
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M")


def clock_seconds() -> str:
    """Now, local HH:MM:SS: when a courier run ended."""
    return datetime.now().strftime("%H:%M:%S")


def ago(ms: int | None) -> str:
    if ms is None:
        return "never"
    seconds = max(0, int(datetime.now().timestamp() - ms / 1000))
    return f"{seconds}s ago" if seconds < 120 else f"{seconds // 60}m ago" if seconds < 7200 else clock_time(ms)


def file_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    scaled = size / 1024
    for unit in ("KB", "MB"):
        if scaled < 1024:
            return f"{scaled:.1f} {unit}"
        scaled /= 1024
    return f"{scaled:.1f} GB"
