"""Streaming readers for inbound flat files: CSV, XLSX or XML in, numbered rows of text out.

Pure: they take an open binary stream (the spool copy) and a `TableSpec`, and yield `Row`s one at
a time, so memory stays flat however long the file is. Nothing here knows what a shipment or a
stock level is: a flow names the fields it wants and interprets their text itself.

    for number, values, problem in read_rows(stream, spec):
        ...  # values: {field: text}, "" when absent; problem: why the row is unusable, or ""

Row numbers are what a person finds in the file: the line (CSV, counting the header), the sheet
row (XLSX) or the line of the record element (XML; records sharing a line, as in a file without
line breaks, take the next numbers, so that every row has its own).

A file that cannot be read at all raises `BadFile` (wrong encoding, a missing header column, an
XML DOCTYPE, not a workbook); a file that ends early raises `IncompleteFile`. Nothing else ever
leaves a reader: whatever a library raises on a hostile file becomes `BadFile`. XML never
resolves entities and never touches the network: a document with a DOCTYPE is refused outright,
so an entity-expansion bomb or an external entity is never expanded.

A workbook is measured before openpyxl opens it (`check_workbook`): what it unpacks to, its
shared strings, and a DOCTYPE in any of its XML parts. openpyxl loads the shared strings whole
(about 200 bytes each), so those limits are what bounds the memory a workbook can take; its
rows are built only up to the last column the mapping reads.
"""

from __future__ import annotations

import codecs
import csv
import io
import operator
import re
import zipfile
from dataclasses import dataclass, replace
from datetime import date, datetime, time
from itertools import chain, count, islice, repeat, starmap
from typing import IO, Iterable, Iterator, NamedTuple, TypeVar

from bridge.errors import BadFile, IncompleteFile

FORMATS = ("csv", "xlsx", "xml")
ENCODINGS = ("utf-8", "cp1252", "utf-16")
_CHUNK = 1 << 16
_T = TypeVar("_T")
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


@dataclass(frozen=True)
class TableSpec:
    """How to find the wanted fields in a file.

    csv, xlsx: `fields` are header names, or 1-based column positions ("1", "7") when
    `header` is false. xml: `record` is the path of the element that makes one row, from the
    document element down ("Shipments/Shipment/Package/Item"); `fields` are paths relative to
    it: "SKU" (a child's text), "@sku" (an attribute), "Qty/Value", "../@tracking" (an
    ancestor's attribute; ancestors' child elements must come before the records).
    """

    format: str
    fields: tuple[str, ...]
    encoding: str = "utf-8"  # csv: utf-8 (a BOM is dropped), cp1252 or utf-16 (BOM decides order)
    delimiter: str = ","
    header: bool = True
    sheet: str = ""  # xlsx: "" is the first sheet
    record: str = ""  # xml


class Row(NamedTuple):
    number: int
    values: dict[str, str]
    problem: str = ""  # why this row cannot be used as read (e.g. a wrong field count)


_PLAIN_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._,:/#+-]{0,39}\Z")
_PLAIN_DATE = re.compile(r"[0-9][0-9 ./:TZ+-]{0,29}\Z")


def cell_shown(text: str) -> str:
    """A cell's value for a row's message: quoted when its shape says it is an id, a code, a
    number or a date (one word of letters, digits and ._:/#+-, or digits with date separators,
    at most 40 characters); otherwise only its length. A name or an address (words with
    spaces, '@', accents, ...) is never repeated: a file read with the wrong layout puts buyer
    data where a code should be."""
    if _PLAIN_TOKEN.match(text) or _PLAIN_DATE.match(text):
        return repr(text)
    return f"a value of {len(text):,} character{'s' if len(text) != 1 else ''}"


def read_rows(stream: IO[bytes], spec: TableSpec) -> Iterator[Row]:
    """Every data row of the file, streamed. Rows with no text at all are skipped. Raises
    BadFile (IncompleteFile) and nothing else, however hostile the file; a file of another
    kind than the mapping's format (a workbook where CSV is read) is refused as that."""
    start = stream.tell()
    problem = kind_problem(stream.read(_KIND_HEAD), spec)
    stream.seek(start)
    if problem:
        raise BadFile(problem)
    if spec.format == "csv":
        return chain.from_iterable(_csv_batches(stream, spec))
    if spec.format == "xlsx":
        return _xlsx_rows(stream, spec)
    if spec.format == "xml":
        return chain.from_iterable(_total(_xml_row_lists(stream, spec), "XML"))  # rows come an anchor at a time
    raise ValueError(f"unknown format {spec.format!r}")


_KIND_HEAD = 1 << 16
_FORMAT_NAMES = {"csv": "CSV", "xlsx": "an XLSX workbook", "xml": "XML"}
_TAG = re.compile(rb"<(?:\?xml|[A-Za-z_][\w.:-]*[\s/>])")


def kind_problem(head: bytes, spec: TableSpec) -> str:
    """Why the file's first bytes say it is not what the mapping reads, or "". Only what is
    certain is said: a zip (a workbook), an old Excel workbook, a PDF, XML, NUL bytes in text."""
    wanted = f"the mapping reads {_FORMAT_NAMES[spec.format]}"
    if spec.format == "csv":
        wanted += f" ({_encoding_name(spec.encoding)})"
    found = _kind(head, spec)
    if found is None:
        return ""
    return f"the file is {found} but {wanted}: is it in the wrong folder or saved in the wrong format?"


def _kind(head: bytes, spec: TableSpec) -> str | None:
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return None if spec.format == "xlsx" else "a zip file (an XLSX workbook?)"
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return f"an old Excel workbook (.xls: save it as {'.xlsx' if spec.format == 'xlsx' else 'CSV'})"
    if head.startswith(b"%PDF"):
        return "a PDF"
    if spec.format == "xlsx":
        return "text (a workbook is a zip file)" if len(head) >= 4 else None
    text = _decoded_start(head)
    if spec.format == "csv":
        if _TAG.match(text.lstrip().encode("utf-8", "replace")):
            return "XML"
        if spec.encoding != "utf-16" and b"\x00" in head and not head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "text with NUL bytes (UTF-16 without a byte order mark?)"
        return None
    stripped = text.lstrip()
    if stripped and not stripped.startswith("<"):
        return "not XML (it starts with text and not with '<': CSV?)"
    return None


