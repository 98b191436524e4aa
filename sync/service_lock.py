"""One LAN service per node home. Two `serve` processes (or `serve` and a console) on one home
would both listen and advertise the same node id; the second is refused instead. The lock is
an flock on a file in the home, held for the service's life and released by the kernel when
its process dies, however it dies."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sync.errors import SyncError

LOCK_FILE = "lan-service.lock"


class ServiceAlreadyRunning(SyncError):
    """Another process runs this node's LAN service."""


class ServiceLock:
    def __init__(self, home: Path) -> None:
        self.path = home / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Takes the lock, or raises ServiceAlreadyRunning naming the process that holds it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise SyncError(f"cannot open {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ServiceAlreadyRunning(
                f"this node's LAN service already runs in process {holder} (`rallypoint serve` or a console): "
                "one per node; what is written here reaches the LAN through it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None
