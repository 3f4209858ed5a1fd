"""Orders down at scale: one run delivering N per-order files, and its delivery path against OpenSSH.

    .venv/bin/python bench/orders_at_scale.py [--small 1000] [--large 20000] [--rounds 4] [--large-rounds 1]

Everything real: the SP-API sandbox over HTTP through python-amazon-sp-api (its rate limits
raised, so the bench measures the bridge, not Amazon's usage plan), a private OpenSSH sshd
(tests/sshd.py), ACME's shipped CSV mapping (one file per order, ~1 KB each), fsync on.

1. Linear: one whole run (pull, render, spool, stage, upload, rename, record) of `small` and of
   `large` orders. Prints both times, each step's share, and the ratio. Target: `large` (20x
   the orders) in at most 22x the time of `small`.
2. Close to the wire: the delivery path of the `small` run (render and seal into the spool,
   stage, upload under the temporary name, record uploaded, rename, record delivered) against
   OpenSSH's own `sftp -b` doing `put -f` (fsync, like the bridge) and `rename` of the same
   files from local disk, connection included. Target: at least 0.8x OpenSSH's files/s.
Each figure is the best of `rounds` (the `small` run and OpenSSH alternating, so both see the
same load) or of `large-rounds` (the `large` run, a few minutes each).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

import sp_api.auth.access_token_client as token_cache  # noqa: E402

from bridge.config import load_settings  # noqa: E402
from bridge.edges.amazon import AmazonOrders  # noqa: E402
from bridge.flows.orders import OrdersFlow, RunReport  # noqa: E402
from bridge.ledger import Ledger, OrderStatus  # noqa: E402
from bridge.sandbox.spapi import DEFAULT_RATE_LIMITS, SpApiSandbox, load_seed  # noqa: E402
from bridge.sealing import Sealer  # noqa: E402
from harness import SECRETS, SEED, sftp_warehouse, write_config  # noqa: E402
from sshd import OpenSshd  # noqa: E402

FAST = {operation: (100000.0, 100000) for operation in DEFAULT_RATE_LIMITS}
# A day well in the past of the sandbox's clock (it checks "before" against the real time).
DAY = (datetime.now(timezone.utc) - timedelta(days=3)).replace(hour=8, minute=0, second=0, microsecond=0)
HOURS = 4  # the orders' update times are spread over this many hours: 8 windows of 30 minutes
STEPS = ("pull", "recheck_held", "render", "deliver")


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def synthetic(count: int) -> list[dict]:
    """`count` unshipped merchant orders to the US, one line each, like the demo's first."""
    template = load_seed(SEED)[0]
    orders = []
    for number in range(count):
        order = copy.deepcopy(template)
        stamp = DAY + timedelta(seconds=number * HOURS * 3600 / count)
        order["orderId"] = f"111-{number:07d}-{number % 9973:07d}"
        order["createdTime"] = iso(stamp - timedelta(minutes=5))
        order["lastUpdatedTime"] = iso(stamp)
        for index, item in enumerate(order["orderItems"]):
            item["orderItemId"] = f"{number:09d}{index:05d}"
        orders.append(order)
    return orders


def one_run(server: OpenSshd, orders: list[dict]) -> tuple[dict[str, float], Path]:
    """Seconds per step of one run delivering `orders`; the drop folder it delivered into."""
    work = Path(tempfile.mkdtemp(prefix="bench-run-"))
    drop = Path(tempfile.mkdtemp(dir=server.dir))
    token_cache.cache.clear()
    with SpApiSandbox(orders, rate_limits=FAST) as sandbox:
        config = write_config(work, sandbox_url=sandbox.url, token_url=sandbox.token_url,
                              warehouses=[sftp_warehouse("acme", "acme-csv", _Sshd(server), drop)],
                              orders=f'start = "{iso(DAY)}"')
        settings = load_settings(config, environ=SECRETS)
        ledger = Ledger(settings.ledger_path, Sealer(settings.state_key))
        amazon = AmazonOrders(settings.amazon, rate_limits=FAST, backoff=0.01)
        flow = OrdersFlow(settings, ledger, amazon)
        report, times = RunReport(), {}
        now = DAY + timedelta(hours=HOURS, minutes=31)
        amazon.begin_run()
        for step in STEPS:
            start = time.perf_counter()
            getattr(flow, step)(now, report)
            times[step] = time.perf_counter() - start
        delivered = ledger.status_counts()[OrderStatus.DELIVERED]
        ledger.close()
    shutil.rmtree(work)
    assert not report.errors, report.errors
    assert delivered == len(orders) == len(os.listdir(drop)), (delivered, len(orders))
    return times, drop


