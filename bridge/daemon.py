"""The long-running service: runs the orders flow on its schedule until told to stop (and the
shipments and stock passes on theirs).

Signals only set flags; the loop does the work. SIGTERM/SIGINT let the run in progress finish
(the file in flight is completed and recorded) and exit 0. SIGHUP reloads the config file: a
config that no longer validates is reported and the old one kept.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import schedule

from bridge.config import Settings, load_settings
from bridge.edges.watch import FolderWatcher
from bridge.errors import ConfigError
from bridge.flows.inbound import make_local_folder
from bridge.service import configure_logging, open_service

log = logging.getLogger("bridge.daemon")


class Flags:
    def __init__(self) -> None:
        self.reload = False
        self._stopping = threading.Event()

    @property
    def stop(self) -> bool:
        return self._stopping.is_set()

    @stop.setter
    def stop(self, value: bool) -> None:
        self._stopping.set() if value else self._stopping.clear()

    def sleep(self, seconds: float) -> None:
        """A wait (for Amazon's rate limit, say) that ends early when a stop is requested."""
        self._stopping.wait(seconds)

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._reload)

    def _stop(self, signum, frame) -> None:
        self._stopping.set()

    def _reload(self, signum, frame) -> None:
        self.reload = True


def run_daemon(
    settings: Settings,
    config_path: Path,
    *,
    flags: Flags | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    tick: float = 1.0,
) -> int:
    flags = flags or Flags()
    if threading.current_thread() is threading.main_thread():
        flags.install()
    while not flags.stop:
        with open_service(settings, sleep=flags.sleep, should_stop=lambda: flags.stop) as service:
            scheduler = schedule.Scheduler()
            scheduler.every(int(settings.orders.interval.total_seconds())).seconds.do(
                lambda: service.run_orders(now())
            )
            watcher = _shipment_jobs(scheduler, service, settings, now)
            stock_watcher = _stock_jobs(scheduler, service, settings, now)
            notify("READY=1", f"STATUS=orders every {settings.orders.interval}")
            log.info("started config=%s orders_every=%s warehouses=%d", config_path, settings.orders.interval, len(settings.warehouses))
            service.run_orders(now())
            if watcher is not None:
                service.shipments.run(now())  # files already there give no watch event
            if service.stock is not None and service.stock.enabled:
                service.stock.poll(now())
            try:
                while not flags.stop and not flags.reload:
                    scheduler.run_pending()
                    if watcher is not None and watcher.changed.is_set() and not flags.stop:
                        finished = watcher.take()
                        if finished:
                            service.shipments.run(now(), remote=False, finished=finished)
                    if stock_watcher is not None and stock_watcher.changed.is_set() and not flags.stop:
                        finished = stock_watcher.take()
                        if finished:
                            service.stock.poll(now(), remote=False, finished=set().union(*finished.values()))
                    flags.sleep(tick)
            finally:
                for each in (watcher, stock_watcher):
                    if each is not None:
                        each.stop()
        if flags.reload:
            flags.reload = False
            notify("RELOADING=1")
            try:
                settings = load_settings(config_path)
                log.info("config reloaded config=%s log_level=%s", config_path, settings.log_level)
                configure_logging(settings.log_level)
            except ConfigError as problem:
                log.error("config reload refused, keeping the running config: %s", "; ".join(problem.problems))
    notify("STOPPING=1")
    log.info("stopped")
    return 0


def _shipment_jobs(scheduler: schedule.Scheduler, service, settings: Settings,
                   now: Callable[[], datetime]) -> FolderWatcher | None:
    """Shipments up: SFTP folders polled every shipments.poll_seconds; local folders watched,
    and listed every shipments.rescan_minutes for what the watch missed. None: no warehouse
    sends confirmation files."""
    flow = service.shipments
    if flow is None or not flow.enabled:
        return None
    scheduler.every(int(settings.shipments.poll.total_seconds())).seconds.do(
        lambda: flow.run(now(), local=False))
    scheduler.every(int(settings.shipments.rescan.total_seconds())).seconds.do(
        lambda: flow.run(now(), remote=False))
    watcher = FolderWatcher({w.name: w.local_shipments_folder for w in settings.warehouses
                             if w.local_shipments_folder is not None}, quiet=quiet_after_writes(settings),
                            make_folder=lambda folder: make_local_folder(folder, settings.shipments))
    watcher.start()
    return watcher


def _stock_jobs(scheduler: schedule.Scheduler, service, settings: Settings,
                now: Callable[[], datetime]) -> FolderWatcher | None:
    """Stock up: the SFTP stock folder listed every stock.poll_minutes, the local one watched
    and listed every shipments.rescan_minutes; every minute, documents with Amazon are polled
    and the daily publish made once its moment has come. None: no warehouse publishes stock."""
    flow = service.stock
    if flow is None or not flow.enabled:
        return None
    scheduler.every(int(settings.stock.poll.total_seconds())).seconds.do(lambda: flow.poll(now(), local=False))
    scheduler.every(int(settings.shipments.rescan.total_seconds())).seconds.do(
        lambda: flow.poll(now(), remote=False))
    scheduler.every(60).seconds.do(lambda: flow.poll(now(), remote=False, local=False))
    folder = flow.warehouse.local_stock_folder
    if folder is None:
        return None
    watcher = FolderWatcher({flow.warehouse.name: folder}, quiet=quiet_after_writes(settings),
                            make_folder=lambda made: make_local_folder(made, settings.shipments))
    watcher.start()
    return watcher


def quiet_after_writes(settings: Settings) -> float:
    """Seconds a watched file written in place must stay untouched before it is taken: a
    writer that appends line by line closes it after every line."""
    return min(settings.shipments.stable.total_seconds(), 5.0)


def notify(*states: str) -> None:
    """sd_notify without a dependency: a datagram to $NOTIFY_SOCKET when systemd set one."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto("\n".join(states).encode(), address)
        except OSError as problem:
            log.warning("systemd notify failed: %s", problem)
