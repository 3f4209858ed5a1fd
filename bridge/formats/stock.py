"""Stock rules, pure: a stock file's rows → one quantity per seller SKU, and the safety gates.

Rows come from the file readers (`formats/readers.py`) as (row number, {column: text}, problem):
the number is the file's own (CSV line, sheet row, line of the XML record), the columns are the
mapping's headers, positions or element paths, and a problem says why a row cannot be trusted as
read (a wrong field count, a byte the encoding lacks). Each usable row
becomes a *part* — (seller SKU, warehouse SKU, lot/location, row, units) — and a store gives the
parts back sorted by seller SKU: `MemoryStore` here; `edges/scratch.py` sorts them on disk so that a file of a
million SKUs does not have to fit in memory. The parts of one seller SKU become one `StockLevel`:

    parts of one seller SKU ──combine──▶ units in the file: lots, locations and warehouse SKUs
        summed; a lot listed twice with different quantities, or a bad row of the SKU: not sent
    units ──on_hand: − units in flight──▶ ──− buffer, floor 0──▶ ──cap──▶ quantity for Amazon

`Comparison.follow` then walks the levels beside the last published quantities (both sorted by
SKU, so neither is held in memory) and counts what the gates need; `check_gates` decides
whether the feed may go, and says why not in words. Nothing here reads files, clocks or logs.
"""

from __future__ import annotations

import re
from collections import deque
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from fnmatch import translate
from itertools import chain, groupby, islice, repeat
from operator import add, itemgetter, le, lt, sub
from typing import Callable, Iterable, Iterator, Mapping, NamedTuple, Protocol
from zoneinfo import ZoneInfo

from bridge.formats.shipments import not_a_date
from bridge.mapping import MAX_SKU_LENGTH, StockLayout
from bridge.records import how_long

# (seller SKU, warehouse SKU, lot/location, row number, units or None for a bad row)
Part = tuple[str, str, str, int, "int | None"]
by_sku = itemgetter(0)  # the sort key of parts: a stable sort on it keeps file order per SKU
MAX_UNITS = 10_000_000  # a larger "quantity" is a wrong column (an EAN, a price), not stock
_LOT_SEPARATOR = "\x1f"
FIRST_ZERO_SHARE = 0.5  # the first publish: more of its SKUs at 0 (or more than max_zero_share) hold it


@dataclass(frozen=True)
class RowProblem:
    """Why one row of a stock file is not (fully) used: an error, or a warning that explains."""

    row: int
    column: str  # the header or element path concerned, "" for the whole row
    why: str
    severity: str = "error"  # error: the row is not used | warning: it is used, but note this
    sku: str = field(default="", compare=False)  # the warehouse's SKU of the row, when it has one

    def __str__(self) -> str:
        where = f"row {self.row}, column {self.column!r}" if self.column else f"row {self.row}"
        return f"{where}: {self.why}"


class StockLevel(NamedTuple):
    """One seller SKU of the file: the quantity to send, or None when it must not be sent.
    (A named tuple: a million of them are made per large file, and a tuple is made fastest.)"""

    sku: str
    quantity: int | None
    row: int  # the SKU's first row in the file; the feed message's id, so reports map back


class ProblemSink(Protocol):
    """Where every problem of a large file goes (edges/scratch.py's ProblemSpool, on disk)."""

    def add(self, problem: RowProblem) -> None: ...

    def bad_rows(self) -> int: ...

    def __iter__(self) -> Iterator[RowProblem]: ...


class ProblemLog:
    """A file's row problems without holding them all: the first `keep` stay in memory (for the
    dry run and messages), every one goes to `sink`; iterating gives them all back from it.
    A file of 600,000 bad rows (a wrong column) must not need a gigabyte."""

    def __init__(self, sink: ProblemSink, keep: int = 50):
        self.sink = sink
        self._errors: list[RowProblem] = []
        self._warnings: list[RowProblem] = []
        self.count = 0
        self._keep = keep
        self._bad_rows: int | None = None

    def append(self, problem: RowProblem) -> None:
        self.count += 1
        kept = self._errors if problem.severity == "error" else self._warnings
        if len(kept) < self._keep:
            kept.append(problem)
        self.sink.add(problem)

    @property
    def kept(self) -> list[RowProblem]:
        """The first `keep` problems, errors before warnings (a file in SKU order reports its
        rows' errors and its SKUs' warnings interleaved: warnings must not hide the errors)."""
        return (self._errors + self._warnings)[:self._keep]

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[RowProblem]:
        return iter(self.sink)

    def __getitem__(self, index: slice) -> list[RowProblem]:
        return self.kept[index]  # only the first `keep`: what the dry run shows

    def bad_rows(self) -> int:
        if self._bad_rows is None:
            return self.sink.bad_rows()
        return self._bad_rows

    def counted(self) -> None:
        """Count the bad rows now: the sink may be closed after (what a dry run keeps)."""
        self._bad_rows = self.sink.bad_rows()


@dataclass
class Tally:
    """What reading the rows found, besides the parts handed to the store."""

    rows: int = 0
    used_rows: int = 0
    left_alone: int = 0  # rows of SKUs the mapping leaves alone
    not_on_amazon: int = 0  # rows of warehouse SKUs the SKU map marks as not sold on Amazon
    problems: "list[RowProblem] | ProblemLog" = field(default_factory=list)
    stock_time: datetime | None = None  # the latest timestamp in the rows, if the mapping has one
    file_problem: str | None = None  # the file as a whole cannot be read as stock

    @property
    def bad_rows(self) -> int:
        if isinstance(self.problems, ProblemLog):
            return self.problems.bad_rows()
        return len({p.row for p in self.problems if p.severity == "error"})