def _decoded_start(head: bytes) -> str:
    for bom, codec in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")):
        if head.startswith(bom):
            return head[len(bom):].decode(codec, "replace")
    return head.decode("latin-1")


def _total(items: Iterator[_T], kind: str) -> Iterator[_T]:
    """`items`, with anything but BadFile a library raises on the way turned into BadFile."""
    try:
        yield from items
    except BadFile:
        raise
    except RecursionError:
        raise BadFile(f"the {kind} is nested too deeply to be read") from None
    except MemoryError:
        raise BadFile(f"the {kind} is too large to be read") from None
    except Exception as problem:
        raise BadFile(f"the {kind} cannot be read ({_described(problem)})") from None


# --- CSV ----------------------------------------------------------------------------------------

def _csv_batches(stream: IO[bytes], spec: TableSpec) -> Iterator[Iterable[Row]]:
    """The rows in batches (chained, rows reach the caller without a Python frame per row).
    Decoded strictly (fast); on a byte the encoding lacks, read again from the start with
    undecodable bytes kept as lone surrogates, so the rows holding them are named exactly."""
    start = checked_start(stream, spec.encoding).tell()
    if spec.encoding == "cp1252" and stream.read(3) == codecs.BOM_UTF8:
        spec = replace(spec, encoding="utf-8")  # Excel's "CSV UTF-8": the mark says so, nothing is guessed
    stream.seek(start)
    last = [0]  # the number of the last row handed out
    try:
        try:
            yield from _csv_pass(stream, spec, False, last)
        except UnicodeDecodeError:
            stream.seek(start)
            done = last[0]
            for batch in _csv_pass(stream, spec, True, last):
                yield [row for row in batch if row.number > done]
    except BadFile:
        raise
    except MemoryError:
        raise BadFile(f"row {last[0] + 1}: too large to be read as CSV") from None
    except UnicodeDecodeError:  # UTF-16 keeps no undecodable byte: the bytes are scanned for the line
        line = _utf16_bad_line(stream, start)
        where = f"row {line}" if line else f"row {last[0] + 1} or a few rows after it"
        raise BadFile(f"{where}: bytes that are not {_encoding_name(spec.encoding)} text: check the file's "
                      "encoding") from None
    except Exception as problem:  # nothing but BadFile leaves a reader
        raise BadFile(f"row {last[0] + 1}: cannot be read as CSV ({_described(problem)})") from None


def _csv_pass(stream: IO[bytes], spec: TableSpec, careful: bool, last: list[int]) -> Iterator[Iterable[Row]]:
    """One pass over the file. Records are taken in batches: a batch where every record is one
    whole line of the expected width becomes rows through C-level iterators and one generated
    function per row (`_RowMaker.fast`: the speed of a large file); any other batch goes record
    by record (`_odd_row`)."""
    text = io.TextIOWrapper(stream, encoding=_codec(spec.encoding), newline="",
                            errors="surrogateescape" if careful else "strict")
    reader = csv.reader(text, delimiter=spec.delimiter)
    line = 1  # the line the next record starts on
    try:
        if spec.header:
            header = next(reader, None)
            if header is None:
                raise IncompleteFile("the file is empty")
            if careful and _UNDECODED.search("".join(header)):
                raise BadFile(f"row 1: {_undecoded(header, spec.encoding)}")
            index = _header_index(header, spec.fields, spec.delimiter)
            width = len(header)
        else:
            index = _position_index(spec.fields)
            width = 0
        rows = _RowMaker(index, width)
        line = reader.line_num + 1
        size = 1 if careful else _batch_size(width)  # careful: a decoding error names its own row
        while True:
            batch: list[list[str]] = []
            try:
                batch.extend(islice(reader, size))  # on an error, the records before it stay
            except csv.Error as problem:
                numbers = _record_lines(batch, line)
                yield list(_odd_rows(batch, numbers, spec, rows, careful, last))
                at = numbers[-1] + _breaks(batch[-1]) + 1 if batch else line
                raise BadFile(f"row {at}: cannot be read as CSV ({problem})") from None
            if not batch:
                return
            lines = reader.line_num - line + 1
            plain = not careful and lines == len(batch) and rows.plain(batch)
            if plain:
                last[0] = line + lines - 1
                yield rows.fast(batch, line)
            else:
                numbers = range(line, line + lines) if lines == len(batch) else _record_lines(batch, line)
                yield list(_odd_rows(batch, numbers, spec, rows, careful, last))  # inside the try: errors become BadFile
            line += lines
            if not careful and not (plain and width):  # a plain batch with a header is the header's width
                size = _batch_size(max(width, max(map(len, batch))))
    except csv.Error as problem:  # the header row
        raise BadFile(f"row {line}: cannot be read as CSV ({problem})") from None
    finally:
        text.detach()  # the caller's stream stays open (and seekable for a second pass)


_BATCH = 2048  # records a batch holds at most
_BATCH_CELLS = 1 << 17  # and cells: a batch of rows as wide as Excel's (16,384 columns) stays small


