"""Rows of a stock file for the stock tests, as the file readers will give them.

A stand-in until `bridge/formats/readers.py` (the inbound-file pipeline) exists: the stock core
takes (row number, {header or element path: text}), and these tests need rows from the golden
files. Row numbers: a CSV or XLSX row is its line or sheet row (the header is row 1); an XML
record is its position (1-based). XLSX numbers become text as written ("40", "12.5").
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Iterator

from lxml import etree
from openpyxl import load_workbook

from bridge.formats.listings_feed import batches, document_chunks
from bridge.formats.stock import Comparison, MemoryStore, stock_levels, tally
from bridge.mapping import StockLayout

REPO = Path(__file__).resolve().parents[1]
SELLER_ID = "A3TESTSELLER"


def rows_of(path: Path, layout: StockLayout) -> Iterator[tuple[int, dict[str, str]]]:
    data = Path(path).read_bytes()
    if layout.format == "csv":
        encoding = "utf-8-sig" if layout.encoding == "utf-8" else layout.encoding
        reader = csv.reader(io.StringIO(data.decode(encoding), newline=""), delimiter=layout.delimiter)
        header = next(reader, None)
        if header is None:
            return
        for number, row in enumerate(reader, 2):
            yield number, dict(zip(header, row))
    elif layout.format == "xlsx":
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        sheet = book[layout.sheet] if layout.sheet else book.worksheets[0]
        values = sheet.iter_rows(values_only=True)
        header = [str(cell) for cell in next(values, ())]
        for number, row in enumerate(values, 2):
            yield number, {name: _cell(value) for name, value in zip(header, row)}
    else:
        parser = etree.XMLParser(resolve_entities=False, no_network=True)
        root = etree.fromstring(data, parser)
        for number, record in enumerate(root.findall(layout.record), 1):
            fields = [f for f in (layout.fields.sku, layout.fields.quantity, layout.fields.timestamp,
                                  layout.fields.lot, layout.fields.location) if f]
            found = {}
            for path in fields:
                if path.startswith("@"):
                    value = record.get(path[1:])
                else:
                    element = record.find(path)
                    value = None if element is None else (element.text or "")
                if value is not None:
                    found[path] = value
            yield number, found


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def feed_documents(path: Path, layout: StockLayout, in_flight: dict[str, int] | None = None,
                   per_document: int = 25_000) -> tuple[list[bytes], object, list]:
    """The feed documents a stock file makes with nothing published before: (documents, tally,
    problems)."""
    store = MemoryStore()
    counted = tally(rows_of(path, layout), layout, store)
    levels = Comparison().follow(stock_levels(store.sorted_parts(), layout, in_flight or {}, counted.problems), ())
    documents = [b"".join(document_chunks(SELLER_ID, batch, layout)) for batch in batches(levels, per_document)]
    return documents, counted, counted.problems


def in_flight_of(folder: Path) -> dict[str, int]:
    path = folder / "in_flight.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
