"""`fbm-bridge run`, the long-running service, as systemd runs it: a subprocess on the real clock
against the SP-API sandbox and OpenSSH, driven by signals, telling systemd through a real
NOTIFY_SOCKET. Tests wait for events (a file, a log line, a datagram, an exit) with a deadline;
they never sleep for a schedule or assert on durations."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import pytest
import sp_api.auth.access_token_client as token_cache

from bridge.daemon import Daemon, Flags, Job, Notifier
from bridge.sandbox.spapi import SpApiSandbox, load_seed, rebase_last_updated
from bridge.service import state_lock
from harness import MAPPINGS, REPO, SECRETS, SEED, load, sftp_warehouse, write_config, write_mapping
from sshd import free_port

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
    """The seed's orders, moved to the last few hours so the real clock's windows find them; on
    a fixed port, so that a test can stop it and start it again where the service expects it."""
    token_cache.cache.clear()
    recent = rebase_last_updated(load_seed(SEED), datetime.now(timezone.utc) - timedelta(minutes=45))
    with SpApiSandbox(recent, port=free_port()) as server:
        yield server


def make_config(tmp_path: Path, sshd, sftp_root: Path, sandbox, *, interval: str = "30", mapping: Path | None = None) -> Path:
    start = (datetime.now(timezone.utc) - timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    (sftp_root / "out").mkdir(exist_ok=True)
    warehouse = sftp_warehouse("wh", "acme-csv", sshd, sftp_root, shipments_folder=str(sftp_root / "out"))
    if mapping is not None:
        warehouse["mapping"] = str(mapping)
    config = write_config(tmp_path, sandbox_url=sandbox.url, token_url=sandbox.token_url, warehouses=[warehouse],
                          orders=f'start = "{start}"\ninterval_minutes = {interval}\nwindow_minutes = 600')
    config.write_text(config.read_text() + "\n[shipments]\npoll_seconds = 5\n")
    return config


@pytest.fixture
def config(tmp_path, sshd, sftp_root, sandbox) -> Path:
    """Orders every 30 minutes (so only the run at start happens in a test), the SFTP
    shipments folder every 5 seconds: the job that shows the schedule going on."""
    return make_config(tmp_path, sshd, sftp_root, sandbox)


class Service:
    """`python -m bridge run` with its log in a file the test can poll."""

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

    def count(self, words: str, after: int = 0) -> int:
        return self.text()[after:].count(words)

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


class Systemd:
    """The manager's end of NOTIFY_SOCKET: a real AF_UNIX datagram socket."""

    def __init__(self, path: Path):
        self.path = path
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(path))
        self.socket.settimeout(0.1)
        self.messages: list[str] = []
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:  # as systemd does: always reading
        while not self._closing.is_set():
            try:
                self.messages.append(self.socket.recv(4096).decode())
            except (TimeoutError, OSError):
                continue

    def received(self) -> list[str]:
        return list(self.messages)

    def said(self, state: str) -> bool:
        return any(state in message.split("\n") for message in self.received())

    def close(self) -> None:
        self._closing.set()
        self._reader.join()
        self.socket.close()


@pytest.fixture
def systemd(tmp_path):
    manager = Systemd(tmp_path / "notify.sock")
    yield manager
    manager.close()


def delivered(folder: Path) -> int:
    return len([p for p in folder.iterdir() if p.is_file() and not p.name.endswith(".part")])


def status_text(config: Path, *options: str) -> str:
    done = subprocess.run([sys.executable, "-m", "bridge", "--config", str(config), "status", *options],
                          cwd=REPO, env={**os.environ, **SECRETS}, capture_output=True, text=True)
    return done.stdout


def job_lines(service: Service, job: str) -> list[str]:
    return [line for line in service.text().splitlines() if f"job={job} " in line]


def started_up(service: Service) -> None:
    """The runs at start are over: each job has logged its line."""
    for job in ("orders", "shipments-sftp"):
        wait_for(lambda: job_lines(service, job), f"the {job} job's first run")


# --- running ------------------------------------------------------------------------------------


