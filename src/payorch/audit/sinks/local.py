"""Local sink for the embedded mode: a directory of read-only JSON-lines files, one per batch."""

from __future__ import annotations

import os
from pathlib import Path

from payorch.audit.chain import ChainedEvent
from payorch.audit.sinks.base import SinkError, SinkThread, batch_name, decode_batch, encode_batch, parse_batch_name

_READ_ONLY = 0o444


class LocalDirectorySink:
    """Writes each batch to ``<directory>/<first-seq>-<last-seq>.jsonl`` with mode 0444.

    A file is written under a temporary name, fsynced, made read-only and renamed into place, so a
    reader never sees half a batch. Re-shipping a batch that is already there is a no-op when the
    bytes match and an error when they do not (someone changed the file or the chain).
    """

    def __init__(self, directory: Path, *, name: str = "local") -> None:
        self.name = name
        self.directory = directory
        self._thread = SinkThread(name)  # a hung file system holds this sink only

    async def check(self) -> None:
        await self._thread.run(self._check)

    async def put_batch(self, events: list[ChainedEvent]) -> None:
        if events:
            await self._thread.run(self._write, batch_name(events), encode_batch(events))

    async def read_all(self) -> list[ChainedEvent]:
        return await self._thread.run(self._read_all)

    def _check(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        except OSError as exc:
            raise SinkError(f"audit directory {self.directory}: {exc}") from exc
        if not os.access(self.directory, os.W_OK):
            raise SinkError(f"audit directory {self.directory} is not writable")

    def _write(self, name: str, body: bytes) -> None:
        self._check()
        target = self.directory / name
        if target.exists():
            if target.read_bytes() != body:
                raise SinkError(f"{target} exists with different content")
            return
        temporary = self.directory / f".{name}.{os.getpid()}.tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(temporary, _READ_ONLY)
            os.replace(temporary, target)
            directory_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(directory_fd)
            finally:
                os.close(directory_fd)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise SinkError(f"writing {target}: {exc}") from exc

    def _read_all(self) -> list[ChainedEvent]:
        if not self.directory.is_dir():
            return []
        batches = []
        for path in self.directory.iterdir():
            position = parse_batch_name(path.name)
            if position is not None and not path.name.startswith("."):
                batches.append((position, path))
        events: list[ChainedEvent] = []
        for _, path in sorted(batches):
            events.extend(decode_batch(str(path), path.read_bytes()))
        return events
