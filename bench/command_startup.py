"""How long do the commands a person types often take to start and answer?

    .venv/bin/python bench/command_startup.py [rounds]

Runs `fbm-bridge status`, `status --json`, `status --prometheus`, `status --order ID` (against a config with two
warehouses, one sending shipments by feed and publishing stock, and a ledger holding 2,000
delivered orders), `check --help` and every other `--help`, each in a fresh interpreter, best of `rounds` (default 7), and the baseline: a bare
interpreter importing the standard library's `sqlite3` and `tomllib` (`python -c "import
sqlite3, tomllib"`), the least a command that reads the config and the ledger must load.
Bytecode is cached (in a temporary PYTHONPYCACHEPREFIX, warmed first), as it is for an
installed package. Target: every command within 3x the baseline.
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

from harness import SECRETS, write_config  # noqa: E402


def state(folder: Path) -> Path:
    """A config (ACME's CSV and Globex's XML mappings; ACME sends shipments by feed and publishes
    stock, so `status` shows those sections too) and a ledger of 2,000 delivered orders."""
    from bridge.config import load_settings
    from bridge.ledger import ORDERS_BOOKMARK, Observation, OrderStatus
    from bridge.records import Address, Line, Order
    from decimal import Decimal

    (folder / "known_hosts").write_text("")
    (folder / "key").write_text("")
    warehouses = [{"name": name, "mapping": str(ROOT / "mappings" / f"{mapping}.toml"), "host": "127.0.0.1",
                   "port": 22, "username": "u", "known_hosts": str(folder / "known_hosts"),
                   "private_key": str(folder / "key"), "orders_folder": "/in"}
                  for name, mapping in (("acme", "acme-csv"), ("globex", "globex-xml"))]
    warehouses[0].update(shipments_folder="/out", stock_folder="/stock")
    config = write_config(folder, sandbox_url="http://127.0.0.1:9", token_url="http://127.0.0.1:9/t",
                          warehouses=warehouses)
    config.write_text(config.read_text().replace("[orders]", '[shipments]\nsend = "feed"\n\n[orders]')
                      + '\n[stock]\nwarehouse = "acme"\n')
    settings = load_settings(config, environ=SECRETS)
    from bridge import state
    from bridge.sealing import Sealer

    start = datetime(2026, 11, 20, tzinfo=timezone.utc)
    with state.state_lock(settings.state_dir):  # as the service makes it: the ledger and its marker
        ledger = state.open_ledger(settings, Sealer(settings.state_key), start)
    orders = [Order(order_id=f"111-{n:07d}-0000001", marketplace_id="ATVPDKIKX0DER", purchase_date=start,
                    last_updated=start, status="UNSHIPPED", currency="USD",
                    ship_to=Address(name="A", line1="B", city="C", postal_code="1", country_code="US"),
                    lines=(Line(order_item_id=f"{n}", sku="S", asin="A", title="T", quantity=1,
                                unit_price=Decimal("1"), currency="USD"),))
              for n in range(2000)]
    ledger.record([Observation(o, OrderStatus.PENDING, "", "acme") for o in orders], start,
                  bookmark=(ORDERS_BOOKMARK, start + timedelta(hours=1)), window_start=start)
    files = [(f"{o.order_id}.csv", f"acme/{o.order_id}.csv", 1, "0" * 64, [o.order_id]) for o in orders]
    ids = ledger.stage_files("acme", files, start)
    ledger.mark_uploaded_many(ids)
    ledger.mark_delivered_many([(i, "") for i in ids], start)
    state.after_run(settings, ledger, start)
    ledger.close()
    return config


def best(command: list[str], env: dict[str, str], rounds: int) -> float:
    spent = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        spent.append(time.perf_counter() - start)
    return min(spent)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    from bridge.cli import _parser

    with tempfile.TemporaryDirectory() as folder:
        config = state(Path(folder))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPYCACHEPREFIX": str(Path(folder) / "pycache")}
        bridge = [sys.executable, "-m", "bridge"]
        commands = {
            "status": [*bridge, "--config", str(config), "status"],
            "status --json": [*bridge, "--config", str(config), "status", "--json"],
            "status --prometheus": [*bridge, "--config", str(config), "status", "--prometheus"],
            "status --order": [*bridge, "--config", str(config), "status", "--order", "111-0000007-0000001"],
            "--help": [*bridge, "--help"],
        }
        stack = [([], _parser())]
        while stack:
            path, parser = stack.pop()
            for action in parser._actions:
                if isinstance(getattr(action, "choices", None), dict):
                    for name, sub in action.choices.items():
                        commands[" ".join([*path, name, "--help"])] = [*bridge, *path, name, "--help"]
                        stack.append(([*path, name], sub))
        baseline_command = [sys.executable, "-c", "import sqlite3, tomllib"]
        for command in [baseline_command, *commands.values()]:  # warm: bytecode written, files cached
            subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        baseline = best(baseline_command, env, rounds)
        times = {name: best(command, env, rounds) for name, command in commands.items()}
    print(f"baseline (python -c 'import sqlite3, tomllib'): {1000 * baseline:.0f} ms")
    for name, spent in sorted(times.items(), key=lambda item: -item[1]):
        print(f"  fbm-bridge {name:32} {1000 * spent:6.0f} ms  {spent / baseline:5.2f}x")
    worst = max(times, key=times.get)
    print(f"slowest: {worst}, {times[worst] / baseline:.2f}x the baseline (target at most 3x);"
          f" status {times['status'] / baseline:.2f}x")


if __name__ == "__main__":
    main()