def test_the_service_delivers_on_start_tells_systemd_and_exits_0_on_sigterm(config, sftp_root, start_service, systemd):
    service = start_service(config, NOTIFY_SOCKET=str(systemd.path))

    wait_for(lambda: systemd.said("READY=1"), "READY=1")
    wait_for(lambda: delivered(sftp_root) == MERCHANT_ORDERS, "the orders to arrive in the drop")
    wait_for(lambda: service.logged("delivered=5"), "the run's summary line")
    wait_for(lambda: systemd.said("STATUS=orders pull running"), "the status of the orders job")
    wait_for(lambda: any(m.startswith("STATUS=idle; next: ") for m in systemd.received()), "an idle status")

    service.signal(signal.SIGTERM)

    assert service.process.wait(timeout=DEADLINE) == 0
    wait_for(lambda: systemd.said("STOPPING=1"), "STOPPING=1")
    assert "stopped" in service.text()


def test_every_job_run_logs_one_key_value_line_with_the_flows_counts(config, start_service):
    service = start_service(config)
    wait_for(lambda: job_lines(service, "orders"), "the orders job's line")
    wait_for(lambda: job_lines(service, "shipments-sftp"), "the shipments job's line")
    assert re.search(r" jobs=orders,shipments-sftp$", service.text(), re.M)  # no local folder, no stock: no job for them

    [orders] = job_lines(service, "orders")
    assert re.search(r"INFO bridge\.daemon job=orders result=ok duration_s=\d+\.\d\d windows=1 .* pulled=\d+ .*"
                     r" delivered=5 .* errors=0$", orders), orders
    assert re.search(r"job=shipments-sftp result=ok duration_s=\S+ files=0 ", job_lines(service, "shipments-sftp")[0])
    service.signal(signal.SIGTERM)
    assert service.process.wait(timeout=DEADLINE) == 0


def test_jobs_run_again_on_their_schedule(tmp_path, sshd, sftp_root, sandbox, start_service, systemd):
    config = make_config(tmp_path, sshd, sftp_root, sandbox, interval="0.1")  # orders every 6 s
    service = start_service(config, NOTIFY_SOCKET=str(systemd.path))

    wait_for(lambda: len(job_lines(service, "orders")) >= 3, "three orders runs")
    wait_for(lambda: len(job_lines(service, "shipments-sftp")) >= 3, "three shipments polls")

    assert delivered(sftp_root) == MERCHANT_ORDERS  # the later runs find nothing new to send
    assert "windows=0" in job_lines(service, "orders")[-1] or "pulled=0" in job_lines(service, "orders")[-1]
    wait_for(lambda: any(m.startswith("STATUS=idle; next: ") for m in systemd.received()), "an idle status")
    service.signal(signal.SIGTERM)
    assert service.process.wait(timeout=DEADLINE) == 0


def test_a_catch_up_yields_its_turn_to_the_other_jobs_and_goes_on_right_after_them(
        tmp_path, sshd, sftp_root, sandbox, start_service):
    # Orders every 30 minutes, 5 hours behind in 30-minute windows, one window a turn: without
    # the turn given up and taken again at once, the catch-up would take 5 hours here.
    config = make_config(tmp_path, sshd, sftp_root, sandbox)
    text = config.read_text().replace("window_minutes = 600", "window_minutes = 30\npull_slice_seconds = 0")
    config.write_text(text)
    service = start_service(config)

    wait_for(lambda: any("caught_up=yes" in line for line in job_lines(service, "orders")), "the catch-up to end")
    turns = job_lines(service, "orders")
    assert len(turns) >= 10 and all("caught_up=no" in line for line in turns[:-1])
    assert service.count("orders pull yields windows=1") == len(turns) - 1
    first, last = service.text().index(turns[0]), service.text().index(turns[-1])
    assert "job=shipments-sftp" in service.text()[first:last]  # the others had their turns meanwhile
    assert delivered(sftp_root) == MERCHANT_ORDERS
    service.signal(signal.SIGTERM)
    assert service.process.wait(timeout=DEADLINE) == 0


