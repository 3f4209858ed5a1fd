"""Generic flat-file writers: rows of strings → CSV or XLSX bytes, an element tree → XML bytes.

Pure and deterministic: the same input gives the same bytes (no clock, no random ids), so
golden files can pin them. Orders, shipments and stock files all go through these.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import shutil
import zipfile
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, BinaryIO, Iterable, Sequence

if TYPE_CHECKING:
    from lxml import etree


from bridge.errors import RenderError

_QUOTING = {"minimal": csv.QUOTE_MINIMAL, "all": csv.QUOTE_ALL}
# What the XML declaration calls each encoding the bridge writes.
_XML_ENCODING_NAMES = {"utf-8": "UTF-8", "utf-8-sig": "UTF-8", "cp1252": "windows-1252"}
# Characters XML 1.0 (and so XLSX) cannot carry at all, not even as a reference.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Control characters (C0, DEL, C1) and Unicode's line and paragraph separators: no field the
# bridge writes is more than one line, and a WMS may cut a record at any of these.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def write_csv(
    rows: Iterable[Sequence[str]],
    *,
    header: Sequence[str] | None = None,
    delimiter: str = ",",
    quoting: str = "minimal",
    line_terminator: str = "\r\n",
    encoding: str = "utf-8",
    unencodable: str = "fail",
) -> bytes:
    """CSV bytes. `unencodable`: "fail" raises RenderError, "replace" writes "?".

    Use `find_unencodable` to learn which value held the character.
    """
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, quoting=_QUOTING[quoting],
                        lineterminator=line_terminator)
    if header is not None:
        writer.writerow(header)
    writer.writerows(rows)
    text = out.getvalue()
    try:
        return text.encode(encoding, errors="strict" if unencodable == "fail" else "replace")
    except UnicodeEncodeError as problem:  # the position only: the character may be a buyer's
        raise RenderError(f"text has a character {encoding} cannot encode "
                          f"at position {problem.start + 1}") from None


class CsvStream:
    """CSV written piece by piece into the binary stream `out`. Each `add` is encoded on its
    own: a piece holding a character the encoding lacks is refused whole (RenderError, nothing
    of it written) and the file goes on without it. The pieces together are the bytes
    `write_csv` makes of all their rows at once."""

    def __init__(self, out: BinaryIO, *, header: Sequence[str] | None = None, delimiter: str = ",",
                 quoting: str = "minimal", line_terminator: str = "\r\n", encoding: str = "utf-8"):
        self._out = out
        self._text = io.StringIO()
        self._writer = csv.writer(self._text, delimiter=delimiter, quoting=_QUOTING[quoting],
                                  lineterminator=line_terminator)
        # A byte order mark once, at the start, not before every piece.
        self._encoding = "utf-8" if encoding == "utf-8-sig" else encoding
        if encoding == "utf-8-sig":
            out.write(codecs.BOM_UTF8)
        if header is not None:
            self.add([header])

    def add(self, rows: Iterable[Sequence[str]]) -> None:
        self._text.seek(0)
        self._text.truncate()
        self._writer.writerows(rows)
        try:
            data = self._text.getvalue().encode(self._encoding)
        except UnicodeEncodeError as problem:  # the position only: the character may be a buyer's
            raise RenderError(f"text has a character {self._encoding} cannot encode "
                              f"at position {problem.start + 1}") from None
        self._out.write(data)


def find_unencodable(text: str, encoding: str) -> tuple[int, str] | None:
    """(1-based position, character) of the first character `encoding` lacks, or None."""
    try:
        text.encode(encoding)
    except UnicodeEncodeError as problem:
        return problem.start + 1, text[problem.start]
    return None


def find_control(text: str) -> tuple[int, str] | None:
    """(1-based position, character) of the first control character or line break, or None."""
    match = _CONTROL.search(text)
    return None if match is None else (match.start() + 1, match.group())


def find_not_xml(text: str) -> tuple[int, str] | None:
    """(1-based position, character) of the first character XML cannot carry, or None."""
    match = _NOT_XML.search(text)
    return None if match is None else (match.start() + 1, match.group())


class XmlStream:
    """An XML document written element by element into the binary stream `out` with lxml's
    incremental `xmlfile`: a declaration naming the encoding, the `root` element, each added
    element indented inside it. Only the element being written is in memory; the bytes are
    those `write_xml` makes of the whole tree. Characters the encoding lacks become character
    references. `close()` ends the document."""

    def __init__(self, out: BinaryIO, root: str, *, encoding: str = "utf-8"):
        self._out = out
        name = _XML_ENCODING_NAMES[encoding]
        out.write((codecs.BOM_UTF8 if encoding == "utf-8-sig" else b"")
                  + f'<?xml version="1.0" encoding="{name}"?>\n'.encode("ascii"))
        from lxml import etree  # here, not at import: lxml is loaded by the first XML written

        self._etree = etree
        self._file = etree.xmlfile(out, encoding=name)
        self._writer = self._file.__enter__()
        self._root = self._writer.element(root)
        self._root.__enter__()
        self.elements = 0

    def add(self, element: etree._Element) -> None:
        self._etree.indent(element, space="  ", level=1)
        element.tail = None
        self._writer.write("\n  ")
        self._writer.write(element)
        self.elements += 1

    def close(self) -> None:
        if self.elements:
            self._writer.write("\n")
        self._root.__exit__(None, None, None)
        self._file.__exit__(None, None, None)
        self._out.write(b"\n")


def write_xml(root: etree._Element, *, encoding: str = "utf-8") -> bytes:
    """Pretty-printed XML with a declaration naming the encoding.

    Characters the encoding lacks become character references (`&#20013;`): lossless, and
    every XML parser reads them, so XML never fails on encoding.
    """
    from lxml import etree

    etree.indent(root, space="  ")
    body = etree.tostring(root, encoding="unicode")
    declaration = f'<?xml version="1.0" encoding="{_XML_ENCODING_NAMES[encoding]}"?>\n'
    return (declaration + body + "\n").encode(encoding, errors="xmlcharrefreplace")


class XlsxStream:
    """A one-sheet workbook written row by row with openpyxl's write-only mode into the binary
    stream `out` (see `write_xlsx` for the cells); rows go to openpyxl's temporary sheet file
    as they are added, and `close()` zips it into `out` a piece at a time."""

    def __init__(self, out: BinaryIO, *, header: Sequence[str] | None = None, sheet: str = "Sheet1",
                 number_columns: Iterable[int] = (),
                 timestamp: datetime = datetime(2000, 1, 1, tzinfo=timezone.utc)):
        self._out = out
        self._numbers = frozenset(number_columns)
        self._timestamp = timestamp
        from openpyxl import Workbook  # heavy (6 MB): only in a process that writes a workbook

        self._book = Workbook(write_only=True)
        self._sheet = self._book.create_sheet(sheet)
        if header is not None:
            self._sheet.append([_text_cell(self._sheet, value) for value in header])

    def add(self, rows: Iterable[Sequence[str]]) -> None:
        numbers, sheet = self._numbers, self._sheet
        for row in rows:
            sheet.append([
                _number(value) if index in numbers else _text_cell(sheet, value)
                for index, value in enumerate(row)
            ])

    def close(self) -> None:
        stamp = self._timestamp.astimezone(timezone.utc).replace(tzinfo=None, microsecond=0)
        self._book.properties.created = self._book.properties.modified = stamp
        self._book.properties.creator = "bridge"
        archive = _FixedTimeZip(self._out, "w", zipfile.ZIP_DEFLATED, allowZip64=True)
        archive.date_time = stamp.timetuple()[:6]
        from openpyxl.writer.excel import ExcelWriter

        ExcelWriter(self._book, archive).save()  # save_workbook would stamp the wall clock time


def write_xlsx(
    rows: Iterable[Sequence[str]],
    *,
    header: Sequence[str] | None = None,
    sheet: str = "Sheet1",
    number_columns: Iterable[int] = (),
    timestamp: datetime = datetime(2000, 1, 1, tzinfo=timezone.utc),
) -> bytes:
    """One-sheet workbook. Every cell is text except in `number_columns` (0-based), where
    values that parse as numbers become numbers (quantities, prices).

    Text cells stay text in Excel: ids, postal codes with leading zeros, phones and tracking
    numbers like "1Z999AA10123456784" are never turned into 1.23E+17. Values starting with
    "=" are text too, never formulas. `timestamp` is written as the document's created and
    modified time and as every zip entry's date, so the bytes depend only on the input.
    """
    out = io.BytesIO()
    stream = XlsxStream(out, header=header, sheet=sheet, number_columns=number_columns, timestamp=timestamp)
    stream.add(rows)
    stream.close()
    return out.getvalue()


def _text_cell(ws, value: str):
    if value.startswith("=") and len(value) > 1:
        from openpyxl.cell import WriteOnlyCell

        cell = WriteOnlyCell(ws, value=value)
        cell.data_type = "s"
        return cell
    return value


def _number(value: str) -> int | Decimal | str | None:
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = Decimal(value)
    except InvalidOperation:
        return value
    return number if number.is_finite() else value


class _FixedTimeZip(zipfile.ZipFile):
    """A ZipFile that dates every entry `date_time` instead of now."""

    date_time: tuple[int, ...] = (1980, 1, 1, 0, 0, 0)

    def writestr(self, zinfo_or_arcname, data, compress_type=None, compresslevel=None):
        if not isinstance(zinfo_or_arcname, zipfile.ZipInfo):
            zinfo_or_arcname = zipfile.ZipInfo(zinfo_or_arcname, date_time=self.date_time)
            zinfo_or_arcname.compress_type = self.compression
            zinfo_or_arcname.external_attr = 0o600 << 16
        super().writestr(zinfo_or_arcname, data, compress_type, compresslevel)

    def write(self, filename, arcname=None, compress_type=None, compresslevel=None):
        # openpyxl's write-only sheet, from its temporary file a piece at a time.
        entry = zipfile.ZipInfo(arcname or filename, date_time=self.date_time)
        entry.compress_type = self.compression
        entry.external_attr = 0o600 << 16
        with open(filename, "rb") as source, self.open(entry, "w") as target:
            shutil.copyfileobj(source, target, 1 << 20)