class Store(Protocol):
    """Takes parts in batches; `sorted_parts()` gives them all back in ascending order of
    seller SKU (`by_sku`), and in the order they were added within one SKU."""

    def add(self, parts: list[Part]) -> None: ...

    def sorted_parts(self) -> Iterator[Part]: ...


class MemoryStore:
    """A store for files that fit in memory (tests, small warehouses)."""

    def __init__(self) -> None:
        self._parts: list[Part] = []

    def add(self, parts: list[Part]) -> None:
        self._parts.extend(parts)

    def sorted_parts(self) -> Iterator[Part]:
        self._parts.sort(key=by_sku)
        return iter(self._parts)


class Chunked:
    """Items that a pipeline stage hands on a list at a time: iterated, they come one by one;
    the next stage may take `chunks` instead, whole lists, and skip a step per item (a million
    levels pass three stages)."""

    def __init__(self, chunks: Iterator[list]):
        self.chunks = chunks
        self._items = chain.from_iterable(chunks)

    def __iter__(self) -> Iterator:
        return self._items

    def __next__(self):
        return next(self._items)


def chunks_of(items: Iterable, size: int = 2048) -> Iterator[list]:
    """`items` a list at a time: a `Chunked`'s own lists, or lists of `size`."""
    if isinstance(items, Chunked):
        return items.chunks
    items = iter(items)
    return iter(lambda: list(islice(items, size)), [])


# --- reading rows ---------------------------------------------------------------------------


def tally(rows: Iterable[tuple[int, Mapping[str, str], str]], layout: StockLayout, store: Store,
          *, batch_size: int = 10_000, problems: ProblemLog | None = None) -> Tally:
    """Check every row and hand the usable ones to `store` as parts.

    A bad row is reported with its column and why; when its SKU is known it still goes to the
    store as a part without units, so that SKU is not sent with a partial sum. So does a row
    the reader could not read as it should (its `problem`): its values may be shifted.
    """
    result = Tally() if problems is None else Tally(problems=problems)
    batch: list[Part] = []
    for parts in _tallied(rows, layout, result):
        batch += parts
        if len(batch) >= batch_size:
            store.add(batch)
            batch = []
    store.add(batch)
    return result


class NotSorted(Exception):
    """The file's rows are not in ascending order of seller SKU after all."""


def tally_in_order(rows: Iterable[tuple[int, Mapping[str, str], str]], layout: StockLayout,
                   *, problems: ProblemLog | None = None) -> tuple[Tally, Iterator[Part]]:
    """`tally` for a file in ascending order of seller SKU (as WMS exports are): the parts
    come straight back, in file order, for `stock_levels`, with no store to sort them. The
    Tally is complete once they are all taken; taking them raises NotSorted as soon as a SKU
    comes after a greater one (then the file must go through `tally` and a store instead).
    Problems come in another order than `tally`'s (a SKU's conflicting rows are reported when
    the next SKU begins, not after every row), the same problems for the same rows."""
    result = Tally() if problems is None else Tally(problems=problems)
    return result, chain.from_iterable(_in_order(_tallied(rows, layout, result)))


def _in_order(chunks: Iterator[list[Part]]) -> Iterator[list[Part]]:
    previous = ""
    for parts in chunks:
        if not parts:
            continue
        skus = list(map(by_sku, parts))
        if skus[0] < previous or not all(map(le, skus, islice(skus, 1, None))):
            raise NotSorted(f"SKU {skus[0]!r} comes after {previous!r}")
        previous = skus[-1]
        yield parts


