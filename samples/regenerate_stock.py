"""Rebuild the golden feed documents under samples/<mapping>/stock/ from the stock files there.

    python samples/regenerate_stock.py

Each shipped mapping with a [stock] section has one stock file in samples/<mapping>/stock/ as
its warehouse would write it (inputs: never rewritten, except the XLSX, built here once if
missing) and, beside it, <stock file>.feed-0001.json: the JSON_LISTINGS_FEED document the
bridge makes from it for seller A3TESTSELLER with nothing published before (outputs). An
`in_flight.json` holds the units in flight for an on_hand mapping. tests/test_stock_files.py
compares bytes, so a diff here after running this is a change of what Amazon is sent: review it.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # stock_rows: the stand-in readers, until formats/readers.py

from bridge.mapping import load_mapping  # noqa: E402
from stock_rows import feed_documents, in_flight_of  # noqa: E402

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


def golden_documents() -> dict[Path, bytes]:
    """Every golden feed document's path → bytes, computed from the stock files."""
    documents = {}
    for mapping_path in sorted((ROOT / "mappings").glob("*.toml")):
        layout = load_mapping(mapping_path).stock
        folder = SAMPLES / mapping_path.stem / "stock"
        if layout is None or not folder.is_dir():
            continue
        for stock_file in sorted(folder.iterdir()):
            if stock_file.name.endswith(".json"):
                continue
            made, _, _ = feed_documents(stock_file, layout, in_flight_of(folder))
            for part, data in enumerate(made, 1):
                documents[folder / f"{stock_file.name}.feed-{part:04d}.json"] = data
    return documents


def main() -> None:
    if not INITECH.exists():
        initech_workbook()
    for path, data in golden_documents().items():
        path.write_bytes(data)
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