class _Sshd:
    """What tests/harness.sftp_warehouse reads of the test suite's sshd fixture."""

    def __init__(self, server: OpenSshd):
        self.port, self.known_hosts, self.client_key = server.port, server.known_hosts, server.client_key
        self.endpoint = type("Endpoint", (), {"username": server.user})()


def with_openssh(server: OpenSshd, files: Path) -> float:
    """Seconds for `sftp -b` to put -f + rename every file in `files` into a new folder."""
    folder = Path(tempfile.mkdtemp(dir=server.dir))
    batch = files.parent / f"{files.name}.batch"
    with open(batch, "w") as f:
        for path in sorted(files.iterdir()):
            f.write(f'put -f "{path}" "{folder}/{path.name}.part"\n')
            f.write(f'rename "{folder}/{path.name}.part" "{folder}/{path.name}"\n')
    command = [
        "sftp", "-q", "-b", str(batch), "-P", str(server.port), "-i", str(server.client_key),
        "-o", f"UserKnownHostsFile={server.known_hosts}", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-F", "/dev/null", f"{server.user}@127.0.0.1",
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    spent = time.perf_counter() - start
    assert len(os.listdir(folder)) == len(os.listdir(files))
    shutil.rmtree(folder)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--large-rounds", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    small, large = synthetic(args.small), synthetic(args.large)
    with OpenSshd() as server:
        runs: dict[int, list[dict[str, float]]] = {args.small: [], args.large: []}
        openssh: list[float] = []
        local = Path(tempfile.mkdtemp(prefix="bench-files-"))
        for round_ in range(max(args.rounds, args.large_rounds)):
            if round_ < args.rounds:
                times, drop = one_run(server, small)
                runs[args.small].append(times)
                if round_ == 0:
                    shutil.copytree(drop, local / "files")
                shutil.rmtree(drop)
                openssh.append(with_openssh(server, local / "files"))
            if round_ < args.large_rounds:
                times, drop = one_run(server, large)
                runs[args.large].append(times)
                shutil.rmtree(drop)
        shutil.rmtree(local)
    best = {n: min(spent, key=lambda t: sum(t.values())) for n, spent in runs.items()}
    for n, times in best.items():
        steps = "  ".join(f"{step} {seconds:.2f}s" for step, seconds in times.items())
        print(f"run of {n:6} orders: {sum(times.values()):8.2f} s  ({1000 * sum(times.values()) / n:.2f} ms/order;"
              f" {steps})")
    ratio = sum(best[args.large].values()) / sum(best[args.small].values())
    print(f"linear: {args.large} orders take {ratio:.1f}x the time of {args.small}"
          f" ({args.large / args.small:.0f}x the orders; target at most {1.1 * args.large / args.small:.0f}x)")
    path = best[args.small]["render"] + best[args.small]["deliver"]
    bridge_rate, openssh_rate = args.small / path, args.small / min(openssh)
    print(f"delivery path (render, spool, stage, upload, rename, record): {bridge_rate:.0f} files/s"
          f" ({path:.2f} s for {args.small})")
    print(f"OpenSSH sftp -b put -f + rename:                             {openssh_rate:.0f} files/s"
          f" ({min(openssh):.2f} s)")
    print(f"close to the wire: {bridge_rate / openssh_rate:.2f}x OpenSSH (target at least 0.8x)")


if __name__ == "__main__":
    main()