def _tallied(rows: Iterable[tuple[int, Mapping[str, str], str]], layout: StockLayout,
             result: Tally) -> Iterator[list[Part]]:
    """The parts of `rows`, a chunk at a time; `result` is filled in as they are read (its
    counts once they are all read)."""
    columns = layout.columns
    sku_key, quantity_key, timestamp_key = columns.sku, columns.quantity, columns.timestamp
    lot_keys = tuple(key for key in (columns.lot, columns.location) if key)
    lot_key, location_key = (lot_keys + (None, None))[:2]
    sku_map = layout.sku_map
    leave_alone = leave_alone_test(layout.leave_alone)
    quantity_of = quantity_parser(layout.decimal_separator, layout.thousands_separator)
    time_of = timestamp_parser(layout.timestamp_format, layout.timezone,
                               iso_too=layout.format == "xlsx") if timestamp_key else None
    needed = [key for key in (sku_key, quantity_key, timestamp_key, *lot_keys) if key]
    problems = result.problems
    rows = iter(rows)
    first = next(rows, None)
    if first is None:
        return
    if layout.format != "xml":  # every row has the header's columns: check them once
        missing = [key for key in needed if key not in first[1]]
        if missing:
            names = ", ".join(repr(key) for key in missing)
            found = ", ".join(repr(key) for key in first[1])
            result.rows, result.file_problem = 1, f"the file has no column {names} (its columns: {found})"
            return
    count = used = unusable = left_alone = not_on_amazon = 0
    latest: datetime | None = None
    plain_parts = _PlainRows(layout, leave_alone, time_of)
    rows = chain((first,), rows)
    while chunk := list(islice(rows, _CHUNK)):
        count += len(chunk)
        plain = plain_parts(chunk)
        batch: list[Part] = []
        if plain is not None:  # every row of the chunk as usual: its parts made without a line per row
            batch = plain[0]
            stamp = plain[1]
            if stamp is not None and (latest is None or stamp > latest):
                latest = stamp
            chunk = ()
        for number, row, unreadable in chunk:
            warehouse_sku = row.get(sku_key)
            if warehouse_sku:
                warehouse_sku = warehouse_sku.strip()
            if unreadable:  # its values may be shifted: the SKU as read is held back, not summed
                problems.append(RowProblem(number, "", unreadable))
            if not warehouse_sku:
                if not unreadable:
                    problems.append(RowProblem(number, sku_key, "no SKU"))
                continue
            sku = sku_map.get(warehouse_sku, warehouse_sku) if sku_map else warehouse_sku
            if not sku:
                not_on_amazon += 1
                continue
            if leave_alone is not None and leave_alone(sku):
                left_alone += 1
                continue
            if len(sku) > MAX_SKU_LENGTH or not sku.isprintable():
                why = (f"SKU {_short(sku, MAX_SKU_LENGTH + 10)} is longer than Amazon's {MAX_SKU_LENGTH} characters"
                       if len(sku) > MAX_SKU_LENGTH else f"SKU {sku!r} has a control or invisible character")
                problems.append(RowProblem(number, sku_key, why))
                continue
            text = row.get(quantity_key)
            if unreadable:
                units: int | None = None
                unusable += 1
            elif text is not None and text.isdigit() and text.isascii() and len(text) < 8:
                units = int(text)
            else:
                units, why = quantity_of(text)
                if units is None:
                    problems.append(RowProblem(number, quantity_key, why, sku=warehouse_sku))
                    unusable += 1
            if time_of is not None and not unreadable:
                stamp, why = time_of(row.get(timestamp_key))
                if why:
                    problems.append(RowProblem(number, timestamp_key, why, sku=warehouse_sku))
                    unusable += units is not None
                    units = None
                elif stamp is not None and (latest is None or stamp > latest):
                    latest = stamp
            if lot_key is None:
                lot = ""
            elif location_key is None:
                lot = (row.get(lot_key) or "").strip()
            else:
                lot = (row.get(lot_key) or "").strip() + _LOT_SEPARATOR + (row.get(location_key) or "").strip()
            batch.append((sku, warehouse_sku, lot, number, units))
        used += len(batch)
        yield batch
    result.rows, result.used_rows, result.stock_time = count, used - unusable, latest
    result.left_alone, result.not_on_amazon = left_alone, not_on_amazon


_CHUNK = 512  # rows, parts or levels at a time: small enough to stay in the CPU's cache


class _PlainRows:
    """The parts of a chunk of rows when every row of it is as usual, made by C-level
    iterators (a million rows are mostly that); None when any row needs a closer look, and
    then `tally` goes through the chunk row by row. As usual: read as it should be, a SKU that
    is there, maps to a seller SKU not left alone, fits Amazon's length and is printable, and a
    quantity of plain digits; a timestamp, if any, that reads."""

    def __init__(self, layout: StockLayout, leave_alone: Callable[[str], bool] | None,
                 time_of: Callable[[str | None], tuple[datetime | None, str]] | None):
        columns = layout.columns
        self.sku = itemgetter(columns.sku)
        self.quantity = itemgetter(columns.quantity)
        self.timestamp = itemgetter(columns.timestamp) if columns.timestamp else None
        self.time_of = time_of
        keys = [key for key in (columns.lot, columns.location) if key]
        self.lots = [itemgetter(key) for key in keys]
        self.sku_map = layout.sku_map
        self.leave_alone = leave_alone

    def __call__(self, chunk: list) -> tuple[list[Part], datetime | None] | None:
        try:
            numbers, values, unreadable = zip(*chunk)
            if any(unreadable):
                return None
            warehouse = list(map(str.strip, map(self.sku, values)))
            texts = list(map(self.quantity, values))
            lots = [list(map(str.strip, map(lot, values))) for lot in self.lots]
        except (KeyError, TypeError, AttributeError, ValueError):  # a field missing or not text: row by row
            return None
        if not all(warehouse):
            return None
        skus = warehouse
        if self.sku_map:
            skus = list(map(self.sku_map.get, warehouse, warehouse))
            if not all(skus):
                return None
        if max(map(len, skus)) > MAX_SKU_LENGTH or not "".join(skus).isprintable():
            return None
        if self.leave_alone is not None and any(map(self.leave_alone, skus)):
            return None
        digits = "".join(texts)
        if not (all(texts) and digits.isdigit() and digits.isascii() and max(map(len, texts)) < 8):
            return None
        latest = None
        if self.timestamp is not None:
            try:
                stamps = set(map(self.timestamp, values))
            except KeyError:
                return None
            for text in stamps:
                stamp, why = self.time_of(text)
                if why:
                    return None
                if stamp is not None and (latest is None or stamp > latest):
                    latest = stamp
        if not lots:
            lot = repeat("")
        elif len(lots) == 1:
            lot = lots[0]
        else:
            lot = map(add, map(add, lots[0], repeat(_LOT_SEPARATOR)), lots[1])
        return list(zip(skus, warehouse, lot, numbers, map(int, texts))), latest


