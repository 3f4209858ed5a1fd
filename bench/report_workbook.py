"""Does `fbm-bridge report` cost what its period holds, whatever the ledger's age?

    .venv/bin/python bench/report_workbook.py [orders] [older]    (default 5000 and 10)

A ledger gets `orders` orders on one day (delivered, each in its own file), then the report of
that day is timed; then `older` times as many orders on earlier days are added and the same
report is timed again. Baseline: the first run, measured in the same process. Target: the second
at most 1.2x the first (indexes, not scans, find the period). Also printed: the report's cost per
order, and the time to open the same orders' sealed records alone (what the report cannot
avoid), as a ratio.
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.config import load_settings  # noqa: E402
from bridge.flows.reconciliation import write_report  # noqa: E402
from bridge.formats.reconciliation import Period  # noqa: E402
from bridge.ledger import Ledger, Observation, OrderStatus  # noqa: E402
from bridge.records import Address, Line, Order  # noqa: E402
from bridge.sealing import Sealer  # noqa: E402

DAY = datetime(2026, 11, 20, 12, 30, tzinfo=timezone.utc)
SECRETS = {"BRIDGE_LWA_CLIENT_ID": "bench", "BRIDGE_LWA_CLIENT_SECRET": "bench", "BRIDGE_LWA_REFRESH_TOKEN": "Atzr|bench",
           "BRIDGE_SFTP_PASSWORD_WH": "unused", "BRIDGE_STATE_KEY": "dGVzdC1zdGF0ZS1rZXktMzItYnl0ZXMtbG9uZy0hISE="}


def order(n: int, seen: datetime) -> Order:
    return Order(order_id=f"111-{n:07d}-{n:07d}", marketplace_id="ATVPDKIKX0DER", purchase_date=seen - timedelta(hours=3),
                 last_updated=seen - timedelta(hours=1), status="UNSHIPPED", ship_by=seen + timedelta(days=1),
                 buyer_name="Bench Buyer", ship_to=Address(name="Bench Buyer", line1="1 Main St", city="Columbus",
                                                           postal_code="43215", country_code="US"),
                 lines=(Line(f"{n:012d}01", "MUG-CER-350-BLU", "B0BENCH001", "Mug", 2),
                        Line(f"{n:012d}02", "TEA-INF-SS-01", "B0BENCH002", "Infuser", 1)))


def add_orders(ledger: Ledger, first: int, count: int, seen: datetime) -> None:
    """`count` orders first seen at `seen`, delivered in files of one order each."""
    for start in range(first, first + count, 1000):
        numbers = range(start, min(start + 1000, first + count))
        ledger.record([Observation(order(n, seen), OrderStatus.PENDING, warehouse="wh") for n in numbers], seen)
        files = [(f"ORD_{n}.xml", f"wh/ORD_{n}.xml", 100, "0" * 64, [f"111-{n:07d}-{n:07d}"]) for n in numbers]
        ids = ledger.stage_files("wh", files, seen)
        ledger.mark_uploaded_many(ids)
        ledger.mark_delivered_many([(file_id, "") for file_id in ids], seen)


def timed_report(settings, ledger: Ledger, out: Path, count: int) -> float:
    began = time.perf_counter()
    written = write_report(settings, ledger, Period(DAY.date(), DAY.date()), out, DAY + timedelta(days=1), force=True)
    elapsed = time.perf_counter() - began
    assert written.orders == count, written
    return elapsed


def main(count: int, older: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / "known_hosts").write_text("unused ssh-ed25519 AAAA\n")
        config = work / "bridge.toml"
        config.write_text(f'''
[bridge]
state_dir = "{work / 'state'}"
[amazon]
seller_id = "A3BENCH"
endpoint = "http://127.0.0.1:9"
token_url = "http://127.0.0.1:9/token"
marketplaces = ["ATVPDKIKX0DER"]
[[warehouses]]
name = "wh"
mapping = "{ROOT / 'mappings' / 'globex-xml.toml'}"
host = "unused.example"
username = "unused"
known_hosts = "known_hosts"
orders_folder = "/"
''')
        settings = load_settings(config, SECRETS)
        ledger = Ledger(settings.ledger_path, Sealer(settings.state_key))
        add_orders(ledger, 0, count, DAY)
        young = min(timed_report(settings, ledger, work / "r.xlsx", count) for _ in range(3))

        began = time.perf_counter()
        ledger.orders_in(OrderStatus.DELIVERED)  # opening every sealed record: the floor of the report's cost
        floor = time.perf_counter() - began

        for day in range(1, older + 1):
            add_orders(ledger, day * count, count, DAY - timedelta(days=day))
        old = min(timed_report(settings, ledger, work / "r.xlsx", count) for _ in range(3))
        size = (work / "r.xlsx").stat().st_size
        ledger.close()
    print(f"report of one day's {count} orders: {young:.2f}s ({young / count * 1e6:.0f} us an order, "
          f"{size / 1024:.0f} KiB)")
    print(f"the same day in a ledger {older + 1}x as large: {old:.2f}s, ratio {old / young:.2f} (target <= 1.2)")
    print(f"opening the day's sealed records alone: {floor:.2f}s; the report costs {young / floor:.1f}x that")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000, int(sys.argv[2]) if len(sys.argv) > 2 else 10)
