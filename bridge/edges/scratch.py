"""Scratch space on disk: a stock file's parts sorted, and a confirmation file's lines grouped,
without holding them all in memory.

`DiskStore` is the `formats.stock.Store` the inventory flow uses: an external merge sort. Parts
are collected up to `run_size`, sorted and written to an anonymous temporary file (deleted when
closed, never visible by name) as a *run* of marshalled chunks (the bridge reads only what it
wrote itself); `sorted_parts()` merges the runs, reading a chunk of each at a time. Memory is
bounded by one run being sorted plus two chunks per run being merged, however large the file. A file already sorted by SKU (most WMS
exports are) gives runs that follow each other, and they are read one after another unmerged.
Nothing here outlives one stock file: it is scratch, not state (that is the ledger's).
"""

from __future__ import annotations

import contextlib
import marshal
import os
import pickle
import sqlite3
import struct
import tempfile
from bisect import bisect_left
from dataclasses import dataclass
from itertools import chain, groupby, islice
from operator import itemgetter
from typing import IO, Iterable, Iterator

from bridge.formats.shipments import PlannedPackage, ShipmentLine
from bridge.formats.stock import Part, RowProblem, by_sku
from bridge.mapping import Carrier

RUN_SIZE = 50_000  # parts sorted in memory at a time
CHUNK_SIZE = 1_000  # parts per chunk on disk: what a merge holds (twice, at most) per run
FAN_IN = 64  # runs merged at once; more are first merged into longer runs
_LENGTH = struct.Struct("<I")  # before each chunk: its length in bytes


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
            return chain.from_iterable(chain.from_iterable(self._chunks(run) for run in runs))
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
        while chunk := list(islice(parts, self._chunk_size)):
            if first is None:
                first = chunk[0]
            self._dump(chunk)
            chunks += 1
            last = chunk[-1]
        return _Run(offset, chunks, first, last)  # type: ignore[arg-type]

    def _dump(self, chunk: list[Part]) -> None:
        # A merge being written reads other runs in between: write at the end every time.
        # marshal: the bridge reads only what it wrote itself, and plain tuples of text and
        # numbers are all a part is (twice as fast as pickle both ways)
        data = marshal.dumps(chunk)
        self._file.seek(0, 2)
        self._file.write(_LENGTH.pack(len(data)) + data)

    def _chunks(self, run: _Run) -> Iterator[list[Part]]:
        position = run.offset
        for _ in range(run.chunks):
            self._file.seek(position)
            (length,) = _LENGTH.unpack(self._file.read(_LENGTH.size))
            chunk = marshal.loads(self._file.read(length))
            position += _LENGTH.size + length
            yield chunk

    def _merge(self, runs: list[_Run]) -> Iterator[Part]:
        return chain.from_iterable(self._merged_chunks(runs))

    def _merged_chunks(self, runs: list[_Run]) -> Iterator[list[Part]]:
        """The runs merged a chunk at a time: every part below the smallest last SKU of the
        chunks in hand (nothing still on disk can come before those) goes out together, sorted
        by `sorted`, whose merge of sorted runs is C. Ties go to the earlier run (the sort is
        stable, and the parts are taken run by run), so file order within a SKU survives."""
        readers = [self._chunks(run) for run in runs]
        held = [next(reader, []) for reader in readers]
        open_ = [i for i, chunk in enumerate(held) if chunk]
        while open_:
            bound = min(held[i][-1][0] for i in open_)
            out: list[Part] = []
            for chunk in held:
                cut = bisect_left(chunk, bound, key=by_sku)
                if cut:
                    out += chunk[:cut]
                    del chunk[:cut]
            if out:
                out.sort(key=by_sku)
                yield out
            for i in [i for i in open_ if held[i][-1][0] == bound]:  # refill the runs that set the bound
                more = next(readers[i], None)
                if more is None:
                    open_.remove(i)
                else:
                    held[i] += more
        out = list(chain.from_iterable(held))
        if out:
            out.sort(key=by_sku)
            yield out