def quantity_parser(decimal: str, thousands: str) -> Callable[[str | None], tuple[int | None, str]]:
    """text → (units, "") or (None, why): a whole number from 0 to MAX_UNITS in the file's format.

    Strict, because a wrong guess changes the stock Amazon sells: a thousands separator is
    taken only between groups of exactly three digits ("1.250" is 1250 where '.' groups
    thousands, "2.5" is refused, never 25), and a decimal part must be zero."""
    d = re.escape(decimal)
    plain = re.compile(rf"[+-]?[0-9]+(?:{d}[0-9]+)?")
    grouped = re.compile(rf"[+-]?[0-9]{{1,3}}(?:{re.escape(thousands)}[0-9]{{3}})+(?:{d}[0-9]+)?") if thousands else None

    def parse(text: str | None) -> tuple[int | None, str]:
        if text is None or not text.strip():
            return None, "no quantity"
        body = text.strip()
        shown = _short(body)
        if len(body) <= 40 and (plain.fullmatch(body) or (grouped is not None and grouped.fullmatch(body))):
            whole, _, fraction = (body.replace(thousands, "") if thousands else body).partition(decimal)
            value = int(whole)
            if fraction.strip("0"):
                return None, f"{shown} is not a whole number"
            if value < 0:
                return None, f"{shown} is negative"
            if value > MAX_UNITS:
                return None, f"{shown} is more than {MAX_UNITS:,} units (is this the right column?)"
            return value, ""
        if thousands and thousands in body:
            return None, (f"{shown} is not a number in this file's format: '{thousands}' only groups thousands, in "
                          f"threes (1{thousands}250), and the decimal separator is '{decimal}'")
        if decimal == "," and "." in body:
            return None, f"{shown} is not a number (the decimal separator is ',')"
        return None, f"{shown} is not a number"

    return parse


def timestamp_parser(fmt: str, zone: str, *, iso_too: bool = False
                     ) -> Callable[[str | None], tuple[datetime | None, str]]:
    """text → (UTC datetime or None when empty, "") or (None, why). Remembers the last text:
    a stock file usually repeats one timestamp on every row. `iso_too`: ISO 8601 is accepted
    whatever `fmt` says (a workbook's date cell reads as ISO 8601)."""
    local = ZoneInfo(zone)
    last: list = [None, (None, "")]

    def parse(text: str | None) -> tuple[datetime | None, str]:
        if text == last[0]:
            return last[1]
        value = (text or "").strip()
        if not value:
            answer: tuple[datetime | None, str] = (None, "")
        else:
            try:
                moment = _parsed(value, fmt, iso_too)
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=local)
                answer = (moment.astimezone(timezone.utc), "")
            except ValueError:
                why = ("is not a date like ISO 8601 (e.g. 2026-11-26T21:00:00+01:00)" if fmt == "iso"
                       else not_a_date(value, fmt))
                answer = (None, f"timestamp {_short(value)} {why}")
            except OverflowError:  # the year 1 east of UTC, 9999 west of it
                answer = (None, f"timestamp {_short(value)} is not a time the bridge can use")
        last[0], last[1] = text, answer
        return answer

    return parse


def _short(text: str, keep: int = 30) -> str:
    """A value quoted for a message, cut when long: a 5,000-digit cell is not echoed whole."""
    if len(text) <= keep:
        return repr(text)
    return f"{text[:keep]!r}... ({len(text):,} characters)"


def _parsed(value: str, fmt: str, iso_too: bool) -> datetime:
    if fmt == "iso":
        return datetime.fromisoformat(value)
    try:
        return datetime.strptime(value, fmt)
    except ValueError:
        if not iso_too:
            raise
        return datetime.fromisoformat(value)


def leave_alone_test(entries: Iterable[str]) -> Callable[[str], bool] | None:
    """A test for seller SKUs never sent: exact SKUs, or patterns with * ? [...]."""
    exact = {entry for entry in entries if not set(entry) & set("*?[")}
    patterns = [translate(entry) for entry in entries if entry not in exact]
    if not exact and not patterns:
        return None
    if not patterns:
        return exact.__contains__
    matcher = re.compile("|".join(patterns)).match
    return lambda sku: sku in exact or matcher(sku) is not None


# --- per seller SKU -------------------------------------------------------------------------


def stock_levels(parts: Iterable[Part], layout: StockLayout, in_flight: Mapping[str, int],
                 problems: "list[RowProblem] | ProblemLog") -> Iterator[StockLevel]:
    """One level per seller SKU from the parts sorted by SKU, in that order; problems found
    while combining rows (conflicting duplicates, SKUs held back by a bad row) are appended."""
    return map(_new, repeat(StockLevel), level_tuples(parts, layout, in_flight, problems))


def level_tuples(parts: Iterable[Part], layout: StockLayout, in_flight: Mapping[str, int],
                 problems: "list[RowProblem] | ProblemLog") -> Iterator[tuple[str, int | None, int]]:
    """`stock_levels` as plain (SKU, quantity, row) tuples, what the feed is made of: making a
    million named tuples takes longer than all the rest of the levels' work."""
    return Chunked(_level_chunks(iter(parts), layout, in_flight, problems))


