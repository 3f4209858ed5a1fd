"""The import graph says what the layout says: settings are records that import no edge, the CLI
uses the demo and never the reverse, and the commands a person types often (`status`, every
`--help`) load no heavy library: those are imported by the edges that use them."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness import SECRETS, sftp_warehouse, write_config

BRIDGE = Path(__file__).resolve().parents[1] / "bridge"
# What only the edges (SFTP, SP-API, watched folders, the schedule) and the file formats need;
# `status` does not even compile the mappings (`check` does).
HEAVY = ("paramiko", "cryptography", "sp_api", "httpx", "lxml", "openpyxl", "watchdog", "schedule",
         "bridge.edges.sftp", "bridge.edges.amazon", "bridge.flows.orders", "bridge.formats.tables",
         "bridge.mapping")


def imports(module: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import in `module`."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, id(node) in top))
    return found


def test_settings_are_records_that_import_no_edge_flow_or_service():
    for name, _ in imports(BRIDGE / "config.py"):
        assert not name.startswith(("bridge.edges", "bridge.flows", "bridge.service", "bridge.state")), name


def test_the_cli_uses_the_demo_and_the_demo_never_the_cli():
    assert not [name for name, _ in imports(BRIDGE / "demo.py") if name.startswith("bridge.cli")]
    assert [name for name, top in imports(BRIDGE / "cli.py") if name.startswith("bridge.demo") and top] == []
    for module in BRIDGE.rglob("*.py"):
        if module.name not in ("cli.py", "__main__.py"):
            assert not [name for name, _ in imports(module) if name == "bridge.cli"], module


def test_the_sftp_endpoint_is_still_importable_from_the_edge():
    from bridge.config import SftpEndpoint
    from bridge.edges import sftp

    assert sftp.SftpEndpoint is SftpEndpoint


def test_status_names_the_flows_as_the_flows_do():
    from bridge.flows import stock_intake
    from bridge.flows.orders import BOOKMARK
    from bridge.flows.shipments import FLOW
    from bridge.ledger import ORDERS_BOOKMARK
    from bridge.report import SHIPMENTS_FLOW, STOCK_FLOW, STOCK_PUBLISH_BOOKMARK

    assert (SHIPMENTS_FLOW, ORDERS_BOOKMARK) == (FLOW, BOOKMARK)
    assert (STOCK_FLOW, STOCK_PUBLISH_BOOKMARK) == (stock_intake.FLOW, stock_intake.PUBLISH_BOOKMARK)


def loaded_by(argv: list[str], cwd: Path) -> list[str]:
    """The heavy modules loaded by `fbm-bridge ARGV` in a fresh interpreter."""
    program = (
        "import sys\nfrom bridge.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print('LOADED', __import__('json').dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=cwd,
                          env={"PATH": "/usr/bin:/bin", "NO_PROXY": "*"})
    line = next(line for line in done.stdout.splitlines() if line.startswith("LOADED"))
    return json.loads(line.removeprefix("LOADED "))


def commands() -> list[list[str]]:
    from bridge.cli import _parser

    found = [["--help"]]
    stack = [([], _parser())]
    while stack:
        path, parser = stack.pop()
        for action in parser._actions:
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                for name, sub in action.choices.items():
                    found.append([*path, name, "--help"])
                    stack.append(([*path, name], sub))
    return found


@pytest.fixture
def used_state(tmp_path, sshd, sftp_root):
    """A config whose state holds a ledger with a recorded window, as after a first run; its
    warehouse sends shipments by feed and publishes stock, so `status` shows those sections too."""
    from datetime import datetime, timezone

    from bridge.config import load_settings
    from bridge.ledger import ORDERS_BOOKMARK, Ledger
    from bridge.sealing import Sealer

    warehouse = sftp_warehouse("wh", "acme-csv", sshd, sftp_root, shipments_folder=str(sftp_root / "out"),
                               stock_folder=str(sftp_root / "stock"))
    config = write_config(tmp_path, sandbox_url="http://127.0.0.1:9", token_url="http://127.0.0.1:9/t",
                          warehouses=[warehouse])
    config.write_text(config.read_text().replace("[orders]", '[shipments]\nsend = "feed"\n\n[orders]')
                      + '\n[stock]\nwarehouse = "wh"\n')
    settings = load_settings(config, environ=SECRETS)
    ledger = Ledger(settings.ledger_path, Sealer(settings.state_key))
    now = datetime(2026, 11, 20, 12, tzinfo=timezone.utc)
    ledger.record([], now, bookmark=(ORDERS_BOOKMARK, now), window_start=now)
    ledger.close()
    return config


def test_status_and_every_help_load_no_heavy_library(used_state, tmp_path, capsys):
    from bridge.cli import main

    assert main(["--config", str(used_state), "status"]) == 0
    shown = capsys.readouterr().out
    assert "shipments: packages" in shown and "stock: wh publishes daily at 22:00 UTC" in shown
    every = [["--config", str(used_state), "status"], ["--config", str(used_state), "status", "--json"],
             ["--config", str(used_state), "status", "--prometheus"],
             ["--config", str(used_state), "status", "--order", "111-0000001-0000001"], *commands()]
    assert ["check", "--help"] in every and ["orders", "pull", "--help"] in every
    loaded = {" ".join(argv): loaded_by(argv, tmp_path) for argv in every}
    assert loaded == {command: [] for command in loaded}
