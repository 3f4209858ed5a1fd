"""Orders → warehouse order files, as a mapping's `OrderLayout` describes them. Pure.

`render_orders` never raises for a bad order: an order that cannot be laid out (no shipping
address, no lines, a value longer than the warehouse takes, a character the file's encoding
lacks, a character XML cannot carry, a control character or line break in any field, free text
a spreadsheet would run as a formula, a value that cannot be laid out such as a price too large
to round, a file name that collides or is too long) is left out of every file and listed in
`RenderResult.failures` with a reason that names the field and the problem but never the
buyer's data. The other orders render as usual.

Orders are laid out sorted by order id, whatever order they come in: the same set of orders
always gives the same bytes and names, so a run re-rendered after a crash writes identical files.
"""

from __future__ import annotations

import io
import re
import string
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterable, Sequence

from bridge.errors import RenderError
from bridge.formats.tables import (
    CsvStream,
    XlsxStream,
    XmlStream,
    find_control,
    find_not_xml,
    find_unencodable,
)
from bridge.mapping import XLSX_CELL_MAX, Column, OrderLayout
from bridge.records import Line, Order, shown, utc

if TYPE_CHECKING:
    from lxml import etree

NAME_MAX = 255  # bytes in a file name on Linux file systems and OpenSSH's sftp-server


@dataclass(frozen=True)
class RenderedFile:
    name: str  # a plain file name, safe to join to the outbound folder
    data: bytes
    order_ids: tuple[str, ...]  # the orders in the file, in file order


@dataclass(frozen=True)
class RenderResult:
    files: tuple[RenderedFile, ...]
    failures: dict[str, str]  # order id -> why it is in no file (field and problem, no PII)


def render_orders(layout: OrderLayout, orders: Sequence[Order], run_time: datetime, *,
                  max_name_length: int = NAME_MAX) -> RenderResult:
    """Lay `orders` out in files; `run_time` fills {run_time} and dates XLSX files.

    A naive `run_time` is taken as UTC, like everywhere in the bridge. A file whose name would
    be longer than `max_name_length` bytes (the drop's limit less the temporary suffix the file
    is uploaded under) is not made: its orders fail, the others' files do not.
    """
    failures: dict[str, str] = {}
    ready: list[Order] = []
    seen: set[str] = set()
    for order in sorted(orders, key=lambda order: order.order_id):
        reason = _unusable(order, seen)
        if reason:
            failures.setdefault(order.order_id, reason)
        else:
            ready.append(order)
        seen.add(order.order_id)
    builder = _BUILDERS[layout.format](layout, run_time)
    files: list[RenderedFile] = []
    names: dict[str, str] = {}

    def laid_out(order: Order) -> Any:
        """The order's rows or element, or None (its failure noted)."""
        try:
            return builder.unit(order)
        except RenderError as problem:
            failures[order.order_id] = str(problem)
        except _UNEXPECTED as problem:  # a builder that could not say which field
            failures[order.order_id] = f"cannot lay out: {type(problem).__name__}"
        return None

    def add_file(data: bytes, kept: list[str], first: Order) -> None:
        if not kept:
            return
        name = _file_name(layout.file_name, run_time, len(files) + 1,
                          first if layout.file_per == "order" else None)
        if name in names:
            failures[kept[0]] = (f"its file name {name} is also the name of order "
                                 f"{shown(names[name])}'s file (their ids differ only in "
                                 f"characters a file name cannot hold)")
            return
        if len(name.encode("utf-8")) > max_name_length:
            failures.update(dict.fromkeys(kept, too_long(name, max_name_length)))
            return
        names[name] = kept[0]
        files.append(RenderedFile(name=name, data=data, order_ids=tuple(kept)))

    # Each order is laid out and written at once, so that a file of a hundred thousand orders
    # never holds more than one order's rows or element besides the bytes written.
    if layout.file_per == "order":
        for order in ready:
            unit = laid_out(order)
            if unit is not None:
                out = io.BytesIO()
                writer = builder.writer(out)
                kept = [order.order_id] if _added(writer, order, unit, failures) else []
                writer.close()
                add_file(out.getvalue(), kept, order)
    elif ready:
        out = io.BytesIO()
        writer = builder.writer(out)
        kept = [order.order_id for order in ready
                if (unit := laid_out(order)) is not None and _added(writer, order, unit, failures)]
        writer.close()
        add_file(out.getvalue(), kept, ready[0])
    return RenderResult(files=tuple(files), failures=failures)


def _added(writer, order: Order, unit: Any, failures: dict[str, str]) -> bool:
    """Write one order's unit; False (its failure noted) if the file cannot hold it."""
    try:
        writer.add(order, unit)
    except RenderError as problem:
        failures[order.order_id] = str(problem)
        return False
    return True


def too_long(name: str, limit: int) -> str:
    """Why a file name cannot be used: it would be over the drop's limit."""
    return (f"its file name would be {len(name.encode('utf-8'))} bytes long; the drop takes at "
            f"most {limit} ({NAME_MAX} less the temporary suffix)")