def _level_chunks(parts: Iterator[Part], layout: StockLayout, in_flight: Mapping[str, int],
                  problems: "list[RowProblem] | ProblemLog") -> Iterator[list[StockLevel]]:
    """The levels a chunk of parts at a time. The last SKU of a chunk waits for the next one,
    where more of its parts may be."""
    waiting: list[Part] = []
    while chunk := list(islice(parts, _CHUNK)):
        if waiting and chunk[-1][0] == waiting[0][0]:  # all of the chunk is that SKU's too
            waiting += chunk
            continue
        if waiting:
            chunk[:0] = waiting
        cut = bisect_left(chunk, chunk[-1][0], key=by_sku)
        waiting = chunk[cut:]
        if cut:
            del chunk[cut:]
            yield _plain_levels(chunk, layout, in_flight) or _levels(chunk, layout, in_flight, problems)
    if waiting:
        yield _levels(waiting, layout, in_flight, problems)


def _plain_levels(parts: list[Part], layout: StockLayout, in_flight: Mapping[str, int]) -> list[tuple]:
    """The levels of parts of one row per SKU and no bad row (most of a file), made by C-level
    iterators; [] when any SKU has several parts or a bad row."""
    skus = list(map(by_sku, parts))
    units = list(map(_units_of, parts))
    if None in units or not all(map(lt, skus, islice(skus, 1, None))):  # not one row per SKU
        return []
    on_hand = layout.quantity_means == "on_hand"
    if on_hand:
        units = list(map(sub, units, map(in_flight.get, skus, repeat(0))))
    buffer = layout.buffer
    if layout.buffers:
        units = list(map(sub, units, map(layout.buffers.get, skus, repeat(buffer))))
    elif buffer and not on_hand:  # the usual case: one pass for the buffer and the floor
        units = [value - buffer if value > buffer else 0 for value in units]
    elif buffer:
        units = list(map(sub, units, repeat(buffer)))
    if min(units) < 0:
        units = [value if value > 0 else 0 for value in units]
    cap = layout.cap
    if cap is not None and max(units) > cap:
        units = [value if value < cap else cap for value in units]
    return list(zip(skus, units, map(_row_of, parts)))


_row_of, _units_of = itemgetter(3), itemgetter(4)
_quantity_of = itemgetter(1)  # of a level, or of a published SKU
_lately_of = itemgetter(2)  # of a published SKU


def _levels(parts: list[Part], layout: StockLayout, in_flight: Mapping[str, int],
            problems: "list[RowProblem] | ProblemLog") -> list[tuple]:
    """The levels of whole SKUs' parts, one part at a time."""
    on_hand = layout.quantity_means == "on_hand"
    buffers, default_buffer, cap = layout.buffers, layout.buffer, layout.cap
    column = layout.columns.quantity
    levels: list[tuple] = []
    first: Part | None = None
    more: list[Part] = []  # the current SKU's parts after the first, usually none
    for part in chain(parts, (_END,)):
        if first is not None and part[0] == first[0]:
            more.append(part)
            continue
        if first is not None:
            sku = first[0]
            if not more and first[4] is not None:
                units, row = first[4], first[3]
            else:
                units, row = combine(sku, [first, *more], column, problems)
                more = []
            if units is None:
                levels.append((sku, None, row))
            else:
                if on_hand:
                    units -= in_flight.get(sku, 0)
                units -= buffers.get(sku, default_buffer) if buffers else default_buffer
                if units < 0:
                    units = 0
                if cap is not None and units > cap:
                    units = cap
                levels.append((sku, units, row))
        first = part
    return levels


def explain_levels(parts: Iterable[Part], layout: StockLayout, in_flight: Mapping[str, int]) -> Iterator[str]:
    """How each seller SKU's quantity is worked out, one line per SKU in SKU order, for the
    dry run: `MUG-1: rows 2, 5 (100871): 40 + 12 = 52 − 3 in flight − 1 buffer = 48 → sends 48`.
    The same rules as `stock_levels`, written out."""
    on_hand = layout.quantity_means == "on_hand"
    for sku, group in groupby(parts, key=by_sku):
        group = list(group)
        rows = _listed([str(part[3]) for part in group], ", ")
        warehouse = _listed(list(dict.fromkeys(part[1] for part in group)), ", ")
        head = f"{sku}: row{'s' if len(group) > 1 else ''} {rows}" + (f" ({warehouse})" if warehouse != sku else "")
        units, _ = combine(sku, group, layout.columns.quantity, []) if len(group) > 1 else (group[0][4], 0)
        if units is None:
            yield f"{head}: not sent (a bad row, or one lot listed with different quantities)"
            continue
        counted = [part[4] for part in group if part[4] is not None]
        seen: dict[tuple[str, str], int] = {}
        for part in group:  # a lot listed twice with the same quantity counts once
            seen.setdefault((part[1], part[2]), part[4])
        summed = _listed([f"{value:,}" for value in seen.values()], " + ")
        text = f"{summed} = {units:,}" if len(seen) > 1 else f"{units:,}"
        if len(counted) > len(seen):
            text += " (a lot listed twice counts once)"
        flight = in_flight.get(sku, 0) if on_hand else 0
        buffer = layout.buffers.get(sku, layout.buffer) if layout.buffers else layout.buffer
        left = units - flight - buffer
        if on_hand:
            text += f" − {flight:,} in flight"
        if buffer:
            text += f" − {buffer:,} buffer"
        if on_hand or buffer:
            text += f" = {left:,}"
        sent = max(left, 0)
        if left < 0:
            text += ", floor 0"
        if layout.cap is not None and sent > layout.cap:
            sent = layout.cap
            text += f", cap {layout.cap:,}"
        yield f"{head}: {text} → sends {sent:,}"