def test_the_watchdog_is_fed_at_half_the_interval_systemd_asks_for(config, start_service, systemd):
    service = start_service(config, NOTIFY_SOCKET=str(systemd.path), WATCHDOG_USEC="2000000")

    wait_for(lambda: systemd.received().count("WATCHDOG=1") >= 3, "three WATCHDOG=1")

    service.signal(signal.SIGTERM)
    assert service.process.wait(timeout=DEADLINE) == 0


def test_a_file_finished_in_a_watched_staff_folder_is_taken_by_the_watch_job(tmp_path, sshd, sftp_root, sandbox,
                                                                             start_service):
    staff = tmp_path / "staff"
    config = make_config(tmp_path, sshd, sftp_root, sandbox)
    config.write_text(config.read_text().replace("[[warehouses]]", f'[[warehouses]]\nlocal_shipments_folder = "{staff}"')
                      .replace("poll_seconds = 5", "poll_seconds = 5\nstable_seconds = 1"))
    service = start_service(config)
    started_up(service)

    (staff / "VERSAND_1.csv").write_bytes(b"Auftragsnummer;Artikelnummer;Menge;Versandart;Sendungsnummer;Versanddatum\n")

    wait_for(lambda: any(" files=1 " in line for line in job_lines(service, "shipments-watch")), "the watch job's run")
    wait_for(lambda: list((staff / "archive").glob("VERSAND_1*")) or list((staff / "error").glob("VERSAND_1*")),
             "the file answered")
    service.signal(signal.SIGTERM)
    assert service.process.wait(timeout=DEADLINE) == 0


# --- signals ------------------------------------------------------------------------------------


def test_sighup_with_a_broken_config_is_refused_in_one_line_and_no_extra_run_starts(config, sftp_root, start_service):
    service = start_service(config)
    started_up(service)
    good = config.read_text()
    config.write_text(good.replace("interval_minutes = 30", "interval_minutes = 30\nlag_minutes = 1"))
    mark = len(service.text())

    service.signal(signal.SIGHUP)

    wait_for(lambda: service.logged("config reload refused", mark), "the refusal in the log")
    refusal = [line for line in service.text()[mark:].splitlines() if "config reload refused" in line]
    assert len(refusal) == 1 and "orders.lag_minutes: must be at least 2" in refusal[0]
    wait_for(lambda: service.logged("job=shipments-sftp", mark + service.text()[mark:].index("refused")),
             "a job on the schedule it kept")
    assert not service.logged("job=orders", mark)  # finding 18: a reload is not a run
    assert not service.logged("started", mark)
    assert service.process.poll() is None
    assert delivered(sftp_root) == MERCHANT_ORDERS  # nothing sent twice

    service.signal(signal.SIGTERM)
    assert service.process.wait(timeout=DEADLINE) == 0


def test_sighup_with_a_staff_folder_that_cannot_be_watched_is_refused_and_the_service_goes_on(
        config, tmp_path, sftp_root, start_service):
    service = start_service(config)
    started_up(service)
    (tmp_path / "a-file").write_text("not a folder")
    text = config.read_text()
    config.write_text(text.replace('shipments_folder = ', f'local_shipments_folder = "{tmp_path / "a-file" / "drop"}"'
                                   '\nshipments_folder = ', 1))
    mark = len(service.text())

    service.signal(signal.SIGHUP)

    wait_for(lambda: service.logged("config reload refused", mark), "the refusal in the log")
    refusal = [line for line in service.text()[mark:].splitlines() if "config reload refused" in line]
    assert len(refusal) == 1 and f"cannot watch the local folder {tmp_path / 'a-file' / 'drop'}" in refusal[0]
    wait_for(lambda: service.logged("job=shipments-sftp", mark + service.text()[mark:].index("refused")),
             "a job on the schedule it kept")
    assert "Traceback" not in service.text()[mark:]
    assert service.process.poll() is None
    service.signal(signal.SIGTERM)
    assert service.process.wait(timeout=DEADLINE) == 0


