"""Rebuild the golden order files under samples/ from samples/orders.json.

    python samples/regenerate.py              # every mapping's files from samples/orders.json
    python samples/regenerate.py --from-seed  # first rebuild orders.json from the sandbox seed

samples/<mapping>/ holds exactly what each shipped mapping renders from samples/orders.json
for a run started at RUN_TIME. tests/test_order_files.py compares bytes, so any diff under
samples/ after running this is a change of a warehouse's file layout: review it as one.

orders.json holds the sandbox seed's merchant-fulfilled UNSHIPPED and PARTIALLY_SHIPPED orders
(the ones the orders flow sends to a warehouse) as records (`records.order_to_dict`).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.formats.orders import render_orders  # noqa: E402
from bridge.mapping import load_mapping  # noqa: E402
from bridge.records import order_from_dict, order_to_dict  # noqa: E402

SAMPLES = ROOT / "samples"
ORDERS = SAMPLES / "orders.json"
SEED = ROOT / "bridge" / "demo_data" / "sandbox-orders.json"
RUN_TIME = datetime(2026, 11, 20, 12, 30, tzinfo=timezone.utc)
SENT_TO_WAREHOUSE = ("UNSHIPPED", "PARTIALLY_SHIPPED")


def orders_from_seed() -> list[dict]:
    from bridge.formats.amazon_orders import order_from_v2026

    seed = json.loads(SEED.read_text(encoding="utf-8"))
    return [
        order_to_dict(order_from_v2026(raw))
        for raw in seed
        if raw["fulfillment"]["fulfilledBy"] == "MERCHANT"
        and raw["fulfillment"]["fulfillmentStatus"] in SENT_TO_WAREHOUSE
    ]


def golden_files() -> dict[str, dict[str, bytes]]:
    """mapping name -> {file name: bytes} for every mapping in mappings/."""
    orders = [order_from_dict(data) for data in json.loads(ORDERS.read_text(encoding="utf-8"))]
    goldens = {}
    for path in sorted((ROOT / "mappings").glob("*.toml")):
        mapping = load_mapping(path)
        result = render_orders(mapping.orders, orders, RUN_TIME)
        if result.failures:
            raise SystemExit(f"{mapping.name}: orders failed to render: {result.failures}")
        goldens[mapping.name] = {file.name: file.data for file in result.files}
    return goldens


def main(argv: list[str]) -> None:
    if "--from-seed" in argv:
        ORDERS.write_text(json.dumps(orders_from_seed(), indent=2, ensure_ascii=False) + "\n",
                          encoding="utf-8")
    for name, files in golden_files().items():
        folder = SAMPLES / name
        folder.mkdir(exist_ok=True)
        for old in folder.iterdir():  # the order files; shipments/ holds regenerate_shipments.py's
            if old.is_file():
                old.unlink()
        for file_name, data in files.items():
            (folder / file_name).write_bytes(data)
        print(f"{name}: {len(files)} file(s)")


if __name__ == "__main__":
    main(sys.argv[1:])
