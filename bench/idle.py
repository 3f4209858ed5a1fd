"""What does one idle instance cost? (100 instances should fit on one small box.)

    .venv/bin/python bench/idle.py [seconds]

Starts `fbm-bridge run` against a private OpenSSH sshd and the SP-API sandbox, with every job
there is (orders, shipments and stock SFTP polls, watched local folders, the stock publish
check) at the default intervals, waits until the runs at start are over, then measures the
daemon for `seconds` (default 65, so that the every-minute jobs run in the window): CPU as %
of one core (utime + stime from /proc/PID/stat over the wall time), RSS (VmRSS), and the
private memory (USS, from /proc/PID/smaps_rollup: what one more instance adds, the shared
libraries' pages being counted once on the box) and PSS. The baseline, measured over the same window in the same run: a bare interpreter
doing nothing (`python -c "import time; time.sleep(...)"`). Targets: under 1% of a core, under
60 MB RSS.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from harness import SECRETS, SEED, sftp_warehouse, write_config  # noqa: E402
from sshd import OpenSshd  # noqa: E402

from bridge.sandbox.spapi import SpApiSandbox, load_seed, rebase_last_updated  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
CPU_TARGET = 1.0  # % of one core
RSS_TARGET = 60.0  # MB
STARTUP_JOBS = ("orders", "shipments-sftp", "shipments-local", "stock-sftp", "stock-local", "stock-publish")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def memory_mb(pid: int) -> tuple[float, float, float]:
    """RSS, and what another instance adds: its private pages (USS: the shared libraries'
    pages are counted once on the box, however many instances map them) and its PSS."""
    values = {}
    for name in ("status", "smaps_rollup"):
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "Private_Clean", "Private_Dirty", "Pss"):
                values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["Private_Clean"] + values["Private_Dirty"], values["Pss"]


def config(folder: Path, server: OpenSshd, sandbox: SpApiSandbox) -> Path:
    drop = folder / "sftp"
    for sub in ("in", "out", "stock"):
        (drop / sub).mkdir(parents=True)
    start = (datetime.now(timezone.utc) - timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    warehouse = sftp_warehouse("wh", "acme-csv", server_endpoint(server), drop / "in",
                               shipments_folder=str(drop / "out"), stock_folder=str(drop / "stock"),
                               local_shipments_folder=str(folder / "staff" / "shipments"),
                               local_stock_folder=str(folder / "staff" / "stock"))
    path = write_config(folder, sandbox_url=sandbox.url, token_url=sandbox.token_url, warehouses=[warehouse],
                        orders=f'start = "{start}"\nwindow_minutes = 600')
    path.write_text(path.read_text() + '\n[stock]\nwarehouse = "wh"\n')
    return path


class server_endpoint:  # what harness.sftp_warehouse reads of the tests' `sshd` fixture
    def __init__(self, server: OpenSshd):
        self.port, self.known_hosts, self.client_key = server.port, server.known_hosts, server.client_key
        self.endpoint = type("Endpoint", (), {"username": server.user})


def wait_for_startup(log: Path, process: subprocess.Popen, limit: float = 120.0) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        text = log.read_text()
        if all(f"job={job} " in text for job in STARTUP_JOBS):
            return
        if process.poll() is not None:
            raise SystemExit(f"the daemon exited {process.returncode}:\n{text}")
        time.sleep(0.2)
    raise SystemExit(f"the daemon's runs at start did not end within {limit:.0f}s:\n{log.read_text()}")


def measure(pids: list[int], seconds: float) -> list[tuple[float, float, float, float]]:
    """Per pid: (% of one core over the window, RSS, USS, PSS in MB)."""
    before = [cpu_seconds(pid) for pid in pids]
    started = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - started
    return [((cpu_seconds(pid) - spent) / wall * 100, *memory_mb(pid)) for pid, spent in zip(pids, before)]


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 65.0
    recent = rebase_last_updated(load_seed(SEED), datetime.now(timezone.utc) - timedelta(minutes=45))
    with tempfile.TemporaryDirectory() as tmp, OpenSshd() as server, SpApiSandbox(recent) as sandbox:
        folder = Path(tmp)
        path = config(folder, server, sandbox)
        env = {**os.environ, **SECRETS, "NO_PROXY": "127.0.0.1,localhost", "PYTHONDONTWRITEBYTECODE": "1"}
        log = folder / "daemon.log"
        with open(log, "w") as out:
            daemon = subprocess.Popen([sys.executable, "-m", "bridge", "--config", str(path), "run"],
                                      cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
            baseline = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds + 600})"])
            try:
                wait_for_startup(log, daemon)
                (bridge, rss, uss, pss), (bare, bare_rss, bare_uss, bare_pss) = measure(
                    [daemon.pid, baseline.pid], seconds)
                runs = sum(1 for line in log.read_text().splitlines() if " job=" in line)
            finally:
                for process in (daemon, baseline):
                    process.terminate()
                    process.wait(30)
    print(f"idle over {seconds:.0f}s (after the runs at start; {runs} job runs logged in all):")
    print(f"  fbm-bridge run   CPU {bridge:5.2f}% of a core   RSS {rss:5.1f} MB   private {uss:5.1f} MB   PSS {pss:5.1f} MB")
    print(f"  bare python      CPU {bare:5.2f}% of a core   RSS {bare_rss:5.1f} MB   private {bare_uss:5.1f} MB   PSS {bare_pss:5.1f} MB")
    print(f"  CPU: {bridge - bare:+.2f} points over the baseline; target under {CPU_TARGET:g}%:"
          f" {'met' if bridge < CPU_TARGET else 'NOT met'}")
    print(f"  RSS: {rss / bare_rss:.1f}x the baseline; target under {RSS_TARGET:g} MB:"
          f" {'met' if rss < RSS_TARGET else 'NOT met'}; private memory (what each more instance"
          f" adds): {uss:.1f} MB, {uss / bare_uss:.1f}x the baseline's")


if __name__ == "__main__":
    main()
