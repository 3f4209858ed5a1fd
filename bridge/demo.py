"""The embedded default: the whole orders flow with no accounts and no system services.

`fbm-bridge demo` starts the SP-API sandbox and an SFTP server on 127.0.0.1, writes a config for
three demo warehouses (CSV, XML, XLSX; routed by ship-to country), runs the bridge twice (the
second run shows that nothing is sent twice) and shows what arrived in the drops.
"""

from __future__ import annotations

import os
import secrets
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import paramiko

from bridge.cli import format_status
from bridge.config import SECRET_NAMES, STATE_KEY, load_settings
from bridge.mapping import shipped_mappings
from bridge.records import iso_z
from bridge.sandbox.sftpd import LocalSftpServer
from bridge.sandbox.spapi import SpApiSandbox, load_seed, rebase_last_updated, serve_forever
from bridge.sealing import new_key
from bridge.service import configure_logging, open_service, status_report

DEMO_DATA = Path(__file__).resolve().parent / "demo_data"
SEED = DEMO_DATA / "sandbox-orders.json"
MARKETPLACES = ["ATVPDKIKX0DER", "A1PA6795UKMFR9", "A1F83G8C2ARO7P"]
WAREHOUSES = [
    # name, mapping, ship-to countries it takes
    ("acme", "acme-csv", ["DE"]),
    ("initech", "initech-xlsx", ["GB"]),
    ("globex", "globex-xml", []),  # everything else
]


def demo_orders(now: datetime) -> list[dict]:
    """The seed, its update times moved to the last few hours so the bridge finds them."""
    return rebase_last_updated(load_seed(SEED), now - timedelta(minutes=35))


def serve_sandbox(port: int, seed: Path | None, *, fresh: bool = False) -> None:
    orders = load_seed(seed or SEED)
    if fresh:
        orders = rebase_last_updated(orders, datetime.now(timezone.utc) - timedelta(minutes=35))
    sandbox = SpApiSandbox(orders, port=port).start()
    print(f"SP-API sandbox on {sandbox.url} (LWA token URL {sandbox.token_url}); Ctrl-C stops it")
    print(f"  {len(orders)} orders; controls: POST {sandbox.url}/_sandbox/pii, /_sandbox/faults, /_sandbox/orders")
    serve_forever(sandbox)


def run_demo(workdir: Path) -> int:
    configure_logging("INFO")
    workdir = workdir.resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    (workdir / "sftp").mkdir(parents=True)
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    now = datetime.now(timezone.utc)
    client_key = _client_key(workdir / "demo_ed25519")
    with SpApiSandbox(demo_orders(now)) as sandbox, LocalSftpServer(
        workdir / "sftp", authorized_key=client_key, host_key=workdir / "sftp_host_ed25519"
    ) as sftpd:
        sftpd.write_known_hosts(workdir / "known_hosts")
        for name, _, _ in WAREHOUSES:
            (workdir / "sftp" / name / "in").mkdir(parents=True)
        config = _write_config(workdir, sandbox, sftpd.port, client_key, now)
        environ = {**os.environ, **{name: f"demo-{secrets.token_hex(8)}" for name in SECRET_NAMES}}
        environ[STATE_KEY] = new_key()
        settings = load_settings(config, environ=environ)
        print(f"\n== fbm-bridge demo: SP-API sandbox {sandbox.url}, SFTP 127.0.0.1:{sftpd.port}, config {config}\n")
        with open_service(settings) as service:
            first = service.orders.run(now)
            second = service.orders.run(now)
        print(f"\nfirst run:  {first.summary()}")
        print(f"second run: {second.summary()}  (run again: nothing is sent twice)")
        _show_drops(workdir / "sftp")
        print("\n== fbm-bridge status\n" + format_status(status_report(settings, now)))
    print(f"\nEverything is in {workdir}: config bridge.toml, ledger state/ledger.sqlite, drops sftp/*/in.")
    print("Buyer data in the ledger and the spool is sealed with a key that lived only for this demo.")
    return 0 if not (first.errors or second.errors) else 1


def _client_key(path: Path) -> Path:
    key = paramiko.Ed25519Key.generate() if hasattr(paramiko.Ed25519Key, "generate") else None
    if key is None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        path.write_bytes(pem)
    else:
        key.write_private_key_file(str(path))
    path.chmod(0o600)
    return path


def _write_config(workdir: Path, sandbox: SpApiSandbox, port: int, key: Path, now: datetime) -> Path:
    blocks = []
    for name, mapping, countries in WAREHOUSES:
        blocks.append(
            f"""[[warehouses]]
name = "{name}"
mapping = "{shipped_mappings() / (mapping + '.toml')}"
host = "127.0.0.1"
port = {port}
username = "demo"
known_hosts = "{workdir / 'known_hosts'}"
private_key = "{key}"
orders_folder = "/{name}/in"
ship_to_countries = {countries!r}
""".replace("'", '"')
        )
    text = f"""# Written by `fbm-bridge demo`: the sandbox and SFTP server it started are gone once it ends.
[bridge]
state_dir = "{workdir / 'state'}"

[amazon]
seller_id = "A3DEMOSELLER"
endpoint = "{sandbox.url}"
token_url = "{sandbox.token_url}"
marketplaces = {MARKETPLACES!r}

[orders]
start = "{iso_z(now - timedelta(hours=4))}"   # catch up over the demo orders' last hours

{chr(10).join(blocks)}"""
    path = workdir / "bridge.toml"
    path.write_text(text.replace("'", '"'), encoding="utf-8")
    return path


def _show_drops(root: Path) -> None:
    print("\n== files in the warehouses' SFTP drops")
    for path in sorted(root.glob("*/in/*")):
        print(f"  {path.relative_to(root)}  ({path.stat().st_size} bytes)")
    sample = next(iter(sorted(root.glob("acme/in/*.csv"))), None)
    if sample:
        print(f"\n== {sample.relative_to(root)} (cp1252, as ACME's WMS reads it)")
        print(sample.read_bytes().decode("cp1252").rstrip())
