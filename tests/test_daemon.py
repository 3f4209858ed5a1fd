"""`fbm-bridge run`, the long-running service, as systemd runs it: a subprocess on the real clock
against the SP-API sandbox and OpenSSH, driven by signals. Tests wait for events (a file, a log
line, an exit) with a deadline; they never sleep for a schedule or assert on durations."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import pytest
import sp_api.auth.access_token_client as token_cache

from bridge.sandbox.spapi import SpApiSandbox, load_seed, rebase_last_updated
from bridge.service import state_lock
from harness import REPO, SECRETS, SEED, load, sftp_warehouse, write_config

DEADLINE = 30.0  # seconds; generous for a loaded machine, never reached when things work
MERCHANT_ORDERS = 5


def wait_for(condition: Callable[[], object], what: str, timeout: float = DEADLINE):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if result := condition():
            return result
        time.sleep(0.05)
    pytest.fail(f"gave up waiting for {what}")


@pytest.fixture
def sandbox():
    """The seed's orders, moved to the last few hours so the real clock's windows find them."""
    token_cache.cache.clear()
    recent = rebase_last_updated(load_seed(SEED), datetime.now(timezone.utc) - timedelta(minutes=45))
    with SpApiSandbox(recent) as server:
        yield server


@pytest.fixture
def config(tmp_path, sshd, sftp_root, sandbox) -> Path:
    start = (datetime.now(timezone.utc) - timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return write_config(tmp_path, sandbox_url=sandbox.url, token_url=sandbox.token_url,
                        warehouses=[sftp_warehouse("wh", "acme-csv", sshd, sftp_root)],
                        orders=f'start = "{start}"\ninterval_minutes = 1\nwindow_minutes = 600')


class Service:
    """`python -m fbm-bridge run` with its log in a file the test can poll."""

    def __init__(self, config: Path, log: Path, env: dict[str, str]):
        self.log = log
        self._log_handle = open(log, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bridge", "--config", str(config), "run"],
            cwd=REPO, env=env, stdout=self._log_handle, stderr=subprocess.STDOUT,
        )

    def text(self) -> str:
        return self.log.read_text()

    def logged(self, words: str, after: int = 0) -> bool:
        return words in self.text()[after:]

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log_handle.close()


@pytest.fixture
def start_service(tmp_path):
    started: list[Service] = []

    def start(config: Path, **extra_env: str) -> Service:
        env = {**os.environ, **SECRETS, "NO_PROXY": "127.0.0.1,localhost", **extra_env}
        service = Service(config, tmp_path / f"service-{len(started)}.log", env)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()
        for secret in SECRETS.values():
            assert secret not in service.text()


def delivered(folder: Path) -> int:
    return len([p for p in folder.iterdir() if not p.name.endswith(".part")])


def test_the_service_delivers_on_start_tells_systemd_and_exits_0_on_sigterm(config, sftp_root, start_service, tmp_path):
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(DEADLINE)
    service = start_service(config, NOTIFY_SOCKET=str(tmp_path / "notify.sock"))

    assert b"READY=1" in notify.recv(4096)
    wait_for(lambda: delivered(sftp_root) == MERCHANT_ORDERS, "the orders to arrive in the drop")
    wait_for(lambda: service.logged("delivered=5"), "the run's summary line")

    service.signal(signal.SIGTERM)

    assert service.process.wait(timeout=DEADLINE) == 0
    assert b"STOPPING=1" in notify.recv(4096)
    assert "stopped" in service.text()
    notify.close()


def test_sighup_with_a_broken_config_is_refused_and_the_service_keeps_running(config, sftp_root, start_service):
    service = start_service(config)
    wait_for(lambda: service.logged("delivered=5"), "the first run")
    good = config.read_text()
    config.write_text(good.replace("interval_minutes = 1", "interval_minutes = 1\nlag_minutes = 1"))
    mark = len(service.text())

    service.signal(signal.SIGHUP)

    wait_for(lambda: service.logged("config reload refused", mark), "the refusal in the log")
    assert "orders.lag_minutes: must be at least 2" in service.text()[mark:]
    wait_for(lambda: service.logged("orders windows=", mark), "a run with the config it kept")
    assert service.process.poll() is None
    assert delivered(sftp_root) == MERCHANT_ORDERS  # nothing sent twice

    service.signal(signal.SIGTERM)
    assert service.process.wait(timeout=DEADLINE) == 0


def test_sighup_with_a_valid_config_reloads_it(config, start_service):
    service = start_service(config)
    wait_for(lambda: service.logged("delivered=5"), "the first run")
    config.write_text(config.read_text().replace("[bridge]", '[bridge]\nlog_level = "WARNING"'))
    mark = len(service.text())

    service.signal(signal.SIGHUP)

    wait_for(lambda: service.logged("config reloaded", mark), "the reload in the log")
    service.signal(signal.SIGTERM)
    assert service.process.wait(timeout=DEADLINE) == 0
    assert "orders windows=" not in service.text()[mark:].split("config reloaded", 1)[1]  # INFO now off


def test_sigint_also_stops_the_service_cleanly(config, start_service):
    service = start_service(config)
    wait_for(lambda: service.logged("delivered=5"), "the first run")
    service.signal(signal.SIGINT)
    assert service.process.wait(timeout=DEADLINE) == 0


def test_sigterm_during_a_run_ends_it_at_a_safe_point_and_a_restart_delivers_every_order_once(
        config, sftp_root, sandbox, start_service):
    sandbox.fail_next("searchOrders", 429, headers={"x-amzn-RateLimit-Limit": "0.5"})  # a 2 s wait
    service = start_service(config)
    wait_for(lambda: service.logged("throttled op=searchOrders"), "the run to be waiting out a throttle")

    service.signal(signal.SIGTERM)

    assert service.process.wait(timeout=DEADLINE) == 0
    assert "stopped" in service.text()
    restarted = start_service(config)
    wait_for(lambda: restarted.logged("delivered=5"), "the restarted service's run")
    assert delivered(sftp_root) == MERCHANT_ORDERS
    restarted.signal(signal.SIGTERM)
    assert restarted.process.wait(timeout=DEADLINE) == 0


def test_the_service_refuses_to_start_while_another_bridge_holds_the_state(config, sftp_root, start_service):
    with state_lock(load(config).state_dir):
        service = start_service(config)
        assert service.process.wait(timeout=DEADLINE) == 2
    assert "another bridge process" in service.text()
    assert delivered(sftp_root) == 0
