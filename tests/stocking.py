"""A real bridge for the stock intake tests: the warehouse's stock files dropped in its SFTP stock
folder (the suite's OpenSSH sshd) or its local folder, published to the SP-API sandbox's Feeds
API over HTTP through python-amazon-sp-api. Orders can be delivered first (on_hand) and
confirmed by shipment files, through the real flows.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sp_api.auth.access_token_client as token_cache

from bridge.config import Settings
from bridge.edges.amazon import AmazonOrders
from bridge.edges.amazon_feeds import AmazonFeeds
from bridge.edges.amazon_shipments import AmazonShipments
from bridge.flows.orders import OrdersFlow
from bridge.flows.shipments import ShipmentsFlow
from bridge.flows.stock_intake import StockFlow
from bridge.ledger import Ledger
from bridge.sandbox.spapi import SpApiSandbox, load_seed
from bridge.sealing import Sealer
from harness import REPO, RUN_TIME, SAMPLES, SEED, load, sftp_warehouse, write_config

sys.path.insert(0, str(REPO / "samples"))
from regenerate_stock import in_flight_of, stock_files  # noqa: E402

NOW = datetime(2026, 11, 26, 22, 0, tzinfo=timezone.utc)  # a publish time
STABLE = timedelta(seconds=30)  # the default shipments.stable_seconds, which stock files share too
GOLDEN = {mapping: stock_files(mapping)[0] for mapping in ("acme-csv", "globex-xml", "initech-xlsx")}
KNOWN = ["CST-CORK-4PK", "KAN-GLAS-1L", "MUG-CER-350-BLU", "PLT-STN-27CM-4", "TEA-INF-SS-01"]


def clocked_sandbox():
    """The SP-API sandbox with a clock the test moves (feeds are found by creation time)."""
    token_cache.cache.clear()
    clock = {"now": NOW}
    server = SpApiSandbox(load_seed(SEED), clock=lambda: clock["now"])
    server.test_clock = clock
    return server


def make_config(tmp_path: Path, sshd, sftp_root: Path, sandbox, mapping: str = "acme-csv", *,
                stock: str = "", shipments: bool = False, orders: str | None = None, **extra) -> Path:
    """One warehouse "wh" publishing stock: stock files from sftp_root/stock and tmp_path/stockdrop;
    orders into sftp_root/in; with `shipments`, confirmations from sftp_root/out."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    for folder in ("in", "stock") + (("out",) if shipments else ()):
        (sftp_root / folder).mkdir(parents=True, exist_ok=True)
    if shipments:
        extra["shipments_folder"] = str(sftp_root / "out")
    warehouse = sftp_warehouse("wh", mapping, sshd, sftp_root / "in", stock_folder=str(sftp_root / "stock"),
                               local_stock_folder=str(tmp_path / "stockdrop"), **extra)
    if "/" in mapping:  # a mapping written by the test
        warehouse["mapping"] = mapping + ".toml"
    path = write_config(tmp_path, sandbox_url=sandbox.url, token_url=sandbox.token_url, warehouses=[warehouse],
                        **({"orders": orders} if orders is not None else {}))
    path.write_text(path.read_text() + f'\n[stock]\nwarehouse = "wh"\n{stock}\n')
    return path


@dataclass
class Stocker:
    """One bridge process's stock objects; `restart()` is what a crash and restart gives."""

    settings: Settings
    checkpoint: object = None
    ledger: Ledger = field(init=False)

    def __post_init__(self) -> None:
        self.ledger = Ledger(self.settings.ledger_path, Sealer(self.settings.state_key))
        self.feeds = AmazonFeeds(self.settings.amazon, sleep=lambda seconds: None, backoff=0.01)
        self.flow = StockFlow(self.settings, self.ledger, self.feeds, checkpoint=self.checkpoint,
                              sleep=lambda seconds: None, max_wait_seconds=60)

    @property
    def remote(self) -> Path:
        return Path(self.settings.warehouses[0].stock_folder)

    @property
    def local(self) -> Path:
        return self.settings.warehouses[0].local_stock_folder

    def push(self, now: datetime = NOW, **options):
        """`inventory push`: new files are listed, listed again `stable` later, taken, published."""
        return self.flow.push(now, **options)

    def deliver_orders(self) -> None:
        orders = OrdersFlow(self.settings, self.ledger, AmazonOrders(self.settings.amazon, backoff=0.01))
        report = orders.run(RUN_TIME)
        assert report.errors == [] and report.delivered_orders == 5, report

    def ship(self, name: str, data: bytes, now: datetime):
        """The warehouse confirms parcels: a confirmation file through the shipments flow."""
        drop(Path(self.settings.warehouses[0].shipments_folder), name, data)
        shipments = ShipmentsFlow(self.settings, self.ledger, AmazonShipments(self.settings.amazon, backoff=0.01),
                                  sleep=lambda seconds: None)
        report = shipments.run(now, settle=True)
        assert report.all_errors == [] and report.rejected == 0, report
        return report

    def restart(self, checkpoint=None) -> "Stocker":
        self.ledger.close()
        self.feeds.close()
        return Stocker(self.settings, checkpoint)

    def close(self) -> None:
        self.ledger.close()
        self.feeds.close()


def drop(folder: Path, name: str, data: bytes) -> None:
    """As a careful WMS does: a temporary name, then a rename."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.tmp").write_bytes(data)
    (folder / f"{name}.tmp").rename(folder / name)


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()} if folder.is_dir() else {}


def result_lines(folder: Path, name: str) -> list[str]:
    """The result file's lines after its header."""
    return (folder / "results" / f"{Path(name).stem}.result.csv").read_text("utf-8-sig").splitlines()[1:]


def result_rows(folder: Path, name: str) -> list[list[str]]:
    """The result file parsed as a spreadsheet would (its delimiter is the mapping's)."""
    import csv

    text = (folder / "results" / f"{Path(name).stem}.result.csv").read_text("utf-8-sig")
    return list(csv.reader(text.splitlines(), delimiter=";" if text.startswith("row;") else ","))


def golden_feed(mapping: str) -> bytes:
    source = GOLDEN[mapping]
    return (source.parent / f"{source.name}.feed-0001.json").read_bytes()


__all__ = ["GOLDEN", "KNOWN", "NOW", "SAMPLES", "STABLE", "Stocker", "clocked_sandbox", "drop", "files",
           "golden_feed", "in_flight_of", "load", "make_config", "result_lines", "result_rows"]
