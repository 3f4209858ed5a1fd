"""Composition: settings → ledger, edges and flows, under one process-wide state lock.

Two bridges on one state folder would break exactly-once delivery, so every command that
changes state holds an exclusive lock on `<state_dir>/bridge.lock` while it runs.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from bridge.config import Settings
from bridge.edges.amazon import AmazonOrders
from bridge.errors import FixTheSetup
from bridge.flows.orders import BOOKMARK, OrdersFlow
from bridge.flows.shipments import FLOW as SHIPMENTS_FLOW, ShipmentsFlow
from bridge.ledger import FileStatus, Ledger, OrderStatus, PackageStatus
from bridge.records import iso_z
from bridge.sealing import Sealer

QUIET_LIBRARIES = ("sp_api", "httpx", "httpcore", "paramiko", "watchdog", "schedule")


def configure_logging(level: str = "INFO") -> None:
    """Operator logs: one `key=value` line per unit of work, no buyer data, no secrets.

    The libraries stay at WARNING whatever the level: sp_api logs request headers (the access
    token) at DEBUG.
    """
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        force=True,
    )
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)


@contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True)
    handle = open(state_dir / "bridge.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise FixTheSetup(
            f"another bridge process is using {state_dir} (lock file {state_dir / 'bridge.lock'});"
            " stop it first (systemctl stop fbm-bridge)"
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


@dataclass
class Service:
    settings: Settings
    ledger: Ledger
    amazon: AmazonOrders
    orders: OrdersFlow
    shipments: ShipmentsFlow | None = None


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
        ledger = Ledger(settings.ledger_path, Sealer(settings.state_key))
        try:
            amazon = AmazonOrders(settings.amazon, sleep=sleep)
            service = Service(settings, ledger, amazon, OrdersFlow(settings, ledger, amazon, **flow_options))
            service.shipments = shipments_flow(settings, ledger, sleep=sleep, **flow_options)
            yield service
        finally:
            ledger.close()


def shipments_flow(settings: Settings, ledger: Ledger, *, sleep: Callable[[float], None] = time.sleep,
                   **flow_options: Any) -> ShipmentsFlow:
    from bridge.edges.amazon_shipments import AmazonShipments

    options = {k: v for k, v in flow_options.items() if k in ("open_drop", "checkpoint", "should_stop")}
    return ShipmentsFlow(settings, ledger, AmazonShipments(settings.amazon, sleep=sleep), sleep=sleep, **options)


def shipments_status(ledger: Ledger | None) -> dict[str, Any]:
    """Packages confirmed, rejected and waiting; orders delivered and not yet confirmed, soonest
    ship-by first; confirmation files in progress and the latest answered with errors."""
    if ledger is None:
        return {"packages": {status.value: 0 for status in PackageStatus}, "unconfirmed": [],
                "files_in_progress": [], "files_in_error": []}
    files = ledger.inbound_report(SHIPMENTS_FLOW)
    return {
        "packages": ledger.shipment_counts(),
        "unconfirmed": ledger.unconfirmed_orders(),
        "files_in_progress": files["in_progress"],
        "files_in_error": files["errors"],
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
            "files_in_flight": [], "attention": [], "shipments": shipments_status(None),
        }
    ledger = Ledger(settings.ledger_path, None)  # reads no buyer data
    try:
        bookmark = ledger.bookmark(BOOKMARK)
        in_flight = ledger.files_in(FileStatus.STAGED, FileStatus.UPLOADED)
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
                {"warehouse": f.warehouse, "name": f.name, "status": f.status.value} for f in in_flight
            ],
            "attention": ledger.attention(),
            "shipments": shipments_status(ledger),
        }
    finally:
        ledger.close()


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
