"""Does confirming packages run at Amazon's rate limit, and no slower?

    .venv/bin/python bench/confirm_shipments.py [packages] [rate]    (default 1000 at 2/s)

The sandbox enforces confirmShipment's usage plan (Amazon's: 2 requests/s, burst 10; `rate`
changes the rate for a shorter run) with 429s. `packages` orders are delivered to a warehouse
(Globex's XML mapping, a local folder instead of SFTP), its WMS confirms each in one parcel,
the bridge reads the file, then the send step is timed: every package marked sent, confirmed on
the sandbox over HTTP, marked confirmed. Baseline: the limit's minimum time for that many calls,
(packages - burst) / rate. Target: at most 1.1x.
"""

from __future__ import annotations

import copy
import json
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sp_api.auth.access_token_client import cache as token_cache  # noqa: E402

from bridge.config import load_settings  # noqa: E402
from bridge.edges.amazon import AmazonOrders  # noqa: E402
from bridge.edges.amazon_shipments import SHIPMENT_RATE_LIMITS, AmazonShipments  # noqa: E402
from bridge.edges.folders import FolderDrop  # noqa: E402
from bridge.flows.inbound import InboundReport  # noqa: E402
from bridge.flows.orders import OrdersFlow  # noqa: E402
from bridge.flows.shipments import ShipmentsFlow, ShipmentsReport  # noqa: E402
from bridge.ledger import Ledger  # noqa: E402
from bridge.sandbox.spapi import SpApiSandbox, load_seed  # noqa: E402
from bridge.sandbox.wms import confirm_delivered  # noqa: E402
from bridge.sealing import Sealer  # noqa: E402

BURST = 10
RUN_TIME = datetime(2026, 11, 20, 12, 30, tzinfo=timezone.utc)
SECRETS = {
    "BRIDGE_LWA_CLIENT_ID": "bench", "BRIDGE_LWA_CLIENT_SECRET": "bench",
    "BRIDGE_LWA_REFRESH_TOKEN": "Atzr|bench", "BRIDGE_SFTP_PASSWORD_WH": "unused",
    "BRIDGE_STATE_KEY": "dGVzdC1zdGF0ZS1rZXktMzItYnl0ZXMtbG9uZy0hISE=",
}


def orders(count: int) -> list[dict]:
    template = load_seed(ROOT / "bridge" / "demo_data" / "sandbox-orders.json")[0]  # one US order
    made = []
    for n in range(count):
        order = copy.deepcopy(template)
        order["orderId"] = f"111-{n:07d}-{n:07d}"
        order["lastUpdatedTime"] = "2026-11-20T11:00:00Z"
        for number, item in enumerate(order["orderItems"], 1):
            item["orderItemId"] = f"{n:012d}{number:02d}"
        made.append(order)
    return made


def main(count: int, rate: float) -> None:
    token_cache.clear()
    limits = {"confirmShipment": (rate, BURST)}
    with tempfile.TemporaryDirectory() as folder, SpApiSandbox(orders(count), rate_limits=limits) as sandbox:
        work = Path(folder)
        for name in ("in", "drop"):
            (work / name).mkdir()
        (work / "known_hosts").write_text("unused ssh-ed25519 AAAA\n")
        config = work / "bridge.toml"
        config.write_text(f'''
[bridge]
state_dir = "{work / 'state'}"
[amazon]
seller_id = "A3BENCH"
endpoint = "{sandbox.url}"
token_url = "{sandbox.token_url}"
marketplaces = ["ATVPDKIKX0DER"]
[orders]
start = "2026-11-20T10:00:00Z"
window_minutes = 120
[[warehouses]]
name = "wh"
mapping = "{ROOT / 'mappings' / 'globex-xml.toml'}"
host = "unused.example"
username = "unused"
known_hosts = "known_hosts"
orders_folder = "/"
local_shipments_folder = "{work / 'drop'}"
''')
        settings = load_settings(config, SECRETS)
        ledger = Ledger(settings.ledger_path, Sealer(settings.state_key))
        delivered = OrdersFlow(settings, ledger, AmazonOrders(settings.amazon),
                               open_drop=lambda w: FolderDrop(work / "in")).run(RUN_TIME)
        assert delivered.delivered_orders == count, delivered
        now = RUN_TIME + timedelta(hours=6)
        confirm_delivered(ledger, settings.warehouses[0], FolderDrop(work / "drop"), "/", now)
        amazon = AmazonShipments(settings.amazon, rate_limits={**SHIPMENT_RATE_LIMITS, **limits})
        flow = ShipmentsFlow(settings, ledger, amazon)
        [source] = flow.sources()
        report = ShipmentsReport(InboundReport())
        closed = {p.name for p in (work / "drop").iterdir() if p.is_file()}  # as a watch reports it
        flow.pipeline.collect(source, now, report.inbound, closed)
        assert len(ledger.packages_waiting()) == count
        started = time.perf_counter()
        flow.send(now, report)
        took = time.perf_counter() - started
        throttled = sum(1 for r in sandbox.requests if r.operation_id == "confirmShipment") - count
        ledger.close()
    minimum = (count - BURST) / rate
    print(json.dumps({"packages": count, "rate_per_s": rate, "burst": BURST, "confirmed": report.confirmed,
                      "seconds": round(took, 2), "limit_minimum_seconds": round(minimum, 2),
                      "ratio": round(took / minimum, 3), "requests_refused_429": throttled}))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000, float(sys.argv[2]) if len(sys.argv) > 2 else 2.0)
