"""How close does pulling orders come to Amazon's rate-limit ceiling?

    .venv/bin/python bench/pull_orders.py [orders] [rate] [burst]

searchOrders allows 0.0056 requests/s with a burst of 20: at 100 orders a page, the ceiling is
fixed by Amazon, not by us. This starts the SP-API sandbox with searchOrders scaled to `rate`
requests/s (default 4) and `burst` (default 5) so a run takes seconds, puts `orders` orders
(default 3,000) in one window, and has the bridge pull and record them through
python-amazon-sp-api. The baseline is the ceiling itself: the least time the usage plan allows
for that many pages, (pages - burst) / rate. A ratio near 1.0 means the bridge is limited by
Amazon alone; the bridge's own client-side bucket is set to the same plan, as it would be
against Amazon, so it should seldom see a 429.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

from bridge.config import AmazonSettings  # noqa: E402
from bridge.edges.amazon import RATE_LIMITS, AmazonOrders  # noqa: E402
from bridge.ledger import Ledger, Observation, OrderStatus  # noqa: E402
from bridge.sandbox.spapi import SpApiSandbox, load_seed  # noqa: E402
from bridge.sealing import Sealer, new_key  # noqa: E402

SEED = ROOT / "bridge" / "demo_data" / "sandbox-orders.json"
START = datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc)


def synthetic_orders(count: int) -> list[dict]:
    template = load_seed(SEED)[0]
    orders = []
    for number in range(count):
        order = copy.deepcopy(template)
        order["orderId"] = f"111-{number:07d}-0000001"
        order["lastUpdatedTime"] = (START + timedelta(seconds=number % 1800)).strftime("%Y-%m-%dT%H:%M:%SZ")
        for index, item in enumerate(order["orderItems"]):
            item["orderItemId"] = f"{number:09d}{index:05d}"
        orders.append(order)
    return orders


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else 4.0
    burst = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    plan = {"searchOrders": (rate, burst)}
    settings = AmazonSettings(
        seller_id="A3BENCH", endpoint="", token_url="", marketplaces=("ATVPDKIKX0DER",),
        orders_api="2026-01-01", timeout_seconds=30, max_throttle_wait_seconds=60,
        client_id="bench", client_secret="bench", refresh_token="bench",
    )
    with SpApiSandbox(synthetic_orders(count), rate_limits=plan) as sandbox, tempfile.TemporaryDirectory() as folder:
        settings = AmazonSettings(**{**settings.__dict__, "endpoint": sandbox.url, "token_url": sandbox.token_url})
        amazon = AmazonOrders(settings, rate_limits={**RATE_LIMITS, **plan})
        ledger = Ledger(Path(folder) / "ledger.sqlite", Sealer(new_key()))
        began = time.perf_counter()
        orders = amazon.updated_between(START, START + timedelta(minutes=30), ["UNSHIPPED"], ["ATVPDKIKX0DER"])
        fetched = time.perf_counter()
        ledger.record([Observation(o, OrderStatus.PENDING, "", "wh") for o in orders], datetime.now(timezone.utc))
        recorded = time.perf_counter()
        throttled = sum(1 for r in sandbox.requests if r.operation_id == "searchOrders") - -(-count // 100)
    pages = -(-count // 100)
    ceiling = max(pages - burst, 0) / rate
    print(json.dumps({
        "orders": len(orders), "pages": pages, "plan": f"{rate}/s burst {burst}",
        "pull_seconds": round(fetched - began, 2), "ceiling_seconds": round(ceiling, 2),
        "ratio_to_ceiling": round((fetched - began) / ceiling, 2) if ceiling else None,
        "record_seconds": round(recorded - fetched, 3), "extra_requests_from_429": throttled,
    }, indent=2))


if __name__ == "__main__":
    main()