def _unusable(order: Order, seen: set[str]) -> str | None:
    if order.order_id in seen:
        return "the order appears twice in this run"
    if order.ship_to is None:
        return ("ship_to: Amazon withheld the shipping address "
                "(does the app have the Direct-to-Consumer Shipping role?)")
    if not order.lines:
        return "the order has no lines"
    return None


# What a getter raises for a value of a shape it does not expect (None where text is expected,
# a Decimal too large to round to the column's places): that order fails, never the render.
_UNEXPECTED = (TypeError, ValueError, ArithmeticError)


def _unexpected_value(cells: Iterable[tuple[Column, Order, Line | None, int]],
                      problem: Exception) -> RenderError:
    """The failure reason for a unit that raised `problem`, naming the field if one is to blame.

    Runs only after a unit failed: reads the order again cell by cell to find the field, and
    names the exception's class, never the value.
    """
    for column, order, line, number in cells:
        try:
            text = column.get(order, line, number)
        except _UNEXPECTED as found:
            return RenderError(f"{_where(column, number or None)} cannot be laid out "
                               f"({type(found).__name__})")
        if not isinstance(text, str):
            return RenderError(f"{_where(column, number or None)} cannot be laid out "
                               f"({type(text).__name__} where text is expected)")
    return RenderError(f"cannot lay out: {type(problem).__name__}")


def _where(column: Column, line_number: int | None) -> str:
    if line_number is not None and (column.source or "").startswith("line."):
        return f"{column.label} (line {line_number})"
    return column.label


# --- csv and xlsx: one row per line ---------------------------------------------------------


def _per_line(column: Column) -> bool:
    return column.source is not None and column.source.startswith("line.")


def _row_builder(columns: Sequence[Column]) -> Callable[[Order], list[list[str]]]:
    """One function per layout that makes an order's rows with the column getters inlined:
    order-level cells (dates, totals, the address) once per order, line cells per line.
    Generated from the column positions only; no text from the mapping enters the code."""
    getters = {f"g{i}": column.get for i, column in enumerate(columns)}
    once = [f"    v{i} = g{i}(order, first, 1)" for i, c in enumerate(columns) if not _per_line(c)]
    cells = ", ".join(f"g{i}(order, line, n)" if _per_line(c) else f"v{i}" for i, c in enumerate(columns))
    source = "\n".join([
        "def rows_of(order):",
        "    first = order.lines[0]",
        *once,
        f"    return [[{cells}] for n, line in enumerate(order.lines, 1)]",
    ])
    namespace: dict[str, Any] = dict(getters)
    exec(compile(source, "<row builder>", "exec"), namespace)  # noqa: S102 - see docstring
    return namespace["rows_of"]


class _Rows:
    """Order → its rows; a group of orders → one CSV or XLSX file."""

    def __init__(self, layout: OrderLayout, run_time: datetime):
        self.layout = layout
        self.run_time = run_time
        self.rows_of = _row_builder(layout.columns)
        wants_header = layout.format != "csv" or layout.header
        self.header = [c.name for c in layout.columns] if wants_header else None

    def unit(self, order: Order) -> list[list[str]]:
        try:
            rows = self.rows_of(order)
            reason = self.checked(rows)
        except _UNEXPECTED as problem:
            raise _unexpected_value(self.cells(order), problem) from None
        if reason:
            raise RenderError(reason)
        return rows

    def checked(self, rows: list[list[str]]) -> str | None:
        """Why these rows cannot be written: a control character in a cell, else None."""
        # Every control character is unprintable: one quick test per row, and a search of
        # its cells only when it fails (a no-break space is unprintable too, and allowed).
        for row in rows:
            if not "".join(row).isprintable():
                return self.cell_problem(rows, find_control, "a control character")
        return None

    def cells(self, order: Order):
        for number, line in enumerate(order.lines, 1):
            for column in self.layout.columns:
                yield column, order, line, number

    def cell_problem(self, rows: list[list[str]], find, what: str) -> str | None:
        for number, row in enumerate(rows, 1):
            for column, text in zip(self.layout.columns, row):
                found = find(text)
                if found:  # the position, never the character: it is the buyer's
                    return f"{_where(column, number)} has {what} at position {found[0]}"
        return None


class _Csv(_Rows):
    def writer(self, out: BinaryIO) -> _CsvFile:
        layout = self.layout
        return _CsvFile(self, CsvStream(out, header=self.header, delimiter=layout.delimiter, quoting=layout.quoting,
                                        line_terminator=layout.line_terminator, encoding=layout.encoding))


