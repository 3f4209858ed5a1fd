"""Composition: settings → ledger, edges and flows, under one process-wide state lock.

Two bridges on one state folder would break exactly-once delivery, so every command that
changes state holds an exclusive lock on `<state_dir>/bridge.lock` while it runs.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

from bridge import state
from bridge.config import Settings
from bridge.edges.amazon import AmazonOrders
from bridge.errors import BridgeError, FixTheSetup
from bridge.flows.orders import OrdersFlow, RunReport
from bridge.flows.shipments import ShipmentsFlow
from bridge.ledger import Ledger
from bridge.records import one_line
from bridge.report import order_report, shipments_status, status_report, stock_status  # noqa: F401 - re-exported
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
    # paramiko's transport thread logs a failed connection as an ERROR with a 30-line traceback;
    # the SFTP edge reports the same failure in one line, so only paramiko's critical ones pass.
    logging.getLogger("paramiko.transport").setLevel(logging.CRITICAL)


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
    lock: bool = True,
    **flow_options: Any,
) -> Iterator[Service]:
    """`sleep` is how waits for Amazon's rate limits pass (the daemon's wakes up on SIGTERM).
    `exclusive=False` is for read-only work (a dry run) beside a running service.
    `lock=False`: the caller already holds the state lock (the daemon, across reloads)."""
    with state_lock(settings.state_dir) if exclusive and lock else nullcontext():
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
    return ShipmentsFlow(settings, ledger, AmazonShipments(settings.amazon, sleep=sleep), sleep=sleep,
                         keep_package_ids=lambda issued, now: state.note_issued_package_ids(settings, ledger, issued, now),
                         **options)


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