def _listed(items: list[str], joiner: str) -> str:
    """Items joined, the first SHOWN of many and how many more: a SKU on 20,000 rows is a line."""
    if len(items) > SHOWN:
        return joiner.join(items[:SHOWN]) + f"{joiner}... ({len(items) - SHOWN:,} more)"
    return joiner.join(items)


_END: Part = ("", "", "", 0, None)  # ends the last run of parts; never yielded
_new = tuple.__new__  # StockLevel without its Python-level __new__: half the cost, a million times


def combine(sku: str, parts: list[Part], column: str,
            problems: "list[RowProblem] | ProblemLog") -> tuple[int | None, int]:
    """(units, first row) of one seller SKU's parts; units None when it must not be sent."""
    parts = sorted(parts, key=lambda part: (part[1], part[2], part[3]))
    first_row = parts[0][3] if len(parts) == 1 else min(part[3] for part in parts)
    total: int | None = 0
    conflicting: set[int] = set()
    for (warehouse_sku, lot), same in groupby(parts, key=lambda part: (part[1], part[2])):
        same = list(same)
        label = _label(warehouse_sku, lot)
        rows = [part[3] for part in same]
        quantities = [part[4] for part in same if part[4] is not None]
        if len(same) > 1 and len(set(quantities)) > 1:
            # one message for every row of the group, of bounded length: a SKU filled down a
            # whole column must not make rows × rows of text
            why = f"{label} is listed on {_rows_phrase(rows, 'rows')} with different quantities " \
                  f"({_values(quantities)}): not sent"
            for row in rows:
                problems.append(RowProblem(row, column, why, sku=warehouse_sku))
            conflicting.update(rows)
            total = None
        elif len(same) > 1 and len(quantities) == len(same):  # a bad row's own message says enough
            for row in rows[1:]:
                problems.append(RowProblem(row, column, f"{label} is listed again (first on row "
                                                        f"{rows[0]}) with the same quantity: counted once",
                                           "warning", sku=warehouse_sku))
        if total is not None and len(quantities) == len(same):
            total += quantities[0]
    bad = sorted(conflicting.union(part[3] for part in parts if part[4] is None))
    if bad:
        why = f"SKU {sku!r} is not sent because {_rows_phrase(bad, 'are')} bad"
        bad_set = set(bad)
        for part in parts:
            if part[3] not in bad_set:
                problems.append(RowProblem(part[3], "", why, "warning", sku=part[1]))
        total = None
    return total, first_row


def _label(warehouse_sku: str, lot: str) -> str:
    where = " / ".join(value for value in lot.split(_LOT_SEPARATOR) if value)
    where = where if len(where) <= 50 else where[:47] + "..."
    return f"SKU {_short(warehouse_sku, 50)}" + (f" ({where})" if where else "")


SHOWN = 5  # rows or values a message names before "and N more"


def _rows(rows: list[int]) -> str:
    """'2, 3 and 4', or for many rows '2, 3, 4, 5, 6 and 1,995 more': a message stays short."""
    if len(rows) > SHOWN:
        return ", ".join(str(row) for row in rows[:SHOWN]) + f" and {len(rows) - SHOWN:,} more"
    return ", ".join(str(row) for row in rows[:-1]) + f" and {rows[-1]}" if len(rows) > 1 else str(rows[0])


def _rows_phrase(rows: list[int], verb: str) -> str:
    """'row 3 is' / 'rows 2 and 3 are'; `verb` 'rows' gives just the rows, counted when many."""
    rows = sorted(rows)
    if verb == "rows":
        return f"rows {_rows(rows)}" if len(rows) <= SHOWN else f"{len(rows):,} rows ({_rows(rows)})"
    return f"row {rows[0]} is" if len(rows) == 1 else (
        f"rows {_rows(rows)} are" if len(rows) <= SHOWN else f"{len(rows):,} rows ({_rows(rows)}) are")


def _values(quantities: list[int]) -> str:
    if len(quantities) > SHOWN:
        return ", ".join(str(q) for q in quantities[:SHOWN]) + f" and {len(quantities) - SHOWN:,} more"
    return ", ".join(str(q) for q in quantities)


# --- what the feed changes ------------------------------------------------------------------


class _Unread:
    """An iterator that takes back what was read from it: a queue in front of the rest, not a
    chain wrapped around it for every put-back (that nested once per chunk and held every
    entry it had ever put back)."""

    def __init__(self, items: Iterable):
        self._rest = iter(items)
        self._back: deque = deque()

    def __iter__(self):
        return self

    def __next__(self):
        if self._back:
            return self._back.popleft()
        return next(self._rest)

    def take(self, count: int) -> list:
        """The next `count` items (fewer at the end), the put-back ones first."""
        taken = []
        while self._back and len(taken) < count:
            taken.append(self._back.popleft())
        taken += islice(self._rest, count - len(taken))
        return taken

    def unread(self, items: list) -> None:
        self._back.extendleft(reversed(items))


