"""A real bridge for the shipments tests: orders delivered to a warehouse over SFTP first,
then confirmation files dropped in its SFTP shipments folder or its local staff folder.

Nothing here replaces an edge: SFTP is the suite's OpenSSH sshd, Amazon is the sandbox over
HTTP through python-amazon-sp-api.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bridge.config import Settings
from bridge.edges.amazon import AmazonOrders
from bridge.edges.amazon_feeds import AmazonFeeds
from bridge.edges.amazon_shipments import AmazonShipments
from bridge.flows.orders import OrdersFlow
from bridge.flows.shipments import ShipmentsFlow
from bridge.ledger import Ledger
from bridge.sealing import Sealer
from harness import RUN_TIME, SAMPLES, sftp_warehouse, write_config

SHIP_TIME = datetime(2026, 11, 20, 18, 0, tzinfo=timezone.utc)  # when the goldens are processed
STABLE = timedelta(seconds=30)  # the default shipments.stable_seconds
GOLDEN_INPUTS = {
    "acme-csv": "VERSAND_20261120173000.csv",
    "globex-xml": "GLOBEX_SHIPCONFIRM_20261120T170500Z.xml",
    "initech-xlsx": "initech_shipped_20261120.xlsx",
}


def golden(mapping: str) -> Path:
    return SAMPLES / mapping / "shipments"


@dataclass
class Shipper:
    """One bridge process with both flows; `restart()` is what a crash and restart gives."""

    settings: Settings
    checkpoint: object = None
    ledger: Ledger = field(init=False)

    def __post_init__(self) -> None:
        self.ledger = Ledger(self.settings.ledger_path, Sealer(self.settings.state_key))
        self.orders = OrdersFlow(self.settings, self.ledger, AmazonOrders(self.settings.amazon, backoff=0.01))
        self.amazon = AmazonShipments(self.settings.amazon, backoff=0.01)
        self.feeds = AmazonFeeds(self.settings.amazon, sleep=lambda seconds: None, backoff=0.01)
        self.flow = ShipmentsFlow(self.settings, self.ledger, self.amazon, checkpoint=self.checkpoint,
                                  sleep=lambda seconds: None, feeds=self.feeds)

    @property
    def remote(self) -> Path:
        return Path(self.settings.warehouses[0].orders_folder).parent / "out"

    @property
    def local(self) -> Path:
        return self.settings.warehouses[0].local_shipments_folder

    def deliver_orders(self) -> None:
        report = self.orders.run(RUN_TIME)
        assert report.errors == [] and report.delivered_orders == 5, report

    def ship(self, now: datetime = SHIP_TIME, **options):
        """Two passes `stable` apart: a new file is seen, then taken."""
        self.flow.run(now - STABLE, **options)
        return self.flow.run(now, **options)

    def restart(self, checkpoint=None) -> "Shipper":
        self.ledger.close()
        self.feeds.close()
        return Shipper(self.settings, checkpoint)


def make_config(tmp_path: Path, sshd, sftp_root: Path, sandbox, mapping: str, *, shipments: str = "",
                **extra) -> Path:
    """One warehouse "wh": orders into sftp_root/in, confirmations from sftp_root/out and from
    a local folder tmp_path/drop."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (sftp_root / "in").mkdir(parents=True, exist_ok=True)
    (sftp_root / "out").mkdir(exist_ok=True)
    warehouse = sftp_warehouse("wh", mapping, sshd, sftp_root / "in",
                               shipments_folder=str(sftp_root / "out"),
                               local_shipments_folder=str(tmp_path / "drop"), **extra)
    path = write_config(tmp_path, sandbox_url=sandbox.url, token_url=sandbox.token_url,
                        warehouses=[warehouse])
    if shipments:
        path.write_text(path.read_text() + f"\n[shipments]\n{shipments}\n")
    return path


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()} if folder.is_dir() else {}


def requests_sent(sandbox) -> list[dict]:
    """Every confirmShipment the sandbox accepted, as {"orderId", "body"}."""
    return [{"orderId": c["orderId"], "body": {k: v for k, v in c.items() if k != "orderId"}}
            for c in sandbox.confirmations]


def feed_documents(sandbox) -> list[bytes]:
    """Every POST_ORDER_FULFILLMENT_DATA document Amazon received, in order."""
    return [feed["document"] for feed in sandbox.feeds.values() if feed["feedType"] == "POST_ORDER_FULFILLMENT_DATA"]


def expected_feed(mapping: str) -> tuple[bytes, bytes]:
    """The golden feed document and result file of the mapping's confirmation file."""
    stem = Path(GOLDEN_INPUTS[mapping]).stem
    return ((golden(mapping) / "feed" / f"{stem}.xml").read_bytes(),
            (golden(mapping) / "feed" / f"{stem}.result.csv").read_bytes())


def expected_requests(mapping: str) -> list[dict]:
    name = GOLDEN_INPUTS[mapping]
    return json.loads((golden(mapping) / "requests" / f"{Path(name).stem}.json").read_text("utf-8"))