def test_sighup_with_a_broken_mapping_is_refused_and_the_old_mapping_kept(tmp_path, sshd, sftp_root, sandbox, start_service):
    mapping = write_mapping(tmp_path / "acme-csv.toml", (MAPPINGS / "acme-csv.toml").read_text())
    config = make_config(tmp_path, sshd, sftp_root, sandbox, mapping=mapping)
    service = start_service(config)
    started_up(service)
    mapping.write_text(mapping.read_text() + "\nthis is not toml [\n")
    mark = len(service.text())

    service.signal(signal.SIGHUP)

    wait_for(lambda: service.logged("config reload refused", mark), "the refusal in the log")
    assert "acme-csv.toml" in service.text()[mark:]
    wait_for(lambda: service.logged("job=shipments-sftp", mark), "the service going on")
    assert service.process.poll() is None
    service.signal(signal.SIGTERM)
    assert service.process.wait(timeout=DEADLINE) == 0


def test_sighup_with_another_state_folder_is_refused_the_lock_stays_on_the_first(config, tmp_path, start_service):
    service = start_service(config)
    started_up(service)
    config.write_text(config.read_text().replace(f'state_dir = "{tmp_path / "state"}"',
                                                 f'state_dir = "{tmp_path / "elsewhere"}"'))
    mark = len(service.text())

    service.signal(signal.SIGHUP)

    wait_for(lambda: service.logged("config reload refused", mark), "the refusal in the log")
    assert "bridge.state_dir: cannot change while the service runs" in service.text()[mark:]
    assert not (tmp_path / "elsewhere").exists()
    service.signal(signal.SIGTERM)
    assert service.process.wait(timeout=DEADLINE) == 0


def test_sighup_with_a_valid_config_reloads_it_and_keeps_the_schedule(config, start_service):
    service = start_service(config)
    started_up(service)
    config.write_text(config.read_text().replace("poll_seconds = 5", "poll_seconds = 6"))
    mark = len(service.text())

    service.signal(signal.SIGHUP)

    wait_for(lambda: service.logged("config reloaded", mark), "the reload in the log")
    after = mark + service.text()[mark:].index("config reloaded")
    assert service.text()[after:].startswith(f"config reloaded config={config} changed=shipments log_level=INFO")
    wait_for(lambda: service.logged("job=shipments-sftp", after), "a job after the reload")
    assert not service.logged("job=orders", mark)  # finding 18: a reload is not a run
    config.write_text(config.read_text().replace("[bridge]", '[bridge]\nlog_level = "WARNING"'))
    service.signal(signal.SIGHUP)
    wait_for(lambda: service.logged("changed=log_level log_level=WARNING", after), "the second reload")
    service.signal(signal.SIGTERM)
    assert service.process.wait(timeout=DEADLINE) == 0
    assert "job=shipments-sftp result=ok" not in service.text().split("log_level=WARNING", 1)[1]  # INFO now off


def test_sigint_also_stops_the_service_cleanly(config, start_service):
    service = start_service(config)
    wait_for(lambda: service.logged("delivered=5"), "the first run")
    service.signal(signal.SIGINT)
    assert service.process.wait(timeout=DEADLINE) == 0


def test_sigterm_during_a_rate_limit_wait_ends_the_run_there_and_a_restart_delivers_every_order_once(
        config, sftp_root, sandbox, start_service):
    sandbox.fail_next("searchOrders", 429, count=5, headers={"x-amzn-RateLimit-Limit": "0.5"})  # 2 s waits
    service = start_service(config)
    wait_for(lambda: service.logged("throttled op=searchOrders"), "the run to be waiting out a throttle")

    service.signal(signal.SIGTERM)

    assert service.process.wait(timeout=DEADLINE) == 0
    text = service.text()
    assert "job=orders result=stopped" in text and "stopped" in text
    assert text.count("429") == 1 and text.count("throttled op=searchOrders") == 1  # finding 14: no five 429s
    restarted = start_service(config)
    wait_for(lambda: restarted.logged("delivered=5"), "the restarted service's run")
    assert delivered(sftp_root) == MERCHANT_ORDERS
    restarted.signal(signal.SIGTERM)
    assert restarted.process.wait(timeout=DEADLINE) == 0


