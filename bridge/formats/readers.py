"""Streaming readers for inbound flat files: CSV, XLSX or XML in, numbered rows of text out.

Pure: they take an open binary stream (the spool copy) and a `TableSpec`, and yield `Row`s one at
a time, so memory stays flat however long the file is. Nothing here knows what a shipment or a
stock level is: a flow names the fields it wants and interprets their text itself.

    for number, values, problem in read_rows(stream, spec):
        ...  # values: {field: text}, "" when absent; problem: why the row is unusable, or ""

Row numbers are what a person finds in the file: the line (CSV, counting the header), the sheet
row (XLSX) or the line of the record element (XML).

A file that cannot be read at all raises `BadFile` (wrong encoding, a missing header column, an
XML DOCTYPE, not a workbook); a file that ends early raises `IncompleteFile`. XML never resolves
entities and never touches the network: a document with a DOCTYPE is refused outright, so an
entity-expansion bomb or an external entity is never expanded.
"""

from __future__ import annotations

import codecs
import csv
import io
import operator
import re
import zipfile
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import IO, Iterator, NamedTuple

from bridge.errors import BadFile, IncompleteFile

FORMATS = ("csv", "xlsx", "xml")
ENCODINGS = ("utf-8", "cp1252", "utf-16")
_CHUNK = 1 << 16
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


def read_rows(stream: IO[bytes], spec: TableSpec) -> Iterator[Row]:
    """Every data row of the file, streamed. Rows with no text at all are skipped."""
    if spec.format == "csv":
        return _csv_rows(stream, spec)
    if spec.format == "xlsx":
        return _xlsx_rows(stream, spec)
    if spec.format == "xml":
        return _xml_rows(stream, spec)
    raise ValueError(f"unknown format {spec.format!r}")


# --- CSV ----------------------------------------------------------------------------------------

def _csv_rows(stream: IO[bytes], spec: TableSpec) -> Iterator[Row]:
    """Decoded strictly (fast); on a byte the encoding lacks, read again from the start with
    undecodable bytes kept as lone surrogates, so the rows holding them are named exactly."""
    start = checked_start(stream, spec.encoding).tell()
    last = [0]  # the number of the last row handed out
    try:
        yield from _csv_pass(stream, spec, False, last)
    except UnicodeDecodeError:
        stream.seek(start)
        done = last[0]
        for row in _csv_pass(stream, spec, True, last):
            if row.number > done:
                yield row


def _csv_pass(stream: IO[bytes], spec: TableSpec, careful: bool, last: list[int]) -> Iterator[Row]:
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
            index = _header_index(header, spec.fields)
            width = len(header)
        else:
            index = _position_index(spec.fields)
            width = 0
        names = tuple(index)
        positions = tuple(index.values())
        pick = operator.itemgetter(*positions) if len(positions) > 1 else (lambda r: (r[positions[0]],))
        strip, new_row = str.strip, tuple.__new__
        line = reader.line_num + 1
        for record in reader:
            number = last[0] = line
            line = reader.line_num + 1
            if len(record) == width and not careful:
                cells = pick(record)
                if cells[0] or "".join(record).strip():  # cheap test first: blank rows are rare
                    yield new_row(Row, (number, dict(zip(names, map(strip, cells))), ""))
                continue
            if not "".join(record).strip():
                continue
            yield _odd_row(number, record, spec, index, width, careful)
    except csv.Error as problem:
        raise BadFile(f"row {line}: cannot be read as CSV ({problem})") from None
    finally:
        text.detach()  # the caller's stream stays open (and seekable for a second pass)


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


def _undecoded(cells: list[str], encoding: str) -> str:
    byte = ord(_UNDECODED.search("".join(cells)).group()) - 0xDC00
    return f"byte 0x{byte:02x} is not {_encoding_name(encoding)} text: check the file's encoding"


