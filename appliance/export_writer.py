"""Where a compliance export's bytes go: its file, written under a partial name (0600) and given
its real name only once whole and on disk, so a full, read-only or vanished folder never leaves a
file that looks finished; optionally encrypted to a recipient (appliance/export_sealing.py);
a zip of entries for the EML form; the attachments' files in a folder beside it. Blocking IO:
the service calls it from a worker thread."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from appliance import files
from appliance.export_encoders import ZipEntry
from appliance.export_sealing import SealingWriter
from appliance.export_zip import ZipStream

FILES_SUFFIX = ".files"  # the folder of attachments beside an export
SEALED_SUFFIX = ".sealed"  # an attachment encrypted to the recipient


@dataclass(frozen=True)
class Written:
    path: Path
    bytes: int
    sha256: str  # of the file as written (ciphertext when encrypted)
    files_dir: Path | None
    files: int


class _Hashing:
    """Counts and hashes what passes to the file (no `tell`: zipfile then streams)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.raw.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self.raw.flush()


class ExportSink:
    def __init__(self, target: Path, *, zip_entries: bool, recipient: bytes | None, with_files: bool) -> None:
        self.target = target
        self._partial = target.with_name(f".{target.name}.partial")
        self._recipient = recipient
        self._files_partial = target.with_name(f".{target.name}{FILES_SUFFIX}.partial") if with_files else None
        self._files_written = 0
        if target.exists() or (with_files and target.with_name(target.name + FILES_SUFFIX).exists()):
            raise FileExistsError(17, "an export of that name exists already", str(target))
        self._raw = open(files.create_private(self._partial), "wb", buffering=1024 * 1024)  # noqa: SIM115 - closed in commit/abort
        try:
            self._hashing = _Hashing(self._raw)
            self._sealing = SealingWriter(cast(BinaryIO, self._hashing), recipient) if recipient is not None else None
            self._out: _Hashing | SealingWriter = self._sealing or self._hashing
            self._zip = ZipStream(self._out) if zip_entries else None
            if self._files_partial is not None:
                shutil.rmtree(self._files_partial, ignore_errors=True)
                self._files_partial.mkdir(mode=0o700)
        except BaseException:
            self.abort()
            raise

    def write(self, data: bytes) -> None:
        self._out.write(data)

    def entry(self, entry: ZipEntry, packed: bytes) -> None:
        """One entry of the zip, deflated already (appliance/export_encoders.py)."""
        assert self._zip is not None
        self._zip.add_deflated(entry.name, packed, entry.crc, entry.size)

    def attachment(self, hash_hex: str, data: bytes) -> None:
        """An attachment's bytes beside the export, named by their hash (once each)."""
        assert self._files_partial is not None
        name = hash_hex + (SEALED_SUFFIX if self._recipient is not None else "")
        path = self._files_partial / name
        if path.exists():
            return
        with open(files.create_private(path), "wb") as raw:
            if self._recipient is not None:
                sealing = SealingWriter(raw, self._recipient)
                sealing.write(data)
                sealing.close()
            else:
                raw.write(data)
            raw.flush()
            os.fsync(raw.fileno())
        self._files_written += 1

    def commit(self) -> Written:
        if self._zip is not None:
            self._zip.close()
        if self._sealing is not None:
            self._sealing.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        files_dir = None
        if self._files_partial is not None:
            files_dir = self.target.with_name(self.target.name + FILES_SUFFIX)
            files.fsync_path(self._files_partial)
            os.rename(self._files_partial, files_dir)
        os.rename(self._partial, self.target)
        files.fsync_path(self.target.parent)
        return Written(self.target, self._hashing.size, self._hashing.digest.hexdigest(), files_dir, self._files_written)

    def abort(self) -> None:
        """Removes everything written so far; what cannot be removed (a vanished folder) is gone anyway."""
        with contextlib.suppress(Exception):
            self._raw.close()
        with contextlib.suppress(OSError):
            self._partial.unlink()
        if self._files_partial is not None:
            shutil.rmtree(self._files_partial, ignore_errors=True)