def test_sigterm_during_delivery_loses_nothing_leaves_no_temp_file_and_a_restart_converges(config, sftp_root, start_service):
    service = start_service(config)
    wait_for(lambda: delivered(sftp_root) >= 1, "the first file in the drop")

    service.signal(signal.SIGTERM)

    assert service.process.wait(timeout=DEADLINE) == 0
    assert [p.name for p in sftp_root.iterdir() if p.name.endswith(".part") or p.name.startswith(".")] == []
    restarted = start_service(config)
    wait_for(lambda: job_lines(restarted, "orders"), "the restarted service's run")
    assert delivered(sftp_root) == MERCHANT_ORDERS
    assert "errors=0" in job_lines(restarted, "orders")[0]
    restarted.signal(signal.SIGTERM)
    assert restarted.process.wait(timeout=DEADLINE) == 0
    again = start_service(config)  # a third start: nothing left to send, nothing sent twice
    wait_for(lambda: job_lines(again, "orders"), "the third run")
    assert " delivered=0 " in job_lines(again, "orders")[0] and delivered(sftp_root) == MERCHANT_ORDERS
    again.signal(signal.SIGTERM)
    assert again.process.wait(timeout=DEADLINE) == 0


# --- outages ------------------------------------------------------------------------------------


def test_work_continues_when_the_sftp_server_comes_back(tmp_path, sshd, sftp_root, sandbox, start_service):
    config = make_config(tmp_path, sshd, sftp_root, sandbox, interval="0.1")
    sshd.server.stop()
    try:
        service = start_service(config)
        wait_for(lambda: any("result=errors" in line for line in job_lines(service, "orders")),
                 "an orders run that could not deliver")
        assert delivered(sftp_root) == 0
        # a person asks `status`, not the journal: the failing job is there, first
        failing = wait_for(lambda: next((t for t in [status_text(config)] if "job has failed" in t), None),
                           "status to name the failing job")
        assert re.search(r"^needs a person first:\n  1\. the service's (orders|shipments-sftp) job has failed \d+ times"
                         r" in a row since \S+: ", failing, re.M)
        assert re.search(r"^service: \d+ jobs, as of \S+: failing: ", failing, re.M)
        prometheus = status_text(config, "--prometheus")
        assert re.search(r'^fbm_bridge_job_failures\{instance="bridge",job="shipments-sftp"\} [1-9]', prometheus, re.M)
    finally:
        sshd.server.start()

    wait_for(lambda: delivered(sftp_root) == MERCHANT_ORDERS, "the orders delivered once it is back", 60)
    wait_for(lambda: any("result=ok" in line for line in job_lines(service, "shipments-sftp")), "a shipments poll")
    wait_for(lambda: "all went well on their last turn" in status_text(config), "status to say the jobs recovered")
    assert service.process.poll() is None
    service.signal(signal.SIGTERM)
    assert service.process.wait(timeout=DEADLINE) == 0


def test_work_continues_when_amazon_comes_back(tmp_path, sshd, sftp_root, sandbox, start_service):
    config = make_config(tmp_path, sshd, sftp_root, sandbox, interval="0.1")
    sandbox.stop()
    try:
        service = start_service(config)
        wait_for(lambda: any("result=errors" in line for line in job_lines(service, "orders")),
                 "an orders run that could not reach Amazon (after the edge's own retries)", 90)
        assert delivered(sftp_root) == 0
    finally:
        sandbox.start()

    wait_for(lambda: delivered(sftp_root) == MERCHANT_ORDERS, "the orders delivered once Amazon is back", 90)
    assert service.process.poll() is None
    service.signal(signal.SIGTERM)
    assert service.process.wait(timeout=DEADLINE) == 0


# --- one service per state folder ---------------------------------------------------------------