def checked_start(stream: IO[bytes], encoding: str) -> IO[bytes]:
    """The stream, after refusing a byte order mark that contradicts the declared encoding:
    guessing would read a UTF-16 file declared as cp1252 as rubbish, row by row."""
    start = stream.read(4)
    stream.seek(-len(start), io.SEEK_CUR)
    for bom, name in _BOMS:
        if start.startswith(bom) and name != encoding:
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


def _header_index(header: list[str], fields: tuple[str, ...]) -> dict[str, int]:
    names = [cell.strip() for cell in header]
    index = {}
    for field in fields:
        if names.count(field) > 1:
            raise BadFile(f"row 1: the header has the column '{field}' twice")
        if field not in names:
            raise BadFile(f"row 1: the header has no column '{field}' "
                          f"(found: {', '.join(repr(n) for n in names if n) or 'nothing'})")
        index[field] = names.index(field)
    return index


def _position_index(fields: tuple[str, ...]) -> dict[str, int]:
    return {field: int(field) - 1 for field in fields}


# --- XLSX ---------------------------------------------------------------------------------------

def _xlsx_rows(stream: IO[bytes], spec: TableSpec) -> Iterator[Row]:
    from openpyxl import load_workbook  # heavy: only when a workbook is read

    try:
        workbook = load_workbook(stream, read_only=True, data_only=True)
    except Exception as problem:  # openpyxl raises many kinds on a file that is not a workbook
        raise BadFile(f"not an XLSX workbook ({type(problem).__name__}: {problem})") from None
    try:
        if spec.sheet and spec.sheet not in workbook.sheetnames:
            raise BadFile(f"the workbook has no sheet '{spec.sheet}' "
                          f"(found: {', '.join(workbook.sheetnames)})")
        sheet = workbook[spec.sheet] if spec.sheet else workbook.worksheets[0]
        rows = sheet.iter_rows(min_row=1, values_only=True)
        if spec.header:
            header = next(rows, None)
            if header is None:
                raise IncompleteFile("the sheet is empty")
            index = _header_index([_cell_text(cell) for cell in header], spec.fields)
        else:
            index = _position_index(spec.fields)
        for number, cells in enumerate(rows, start=2 if spec.header else 1):
            texts = [_cell_text(cell) for cell in cells]
            if not any(texts):
                continue
            yield Row(number, {name: texts[at] if at < len(texts) else ""
                               for name, at in index.items()})
    except (zipfile.BadZipFile, KeyError) as problem:
        raise BadFile(f"the workbook is damaged ({type(problem).__name__}: {problem})") from None
    finally:
        workbook.close()


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

def _xml_rows(stream: IO[bytes], spec: TableSpec) -> Iterator[Row]:
    """Records are read when their highest ancestor a field refers to has ended (the
    "anchor"): by then every ancestor field is parsed, wherever it sits among the records.
    Only one anchor's subtree is held at a time. Only elements named on the record path reach
    Python; namespaces are ignored ("{*}")."""
    path = [part for part in spec.record.split("/") if part]
    values_of = _xml_fields(spec.fields)
    depth = len(path)
    ups = max((_ups(field) for field in spec.fields), default=0)
    if ups > depth - 2:
        raise ValueError(f"{spec.record}: fields may refer to ancestors below the document element only")
    anchor = depth - ups
    below = "/".join("{*}" + name for name in path[anchor:])
    children: dict = {}  # element → its children by name, built once per anchor
    for element in xml_elements(stream, tags=set(path[1:anchor])):
        level = _level(element)
        if level > anchor or not _on_path(element, path[:level]):
            continue
        if level == anchor:
            records = element.iterfind(below) if below else (element,)
            for record in records:
                yield Row(record.sourceline or 0, values_of(record, children))
            children.clear()
        _free(element)


def _level(element) -> int:
    level = 1
    parent = element.getparent()
    while parent is not None:
        level += 1
        parent = parent.getparent()
    return level