class ShipmentScratch:
    """A confirmation file's lines on disk, so that a file of a million rows is grouped into
    packages without holding them: an SQLite file of its own (never the ledger), deleted when
    closed. Lines go in as read (`add`); `by_order()` gives them back grouped by order and
    tracking number, the groups of one order together, in the order the file first names them
    (what `formats.shipments.check_groups` takes); `keep()` records each group's verdict; then
    `in_file_order()` gives (rows, verdict) per group in the order the file first names the
    groups, which is the order their packages are recorded in (their ids): a row is (row,
    order id, item, quantity as written, tracking number). Lines and verdicts are kept as plain
    tuples, which pickle several times faster than the records."""

    def __init__(self, folder: str | os.PathLike | None = None, *, batch: int = 5_000):
        fd, self._path = tempfile.mkstemp(prefix=".shipments-", suffix=".scratch", dir=folder)
        os.close(fd)
        self._batch = batch
        self._db = sqlite3.connect(self._path, isolation_level=None)
        for pragma in ("journal_mode=off", "synchronous=off", "temp_store=file", "cache_size=-8000"):
            self._db.execute(f"pragma {pragma}")
        self._db.execute("create table lines (seq integer primary key, row integer not null, order_id text not null,"
                         " tracking text not null, item text not null, quantity text not null, line blob not null)")
        self._db.execute("create table verdicts (first integer primary key, verdict blob not null)")
        self._grouped = False

    def add(self, lines: Iterable[ShipmentLine]) -> int:
        """Store the lines, in file order; returns how many."""
        count = 0
        batch = []
        dumps, protocol = pickle.dumps, pickle.HIGHEST_PROTOCOL
        self._db.execute("begin")
        for line in lines:
            batch.append((line.row, line.order_id, line.tracking, line.item, line.quantity_text,
                          dumps(_line_state(line), protocol)))
            if len(batch) == self._batch:
                self._insert(batch)
                count += len(batch)
                batch = []
        self._insert(batch)
        self._db.execute("commit")
        return count + len(batch)

    def by_order(self) -> Iterator[list[ShipmentLine]]:
        self._group()
        rows = self._db.execute(
            "select g.first, l.line from groups g join lines l on l.order_id = g.order_id and"
            " l.tracking = g.tracking order by g.order_id, g.first, l.seq")
        loads = pickle.loads
        for _, group in groupby(rows, key=itemgetter(0)):
            yield [_line(loads(blob)) for _, blob in group]

    def keep(self, verdicts: Iterable[tuple[int, object]]) -> None:
        """Each group's verdict (a PlannedPackage, or each row's result and message), by the
        row of its first line."""
        self._db.execute("begin")
        batch = []
        dumps, protocol = pickle.dumps, pickle.HIGHEST_PROTOCOL
        for first, verdict in verdicts:
            batch.append((first, dumps(_verdict_state(verdict), protocol)))
            if len(batch) == self._batch:
                self._db.executemany("insert into verdicts (first, verdict) values (?, ?)", batch)
                batch = []
        self._db.executemany("insert into verdicts (first, verdict) values (?, ?)", batch)
        self._db.execute("commit")

    def in_file_order(self) -> Iterator[tuple[list[tuple], object]]:
        rows = self._db.execute(
            "select g.first_seq, l.row, l.order_id, l.item, l.quantity, l.tracking from groups g"
            " join lines l on l.order_id = g.order_id and l.tracking = g.tracking order by g.first_seq, l.seq")
        # a group's verdict once per group, not joined onto each of its lines: a rejected
        # package's verdict names all its rows, and repeating it per line is rows × rows
        verdicts = self._db.execute(
            "select v.verdict from groups g join verdicts v on v.first = g.first order by g.first_seq")
        for (_, group), (verdict,) in zip(groupby(rows, key=itemgetter(0)), verdicts):
            yield [row[1:6] for row in group], _verdict(pickle.loads(verdict))

    def close(self) -> None:
        self._db.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)

    def __enter__(self) -> "ShipmentScratch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _insert(self, batch: list[tuple]) -> None:
        if batch:
            self._db.executemany("insert into lines (row, order_id, tracking, item, quantity, line)"
                                 " values (?, ?, ?, ?, ?, ?)", batch)

    def _group(self) -> None:
        """A group's `first` is the row of its first line (a verdict's key: rows grow with the
        file); `first_seq` is that line's place in the file."""
        if self._grouped:
            return
        self._db.execute("create index lines_by_group on lines (order_id, tracking, seq)")
        self._db.execute("create table groups as select order_id, tracking, min(seq) as first_seq, min(row) as first"
                         " from lines group by order_id, tracking")
        self._db.execute("create index groups_by_order on groups (order_id, first)")
        self._grouped = True


