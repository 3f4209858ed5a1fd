"""Scratch space on disk: a stock file's parts sorted without holding them all in memory.

`DiskStore` is the `formats.stock.Store` the inventory flow uses: an external merge sort. Parts
are collected up to `run_size`, sorted and written to an anonymous temporary file (deleted when
closed, never visible by name) as a *run* of small pickled chunks (the bridge reads only what it
wrote itself); `sorted_parts()` merges the
runs, reading one chunk of each at a time. Memory is bounded by one run being sorted plus one
chunk per run being merged, however large the file. A file already sorted by SKU (most WMS
exports are) gives runs that follow each other, and they are read one after another unmerged.
Nothing here outlives one stock file: it is scratch, not state (that is the ledger's).
"""

from __future__ import annotations

import heapq
import pickle
import tempfile
from dataclasses import dataclass
from itertools import chain
from typing import IO, Iterator

from bridge.formats.stock import Part, by_sku

RUN_SIZE = 50_000  # parts sorted in memory at a time
CHUNK_SIZE = 500  # parts per pickled chunk: what a merge holds per run
FAN_IN = 64  # runs merged at once; more are first merged into longer runs


@dataclass(frozen=True)
class _Run:
    offset: int
    chunks: int
    first: Part
    last: Part


class DiskStore:
    def __init__(self, *, run_size: int = RUN_SIZE, chunk_size: int = CHUNK_SIZE,
                 folder: str | None = None):
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix="fbm-bridge-stock-", dir=folder)
        self._run_size = run_size
        self._chunk_size = chunk_size
        self._buffer: list[Part] = []
        self._runs: list[_Run] = []

    def add(self, parts: list[Part]) -> None:
        self._buffer.extend(parts)
        if len(self._buffer) >= self._run_size:
            self._spill()

    def sorted_parts(self) -> Iterator[Part]:
        self._spill()
        runs = self._runs
        while len(runs) > FAN_IN:
            runs = [self._write_run(self._merge(runs[i:i + FAN_IN])) for i in range(0, len(runs), FAN_IN)]
        if all(before.last[0] < after.first[0] for before, after in zip(runs, runs[1:])):
            return chain.from_iterable(self._read(run) for run in runs)
        return self._merge(runs)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "DiskStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spill(self) -> None:
        if self._buffer:
            self._buffer.sort(key=by_sku)  # stable: file order within a SKU
            self._runs.append(self._write_run(iter(self._buffer)))
            self._buffer = []

    def _write_run(self, parts: Iterator[Part]) -> _Run:
        self._file.seek(0, 2)
        offset = self._file.tell()
        chunks = 0
        first = last = None
        chunk: list[Part] = []
        for part in parts:
            if first is None:
                first = part
            chunk.append(part)
            if len(chunk) == self._chunk_size:
                self._dump(chunk)
                chunks += 1
                last, chunk = chunk[-1], []
        if chunk:
            self._dump(chunk)
            chunks += 1
            last = chunk[-1]
        return _Run(offset, chunks, first, last)  # type: ignore[arg-type]

    def _dump(self, chunk: list[Part]) -> None:
        # A merge being written reads other runs in between: write at the end every time.
        self._file.seek(0, 2)
        pickle.dump(chunk, self._file, pickle.HIGHEST_PROTOCOL)

    def _read(self, run: _Run) -> Iterator[Part]:
        position = run.offset
        for _ in range(run.chunks):
            self._file.seek(position)
            chunk = pickle.load(self._file)
            position = self._file.tell()
            yield from chunk

    def _merge(self, runs: list[_Run]) -> Iterator[Part]:
        # Ties go to the earlier run, so file order within a SKU survives the merge.
        return heapq.merge(*(self._read(run) for run in runs), key=by_sku)
