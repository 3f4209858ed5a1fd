"""How many SP-API calls does the bridge spend, and on what?

    .venv/bin/python bench/amazon_calls.py [orders] [held]

Two scenarios against the SP-API sandbox over HTTP, through python-amazon-sp-api, for each
Orders API (v2026-01-01 and v0), with the sandbox's and the bridge's rate limits raised so
that only the number of calls counts, not the waiting:

1. pull: `orders` orders (default 1,000) over 4 hours, pulled by a run every 30 minutes with
   a 10-minute overlap: 70% unshipped for a configured country, 15% cancelled, 15% shipped to
   a country outside `orders.ship_to_countries`. Printed: calls per 100 pulled orders for each
   operation. The baseline is the least the runs can spend: the pages the windows need, plus
   (v0) one getOrderItems per order that can be sent and one Restricted Data Token (it lives
   an hour; the bench's runs take seconds).
2. held release: `held` orders (default 365) pulled while the seller's app lacks the PII role
   (all held), then the role is granted. Printed: the runs and calls until every held order
   is delivered, against the baseline of one getOrder per held order, and the least time
   Amazon's published usage plans allow for those calls.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
import tempfile
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

import sp_api.auth.access_token_client as token_cache  # noqa: E402

from bridge.config import load_settings  # noqa: E402
from bridge.edges.amazon import AmazonOrders  # noqa: E402
from bridge.edges.folders import FolderDrop  # noqa: E402
from bridge.flows.orders import OrdersFlow  # noqa: E402
from bridge.ledger import Ledger, OrderStatus  # noqa: E402
from bridge.sandbox.spapi import DEFAULT_RATE_LIMITS, SpApiSandbox, load_seed  # noqa: E402
from bridge.sealing import Sealer  # noqa: E402

SEED = ROOT / "bridge" / "demo_data" / "sandbox-orders.json"
MAPPING = ROOT / "mappings" / "globex-xml.toml"
FAST = {operation: (1000.0, 1000) for operation in DEFAULT_RATE_LIMITS}
SECRETS = {
    "BRIDGE_LWA_CLIENT_ID": "bench", "BRIDGE_LWA_CLIENT_SECRET": "bench",
    "BRIDGE_LWA_REFRESH_TOKEN": "bench", "BRIDGE_STATE_KEY": "lmM2GRCevOqRwwRyDW3e7qUmudRH5KaA5D8e0sEukTw=",
}
# A day well in the past of the sandbox's clock (it checks "before" against the real time).
DAY = (datetime.now(timezone.utc) - timedelta(days=3)).replace(hour=8, minute=0, second=0, microsecond=0)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def synthetic(count: int, hours: float, mix: bool) -> list[dict]:
    """`count` merchant orders spread over `hours` from DAY; with `mix`, 15% cancelled and 15%
    shipped to FR (not in ship_to_countries)."""
    template = load_seed(SEED)[0]
    orders = []
    for number in range(count):
        order = copy.deepcopy(template)
        stamp = DAY + timedelta(seconds=number * hours * 3600 / count)
        order["orderId"] = f"111-{number:07d}-0000001"
        order["createdTime"] = iso(stamp - timedelta(minutes=5))
        order["lastUpdatedTime"] = iso(stamp)
        for index, item in enumerate(order["orderItems"]):
            item["orderItemId"] = f"{number:09d}{index:05d}"
        kind = number % 20
        if mix and kind < 3:
            order["fulfillment"]["fulfillmentStatus"] = "CANCELLED"
        elif mix and kind < 6:
            order["recipient"]["deliveryAddress"]["countryCode"] = "FR"
        orders.append(order)
    return orders


def config(folder: Path, sandbox: SpApiSandbox, api: str, start: datetime, overlap: int) -> Path:
    (folder / "known_hosts").write_text("")
    (folder / "key").write_text("")
    path = folder / "bridge.toml"
    path.write_text(f"""