def _ups(field: str) -> int:
    parts = field.split("/")
    return next((n for n, part in enumerate(parts) if part != ".."), len(parts))


def _free(element) -> None:
    """Done with an anchor (or an ancestor of anchors): drop its content and the same-named
    elements before it, so memory does not grow with the document. Other siblings stay: they
    may be fields of an ancestor that later anchors read."""
    element.clear(keep_tail=False)
    parent = element.getparent()
    name = _local(element.tag)
    previous = element.getprevious()
    while previous is not None:
        before = previous.getprevious()
        if _local(previous.tag) == name:
            parent.remove(previous)
        previous = before


def xml_elements(stream: IO[bytes], tags: set[str] | None = None) -> Iterator[object]:
    """Elements as they end: only those named in `tags` (in any namespace), all when None, none
    when empty (a completeness check). Raises BadFile for a DOCTYPE or broken XML,
    IncompleteFile when the document stops before its end."""
    from lxml import etree

    wanted = None if tags is None else ["{*}" + tag for tag in sorted(tags)] or [_NO_ELEMENT]
    parser = etree.XMLPullParser(events=("end",), tag=wanted, resolve_entities=False,
                                 no_network=True, huge_tree=False, load_dtd=False)
    checked = False
    text = False  # anything but white space seen
    try:
        while chunk := stream.read(_CHUNK):
            text = text or bool(chunk.strip())
            parser.feed(chunk)
            for _, element in parser.read_events():
                if not checked:
                    _refuse_doctype(element)
                    checked = True
                yield element
    except etree.XMLSyntaxError as problem:
        raise BadFile(f"not well-formed XML: {_lxml_message(problem)}") from None
    try:
        root = parser.close()
    except etree.XMLSyntaxError as problem:
        if not text:
            raise IncompleteFile("the file is empty or has no XML element") from None
        raise IncompleteFile(f"the XML document ends before its last element is closed "
                             f"({_lxml_message(problem)})") from None
    _refuse_doctype(root)
    for _, element in parser.read_events():
        yield element


_NO_ELEMENT = "{*}bridge-no-such-element"


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


def _on_path(element, path: list[str]) -> bool:
    """Whether `element` sits exactly at `path` from the document element."""
    node = element
    for name in reversed(path):
        if node is None or _local(node.tag) != name:
            return False
        node = node.getparent()
    return node is None


def _xml_fields(fields: tuple[str, ...]):
    """One function giving a record's fields (paths relative to it: "Qty", "@sku",
    "../Carrier", "../../@orderId"), climbing to its ancestors once per record and finding
    children through a cache of children by name (ancestors are shared by sibling records)."""
    plans = []
    for field in fields:
        ups = _ups(field)
        parts = field.split("/")[ups:]
        attribute = ""
        if parts and "@" in parts[-1]:
            parts[-1], attribute = parts[-1].split("@", 1)
            if not parts[-1]:
                parts.pop()
        plans.append((field, ups, tuple(parts), attribute))
    highest = max((ups for _, ups, _, _ in plans), default=0)

    def values(record, children: dict) -> dict[str, str]:
        chain = [record]
        for _ in range(highest):
            chain.append(chain[-1].getparent() if chain[-1] is not None else None)
        found = {}
        for field, ups, parts, attribute in plans:
            node = chain[ups]
            for name in parts:
                if node is None:
                    break
                named = children.get(node)
                if named is None:
                    named = children[node] = _by_name(node)
                node = named.get(name)
            if node is None:
                found[field] = ""
                continue
            value = node.get(attribute) if attribute else node.text
            found[field] = value.strip() if value else ""
        return found
    return values


def _by_name(element) -> dict:
    """The element's children by local name; the first of a name wins."""
    named = {}
    for child in reversed(element):
        tag = child.tag
        if isinstance(tag, str):
            named[tag[tag.rfind("}") + 1:]] = child
    return named