def _line_state(line: ShipmentLine) -> tuple:
    carrier = line.carrier
    return (line.row, line.order_id, line.item, line.quantity_text, line.tracking, line.by, line.quantity,
            None if carrier is None else (carrier.code, carrier.name, carrier.method), line.method,
            line.ship_date, line.ship_day, line.problems)


def _line(state: tuple) -> ShipmentLine:
    (row, order_id, item, quantity_text, tracking, by, quantity, carrier, method, ship_date, ship_day,
     problems) = state
    return ShipmentLine(row, order_id, item, quantity_text, tracking, by, quantity,
                        None if carrier is None else Carrier(*carrier), method, ship_date, ship_day, problems)


def _verdict_state(verdict) -> tuple:
    if isinstance(verdict, PlannedPackage):
        carrier = verdict.carrier
        return ("package", verdict.order_id, verdict.marketplace_id, verdict.tracking,
                (carrier.code, carrier.name, carrier.method), verdict.method, verdict.ship_date, verdict.items,
                verdict.rows)
    return ("rows", tuple(verdict.items()))


def _verdict(state: tuple):
    if state[0] == "package":
        _, order_id, marketplace_id, tracking, carrier, method, ship_date, items, rows = state
        return PlannedPackage(order_id, marketplace_id, tracking, Carrier(*carrier), method, ship_date, items, rows)
    return dict(state[1])


class ProblemSpool:
    """A stock file's row problems on disk (`formats.stock.ProblemLog`'s sink), so that a file
    of a million bad rows is not held in memory: an SQLite file of its own, deleted when
    closed. Iterated in the order added, which is the order the ledger records them in."""

    def __init__(self, folder: str | os.PathLike | None = None, *, batch: int = 5_000):
        fd, self._path = tempfile.mkstemp(prefix=".stock-problems-", suffix=".scratch", dir=folder)
        os.close(fd)
        self._db = sqlite3.connect(self._path, isolation_level=None)
        for pragma in ("journal_mode=off", "synchronous=off", "temp_store=file", "cache_size=-4000"):
            self._db.execute(f"pragma {pragma}")
        self._db.execute("create table problems (seq integer primary key, row integer not null,"
                         " column_name text not null, why text not null, severity text not null, sku text not null)")
        self._batch: list[tuple] = []
        self._size = batch

    def add(self, problem: RowProblem) -> None:
        self._batch.append((problem.row, problem.column, problem.why, problem.severity, problem.sku))
        if len(self._batch) >= self._size:
            self._flush()

    def bad_rows(self) -> int:
        self._flush()
        return self._db.execute("select count(distinct row) from problems where severity = 'error'").fetchone()[0]

    def __iter__(self) -> Iterator[RowProblem]:
        self._flush()
        for row, column, why, severity, sku in self._db.execute(
                "select row, column_name, why, severity, sku from problems order by seq"):
            yield RowProblem(row, column, why, severity, sku)

    def close(self) -> None:
        self._db.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)

    def _flush(self) -> None:
        if self._batch:
            self._db.execute("begin")
            self._db.executemany("insert into problems (row, column_name, why, severity, sku) values (?, ?, ?, ?, ?)",
                                 self._batch)
            self._db.execute("commit")
            self._batch = []
