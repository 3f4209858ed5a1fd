"""Rebuild the expected outputs of the golden confirmation files under samples/<mapping>/shipments/.

Each shipped mapping has one confirmation file as its WMS writes it (the input, written by hand
and never regenerated). This script runs the real bridge on it, against the local SP-API sandbox
with the demo seed and local folders instead of SFTP: the seed's orders are delivered to the
warehouse at 2026-11-20T12:30Z, then the file is taken at 2026-11-20T18:00Z. It writes what
came out:

    samples/<mapping>/shipments/results/<stem>.result.csv   the result file the warehouse gets
    samples/<mapping>/shipments/requests/<stem>.json        every confirmShipment body Amazon got
    samples/<mapping>/shipments/feed/<stem>.xml             with shipments.send = "feed": the
                                                            POST_ORDER_FULFILLMENT_DATA document
    samples/<mapping>/shipments/feed/<stem>.result.csv      ... and the result file it gives

tests/test_shipments_flow.py runs the same story over the suite's OpenSSH sshd and compares
bytes. A diff under samples/ after running this is a change of what the bridge sends or
answers: review it as one.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sp_api.auth.access_token_client import cache as token_cache  # noqa: E402

from bridge.config import load_settings  # noqa: E402
from bridge.edges.amazon import AmazonOrders  # noqa: E402
from bridge.edges.amazon_shipments import AmazonShipments  # noqa: E402
from bridge.edges.folders import FolderDrop  # noqa: E402
from bridge.flows.orders import OrdersFlow  # noqa: E402
from bridge.flows.shipments import ShipmentsFlow  # noqa: E402
from bridge.ledger import Ledger  # noqa: E402
from bridge.sandbox.spapi import SpApiSandbox, load_seed  # noqa: E402
from bridge.sealing import Sealer  # noqa: E402

SAMPLES = ROOT / "samples"
SEED = ROOT / "bridge" / "demo_data" / "sandbox-orders.json"
RUN_TIME = datetime(2026, 11, 20, 12, 30, tzinfo=timezone.utc)
SHIP_TIME = datetime(2026, 11, 20, 18, 0, tzinfo=timezone.utc)
SECRETS = {
    "BRIDGE_LWA_CLIENT_ID": "amzn1.application-oa2-client.samples",
    "BRIDGE_LWA_CLIENT_SECRET": "samples",
    "BRIDGE_LWA_REFRESH_TOKEN": "Atzr|samples",
    "BRIDGE_STATE_KEY": "dGVzdC1zdGF0ZS1rZXktMzItYnl0ZXMtbG9uZy0hISE=",
}


def outputs(mapping: str, input_file: Path, send: str = "confirmShipment") -> tuple[bytes, list[dict], list[bytes]]:
    token_cache.clear()  # python-amazon-sp-api caches tokens by refresh token, across sandboxes
    with tempfile.TemporaryDirectory() as folder, SpApiSandbox(load_seed(SEED)) as sandbox:
        work = Path(folder)
        for name in ("in", "drop"):
            (work / name).mkdir()
        (work / "known_hosts").write_text("unused ssh-ed25519 AAAA\n")
        config = work / "bridge.toml"
        config.write_text(f'''
[bridge]
state_dir = "{work / 'state'}"
[amazon]
seller_id = "A3TESTSELLER"  # as the tests, so the feed documents compare byte for byte
endpoint = "{sandbox.url}"
token_url = "{sandbox.token_url}"
marketplaces = ["ATVPDKIKX0DER", "A1PA6795UKMFR9", "A1F83G8C2ARO7P"]
[orders]
start = "2026-11-20T08:00:00Z"
[[warehouses]]
name = "wh"
mapping = "{ROOT / 'mappings' / f'{mapping}.toml'}"
host = "unused.example"
username = "unused"
known_hosts = "known_hosts"
orders_folder = "/"
local_shipments_folder = "{work / 'drop'}"
[shipments]
send = "{send}"
''')
        settings = load_settings(config, {**SECRETS, "BRIDGE_SFTP_PASSWORD_WH": "unused"})
        ledger = Ledger(settings.ledger_path, Sealer(settings.state_key))
        try:
            orders = OrdersFlow(settings, ledger, AmazonOrders(settings.amazon),
                                open_drop=lambda w: FolderDrop(work / "in"))
            assert orders.run(RUN_TIME).delivered_orders == 5
            shutil.copy(input_file, work / "drop" / input_file.name)
            flow = ShipmentsFlow(settings, ledger, AmazonShipments(settings.amazon))
            flow.run(SHIP_TIME - timedelta(seconds=30))
            report = flow.run(SHIP_TIME)
            if report.all_errors:
                raise SystemExit(f"{mapping}: {report.all_errors}")
        finally:
            ledger.close()
        result = (work / "drop" / "results" / f"{input_file.stem}.result.csv").read_bytes()
        sent = [{"orderId": c["orderId"], "body": {k: v for k, v in c.items() if k != "orderId"}}
                for c in sandbox.confirmations]
        documents = [feed["document"] for feed in sandbox.feeds.values()]
        return result, sent, documents


def main() -> None:
    for folder in sorted(SAMPLES.glob("*/shipments")):
        mapping = folder.parent.name
        for input_file in sorted(p for p in folder.iterdir() if p.is_file()):
            result, sent, _ = outputs(mapping, input_file)
            (folder / "results").mkdir(exist_ok=True)
            (folder / "requests").mkdir(exist_ok=True)
            (folder / "results" / f"{input_file.stem}.result.csv").write_bytes(result)
            (folder / "requests" / f"{input_file.stem}.json").write_text(
                json.dumps(sent, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            print(f"{mapping}: {input_file.name}: {len(sent)} confirmShipment(s)")
            result, _, documents = outputs(mapping, input_file, send="feed")
            if len(documents) != 1:
                raise SystemExit(f"{mapping}: {len(documents)} fulfillment feed documents, expected one")
            (folder / "feed").mkdir(exist_ok=True)
            (folder / "feed" / f"{input_file.stem}.xml").write_bytes(documents[0])
            (folder / "feed" / f"{input_file.stem}.result.csv").write_bytes(result)
            print(f"{mapping}: {input_file.name}: one fulfillment feed document")


if __name__ == "__main__":
    main()
