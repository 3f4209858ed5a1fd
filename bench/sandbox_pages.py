"""Does a searchOrders page cost the same whatever the sandbox holds?

    .venv/bin/python bench/sandbox_pages.py [small] [large] [pages]

Fills the SP-API sandbox with `small` (default 100) and then `large` (default 100,000)
orders, all in one day, and times a page of 100 through HTTP, asked `pages` (default 20)
times: the window's first page, and (large store) the 501st page by its pagination token, as
python-amazon-sp-api asks for it. The window holds every order of the store: the sandbox must
find a page without sorting or scanning the rest. Prints milliseconds per page
and the ratio (target: about 1, so that benches and tests at scale measure the bridge).
"""

from __future__ import annotations

import copy
import os
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

import httpx  # noqa: E402

from bridge.sandbox.spapi import DEFAULT_RATE_LIMITS, SpApiSandbox, load_seed  # noqa: E402

SEED = ROOT / "bridge" / "demo_data" / "sandbox-orders.json"
DAY = datetime(2026, 11, 20, tzinfo=timezone.utc)
FAST = {operation: (1e6, 1_000_000) for operation in DEFAULT_RATE_LIMITS}


def synthetic(count: int) -> list[dict]:
    template = load_seed(SEED)[0]
    orders = []
    for number in range(count):
        order = copy.deepcopy(template)
        order["orderId"] = f"111-{number:07d}-0000001"
        order["lastUpdatedTime"] = (DAY + timedelta(seconds=number * 86000 // count)).strftime("%Y-%m-%dT%H:%M:%SZ")
        orders.append(order)
    return orders


def ms_per_page(count: int, pages: int, deep: int = 0) -> float:
    """Milliseconds for one page of 100, asked `pages` times: the window's first page, or the
    page `deep` pages into the window (reached by its pagination token)."""
    with SpApiSandbox(synthetic(count), rate_limits=FAST, clock=lambda: DAY + timedelta(days=2)) as sandbox:
        with httpx.Client(base_url=sandbox.url, timeout=120) as client:
            token = client.post("/auth/o2/token", data={"grant_type": "refresh_token", "client_id": "b",
                                                        "client_secret": "b", "refresh_token": "b"}).json()
            client.headers["x-amz-access-token"] = token["access_token"]
            query = {"lastUpdatedAfter": "2026-11-20T00:00:00Z", "lastUpdatedBefore": "2026-11-21T00:00:00Z",
                     "fulfillmentStatuses": "UNSHIPPED", "includedData": "RECIPIENT,FULFILLMENT",
                     "maxResultsPerPage": "100"}
            for _ in range(deep):
                answer = client.get("/orders/2026-01-01/orders", params=query).json()
                query["paginationToken"] = answer["pagination"]["nextToken"]
            for _ in range(5):  # warm: the sorted keys made, the connection open
                client.get("/orders/2026-01-01/orders", params=query).raise_for_status()
            start = time.perf_counter()
            for _ in range(pages):
                answer = client.get("/orders/2026-01-01/orders", params=query)
                answer.raise_for_status()
                assert len(answer.json()["orders"]) == min(100, count)
            return (time.perf_counter() - start) * 1000 / pages


def main() -> None:
    small = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    large = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    pages = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    ms_per_page(small, pages)  # the process's first HTTP client and server pay for warming up: not counted
    few, many, deep = ms_per_page(small, pages), ms_per_page(large, pages), ms_per_page(large, pages, deep=500)
    print(f"searchOrders, a page of 100: {few:.1f} ms with {small} orders in the sandbox; with {large}:"
          f" {many:.1f} ms the first page, {deep:.1f} ms the 501st (by its token)")
    print(f"ratio {large} / {small}: {many / few:.2f} first page, {deep / few:.2f} deep (target about 1)")

if __name__ == "__main__":
    main()
