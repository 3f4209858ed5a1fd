"""Rebuild the golden feed documents under samples/<mapping>/stock/ from the stock files there.

    python samples/regenerate_stock.py

Each shipped mapping with a [stock] section has one stock file in samples/<mapping>/stock/ as
its warehouse would write it (inputs: never rewritten, except the XLSX, built here once if
missing) and, beside it, <stock file>.feed-0001.json: the JSON_LISTINGS_FEED document the
bridge makes from it for seller A3TESTSELLER with nothing published before (outputs), read with
the bridge's own readers (bridge/formats/readers.py). An `in_flight.json` holds the units in
flight for an on_hand mapping. tests/test_stock_files.py compares bytes, so a diff here after
running this is a change of what Amazon is sent: review it.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.formats.listings_feed import batches, document_chunks  # noqa: E402
from bridge.formats.readers import Row, read_rows  # noqa: E402
from bridge.formats.stock import Comparison, MemoryStore, Tally, stock_levels, tally  # noqa: E402
from bridge.mapping import StockLayout, load_mapping  # noqa: E402

SELLER_ID = "A3TESTSELLER"
SAMPLES = ROOT / "samples"
INITECH = SAMPLES / "initech-xlsx" / "stock" / "Inventory 11-26-2026.xlsx"


def initech_workbook() -> None:
    """Initech's export: numbers as numbers, except one typed as text with a thousands comma."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "Inventory"
    sheet.append(["SKU", "Description", "Qty Available", "As Of"])
    for sku, title, quantity in [
        ("MUG-CER-350-BLU", "Ceramic mug, blue, 12 oz", "1,250"),
        ("PLT-STN-27CM-4", "Stoneware plate 10.6 in, set of 4", 14),
        ("CST-CORK-4PK", "Cork coasters, 4-pack", 1),
        ("TEA-INF-SS-01", "Tea infuser, stainless", 75),
        ("TEA-INF-SS-01-FBA", "Tea infuser (FBA prep)", 300),
    ]:
        sheet.append([sku, title, quantity, "11/26/2026 06:30 PM"])
    book.properties.creator = "Initech WMS"
    book.properties.created = book.properties.modified = datetime(2026, 11, 27, 0, 30)
    book.save(INITECH)


def rows_of(path: Path, layout: StockLayout) -> Iterator[Row]:
    """A stock file's rows as the bridge reads them (bridge/formats/readers.py)."""
    with open(path, "rb") as stream:
        yield from read_rows(stream, layout.table)


def feed_documents(path: Path, layout: StockLayout, in_flight: dict[str, int] | None = None,
                   per_document: int = 25_000) -> tuple[list[bytes], Tally]:
    """The feed documents a stock file makes with nothing published before, and its tally."""
    store = MemoryStore()
    counted = tally(rows_of(path, layout), layout, store)
    levels = Comparison().follow(stock_levels(store.sorted_parts(), layout, in_flight or {}, counted.problems), ())
    documents = [b"".join(document_chunks(SELLER_ID, batch, layout)) for batch in batches(levels, per_document)]
    return documents, counted


def in_flight_of(folder: Path) -> dict[str, int]:
    """The units in flight an on_hand mapping's golden assumes (in_flight.json), or none."""
    path = folder / "in_flight.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def stock_files(mapping: str) -> list[Path]:
    folder = SAMPLES / mapping / "stock"
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.endswith(".json")) \
        if folder.is_dir() else []


def golden_documents() -> dict[Path, bytes]:
    """Every golden feed document's path → bytes, computed from the stock files."""
    documents = {}
    for mapping_path in sorted((ROOT / "mappings").glob("*.toml")):
        layout = load_mapping(mapping_path).stock
        if layout is None:
            continue
        for stock_file in stock_files(mapping_path.stem):
            made, _ = feed_documents(stock_file, layout, in_flight_of(stock_file.parent))
            for part, data in enumerate(made, 1):
                documents[stock_file.parent / f"{stock_file.name}.feed-{part:04d}.json"] = data
    return documents


def main() -> None:
    if not INITECH.exists():
        initech_workbook()
    for path, data in golden_documents().items():
        path.write_bytes(data)
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
