"""Composition: settings → ledger, edges and flows, under one process-wide state lock.

Two bridges on one state folder would break exactly-once delivery, so every command that
changes state holds an exclusive lock on `<state_dir>/bridge.lock` while it runs.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator

from bridge import state
from bridge.config import Settings
from bridge.edges.amazon import AmazonOrders
from bridge.errors import BridgeError, FixTheSetup
from bridge.flows.orders import BOOKMARK, OrdersFlow, RunReport
from bridge.flows.shipments import FLOW as SHIPMENTS_FLOW, ShipmentsFlow
from bridge.ledger import FileStatus, Ledger, OrderStatus, PackageStatus
from bridge.records import iso_z, one_line
from bridge.sealing import Sealer
from bridge.state import state_lock

__all__ = ["Service", "open_service", "state_lock", "status_report", "order_report"]

QUIET_LIBRARIES = ("sp_api", "httpx", "httpcore", "paramiko", "watchdog", "schedule")
log = logging.getLogger("bridge.service")


def configure_logging(level: str = "INFO") -> None:
    """Operator logs: one `key=value` line per unit of work, no buyer data, no secrets.

    The libraries stay at WARNING whatever the level: sp_api logs request headers (the access
    token) at DEBUG.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=getattr(logging, level, logging.INFO), handlers=[handler], force=True)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)


class OneLineFormatter(logging.Formatter):
    """One record, one line: a control character in a message (a newline in a value Amazon
    sent, wherever a call site forgot `records.shown`) is written as its escape, so no log line
    can be forged. A traceback, appended after the message, keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return one_line(super().formatMessage(record))



@dataclass
class Service:
    settings: Settings
    ledger: Ledger
    amazon: AmazonOrders
    orders: OrdersFlow
    shipments: ShipmentsFlow | None = None
    writable: bool = True  # holds the state lock: may keep backups and the state marker
    stock: Any = None  # flows.stock_intake.StockFlow: stock files to Amazon's inventory feed

    def run_orders(self, now: datetime) -> RunReport:
        """One orders run, then what every run leaves in the state folder: the marker of how
        far the ledger has come, and the day's backup."""
        report = self.orders.run(now)
        if not self.writable:
            return report
        try:
            state.after_run(self.settings, self.ledger, now)
        except BridgeError as problem:
            report.errors.append(f"state: {problem}")
            report.needs_a_person |= isinstance(problem, FixTheSetup)
            log.error("step=state failed: %s", problem)
        return report


@contextmanager
def open_service(
    settings: Settings,
    *,
    sleep: Callable[[float], None] = time.sleep,
    exclusive: bool = True,
    **flow_options: Any,
) -> Iterator[Service]:
    """`sleep` is how waits for Amazon's rate limits pass (the daemon's wakes up on SIGTERM).
    `exclusive=False` is for read-only work (a dry run) beside a running service."""
    with state_lock(settings.state_dir) if exclusive else nullcontext():
        now = datetime.now(timezone.utc)  # only for the audit record of a new state
        ledger = state.open_ledger(settings, Sealer(settings.state_key), now, writable=exclusive)
        try:
            amazon = AmazonOrders(settings.amazon, sleep=sleep)
            flow = OrdersFlow(settings, ledger, amazon, **flow_options)
            service = Service(settings, ledger, amazon, flow, writable=exclusive)
            service.shipments = shipments_flow(settings, ledger, sleep=sleep, **flow_options)
            service.stock = stock_flow(settings, ledger, sleep=sleep, **flow_options)
            try:
                yield service
            finally:
                service.stock.close()
        finally:
            ledger.close()


def shipments_flow(settings: Settings, ledger: Ledger, *, sleep: Callable[[float], None] = time.sleep,
                   **flow_options: Any) -> ShipmentsFlow:
    from bridge.edges.amazon_shipments import AmazonShipments

    options = {k: v for k, v in flow_options.items() if k in ("open_drop", "checkpoint", "should_stop")}
    return ShipmentsFlow(settings, ledger, AmazonShipments(settings.amazon, sleep=sleep), sleep=sleep, **options)


def stock_flow(settings: Settings, ledger: Ledger, *, sleep: Callable[[float], None] = time.sleep,
               **flow_options: Any):
    """Stock up's flow (flows.stock_intake.StockFlow); its Feeds client is made only when a
    warehouse publishes stock."""
    from bridge.flows.stock_intake import StockFlow

    options = {k: v for k, v in flow_options.items() if k in ("open_drop", "checkpoint", "should_stop")}
    return StockFlow(settings, ledger, _feeds(settings, sleep) if settings.stock.warehouse else None,
                     sleep=sleep, **options)


def _feeds(settings: Settings, sleep: Callable[[float], None]):
    from bridge.edges.amazon_feeds import AmazonFeeds

    return AmazonFeeds(settings.amazon, sleep=sleep)