@dataclass
class Comparison:
    """The new levels beside the last published quantities: what the gates need to know."""

    skus: int = 0  # seller SKUs in the file (sent or not)
    sent: int = 0  # SKUs with a quantity to send
    zero: int = 0  # ... of which quantity 0
    in_stock_before: int = 0  # sent SKUs whose last published quantity was above 0
    dropping_to_zero: int = 0  # ... and that would now be 0
    last_published: int = 0  # SKUs published lately: by the last published file, or in the week before it
    missing: int = 0  # ... that this file does not have, or does not send because of a bad row
    held_back: int = 0  # ... of which the file has, but does not send because of a bad row
    missing_examples: list[str] = field(default_factory=list)
    dropping_examples: list[str] = field(default_factory=list)
    zero_examples: list[str] = field(default_factory=list)  # sent at 0 (the first publish's gate)

    def follow(self, levels: Iterable[StockLevel], published: Iterable[tuple[str, int, bool]],
               ignore: Callable[[str], bool] | None = None) -> Iterator[StockLevel]:
        """Pass `levels` through while counting. Both inputs ascend by SKU; `published` gives
        (SKU, last published quantity, whether it was published lately); `ignore` says
        which published SKUs no longer concern the feed (left alone)."""
        return Chunked(self._follow(chunks_of(levels, _CHUNK), iter(published), ignore))

    def _follow(self, levels: Iterator[list[StockLevel]], before: Iterator[tuple[str, int, bool]],
                ignore: Callable[[str], bool] | None) -> Iterator[list[StockLevel]]:
        """`follow` a chunk of levels at a time: a chunk that ascends and has no SKU published
        before (a first publish, new SKUs), or exactly the SKUs published next (every day
        after), is counted without a line per level."""
        before = _Unread(before)
        current: list = [next(before, None)]
        previous = ""
        for chunk in levels:
            if not chunk:
                continue
            skus = list(map(by_sku, chunk))
            last = skus[-1]
            ascending = skus[0] > previous and all(map(lt, skus, islice(skus, 1, None)))
            if ascending and (current[0] is None or current[0][0] > last):
                self._count_unpublished(chunk)
            elif ascending and current[0][0] == skus[0]:
                published = [current[0], *before.take(len(skus) - 1)]
                if list(map(by_sku, published)) == skus:
                    self._count_republished(chunk, published)
                    current[0] = next(before, None)
                else:  # put back what was taken
                    before.unread(published[1:])
                    self._count(chunk, previous, before, current, ignore)
            else:
                self._count(chunk, previous, before, current, ignore)
            previous = last
            yield chunk
        while current[0] is not None:
            self._gone(current[0], ignore)
            current[0] = next(before, None)

    def _count_unpublished(self, levels: list[StockLevel]) -> None:
        quantities = list(map(_quantity_of, levels))
        zero = quantities.count(0)
        self.skus += len(levels)
        self.sent += len(levels) - quantities.count(None)
        self.zero += zero
        if zero and len(self.zero_examples) < 3:
            self.zero_examples += [level[0] for level in levels if level[1] == 0][:3 - len(self.zero_examples)]

    def _count_republished(self, levels: list[StockLevel], published: list[tuple[str, int, bool]]) -> None:
        """`levels` beside their own SKUs' last published (SKU, quantity, lately)."""
        quantities = list(map(_quantity_of, levels))
        was = list(map(_quantity_of, published))
        self.last_published += sum(map(_lately_of, published))
        self.skus += len(levels)
        unsent = quantities.count(None)
        self.sent += len(levels) - unsent
        in_stock_before = len(was) - was.count(0)
        if unsent:
            for level, (_, before, lately) in zip(levels, published):
                if level[1] is None:
                    in_stock_before -= bool(before)
                    if lately:  # a bad row holds it back: as good as missing
                        self.missing += 1
                        self.held_back += 1
                        if len(self.missing_examples) < 3:
                            self.missing_examples.append(level[0])
        self.in_stock_before += in_stock_before
        if quantities.count(0):
            zero = [(level[0], before) for level, before in zip(levels, was) if level[1] == 0]
            dropping = [sku for sku, before in zero if before]
            self.zero += len(zero)
            self.dropping_to_zero += len(dropping)
            self.zero_examples += [sku for sku, _ in zero[:3 - len(self.zero_examples)]]
            self.dropping_examples += dropping[:3 - len(self.dropping_examples)]

    def _count(self, levels: list[StockLevel], previous: str, before: Iterator[tuple[str, int, bool]],
               current: list, ignore: Callable[[str], bool] | None) -> None:
        """Count `levels` one at a time beside `published`'s `current` entry (moved on here)."""
        skus = sent = zero = in_stock_before = dropping = 0
        try:
            for level in levels:
                sku, quantity = level[0], level[1]
                if sku <= previous:
                    raise ValueError(f"levels out of order: {sku!r} after {previous!r}")
                previous = sku
                while current[0] is not None and current[0][0] < sku:
                    self._gone(current[0], ignore)
                    current[0] = next(before, None)
                was = 0
                if current[0] is not None and current[0][0] == sku:
                    self.last_published += current[0][2]
                    if quantity is None and current[0][2]:  # a bad row holds it back: as good as missing
                        self.missing += 1
                        self.held_back += 1
                        if len(self.missing_examples) < 3:
                            self.missing_examples.append(sku)
                    was = current[0][1]
                    current[0] = next(before, None)
                skus += 1
                if quantity is not None:
                    sent += 1
                    if quantity == 0:
                        zero += 1
                        if len(self.zero_examples) < 3:
                            self.zero_examples.append(sku)
                        if was:
                            dropping += 1
                            if len(self.dropping_examples) < 3:
                                self.dropping_examples.append(sku)
                    if was:
                        in_stock_before += 1
        finally:
            self.skus += skus
            self.sent += sent
            self.zero += zero
            self.in_stock_before += in_stock_before
            self.dropping_to_zero += dropping

    def _gone(self, published: tuple[str, int, bool], ignore: Callable[[str], bool] | None) -> None:
        sku, _, from_last_file = published
        if not from_last_file or (ignore is not None and ignore(sku)):
            return
        self.last_published += 1
        self.missing += 1
        if len(self.missing_examples) < 3:
            self.missing_examples.append(sku)