def _batch_size(width: int) -> int:
    """How many records the next batch takes, for records `width` cells wide (the header's,
    or the widest seen): memory stays flat however wide the rows are."""
    return max(1, min(_BATCH, _BATCH_CELLS // max(width, 1)))


class _RowMaker:
    """Rows from csv records: `fast` for a batch that `plain` accepts (each record has the
    header's width, or in a file without a header reaches every wanted position, and its first
    wanted cell is not empty), built by C-level iterators and one function written for the
    layout (`_values_function`): no Python line per row but that function's one."""

    def __init__(self, index: dict[str, int], width: int):
        self.index, self.width = index, width
        self.names = tuple(index)
        positions = tuple(index.values())
        self.most = max(positions)
        # a tuple even for one field: itemgetter(p) alone gives the cell, not a 1-tuple
        self.pick = operator.itemgetter(*positions) if len(positions) > 1 else operator.itemgetter(*positions * 2)
        self.first = operator.itemgetter(positions[0])
        self.whole = 0 < width <= _WHOLE_RECORD_CELLS  # the function takes whole records
        self.values = _values_function(self.names, positions if self.whole else range(len(positions)),
                                       width if self.whole else len(positions) + (len(positions) == 1))

    def plain(self, batch: list[list[str]]) -> bool:
        widths = set(map(len, batch))
        if self.width:  # a first wanted cell of blanks may start a row of blanks: record by record
            return widths == {self.width} and all(map(str.strip, map(self.first, batch)))
        # without a header a record of blanks is skipped: its first wanted cell must have text
        return min(widths) > self.most and all(map(str.strip, map(self.first, batch)))

    def fast(self, batch: list[list[str]], line: int) -> Iterator[Row]:
        values = starmap(self.values, batch if self.whole else map(self.pick, batch))
        return map(tuple.__new__, repeat(Row), zip(count(line), values, repeat("")))

    def row(self, number: int, record: list[str]) -> Row:
        return tuple.__new__(Row, (number, dict(zip(self.names, map(str.strip, self.pick(record)))), ""))


_WHOLE_RECORD_CELLS = 16  # wider records are picked first: from about 24 cells that is faster (attack-6)


def _values_function(names: tuple[str, ...], positions: Iterable[int], arguments: int):
    """A function of `arguments` cells that returns {name: cell stripped} for the cell at each
    position: a dict display is built at its final size, where dict(zip(...)) grows as it fills
    (a third of the time a row takes). Mapping text never enters the code: the names are
    passed in as constants (k0, k1, ...)."""
    cells = ", ".join(f"c{at}" for at in range(arguments))
    constants = ", ".join(f"k{i}=k{i}" for i in range(len(names)))
    entries = ", ".join(f"k{i}: c{at}.strip()" for i, at in enumerate(positions))
    scope = {f"k{i}": name for i, name in enumerate(names)}
    exec(compile(f"def values({cells}, *, {constants}):\n    return {{{entries}}}", "<csv row>", "exec"), scope)
    return scope["values"]


def _odd_rows(batch: list[list[str]], numbers, spec: TableSpec, rows: _RowMaker, careful: bool,
              last: list[int]) -> Iterator[Row]:
    """A batch record by record: blank records skipped, the others as rows, with a problem
    when their width is wrong or a byte did not decode."""
    width = rows.width
    for number, record in zip(numbers, batch):
        last[0] = number
        if width and len(record) == width and not careful:
            if rows.first(record).strip() or "".join(record).strip():
                yield rows.row(number, record)
        elif "".join(record).strip():
            yield _odd_row(number, record, spec, rows.index, width, careful)


def _record_lines(batch: list[list[str]], line: int) -> list[int]:
    """The line each record starts on, from the first one's: a quoted value may hold line breaks."""
    numbers = []
    for record in batch:
        numbers.append(line)
        line += 1 + _breaks(record)
    return numbers


def _breaks(record: list[str]) -> int:
    """Line breaks inside a record's values, counted as the reader counts lines: \n, \r, \r\n."""
    return sum(cell.count("\n") + cell.count("\r") - cell.count("\r\n") for cell in record)


def _odd_row(number: int, record: list[str], spec: TableSpec, index: dict[str, int], width: int,
             careful: bool) -> Row:
    """A row off the fast path: undecodable bytes, a wrong field count, or no header."""
    problem = ""
    if careful and _UNDECODED.search("".join(record)):
        problem = _undecoded(record, spec.encoding)
        record = [_UNDECODED.sub("\ufffd", cell) for cell in record]
    elif width and len(record) > width:
        problem = f"{len(record)} fields, the header has {width}{_delimiter_hint(spec.delimiter)}"
    elif width and len(record) < width:
        problem = f"{len(record)} fields, the header has {width}"
    elif not width and len(record) <= max(index.values()):
        problem = f"{len(record)} fields, the mapping reads field {max(index.values()) + 1}"
    values = {name: record[at].strip() if at < len(record) else "" for name, at in index.items()}
    return Row(number, values, problem)


_UNDECODED = re.compile("[\udc80-\udcff]")


def _utf16_bad_line(stream: IO[bytes], start: int) -> int | None:
    """The line of the first bytes of a UTF-16 file that do not decode (a lone surrogate), its
    text read a chunk at a time; None when it cannot be told. The reader decodes a few kB ahead
    of the row it is at, so its own row could be hundreds of lines early."""
    stream.seek(start)
    head = stream.read(2)
    codec = "utf-16-be" if head == codecs.BOM_UTF16_BE else "utf-16-le"
    pending = b"" if head in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else head
    line, last = 1, ""
    while chunk := stream.read(_CHUNK):
        data = pending + chunk
        whole = len(data) - len(data) % 2
        if whole >= 2 and 0xD8 <= data[whole - 2 if codec == "utf-16-be" else whole - 1] <= 0xDB:
            whole -= 2  # a high surrogate: its pair may be in the next chunk
        data, pending = data[:whole], data[whole:]
        try:
            text = data.decode(codec)
        except UnicodeDecodeError as problem:
            text = data[:problem.start].decode(codec)
            return line + _line_breaks(last + text) - _line_breaks(last)
        line += _line_breaks(last + text) - _line_breaks(last)
        last = text[-1:]
    return None


def _line_breaks(text: str) -> int:
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def _undecoded(cells: list[str], encoding: str) -> str:
    byte = ord(_UNDECODED.search("".join(cells)).group()) - 0xDC00
    return f"byte 0x{byte:02x} is not {_encoding_name(encoding)} text: check the file's encoding"


def checked_start(stream: IO[bytes], encoding: str) -> IO[bytes]:
    """The stream, after refusing a byte order mark that contradicts the declared encoding:
    guessing would read a UTF-16 file declared as cp1252 as rubbish, row by row. One mark is
    taken instead: UTF-8's in a cp1252 file is Excel's "CSV UTF-8" (staff save with it by
    default, the WMS writes cp1252), and its three bytes are never how cp1252 text begins."""
    start = stream.read(4)
    stream.seek(-len(start), io.SEEK_CUR)
    for bom, name in _BOMS:
        if start.startswith(bom) and name != encoding and (bom, encoding) != (codecs.BOM_UTF8, "cp1252"):
            raise BadFile(f"the file is {_encoding_name(name)} text (it starts with a byte order "
                          f"mark), the mapping says {_encoding_name(encoding)}")
    if encoding == "utf-16" and not start.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise BadFile("the file has no UTF-16 byte order mark, the mapping says UTF-16")
    return stream


def _codec(encoding: str) -> str:
    return "utf-8-sig" if encoding == "utf-8" else encoding


def _encoding_name(encoding: str) -> str:
    return {"utf-8": "UTF-8", "cp1252": "Windows-1252", "utf-16": "UTF-16"}.get(encoding, encoding)


def _delimiter_hint(delimiter: str) -> str:
    shown = "tab" if delimiter == "\t" else f"'{delimiter}'"
    return f" (a {shown} inside a value must be quoted)"


def _header_index(header: list[str], fields: tuple[str, ...], delimiter: str = "") -> dict[str, int]:
    """Where each wanted field is in the header row. Its cells are echoed in a message only
    when the row is a header (some wanted column is there): a file without a header row has
    data in row 1, and that may be a buyer's name and address."""
    names = [cell.strip() for cell in header]
    if not set(fields) & set(names):
        raise BadFile(_not_a_header(names, fields, delimiter))
    index = {}
    for field in fields:
        if names.count(field) > 1:
            raise BadFile(f"row 1: the header has the column '{field}' twice")
        if field not in names:
            found = [repr(n if len(n) <= 40 else n[:37] + "...") for n in names if n]
            more = f", and {len(found) - 20} more" if len(found) > 20 else ""
            raise BadFile(f"row 1: the header has no column '{field}' "
                          f"(found: {', '.join(found[:20]) + more or 'nothing'})")
        index[field] = names.index(field)
    return index


def _not_a_header(names: list[str], fields: tuple[str, ...], delimiter: str) -> str:
    """Row 1 has none of the wanted columns: said without echoing any of its cells."""
    wanted = ", ".join(f"'{field}'" for field in fields[:6]) + (", ..." if len(fields) > 6 else "")
    count = sum(1 for n in names if n)
    if count == 0:
        return f"row 1 is empty, where the header with the columns {wanted} should be"
    other = next((d for d in (";", ",", "\t", "|") if d != delimiter and len(names) == 1 and d in names[0]), None)
    if delimiter and other is not None:
        return (f"row 1 has one field and none of the columns {wanted}: are its values separated by "
                f"{_delimiter_name(other)} rather than {_delimiter_name(delimiter)}?")
    fields_word = "field" if count == 1 else "fields"
    return (f"row 1 has {count} {fields_word} and none is one of the columns {wanted}: is the header row "
            "missing, or is this another layout's file?")


def _delimiter_name(delimiter: str) -> str:
    return "tabs" if delimiter == "\t" else f"'{delimiter}'"


def _position_index(fields: tuple[str, ...]) -> dict[str, int]:
    return {field: int(field) - 1 for field in fields}


# --- XLSX ---------------------------------------------------------------------------------------

EXCEL_ROWS = 1_048_576  # a sheet has no more rows than this; a larger row number is refused
HEADER_COLUMNS = 1_000  # a header row is read this far; a wanted column beyond it is not found
MAX_PARTS = 10_000  # members of the zip
MAX_UNPACKED = 1 << 30  # all members together, unpacked
MAX_XML_PART = 16 << 20  # each XML part that openpyxl loads whole (workbook, styles, relations, ...)
MAX_SHARED_STRINGS = 1_000_000  # openpyxl keeps each one in memory (about 200 bytes each)
MAX_RATIO = 250  # a part larger than 1 MiB unpacking to more than this many times its packed size
_PROLOG = 1 << 16  # an XML part's root element starts within this many bytes, or it is refused
_SHARED_STRING = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?si[\s/>]")


def _xlsx_rows(stream: IO[bytes], spec: TableSpec) -> Iterator[Row]:
    from openpyxl import load_workbook  # heavy: only when a workbook is read

    try:
        valueless = check_workbook(stream, formulas=True)
    except IncompleteFile as problem:  # complete as far as the pipeline could tell, yet no zip
        raise BadFile(f"not an XLSX workbook ({str(problem).removeprefix('not a complete XLSX workbook (')}") from None
    try:
        workbook = load_workbook(stream, read_only=True, data_only=True)
    except Exception as problem:  # openpyxl raises many kinds on a file that is not a workbook
        raise BadFile(f"not an XLSX workbook ({_described(problem)})") from None
    try:
        if spec.sheet and spec.sheet not in workbook.sheetnames:
            raise BadFile(f"the workbook has no sheet '{spec.sheet}' "
                          f"(found: {', '.join(workbook.sheetnames[:20])})")
        sheet = workbook[spec.sheet] if spec.sheet else workbook.worksheets[0]
        if spec.header:
            header = next(sheet.iter_rows(min_row=1, max_row=1, max_col=HEADER_COLUMNS, values_only=True), None)
            if header is None:
                raise IncompleteFile("the sheet is empty")
            index = _header_index([_cell_text(cell) for cell in header], spec.fields)
        else:
            index = _position_index(spec.fields)
        first = 2 if spec.header else 1
        # Only the columns the mapping reads are built: a row with a cell at column XFD is not
        # padded to 16,384 cells.
        rows = sheet.iter_rows(min_row=first, max_row=EXCEL_ROWS, max_col=max(index.values()) + 1,
                               values_only=True)
        formulas = _formula_rows(stream, spec, first, max(index.values()) + 1) if valueless else None
        for number, cells in enumerate(rows, start=first):
            texts = [_cell_text(cell) for cell in cells]
            problem = _valueless(cells, next(formulas, ()), index) if formulas is not None else ""
            if not any(texts):  # formulas filled down below the data: nothing to read, as before
                continue
            yield Row(number, {name: texts[at] if at < len(texts) else ""
                               for name, at in index.items()}, problem)
    except BadFile:
        raise
    except Exception as problem:  # damaged XML inside, a value openpyxl cannot convert, ...
        raise BadFile(f"the workbook is damaged ({_described(problem)})") from None
    finally:
        workbook.close()


def _formula_rows(stream: IO[bytes], spec: TableSpec, first: int, columns: int) -> Iterator[tuple]:
    """The sheet's rows again, formulas as written ("=B2*2"), beside the values: read only for a
    workbook with a formula whose value was never saved, to name the rows that have one."""
    from openpyxl import load_workbook

    workbook = load_workbook(stream, read_only=True, data_only=False)
    try:
        sheet = workbook[spec.sheet] if spec.sheet else workbook.worksheets[0]
        yield from sheet.iter_rows(min_row=first, max_row=EXCEL_ROWS, max_col=columns, values_only=True)
    finally:
        workbook.close()


def _is_formula(written: object) -> bool:
    """A cell as openpyxl reads it with formulas: "=..." text, or an array or data-table formula."""
    if isinstance(written, str):
        return written.startswith("=")
    return type(written).__name__ in ("ArrayFormula", "DataTableFormula")


def _valueless(values: tuple, written: tuple, index: dict[str, int]) -> str:
    """Why a row cannot be read as it is: a wanted cell is a formula without a saved value (the
    file was written by a program that does not calculate; openpyxl reads such a cell as empty)."""
    names = [name for name, at in index.items()
             if at < len(values) and values[at] is None and at < len(written) and _is_formula(written[at])]
    if not names:
        return ""
    columns = ", ".join(f"'{name}'" for name in names)
    return (f"{columns}: a formula whose value was never saved (the program that wrote the file does not"
            " calculate): open the file in Excel and save it again, or have the values written instead")


def check_workbook(stream: IO[bytes], *, formulas: bool = False) -> bool:
    """Refuse a workbook that would take more memory or time than a confirmation or stock file
    may: too many parts, too much unpacked, a part that unpacks like a zip bomb, too many shared
    strings, or a DOCTYPE in any XML part (never expanded: refused). Raises BadFile saying which
    limit; returns when the workbook may be opened (with `formulas`, the reader's: whether a
    sheet has a formula without a saved value, which takes reading every sheet whole). A zip
    without a central directory raises IncompleteFile (still being written?)."""
    stream.seek(0)
    try:
        with zipfile.ZipFile(stream) as archive:
            parts = archive.infolist()
            if len(parts) > MAX_PARTS:
                raise BadFile(f"the workbook has {len(parts):,} parts, more than the {MAX_PARTS:,} a file may have")
            unpacked = sum(part.file_size for part in parts)
            if unpacked > MAX_UNPACKED:
                raise BadFile(f"the workbook unpacks to {_size(unpacked)}, more than the {_size(MAX_UNPACKED)} "
                              "a file may have: export it as CSV")
            valueless = False
            for part in parts:
                valueless = _check_part(archive, part, formulas) or valueless
            return valueless
    except zipfile.BadZipFile:
        raise IncompleteFile("not a complete XLSX workbook (its zip directory is missing)") from None
    except (BadFile, IncompleteFile):
        raise
    except Exception as problem:  # zipfile.LargeZipFile, NotImplementedError (compression), ...
        raise BadFile(f"the workbook's zip cannot be read ({_described(problem)})") from None
    finally:
        stream.seek(0)


def _check_part(archive: zipfile.ZipFile, part: zipfile.ZipInfo, formulas: bool) -> bool:
    """Refuses the part past a limit; returns whether it is a sheet with a formula and no value."""
    name = part.filename
    if part.file_size > 1 << 20 and part.file_size > MAX_RATIO * max(part.compress_size, 1):
        raise BadFile(f"the workbook's part {name!r} unpacks to {_size(part.file_size)}, more than "
                      f"{MAX_RATIO} times its packed size: refused as a zip bomb")
    if not name.lower().endswith((".xml", ".rels")):
        return False  # pictures, printer settings, ...: openpyxl does not parse them when reading
    worksheet = name.startswith("xl/worksheets/")
    shared = name.lower().endswith("sharedstrings.xml")
    if not (worksheet or shared) and part.file_size > MAX_XML_PART:
        raise BadFile(f"the workbook's part {name!r} unpacks to {_size(part.file_size)}, more than the "
                      f"{_size(MAX_XML_PART)} such a part may have")
    with archive.open(part) as member:
        head = member.read(_PROLOG)
        _check_prolog(name, head)
        if shared:
            _count_shared_strings(name, head, member)
        return formulas and worksheet and _has_valueless_formula(head, member)


# a cell holding a formula and no saved value: no <v>, or an empty one where the cell's type is not
# "str" (Excel saves a formula whose result is "" as t="str" with an empty <v>)
_FORMULA_CELL = re.compile(rb"<(?:\w+:)?c\b([^>]*)>\s*(?:<(?:\w+:)?f\b[^>]*/>|<(?:\w+:)?f\b[^>]*>[^<]*</(?:\w+:)?f>)\s*"
                           rb"(<(?:\w+:)?v\s*/>|<(?:\w+:)?v>\s*</(?:\w+:)?v>)?\s*</(?:\w+:)?c>")
_STRING_RESULT = re.compile(rb"\bt\s*=\s*[\"']str[\"']")


def _has_valueless_formula(head: bytes, rest: IO[bytes]) -> bool:
    tail, chunk = b"", head
    while chunk:
        text = tail + chunk
        if b"<f" in text or b":f" in text:  # most sheets have no formula: one fast test per chunk
            for cell in _FORMULA_CELL.finditer(text):
                if cell.group(2) is None or not _STRING_RESULT.search(cell.group(1)):
                    return True
        tail = text[-4096:]
        chunk = rest.read(1 << 20)
    return False


def _check_prolog(name: str, head: bytes) -> None:
    """Everything before the root element of an XML part: no DOCTYPE, no entity."""
    start = re.search(rb"<[A-Za-z_]", head.replace(b"\x00", b""))  # UTF-16 parts too
    prolog = head if start is None else head[:start.start()]
    squeezed = prolog.replace(b"\x00", b"").upper()
    if b"<!DOCTYPE" in squeezed or b"<!ENTITY" in squeezed:
        raise BadFile(f"the workbook's part {name!r} has a DOCTYPE; files with DTDs or entities are refused "
                      "(no entity is ever expanded or fetched)")
    if start is None and head.strip():
        raise BadFile(f"the workbook's part {name!r} does not start like XML")


def _count_shared_strings(name: str, head: bytes, rest: IO[bytes]) -> None:
    count, tail, chunk = 0, b"", head
    while chunk:
        text = tail + chunk
        count += len(_SHARED_STRING.findall(text))
        tail = text[-16:]
        count -= len(_SHARED_STRING.findall(tail))  # counted again with the next chunk
        if count > MAX_SHARED_STRINGS:
            raise BadFile(f"the workbook has more than {MAX_SHARED_STRINGS:,} different texts (shared strings), "
                          "more than a file may have: export it as CSV")
        chunk = rest.read(1 << 20)


def _size(size: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


_STRUCTURAL = ("ParseError", "XMLSyntaxError", "BadZipFile", "LargeZipFile", "KeyError", "NotImplementedError")


def _described(problem: BaseException) -> str:
    """A library's exception for a message: its type, and its words when they describe the
    file's structure (XML syntax, zip members), on one line and short. Other words (a value
    that would not convert, say) may quote a cell, and cells may hold buyer data: left out."""
    kind = type(problem).__name__
    if kind not in _STRUCTURAL:
        return kind
    text = " ".join(str(problem).split())
    return f"{kind}: {text if len(text) <= 120 else text[:117] + '...'}"


def _cell_text(value: object) -> str:
    """A cell as text: numbers without a spurious '.0', dates and times in ISO 8601. A number
    too large to hold every digit (a tracking number typed as a number) keeps Excel's exponent,
    so a check can say what happened instead of sending wrong digits."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value).upper()
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, (date, time)):
        return value.isoformat()
    return str(value).strip()


# --- XML ----------------------------------------------------------------------------------------

def _xml_row_lists(stream: IO[bytes], spec: TableSpec) -> Iterator[list[Row]]:
    """The rows, a list per anchor. Records are read when their highest ancestor a field
    refers to has ended (the "anchor"): by then every ancestor field is parsed, wherever it
    sits among the records. Only one anchor's subtree is held at a time. Only elements named
    on the record path down to the anchor reach Python; each anchor is then walked once,
    top-down (`_xml_walk`). Namespaces are ignored."""
    path = [part for part in spec.record.split("/") if part]
    depth = len(path)
    ups = max((_ups(field) for field in spec.fields), default=0)
    if ups > depth - 2:
        raise ValueError(f"{spec.record}: fields may refer to ancestors below the document element only")
    anchor = depth - ups
    namespaced: list = []
    walk = _xml_walk(path[anchor - 1:], spec.fields, namespaced)
    last = 0  # rows are unique and growing: records sharing a line (a minified file) count on
    roots: list = []
    known = None  # the parent of the last anchor: anchors are siblings, its place is checked once
    name = path[anchor - 1]
    for element in xml_elements(stream, tags=set(path[1:anchor]), roots=roots, namespaced=namespaced):
        parent = element.getparent()
        tag = element.tag
        if parent is known and (tag == name or _local(tag) == name):
            level = anchor
        else:
            level = _level_on_path(element, path[:anchor])
            if not level:
                continue
            if level == anchor:
                known = parent
        if level == anchor:
            rows: list[Row] = []
            last = walk(element, rows, last)
            if rows:
                yield rows
        _free(element, parent)
    if last == 0 and roots and _local(roots[0].tag) != path[0]:  # not "no rows": the wrong document
        raise BadFile(f"the document element is <{_short_tag(_local(roots[0].tag))}>, not <{path[0]}>: "
                      f"no {spec.record} record is in it (the wrong file, or a wrong record path in the mapping?)")


def _short_tag(name: str) -> str:
    return name if len(name) <= 40 else name[:40] + "..."


def _level_on_path(element, path: list[str]) -> int:
    """The element's level (the document element's is 1) when it sits on `path`, the record
    path from the document element down to the anchor; 0 when it does not, or lies deeper."""
    tags = []
    node = element
    while node is not None:
        if len(tags) == len(path):
            return 0
        tags.append(node.tag)
        node = node.getparent()
    for name, tag in zip(path, reversed(tags)):
        if _local(tag) != name:
            return 0
    return len(tags)


def _ups(field: str) -> int:
    parts = field.split("/")
    return next((n for n, part in enumerate(parts) if part != ".."), len(parts))


def _free(element, parent) -> None:
    """Done with an anchor (or an ancestor of anchors): drop its content and the same-named
    elements before it, so memory does not grow with the document. Other siblings stay: they
    may be fields of an ancestor that later anchors read."""
    element.clear(keep_tail=False)
    previous = element.getprevious()
    tag = element.tag
    while previous is not None:
        before = previous.getprevious()
        if previous.tag == tag or _local(previous.tag) == _local(tag):
            parent.remove(previous)
        previous = before


def xml_elements(stream: IO[bytes], tags: set[str] | None = None, roots: list | None = None,
                 namespaced: list | None = None) -> Iterator[object]:
    """Elements as they end: only those named in `tags` (in any namespace), all when None, none
    when empty (a completeness check). Raises BadFile for a DOCTYPE or broken XML,
    IncompleteFile when the document stops before its end. `roots`: the document element is
    appended to it at the end. `namespaced`: the first namespace declaration is appended to it
    as soon as it is parsed (before the end of any element it is declared in)."""
    from lxml import etree

    wanted = None if tags is None else ["{*}" + tag for tag in sorted(tags)] or [_NO_ELEMENT]
    events = ("end",) if namespaced is None else ("end", "start-ns")
    # Not remove_blank_text, though faster: past line 65,535 libxml2 gives an element the line
    # of a text node next to it (its first child's, or the next), so row numbers would move.
    # Comments and processing instructions are dropped as parsed: a value written around one
    # (<Qty>5<!-- c -->6</Qty>) is then one text, 56, as XPath reads it, not 5.
    parser = etree.XMLPullParser(events=events, tag=wanted, resolve_entities=False, no_network=True,
                                 huge_tree=False, load_dtd=False, remove_comments=True, remove_pis=True)
    checked = False
    text = False  # anything but white space seen
    doctype = False  # a DOCTYPE before the first element: lxml may fail on its entity first
    try:
        while chunk := stream.read(_CHUNK):
            text = text or bool(chunk.strip())
            doctype = doctype or (not checked and b"<!DOCTYPE" in chunk)
            parser.feed(chunk)
            for event, element in parser.read_events():
                if event == "start-ns":
                    if not namespaced:
                        namespaced.append(element)
                    continue
                if not checked:
                    _refuse_doctype(element)
                    checked = True
                yield element
    except etree.XMLSyntaxError as problem:
        if doctype:  # e.g. "Attribute references external entity": the DOCTYPE is the reason
            raise BadFile("the XML document has a DOCTYPE; files with DTDs or entities are refused "
                          "(no entity is ever expanded or fetched)") from None
        raise BadFile(f"not well-formed XML: {_lxml_message(problem)}") from None
    try:
        root = parser.close()
    except etree.XMLSyntaxError as problem:
        raise _at_close(problem, text) from None
    _refuse_doctype(root)
    if roots is not None:
        roots.append(root)
    for event, element in parser.read_events():
        if event != "start-ns":
            yield element


_NO_ELEMENT = "{*}bridge-no-such-element"


def check_xml(stream: IO[bytes]) -> None:
    """Parse the whole document without building it (flat memory, however large): returns when
    it is complete and well-formed; raises BadFile for a DOCTYPE or broken XML, IncompleteFile
    when it stops before its end."""
    from lxml import etree

    class Quiet:  # a parser target without start/end/data: lxml calls into Python for nothing
        def doctype(self, *args) -> None:
            raise BadFile("the XML document has a DOCTYPE; files with DTDs or entities are refused "
                          "(no entity is ever expanded or fetched)")

        def close(self) -> None:
            return None

    parser = etree.XMLParser(target=Quiet(), resolve_entities=False, no_network=True, huge_tree=False,
                             load_dtd=False)
    text = False
    doctype = False
    try:
        try:
            while chunk := stream.read(_CHUNK):
                text = text or bool(chunk.strip())
                doctype = doctype or b"<!DOCTYPE" in chunk
                parser.feed(chunk)
        except etree.XMLSyntaxError as problem:
            if doctype:  # lxml may fail on an entity before the target hears of the DOCTYPE
                Quiet().doctype()
            raise BadFile(f"not well-formed XML: {_lxml_message(problem)}") from None
        try:
            parser.close()
        except etree.XMLSyntaxError as problem:
            raise _at_close(problem, text) from None
    except BadFile:
        raise
    except Exception as problem:
        raise BadFile(f"the XML cannot be read ({_described(problem)})") from None


def _at_close(problem, text: bool) -> Exception:
    """What an error libxml2 reports only at the end means: a document still being written,
    or (a namespace error, which it does not stop at) one that will never be well-formed."""
    if not text:
        return IncompleteFile("the file is empty or has no XML element")
    if "Namespace prefix" in str(problem) or "namespace" in str(problem).split(" (", 1)[0].lower():
        return BadFile(f"not well-formed XML: {_lxml_message(problem)}")
    return IncompleteFile(f"the XML document ends before its last element is closed ({_lxml_message(problem)})")


def _refuse_doctype(element) -> None:
    info = element.getroottree().docinfo
    if info.internalDTD is not None or info.doctype or info.system_url or info.public_id:
        raise BadFile("the XML document has a DOCTYPE; files with DTDs or entities are refused "
                      "(no entity is ever expanded or fetched)")


def _lxml_message(problem) -> str:
    return str(problem).split(" (<string>", 1)[0]


def _local(tag: object) -> str:
    """An element's name without its namespace ('{urn:x}Item' -> 'Item')."""
    text = tag if isinstance(tag, str) else ""
    return text.rsplit("}", 1)[-1]


def _xml_walk(path: list[str], fields: tuple[str, ...], namespaced: list):
    """A function reading one anchor's records: `walk(anchor, rows, last)` appends them to
    `rows` in document order and returns the last row number given. `path` runs from the anchor
    down to the record. Each element from the anchor down is looked at once: one pass over its
    children finds its fields (the first child of a name wins) and the children that lead to
    records; the values found are handed down, so ancestors' fields after the records count.
    The common layouts get the same walk written out for them (`_compiled_walk`)."""
    plans = _level_plans(path, fields)
    record = len(plans) - 1
    own, texts, others, wanted, _ = plans[record]
    template = dict.fromkeys(fields, "")
    deep = any(len(parts) > 1 for _, parts, _ in others)  # "Qty/Value": counted by `_twice`

    def read_record(element, values: dict) -> str:
        """The record's fields into `values`; returns the row's problem."""
        _own_values(element, own, values)
        found, repeated, _ = _children_named(element, wanted, "")
        _child_values(found, texts, others, values)
        return _twice(element, fields) if repeated or deep else ""

    def descend(element, rows: list, last: int, values: dict, level: int = 0) -> int:
        if level == record:
            problem = read_record(element, values)
            line = element.sourceline or 0
            last = line if line > last else last + 1
            rows.append(Row(last, values, problem))
            return last
        level_own, level_texts, level_others, level_wanted, step = plans[level]
        _own_values(element, level_own, values)
        found, _, below = _children_named(element, level_wanted, step)
        _child_values(found, level_texts, level_others, values)
        for child in below:
            last = descend(child, rows, last, values.copy(), level + 1)
        return last

    def walk(anchor, rows: list, last: int) -> int:
        return descend(anchor, rows, last, template.copy())

    return _compiled_walk(plans, template, read_record, walk, namespaced) or walk


def _compiled_walk(plans: list[tuple], template: dict, read_record, general, namespaced: list):
    """`_xml_walk`'s walk as one function written for the layout, for documents without
    namespaces (a tag is then a name, or a function for a comment): no plans looked up, no call
    per element, and a record whose children are named once each is read from one dictionary.
    It hands an anchor to `general` once the document has declared a namespace. None when the
    layout has fields left to the general walk: a child's attribute, a deeper path, a field
    named like the next element down the path. Mapping text never enters the code: names and
    fields are passed in as constants (k0, k1, ...)."""
    *upper, (own, texts, others, _, _) = plans
    if others or any(level_others or {name for _, name in level_texts} & {step}
                     for _, level_texts, level_others, _, step in upper):
        return None
    constants: dict = {"template": template, "read_record": read_record, "new_row": tuple.__new__, "Row": Row,
                       "general": general, "namespaced": namespaced}

    def constant(value: str) -> str:
        name = f"k{len(constants)}"
        constants[name] = value
        return name

    def own_lines(element: str, values: str, own_fields: tuple, indent: str) -> list[str]:
        return [line for field, attribute in own_fields for line in (
            f"{indent}x = {element}.get({constant(attribute)})" if attribute else f"{indent}x = {element}.text",
            f"{indent}if x: {values}[{constant(field)}] = x.strip()")]

    code = ["def walk(e0, rows, last):", "    if namespaced:", "        return general(e0, rows, last)",
            "    v0 = template.copy()"]
    indent = "    "
    for level, (level_own, level_texts, _, _, step) in enumerate(upper):
        element, values, below = f"e{level}", f"v{level}", f"below{level}"
        code += own_lines(element, values, level_own, indent)
        code += [f"{indent}{below} = []", f"{indent}seen = set()", f"{indent}for c in {element}[:]:",
                 f"{indent}    t = c.tag", f"{indent}    if t == {constant(step)}:", f"{indent}        {below}.append(c)"]
        for name in dict.fromkeys(name for _, name in level_texts):  # first of a name wins
            code += [f"{indent}    elif t == {constant(name)} and t not in seen:", f"{indent}        seen.add(t)",
                     f"{indent}        x = c.text", f"{indent}        if x:", f"{indent}            x = x.strip()"]
            code += [f"{indent}            {values}[{constant(field)}] = x" for field, named in level_texts if named == name]
        code += [f"{indent}for e{level + 1} in {below}:", f"{indent}    v{level + 1} = {values}.copy()"]
        indent += "    "
    record, values = f"e{len(upper)}", f"v{len(upper)}"
    code += [f"{indent}found = {{}}", f"{indent}children = {record}[:]",
             f"{indent}for c in children:", f"{indent}    found[c.tag] = c.text",
             f"{indent}problem = ''", f"{indent}if len(found) == len(children):"]
    code += own_lines(record, values, own, indent + "    ")
    for field, name in texts:
        code += [f"{indent}    x = found.get({constant(name)})", f"{indent}    if x: {values}[{constant(field)}] = x.strip()"]
    code += [f"{indent}    pass", f"{indent}else:", f"{indent}    problem = read_record({record}, {values})",
             f"{indent}line = {record}.sourceline or 0", f"{indent}last = line if line > last else last + 1",
             f"{indent}rows.append(new_row(Row, (last, {values}, problem)))", "    return last"]
    try:
        exec(compile("\n".join(code), "<xml walk>", "exec"), constants)
    except (SyntaxError, RecursionError, MemoryError):  # Python nests 20 blocks at most: a deep layout
        return None  # takes the general walk
    return constants["walk"]


def _level_plans(path: list[str], fields: tuple[str, ...]) -> list[tuple]:
    """Per element of `path` (anchor first, record last), what to read there: its own text or
    attributes (field, attribute name or ""), its children's text (field, name), other fields
    below it (field, names down, attribute name or ""), the names of the children those start
    with, and the name of the next element down the path ("" for the record)."""
    plans = []
    for level in range(len(path)):
        ups = len(path) - 1 - level
        own, texts, others = [], [], []
        for field in fields:
            if _ups(field) != ups:
                continue
            parts = field.split("/")[ups:]
            attribute = ""
            if parts and "@" in parts[-1]:
                parts[-1], attribute = parts[-1].split("@", 1)
                if not parts[-1]:
                    parts.pop()
            if not parts:
                own.append((field, attribute))
            elif len(parts) == 1 and not attribute:
                texts.append((field, parts[0]))
            else:
                others.append((field, tuple(parts), attribute))
        wanted = frozenset([name for _, name in texts] + [parts[0] for _, parts, _ in others])
        step = path[level + 1] if level + 1 < len(path) else ""
        plans.append((tuple(own), tuple(texts), tuple(others), wanted, step))
    return plans


def _own_values(element, own: tuple, values: dict) -> None:
    for field, attribute in own:
        value = element.get(attribute) if attribute else element.text
        values[field] = value.strip() if value else ""


def _child_values(found: dict, texts: tuple, others: tuple, values: dict) -> None:
    """Fields read from the children found by name (the first of each name)."""
    for field, name in texts:
        node = found.get(name)
        if node is not None:
            text = node.text
            if text:
                values[field] = text.strip()
    for field, parts, attribute in others:
        node = found.get(parts[0])
        for name in parts[1:]:
            if node is None:
                break
            node = _first_child(node, name)[0]
        value = None if node is None else node.get(attribute) if attribute else node.text
        values[field] = value.strip() if value else ""


def _children_named(element, wanted: frozenset, step: str) -> tuple[dict, bool, list]:
    """One pass over the element's children: the first of each `wanted` name, whether one of
    those names came again, and the children named `step`."""
    found = {}
    below = []
    repeated = False
    for child in element[:]:
        tag = child.tag
        if tag.__class__ is not str:
            continue  # a comment or a processing instruction
        if "}" in tag:
            tag = tag[tag.rfind("}") + 1:]
        if tag == step:
            below.append(child)
        if tag in wanted:
            if tag in found:
                repeated = True
            else:
                found[tag] = child
    return found, repeated, below


def _first_child(element, name: str):
    """The element's first child of that (local) name, and how many it has."""
    first, times = None, 0
    for child in element:
        tag = child.tag
        if tag.__class__ is str and tag[tag.rfind("}") + 1:] == name:
            times += 1
            first = first if first is not None else child
    return first, times


def _twice(record, fields: tuple[str, ...]) -> str:
    """Why the record cannot be read as one row: a field's element given more than once in it
    (two <OnHand>: which one?), or ""."""
    for field in fields:
        parts = field.split("/")
        if _ups(field) or not parts[0] or parts[0].startswith("@"):
            continue  # an ancestor's field, or an attribute of the record: given once
        node = record
        for name in parts:
            name = name.split("@", 1)[0]
            if not name or node is None:
                break
            node, times = _first_child(node, name)
            if times > 1:
                return f"{name} appears {times} times in this record"
    return ""