def stock_status(settings: Settings, ledger: Ledger | None, now: datetime) -> dict[str, Any] | None:
    """Stock up for `status`: when it publishes next, the last published file and its outcome,
    the newest file and what became of it, held files and why, files with Amazon or waiting
    for the publish, files answered into error/. None when no warehouse publishes stock."""
    from bridge.flows.stock_intake import FLOW as STOCK_FLOW, PUBLISH_BOOKMARK
    from bridge.windows import next_daily

    stock = settings.stock
    if stock.warehouse is None:
        return None
    report: dict[str, Any] = {
        "warehouse": stock.warehouse, "publish_at": stock.publish_at.strftime("%H:%M"),
        "timezone": stock.timezone, "next_publish": iso_z(next_daily(now, stock.publish_at, stock.zone)),
        "last_publish_run": None, "last_published": None, "latest": None, "held": [], "with_amazon": [],
        "waiting": [], "files_in_progress": [], "files_in_error": [], "files_incomplete": [],
    }
    if ledger is None:
        return report
    last_run = ledger.bookmark(PUBLISH_BOOKMARK)
    files = ledger.inbound_report(STOCK_FLOW)
    report.update(ledger.stock_report(stock.warehouse))
    report.update(last_publish_run=iso_z(last_run) if last_run else None,
                  files_in_progress=files["in_progress"], files_in_error=files["errors"],
                  files_incomplete=files["incomplete"])
    return report


def shipments_status(ledger: Ledger | None) -> dict[str, Any]:
    """Packages confirmed, rejected and waiting; orders delivered and not yet confirmed, soonest
    ship-by first; confirmation files in progress and the latest answered with errors."""
    if ledger is None:
        return {"packages": {status.value: 0 for status in PackageStatus}, "unconfirmed": [],
                "files_in_progress": [], "files_in_error": [], "files_incomplete": [], "feeds": []}
    files = ledger.inbound_report(SHIPMENTS_FLOW)
    return {
        "packages": ledger.shipment_counts(),
        "unconfirmed": ledger.unconfirmed_orders(),
        "files_in_progress": files["in_progress"],
        "files_in_error": files["errors"],
        "files_incomplete": files["incomplete"],  # left in their folder, waiting for their writer
        "feeds": ledger.fulfillment_feed_report(),  # shipments.send = "feed": documents with Amazon
    }


def status_report(settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    """What `fbm-bridge status` shows: counts, the window bookmark, files in flight, attention items."""
    now = now or datetime.now(timezone.utc)
    if not settings.ledger_path.exists():
        # Nothing has run yet; never create the service's state (as root, say) just to look.
        return {
            "config": str(settings.path), "orders": {status.value: 0 for status in OrderStatus},
            "window_end": None, "behind_seconds": None, "late": False,
            "windows": {"windows": 0, "since": None, "until": None, "gaps": []},
            "files_in_flight": [], "attention": [], "state": state.identity_problem(settings),
            "state_event": None, "shipments": shipments_status(None),
            "stock": stock_status(settings, None, now),
        }
    problem = state.identity_problem(settings)
    ledger = Ledger(settings.ledger_path, None)  # reads no buyer data
    try:
        bookmark = ledger.bookmark(BOOKMARK)
        in_flight = ledger.files_in(FileStatus.STAGED, FileStatus.UPLOADED)
        problems = ledger.delivery_problems()
        behind = now - bookmark if bookmark else None
        expected = settings.orders.lag + settings.orders.interval + timedelta(minutes=5)
        return {
            "config": str(settings.path),
            "orders": ledger.status_counts(),
            "window_end": iso_z(bookmark) if bookmark else None,
            "behind_seconds": int(behind.total_seconds()) if behind is not None else None,
            "late": bool(behind and behind > expected),
            "windows": ledger.window_log(BOOKMARK),
            "files_in_flight": [
                {"warehouse": f.warehouse, "name": f.name, "status": f.status.value,
                 "problem": problems.get(f.id, {}).get("problem"), "problem_at": problems.get(f.id, {}).get("at")}
                for f in in_flight
            ],
            "attention": ledger.attention(),
            "state": problem,  # why a run would refuse this state folder, if it would
            "state_event": _last_confirmation(ledger),
            "shipments": shipments_status(ledger),
            "stock": stock_status(settings, ledger, now),
        }
    finally:
        ledger.close()


def _last_confirmation(ledger: Ledger) -> dict[str, str] | None:
    """The latest thing a person did to the state (fresh start, accepted restore, new key)."""
    events = [e for e in ledger.state_events() if e["kind"] not in ("created", "identified")]
    return events[-1] if events else None


def order_report(settings: Settings, order_id: str) -> dict[str, Any] | None:
    """One order for staff: status, reason, the file that carried it, and its history."""
    if not settings.ledger_path.exists():
        return None
    ledger = Ledger(settings.ledger_path, None)  # reads no buyer data
    try:
        row = ledger.order_row(order_id)
        events = ledger.events(order_id)
        if row is None and not events:
            return None
        report = dict(row or {"order_id": order_id, "status": "rejected"})
        report["file"] = ledger.file_name(row["file_id"]) if row and row.get("file_id") else None
        report["events"] = events
        return report
    finally:
        ledger.close()