# --- the safety gates -----------------------------------------------------------------------


@dataclass(frozen=True)
class GateFacts:
    rows: int
    file_problem: str | None
    comparison: Comparison
    stock_time: datetime  # of this file
    last_stock_time: datetime | None = None  # of the last published file, if any
    last_name: str | None = None
    bad_rows: int = 0  # rows with an error
    now: datetime | None = None  # the bridge's clock: a stock time further ahead than
    future_tolerance: timedelta = timedelta(days=1)  # this is refused (a typo in the date)


@dataclass(frozen=True)
class Verdict:
    publish: bool
    held_because: tuple[str, ...] = ()  # every gate that holds the feed, in words
    overridden: tuple[str, ...] = ()  # what --force overrode
    final: bool = False  # nothing to send, or refused: --force cannot publish it, it is answered at once

    def summary(self) -> str:
        if not self.publish:
            return "held: " + "; ".join(self.held_because)
        if self.overridden:
            return "published with --force, overriding: " + "; ".join(self.overridden)
        return "passed the safety gates"


def check_gates(facts: GateFacts, max_missing_share: float, max_zero_share: float,
                force: bool = False, max_bad_row_share: float = 0.50) -> Verdict:
    """Whether the feed may go. `force` overrides every gate but the ones that leave nothing
    to send (an empty file, no usable row)."""
    compared = facts.comparison
    nothing: list[str] = []
    if facts.rows == 0:
        nothing.append("the file has no stock rows (it is empty or has only a header)")
    elif facts.file_problem:
        nothing.append(facts.file_problem)
    elif compared.sent == 0:
        nothing.append(f"none of the file's {facts.rows:,} rows gives a quantity to send (see the rows' problems)")
    if facts.now is not None and facts.stock_time > facts.now + facts.future_tolerance:
        nothing.append(f"the file's stock time {_iso(facts.stock_time)} is in the future: "
                       f"{how_long(facts.stock_time - facts.now)} ahead of the bridge's clock ({_iso(facts.now)}), "
                       f"more than the {how_long(facts.future_tolerance)} allowed (stock.future_tolerance_minutes). "
                       "Correct the timestamps (a typo in the date?) and drop the file again")
    held: list[str] = []
    if facts.last_stock_time is not None and facts.stock_time < facts.last_stock_time:
        held.append(f"the file's stock time {_iso(facts.stock_time)} is older than the last published "
                    f"file's ({facts.last_name}, {_iso(facts.last_stock_time)})")
    if not nothing and facts.bad_rows / facts.rows > max_bad_row_share:
        held.append(f"{facts.bad_rows:,} of the file's {facts.rows:,} rows ({facts.bad_rows / facts.rows:.1%}) are "
                    f"bad, more than the limit of {_percent(max_bad_row_share)}: is it the right file, in the "
                    "mapping's layout?")
    if compared.last_published and compared.missing / compared.last_published > max_missing_share:
        back = f" or held back by a bad row ({compared.held_back:,} of them)" if compared.held_back else ""
        held.append(f"{compared.missing:,} of the {compared.last_published:,} SKUs published lately "
                    f"({compared.missing / compared.last_published:.1%}) are missing from this file{back}, "
                    f"more than the limit of {_percent(max_missing_share)} "
                    f"(e.g. {', '.join(compared.missing_examples)})")
    first_limit = max(max_zero_share, FIRST_ZERO_SHARE)
    if facts.last_name is None and compared.sent and compared.zero / compared.sent > first_limit:
        # nothing published yet to compare with: the file itself must not be mostly zeros. Day
        # one is when a mapping is newest and a wrong quantity column likeliest; the share is
        # of every SKU sent (some are out of stock in any shop), so its limit is "most of them".
        held.append(f"this is the first stock file to publish and {compared.zero:,} of its {compared.sent:,} "
                    f"SKUs ({compared.zero / compared.sent:.1%}) are 0, more than the limit of "
                    f"{_percent(first_limit)} for a first file (e.g. {', '.join(compared.zero_examples)})")
    if compared.in_stock_before and compared.dropping_to_zero / compared.in_stock_before > max_zero_share:
        held.append(f"{compared.dropping_to_zero:,} of the {compared.in_stock_before:,} SKUs in stock on "
                    f"Amazon ({compared.dropping_to_zero / compared.in_stock_before:.1%}) would drop to zero, "
                    f"more than the limit of {_percent(max_zero_share)} "
                    f"(e.g. {', '.join(compared.dropping_examples)})")
    if nothing:
        if force:
            nothing.append("--force cannot publish it: there is nothing to send" if compared.sent == 0
                           or facts.file_problem else "--force cannot publish a file dated in the future")
        return Verdict(False, tuple(nothing + held), final=True)
    if held and not force:
        return Verdict(False, tuple(held))
    return Verdict(True, (), tuple(held))


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")



def _percent(share: float) -> str:
    return f"{share * 100:g}%"
