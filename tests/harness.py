"""Builds a real bridge for tests: a config file on disk, the sandbox, the private sshd.

Nothing here replaces an edge: the flow talks HTTP to the SP-API sandbox through
python-amazon-sp-api and SFTP to OpenSSH through paramiko.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from bridge.config import Settings, load_settings
from bridge.edges.amazon import AmazonOrders
from bridge.flows.orders import OrdersFlow
from bridge.ledger import Ledger
from bridge.sealing import Sealer

REPO = Path(__file__).resolve().parents[1]
MAPPINGS = REPO / "mappings"
SAMPLES = REPO / "samples"
SEED = REPO / "bridge" / "demo_data" / "sandbox-orders.json"
MARKETPLACES = ["ATVPDKIKX0DER", "A1PA6795UKMFR9", "A1F83G8C2ARO7P"]
SECRETS = {
    "BRIDGE_LWA_CLIENT_ID": "amzn1.application-oa2-client.test",
    "BRIDGE_LWA_CLIENT_SECRET": "test-secret-never-logged",
    "BRIDGE_LWA_REFRESH_TOKEN": "Atzr|test-refresh-token",
    "BRIDGE_STATE_KEY": "dGVzdC1zdGF0ZS1rZXktMzItYnl0ZXMtbG9uZy0hISE=",
}
RUN_TIME = datetime(2026, 11, 20, 12, 30, tzinfo=timezone.utc)  # the goldens' run time


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def write_config(
    folder: Path,
    *,
    sandbox_url: str,
    token_url: str,
    warehouses: list[dict],
    orders: str = 'start = "2026-11-20T08:00:00Z"',
    amazon: str = "",
) -> Path:
    """A bridge.toml in `folder`; each warehouse dict gives the keys of one [[warehouses]]."""
    blocks = []
    for warehouse in warehouses:
        lines = ["[[warehouses]]"]
        for key, value in warehouse.items():
            lines.append(f"{key} = {_toml(value)}")
        blocks.append("\n".join(lines))
    text = f"""
[bridge]
state_dir = "{folder / 'state'}"

[amazon]
seller_id = "A3TESTSELLER"
endpoint = "{sandbox_url}"
token_url = "{token_url}"
marketplaces = {_toml(MARKETPLACES)}
{amazon}

[orders]
{orders}

{chr(10).join(blocks)}
"""
    path = folder / "bridge.toml"
    path.write_text(text, encoding="utf-8")
    return path


def write_mapping(path: Path, text: str) -> Path:
    """A mapping file written for a test, with the shipped mappings' side files (SKU maps)
    beside it, since a mapping names them relative to its own folder."""
    path.write_text(text, encoding="utf-8")
    for side_file in MAPPINGS.glob("*.csv"):
        target = path.parent / side_file.name
        if not target.exists():
            target.write_bytes(side_file.read_bytes())
    return path


def sftp_warehouse(name: str, mapping: str, sshd, folder: Path, **extra) -> dict:
    return {
        "name": name,
        "mapping": str(MAPPINGS / f"{mapping}.toml"),
        "host": "127.0.0.1",
        "port": sshd.port,
        "username": sshd.endpoint.username,
        "known_hosts": str(sshd.known_hosts),
        "private_key": str(sshd.client_key),
        "orders_folder": str(folder),
        **extra,
    }


@dataclass
class Bridge:
    """One bridge process's worth of objects; `restart()` is what a crash and restart gives."""

    settings: Settings
    checkpoint: object = None
    batch_size: int | None = None  # files delivered together (default: the flow's)

    def __post_init__(self) -> None:
        self.ledger = Ledger(self.settings.ledger_path, Sealer(self.settings.state_key))
        self.amazon = AmazonOrders(self.settings.amazon, backoff=0.01)
        batching = {"batch_size": self.batch_size} if self.batch_size else {}
        self.flow = OrdersFlow(self.settings, self.ledger, self.amazon, checkpoint=self.checkpoint, **batching)

    def run(self, now: datetime = RUN_TIME):
        return self.flow.run(now)

    def restart(self, checkpoint=None, batch_size: int | None = None) -> "Bridge":
        self.ledger.close()
        return Bridge(self.settings, checkpoint, batch_size)


def load(config: Path) -> Settings:
    return load_settings(config, environ=SECRETS)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