[bridge]
state_dir = "{folder / 'state'}"
[amazon]
seller_id = "A3BENCH"
endpoint = "{sandbox.url}"
token_url = "{sandbox.token_url}"
marketplaces = ["ATVPDKIKX0DER"]
orders_api = "{api}"
[orders]
start = "{iso(start)}"
overlap_minutes = {overlap}
ship_to_countries = ["US", "DE", "GB"]
[[warehouses]]
name = "wh"
mapping = "{MAPPING}"
host = "127.0.0.1"
username = "bench"
known_hosts = "{folder / 'known_hosts'}"
private_key = "{folder / 'key'}"
orders_folder = "/in"
""", encoding="utf-8")
    return path


class Bench:
    """One bridge against one sandbox; the warehouse drop is a local folder."""

    def __init__(self, folder: Path, orders: list[dict], api: str, start: datetime, overlap: int = 0):
        token_cache.cache.clear()
        self.sandbox = SpApiSandbox(orders, rate_limits=FAST).start()
        self.settings = load_settings(config(folder, self.sandbox, api, start, overlap), environ=SECRETS)
        (folder / "drop" / "in").mkdir(parents=True)
        self.ledger = Ledger(self.settings.ledger_path, Sealer(self.settings.state_key))
        amazon = AmazonOrders(self.settings.amazon, rate_limits=FAST, backoff=0.01)
        self.flow = OrdersFlow(self.settings, self.ledger, amazon, open_drop=lambda _: FolderDrop(folder / "drop"))

    def calls(self) -> Counter:
        return Counter(r.operation_id for r in self.sandbox.requests if r.operation_id and r.operation_id != "lwaToken")

    def close(self) -> None:
        self.ledger.close()
        self.sandbox.stop()


def pull(api: str, count: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        bench = Bench(Path(folder), synthetic(count, 4, mix=True), api, DAY - timedelta(minutes=30), overlap=10)
        now, runs = DAY + timedelta(minutes=30), 0
        while now <= DAY + timedelta(hours=5):
            bench.flow.run(now)
            now, runs = now + timedelta(minutes=30), runs + 1
        calls = bench.calls()
        delivered = bench.ledger.status_counts()[OrderStatus.DELIVERED]
        bench.close()
    pages = sum(calls[op] for op in ("searchOrders", "getOrders"))
    floor = pages + (delivered + 1 if api == "v0" else 0)
    return {
        "api": api, "orders": count, "runs": runs, "sendable": delivered,
        "calls_per_100_orders": {op: round(100 * n / count, 1) for op, n in sorted(calls.items())},
        "total_per_100_orders": round(100 * sum(calls.values()) / count, 1),
        "floor_per_100_orders": round(100 * floor / count, 1),
        "ratio_to_floor": round(sum(calls.values()) / floor, 2),
    }


def held_release(api: str, count: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        bench = Bench(Path(folder), synthetic(count, 12, mix=False), api, DAY - timedelta(minutes=30))
        bench.sandbox.set_pii_access(False)
        now = DAY + timedelta(hours=13)
        bench.flow.run(now)
        held = bench.ledger.status_counts()[OrderStatus.HELD]
        bench.sandbox.set_pii_access(True)
        before = bench.calls()
        runs = 0
        while bench.ledger.status_counts()[OrderStatus.HELD] and runs < 100:
            now, runs = now + timedelta(minutes=30), runs + 1
            bench.flow.run(now)
        calls = bench.calls() - before
        left = bench.ledger.status_counts()[OrderStatus.HELD]
        bench.close()
    return {
        "api": api, "held": held, "runs_to_release": runs, "still_held": left,
        "calls": dict(sorted(calls.items())), "total_calls": sum(calls.values()),
        "one_call_per_held_order": held, "ratio": round(sum(calls.values()) / held, 3),
        "usage_plan_seconds": round(usage_plan_seconds(calls)),
        "hours_at_30_min_runs": round(max(runs - 1, 0) * 0.5, 1),
    }


def usage_plan_seconds(calls: Counter) -> float:
    """The least time Amazon's default usage plans allow for `calls`, every bucket full at the
    start and operations in parallel: the slowest operation's (calls - burst) / rate."""
    waits = [max(0, n - DEFAULT_RATE_LIMITS[op][1]) / DEFAULT_RATE_LIMITS[op][0] for op, n in calls.items()]
    return max(waits, default=0.0)


def main() -> None:
    logging.basicConfig(level=logging.ERROR)  # the runs' warnings about held orders are expected
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    held = int(sys.argv[2]) if len(sys.argv) > 2 else 365
    results = {"pull": [pull(api, count) for api in ("2026-01-01", "v0")],
               "held_release": [held_release(api, held) for api in ("2026-01-01", "v0")]}
    print(json.dumps(results, indent=2))
    v2026, v0 = results["pull"]
    print(f"v0 spends {v0['total_per_100_orders'] / v2026['total_per_100_orders']:.1f}x the calls of v2026 "
          f"per 100 orders; v0 is at {v0['ratio_to_floor']}x its floor, v2026 at {v2026['ratio_to_floor']}x")


if __name__ == "__main__":
    main()