def test_a_second_service_on_the_same_state_refuses_to_start_in_one_line(config, sftp_root, start_service):
    first = start_service(config)
    wait_for(lambda: first.logged("delivered=5"), "the first service's run")

    second = start_service(config)

    assert second.process.wait(timeout=DEADLINE) == 2
    [line] = second.text().splitlines()
    assert line.startswith("fbm-bridge: another bridge process is using ")
    assert first.process.poll() is None
    first.signal(signal.SIGTERM)
    assert first.process.wait(timeout=DEADLINE) == 0
    assert delivered(sftp_root) == MERCHANT_ORDERS


def test_the_service_refuses_to_start_while_another_bridge_holds_the_state(config, sftp_root, start_service):
    with state_lock(load(config).state_dir):
        service = start_service(config)
        assert service.process.wait(timeout=DEADLINE) == 2
    assert "another bridge process" in service.text()
    assert delivered(sftp_root) == 0


# --- the jobs' rules, in process ----------------------------------------------------------------


def test_a_failing_job_backs_off_doubling_up_to_the_cap_and_a_success_resets_it():
    job = Job("shipments-sftp", timedelta(minutes=1), lambda: None)
    turns = []
    for failures in range(1, 8):
        job.failures = failures
        turns.append(job.backoff())
    assert turns == [0, 1, 3, 7, 14, 14, 14]  # tried 1, 2, 4, 8, then every 15 turns (15 minutes)
    assert Job("orders", timedelta(minutes=30), lambda: None, failures=5).backoff() == 0


def test_the_watchdog_is_fed_only_by_a_loop_or_a_job_that_moves(tmp_path):
    manager = Systemd(tmp_path / "notify.sock")
    try:
        notifier = Notifier(str(manager.path), watchdog_seconds=0.01)
        flags = Flags()
        flags.beat = notifier.beat
        daemon = Daemon(None, Path("bridge.toml"), flags, lambda: datetime.now(timezone.utc), 1.0, notifier)
        stuck = threading.Event()

        daemon._run(Job("orders", timedelta(minutes=30), lambda: stuck.wait(0.3)))  # a call that hangs
        wait_for(lambda: manager.said("STATUS=idle"), "the status after the job")
        assert not manager.said("WATCHDOG=1")

        daemon._run(Job("orders", timedelta(minutes=30), lambda: [flags.should_stop() for _ in range(3)]))
        wait_for(lambda: manager.said("WATCHDOG=1"), "a beat from the job's safe points")
    finally:
        manager.close()


class Broken:
    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if self.calls <= 2:
            return {}["a buyer's name"]  # a bug: KeyError
        return None


def daemon_for_jobs() -> Daemon:
    return Daemon(None, Path("bridge.toml"), Flags(), lambda: datetime.now(timezone.utc), 1.0, Notifier(None, None))


def test_an_unexpected_exception_in_a_job_is_one_line_without_its_words_and_the_job_is_tried_again(caplog):
    daemon, work = daemon_for_jobs(), Broken()
    job = Job("orders", timedelta(seconds=10), work)
    caplog.set_level(logging.DEBUG, logger="bridge.daemon")

    for _ in range(4):
        daemon._run(job)

    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("job=orders result=")]
    assert lines[0].startswith("job=orders result=failed duration_s=")
    assert "error='unexpected KeyError at test_daemon.py:" in lines[0] and "buyer" not in lines[0]
    assert "result=skipped" in lines[2]  # the second failure skips one turn
    assert lines[3].startswith("job=orders result=ok") and job.failures == 0
    assert work.calls == 3


def test_a_job_longer_than_its_interval_is_reported(caplog):
    daemon = daemon_for_jobs()
    job = Job("stock-publish", timedelta(microseconds=1), lambda: time.sleep(0.01))
    caplog.set_level(logging.INFO, logger="bridge.daemon")

    daemon._run(job)

    [overrun] = [r for r in caplog.records if "overran" in r.getMessage()]
    assert overrun.levelno == logging.WARNING and overrun.getMessage().startswith("job=stock-publish overran duration_s=")