class _CsvFile:
    """One CSV file being written: an order whose rows hold a character the file's encoding
    lacks is left out, naming the field (the columns' getters replaced or spelled what they may)."""

    def __init__(self, rows: _Csv, stream: CsvStream):
        self.rows, self.stream = rows, stream

    def add(self, order: Order, rows: list[list[str]]) -> None:
        try:
            self.stream.add(rows)
        except RenderError:
            encoding = self.rows.layout.encoding
            raise RenderError(self.rows.cell_problem(rows, lambda text: find_unencodable(text, encoding),
                                                     f"a character {encoding} cannot encode")
                              or f"a character {encoding} cannot encode") from None

    def close(self) -> None:
        pass


class _Xlsx(_Rows):
    def checked(self, rows: list[list[str]]) -> str | None:
        return (super().checked(rows)
                or self.cell_problem(rows, find_not_xml, "a character XLSX cannot carry")
                or self.cell_too_long(rows))

    def cell_too_long(self, rows: list[list[str]]) -> str | None:
        for number, row in enumerate(rows, 1):
            for column, text in zip(self.layout.columns, row):
                if len(text) > XLSX_CELL_MAX:
                    return (f"{_where(column, number)} is {len(text)} characters long; an XLSX "
                            f"cell holds at most {XLSX_CELL_MAX} (set max_length and truncate "
                            f"to cut it)")
        return None

    def writer(self, out: BinaryIO) -> _Unitwise:
        numbers = [index for index, column in enumerate(self.layout.columns) if column.is_number]
        return _Unitwise(XlsxStream(out, header=self.header, sheet=self.layout.sheet, number_columns=numbers,
                                    timestamp=utc(self.run_time)))


class _Unitwise:
    """A file being written that takes every unit as it comes (XLSX rows, XML elements)."""

    def __init__(self, stream):
        self.stream = stream

    def add(self, order: Order, unit) -> None:
        self.stream.add(unit)

    def close(self) -> None:
        self.stream.close()


# --- xml: one element per order --------------------------------------------------------------


def _split_path(path: str) -> tuple[tuple[str, ...], str | None]:
    elements, _, attribute = path.partition("@")
    return tuple(elements.split("/")) if elements else (), attribute or None


class _Xml:
    def __init__(self, layout: OrderLayout, run_time: datetime):
        self.layout = layout
        self.fields = [(c, *_split_path(c.name)) for c in layout.fields]
        self.line_fields = [(c, *_split_path(c.name)) for c in layout.line_fields]
        from lxml import etree  # here, not at import: a service with no XML mapping never loads lxml

        self.Element, self.SubElement = etree.Element, etree.SubElement

    def unit(self, order: Order) -> etree._Element:
        try:
            return self.element(order)
        except _UNEXPECTED as problem:
            raise _unexpected_value(self.cells(order), problem) from None

    def cells(self, order: Order):
        for column, _, _ in self.fields:
            yield column, order, None, 0
        for number, line in enumerate(order.lines, 1):
            for column, _, _ in self.line_fields:
                yield column, order, line, number

    def element(self, order: Order) -> etree._Element:
        layout = self.layout
        element = self.Element(layout.order_element)
        self.fill(element, self.fields, order, None, 0)
        lines = self.SubElement(element, layout.lines_element) if layout.lines_element else element
        for number, line in enumerate(order.lines, 1):
            self.fill(self.SubElement(lines, layout.line_element), self.line_fields,
                      order, line, number)
        return element

    def fill(self, element: etree._Element, fields, order: Order, line, number: int) -> None:
        made: dict[tuple[str, ...], etree._Element] = {(): element}
        for column, path, attribute in fields:
            text = column.get(order, line, number)
            found = find_not_xml(text) or find_control(text)
            if found:  # the position, never the character: it is the buyer's
                what = "a control character" if find_control(found[1]) else "a character XML cannot carry"
                raise RenderError(f"{_where(column, number or None)} has {what} "
                                  f"at position {found[0]}")
            target = element
            for depth in range(1, len(path) + 1):
                key = path[:depth]
                target = made.get(key)
                if target is None:
                    target = made[key] = self.SubElement(made[path[:depth - 1]], path[depth - 1])
            if attribute:
                target.set(attribute, text)
            elif text:
                target.text = (target.text or "") + text

    def writer(self, out: BinaryIO) -> _Unitwise:
        return _Unitwise(XmlStream(out, self.layout.root, encoding=self.layout.encoding))


_BUILDERS = {"csv": _Csv, "xlsx": _Xlsx, "xml": _Xml}


# --- file names ------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _safe(text: str) -> str:
    """Letters, digits, '.', '_' and '-' only, and no '..' or leading '.'."""
    text = _UNSAFE.sub("_", text).replace("..", "__")
    return "_" + text[1:] if text.startswith(".") else text or "_"


class _SafeFormatter(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        return _safe(format(value, format_spec))


def _file_name(template: str, run_time: datetime, seq: int, order: Order | None) -> str:
    return _SafeFormatter().format(
        template,
        run_time=utc(run_time),
        seq=seq,
        order_id=order.order_id if order else "",
        marketplace_id=order.marketplace_id if order else "",
    )
