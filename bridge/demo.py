"""The embedded default: orders down and shipments up with no accounts and no system services.

`fbm-bridge demo` starts the SP-API sandbox and an SFTP server on 127.0.0.1, writes a config for
three demo warehouses (CSV, XML, XLSX; routed by ship-to country), runs the bridge twice (the
second run shows that nothing is sent twice) and tells what happened: which orders each file
carries, why each order went where it went, which orders were not sent and why, and a glimpse
of each file. Then the simulated warehouse systems ship what they got and drop confirmation
files (two in their SFTP shipments folders, one in a staff folder on this machine); the bridge
takes them, confirms the parcels on the sandbox and answers each file, and the demo shows the
fulfillments Amazon received and the result files. Its folder stays usable afterwards: config, ledger, spool and the state key (in
`credentials/`) are kept, so `status`, `status --order` and `spool open` work there.

The demo never deletes what it did not make. It writes a list of what it made
(`.fbm-bridge-demo.json`); a re-run removes only those, and a non-empty folder without that
list is refused.
"""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import shlex
import shutil
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import paramiko

from bridge.config import SECRET_NAMES, STATE_KEY, Settings, WarehouseSettings, load_settings
from bridge.edges.folders import FolderDrop
from bridge.edges.sftp import SftpDrop
from bridge.errors import BadRecord, FixTheSetup
from bridge.flows.orders import decide
from bridge.flows.shipments import ShipmentsReport
from bridge.formats.amazon_orders import order_from_v2026
from bridge.ledger import FileStatus, Ledger, OrderStatus, StoredFile
from bridge.mapping import shipped_mappings
from bridge.records import Order, iso_z
from bridge.report import format_status
from bridge.sandbox.sftpd import LocalSftpServer
from bridge.sandbox.spapi import SpApiSandbox, load_seed, rebase_last_updated, serve_forever, spread_last_updated
from bridge.sandbox.wms import confirm_delivered
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
# Where each warehouse's confirmation files arrive: its SFTP shipments folder, or (initech: staff
# drop the workbook by hand) a local folder on the bridge's machine.
STAFF_FOLDER = {"initech"}
# `sandbox --fresh`: update times spread over now - 55 min .. now - 35 min, inside the default
# first window [now - 60 min, now - 30 min] of a pull made up to 5 minutes after the start.
FRESH_SPREAD = (timedelta(minutes=55), timedelta(minutes=35))
MARKER = ".fbm-bridge-demo.json"  # what the demo made in its folder: all a re-run may remove
GLIMPSE_LINES = 12


def demo_orders(now: datetime) -> list[dict]:
    """The seed, its update times moved to the last few hours so the bridge finds them."""
    return rebase_last_updated(load_seed(SEED), now - timedelta(minutes=35))


def fresh_orders(orders: list[dict], now: datetime) -> list[dict]:
    """`sandbox --fresh`: the orders' update times inside the first window of a bridge without
    orders.start (now - 60 min to now - 30 min by default), for a pull up to 5 minutes later."""
    return spread_last_updated(orders, now - FRESH_SPREAD[0], now - FRESH_SPREAD[1])


def serve_sandbox(port: int, seed: Path | None, *, fresh: bool = False, rate_scale: float = 1.0) -> None:
    orders = load_seed(seed or SEED)
    if fresh:
        orders = fresh_orders(orders, datetime.now(timezone.utc))
    sandbox = SpApiSandbox(orders, port=port, rate_scale=rate_scale).start()
    print(f"SP-API sandbox on {sandbox.url} (LWA token URL {sandbox.token_url}); Ctrl-C stops it")
    if fresh:
        print("  --fresh: the orders were last updated 55 to 35 minutes ago: a bridge without orders.start"
              " (default window and lag) finds them if it pulls within 5 minutes")
    if rate_scale != 1:
        print(f"  rate limits: Amazon's usage plans x {rate_scale:g} (bursts unchanged)")
    print(f"  {len(orders)} orders; controls: POST {sandbox.url}/_sandbox/pii, /_sandbox/faults, /_sandbox/orders")
    serve_forever(sandbox)


def run_demo(workdir: Path) -> int:
    # The story below is the demo's output; the operator's log lines would tell it twice.
    configure_logging("WARNING")
    workdir = workdir.absolute()
    foreign = prepare_workdir(workdir)
    try:
        return _run(workdir)
    finally:
        _write_marker(workdir, foreign)


# --- the folder: only what the demo made is ever removed --------------------------------------

def prepare_workdir(workdir: Path) -> set[str]:
    """Make `workdir` ready for a demo and return what is in it that the demo did not make.

    A missing or empty folder is used as it is. A previous demo's folder loses what that demo
    made (its marker lists it) and keeps anything else. Anything else is refused (exit 2).
    """
    if workdir.exists() and not workdir.is_dir():
        raise FixTheSetup(f"{workdir} is not a folder: give --workdir a new or empty folder")
    if not workdir.exists():
        workdir.mkdir(parents=True)
    marker = workdir / MARKER
    if marker.is_file() and not marker.is_symlink():
        made = _made_by_previous_demo(workdir, marker)
        _remove_made(workdir, made)
        marker.unlink()
        foreign = _contents(workdir) - made
    elif any(workdir.iterdir()):
        raise FixTheSetup(
            f"{workdir} is not empty and is not a previous demo's folder: the demo deletes only what it"
            " made itself; give --workdir a new or empty folder (or empty this one yourself)"
        )
    else:
        foreign = set()
    _write_json(marker, {"fbm-bridge demo": 1, "finished": False, "kept": sorted(foreign)})
    return foreign


def _made_by_previous_demo(workdir: Path, marker: Path) -> set[str]:
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
        made = {str(p) for p in data["made"]} if data.get("finished") else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        made = None
    if made is None:
        raise FixTheSetup(
            f"{workdir}: the previous demo there did not finish, so what it made is not known"
            f" ({MARKER} incomplete); remove what you do not need yourself, or give --workdir another folder"
        )
    return {p for p in made if _inside(p)}


def _inside(relative: str) -> bool:
    parts = Path(relative).parts
    return bool(parts) and not Path(relative).is_absolute() and ".." not in parts


def _remove_made(workdir: Path, made: set[str]) -> None:
    """Deepest first, folders only once empty: anything put inside a demo's folder by someone
    else stays, with the folders that hold it. Links are removed, never followed, also when a
    folder on the way was replaced by one."""
    for relative in sorted(made, key=lambda p: len(Path(p).parts), reverse=True):
        path = workdir / relative
        if any((workdir / above).is_symlink() for above in Path(relative).parents if above != Path(".")):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            else:
                path.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            pass  # a folder that still holds something the demo did not make


def _contents(workdir: Path) -> set[str]:
    """Every file, link and folder under `workdir`, relative, without following links."""
    found = set()
    for folder, dirs, files in os.walk(workdir):
        for name in [*dirs, *files]:
            found.add((Path(folder) / name).relative_to(workdir).as_posix())
    return found - {MARKER}


def _write_marker(workdir: Path, foreign: set[str]) -> None:
    made = _contents(workdir) - foreign
    _write_json(workdir / MARKER, {"fbm-bridge demo": 1, "finished": True, "made": sorted(made)})


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


# --- the run --------------------------------------------------------------------------------

def _run(workdir: Path) -> int:
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    now = datetime.now(timezone.utc)
    seed = demo_orders(now)
    (workdir / "sftp").mkdir(exist_ok=True)
    client_key = _client_key(workdir / "demo_ed25519")
    credentials = _write_credentials(workdir / "credentials")
    with SpApiSandbox(seed) as sandbox, LocalSftpServer(
        workdir / "sftp", authorized_key=client_key, host_key=workdir / "sftp_host_ed25519"
    ) as sftpd:
        sftpd.write_known_hosts(workdir / "known_hosts")
        for name, _, _ in WAREHOUSES:
            (workdir / "sftp" / name / "in").mkdir(parents=True, exist_ok=True)
            (workdir / "sftp" / name / "out").mkdir(parents=True, exist_ok=True)
        config = _write_config(workdir, sandbox, sftpd.port, client_key, now)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        settings = load_settings(config, environ={**environ, "CREDENTIALS_DIRECTORY": str(credentials)})
        print(f"== fbm-bridge demo in {workdir}")
        print(f"SP-API sandbox {sandbox.url} holding {len(seed)} orders, SFTP server 127.0.0.1:{sftpd.port},"
              f" config {config}")
        _show_routing(settings)
        with open_service(settings) as service:
            first = service.orders.run(now)
            second = service.orders.run(now)
            dropped = _drop_confirmations(service, settings, workdir, now)
            shipped = _ship(service, settings, now)
            fulfillments = list(sandbox.fulfillments)
        print(f"\n== first run\n{first.summary()}")
        for error in first.errors:
            print(f"  error: {error}")
        print(f"\n== second run (nothing new, so nothing is sent: nothing is ever sent twice)\n{second.summary()}")
    orders = _readable(seed)
    delivered = _show_story(settings, seed, orders)
    _show_glimpses(settings, workdir / "sftp", delivered)
    _show_shipments(settings, workdir, seed, dropped, shipped, fulfillments)
    print("\n== fbm-bridge status\n" + format_status(status_report(settings, now + settings.shipments.stable)))
    _show_afterwards(workdir, config, credentials, settings, delivered)
    failed = first.errors or second.errors or any(report.all_errors for report in shipped)
    return 0 if not failed else 1


def _write_credentials(folder: Path) -> Path:
    """The demo's secrets, kept so its folder stays usable (`spool open` needs the state key)."""
    folder.mkdir(mode=0o700, exist_ok=True)
    folder.chmod(0o700)
    for name in SECRET_NAMES:
        value = new_key() if name == STATE_KEY else f"demo-{secrets.token_hex(8)}"
        path = folder / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(value + "\n")
    return folder


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
{_confirmations_from(workdir, name)}
""".replace("'", '"')
        )
    text = f"""# Written by `fbm-bridge demo`: the sandbox and SFTP server it started are gone once it ends.
# Its secrets are in credentials/ (CREDENTIALS_DIRECTORY=credentials for `spool open`).
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


def _confirmations_from(workdir: Path, name: str) -> str:
    if name in STAFF_FOLDER:
        return f'local_shipments_folder = "{workdir / "drop" / name}"   # staff drop confirmation files here'
    return f'shipments_folder = "/{name}/out"   # the WMS drops confirmation files here'


# --- shipments up ---------------------------------------------------------------------------

def _drop_confirmations(service, settings: Settings, workdir: Path, now: datetime) -> list[tuple[str, str, int]]:
    """Each warehouse's system ships every order it got (one parcel per order, all its lines)
    and drops a confirmation file in its format. Returns (warehouse, file shown by its path in
    the demo's folder, orders)."""
    dropped = []
    for warehouse in settings.warehouses:
        if warehouse.local_shipments_folder is not None:
            warehouse.local_shipments_folder.mkdir(parents=True, exist_ok=True)
            drop, folder = FolderDrop(warehouse.local_shipments_folder), "/"
            shown = warehouse.local_shipments_folder.relative_to(workdir).as_posix()
        else:
            drop, folder = SftpDrop(warehouse.sftp), warehouse.shipments_folder
            shown = f"sftp{warehouse.shipments_folder}"
        with drop:
            name = confirm_delivered(service.ledger, warehouse, drop, folder, now)
        if name:
            orders = sum(1 for o in service.ledger.orders_in(OrderStatus.DELIVERED) if o.warehouse == warehouse.name)
            dropped.append((warehouse.name, f"{shown}/{name}", orders))
    return dropped


def _ship(service, settings: Settings, now: datetime) -> list[ShipmentsReport]:
    """Two passes `stable_seconds` apart, as the service's polling makes them: the first sees
    the files, the second (their size and time unchanged) takes, confirms and answers them.
    Time is passed in: the demo does not wait."""
    quiet = logging.getLogger("bridge.shipments")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the parcel Amazon refuses is told in the story; its warning would tell it twice
    try:
        return [service.shipments.run(now), service.shipments.run(now + settings.shipments.stable)]
    finally:
        quiet.setLevel(level)


def _show_shipments(settings: Settings, workdir: Path, seed: list[dict], dropped: list[tuple[str, str, int]],
                    shipped: list[ShipmentsReport], fulfillments: list[dict]) -> None:
    print("\n== shipments up: each warehouse's system ships what it got and drops a confirmation file")
    for warehouse, path, orders in dropped:
        where = "a staff folder on this machine" if warehouse in STAFF_FOLDER else "its SFTP shipments folder"
        print(f"  {warehouse:8} {path}  ({orders} order{'s' if orders != 1 else ''}, in {where})")
    seconds = int(settings.shipments.stable.total_seconds())
    print(f"\n== shipments runs (a file is taken once two listings {seconds} s apart find it unchanged;"
          " the demo passes that time in)")
    for label, report in zip(("first (sees the files)", "second (takes, confirms, answers)"), shipped):
        print(f"{label}: {report.summary()}")
        for error in report.all_errors:
            print(f"  error: {error}")
    skus = {item["orderItemId"]: item["product"].get("sellerSku", "") for raw in seed
            for item in raw.get("orderItems", [])}
    print("\n== fulfillments the SP-API sandbox received (by confirmShipment, the default; with"
          " shipments.send = \"feed\" they go as one order fulfillment feed per run; packageReferenceId is the"
          " bridge's package id)")
    for taken in fulfillments:
        carrier = taken["carrierCode"] + (f" {taken['carrierName']!r}" if taken["carrierName"] else "")
        method = f" ({taken['shippingMethod']})" if taken["shippingMethod"] else ""
        items = ", ".join(f"{skus.get(line['orderItemId']) or line['orderItemId']} x{line['quantity']}"
                          for line in taken["orderItems"])
        print(f"  {taken['orderId']}  package {taken['packageReferenceId']}  {carrier}{method}"
              f"  tracking {taken['trackingNumber']}  {items}  by {taken['via']}")
    _show_results(workdir, dropped, seed)


def _show_results(workdir: Path, dropped: list[tuple[str, str, int]], seed: list[dict]) -> None:
    from bridge.formats.inbound import result_name

    print("\n== result files: every row answered, in the folder the file came from")
    refused: set[str] = set()
    for _, path, _ in dropped:
        folder, name = (workdir / path).parent, Path(path).name
        result = folder / "results" / result_name(name)
        ended = next((sub for sub in ("archive", "error") if (folder / sub / name).is_file()), "processing")
        print(f"  {result.relative_to(workdir).as_posix()}  (the file went to {ended}/)")
        if not result.is_file():
            continue
        for line in result.read_text("utf-8-sig").splitlines():
            print(f"    {line}")
            if ";rejected;" in line or ",rejected," in line:
                refused.update(raw["orderId"] for raw in seed if raw["orderId"] in line)
    for raw in seed:
        if raw["orderId"] in refused and raw.get("fulfillment", {}).get("fulfillmentStatus") == "PARTIALLY_SHIPPED":
            by_hand = ", ".join(item["product"].get("sellerSku", item["orderItemId"]) for item in raw["orderItems"]
                                if item.get("fulfillment", {}).get("quantityFulfilled"))
            print(f"  why {raw['orderId']} was refused: the seller had shipped {by_hand} by hand before the bridge"
                  " delivered the order (Amazon had it PARTIALLY_SHIPPED), and the warehouse shipped the whole"
                  " order; the result file gives Amazon's words, and `status` keeps the order listed until"
                  " someone settles it")


# --- the story ------------------------------------------------------------------------------

def _show_routing(settings: Settings) -> None:
    print("\n== routing: each order goes to the first warehouse that takes its ship-to country")
    for warehouse in settings.warehouses:
        countries = ", ".join(warehouse.ship_to_countries) or "every other country (the catch-all)"
        layout = warehouse.mapping.orders
        print(f"  {warehouse.name:8} ship-to {countries:36} mapping {warehouse.mapping.name} ({layout.format})")


def _readable(seed: list[dict]) -> dict[str, Order | str]:
    """The seed's orders as records, or why one cannot be read."""
    orders: dict[str, Order | str] = {}
    for raw in seed:
        try:
            orders[raw["orderId"]] = order_from_v2026(raw)
        except BadRecord as problem:
            orders[raw["orderId"]] = str(problem)
    return orders


def _show_story(settings: Settings, seed: list[dict], orders: dict[str, Order | str]) -> dict[StoredFile, list[str]]:
    """Which file carries which order, why it went there, and why the others were not sent.
    Returns each delivered file with its order ids."""
    ledger = Ledger(settings.ledger_path, None)  # reads statuses and files, no buyer data
    try:
        rows = {raw["orderId"]: ledger.order_row(raw["orderId"]) for raw in seed}
        files = {stored.id: stored for stored in ledger.files_in(FileStatus.DELIVERED)}
    finally:
        ledger.close()
    delivered: dict[StoredFile, list[str]] = {}
    position = {warehouse.name: index for index, warehouse in enumerate(settings.warehouses)}
    for order_id, row in sorted(rows.items(), key=lambda item: _file_order(item[1], files, position)):
        if row and row["status"] == OrderStatus.DELIVERED and row["file_id"] in files:
            delivered.setdefault(files[row["file_id"]], []).append(order_id)

    print("\n== files delivered to the warehouses' SFTP drops, and the orders each carries")
    for stored, order_ids in delivered.items():
        print(f"  {stored.warehouse}/in/{stored.name} ({stored.size} bytes): {', '.join(sorted(order_ids))}")

    print("\n== why each order went where it went")
    for order_ids in delivered.values():
        for order_id in sorted(order_ids):
            order = orders[order_id]
            if isinstance(order, Order):
                print(f"  {order_id}  {_why_there(order, settings)}")

    print("\n== orders not sent, and why")
    sent = {order_id for order_ids in delivered.values() for order_id in order_ids}
    for raw in seed:
        order_id = raw["orderId"]
        if order_id not in sent:
            print(f"  {order_id}  {_why_not_sent(raw, orders[order_id], rows[order_id], settings)}")
    return delivered


def _file_order(row: dict | None, files: dict[int, StoredFile], position: dict[str, int]) -> tuple:
    stored = files.get(row["file_id"]) if row else None
    return (position.get(stored.warehouse, len(position)), stored.name) if stored else (len(position) + 1, "")


def _why_there(order: Order, settings: Settings) -> str:
    passed: list[WarehouseSettings] = []
    for warehouse in settings.warehouses:
        if warehouse.takes(order.country_code, order.marketplace_id):
            if warehouse.ship_to_countries:
                rule = f"{warehouse.name} takes {', '.join(warehouse.ship_to_countries)}"
            else:
                rule = f"{warehouse.name} takes every country: the catch-all"
            before = (f"{' and '.join(w.name for w in passed)} {'do' if len(passed) > 1 else 'does'} not take"
                      f" {order.country_code}; " if passed else "")
            return f"ship-to {order.country_code} -> {warehouse.name:8} {before}{rule}"
        passed.append(warehouse)
    return f"ship-to {order.country_code}: no warehouse takes it"


def _why_not_sent(raw: dict, order: Order | str, row: dict | None, settings: Settings) -> str:
    """From the ledger when the bridge kept the order; else from what Amazon holds (the seed)."""
    if row is not None:
        return f"{row['status']}: {row['reason'] or row['amazon_status']}"
    if raw.get("fulfillment", {}).get("fulfilledBy") != "MERCHANT":
        return "fulfilled by Amazon (FBA): Amazon ships it, so the bridge never asks for it"
    if isinstance(order, str):
        return f"Amazon's data cannot be read: {order}"
    asked = (*settings.orders.statuses, "CANCELLED")
    if order.status not in asked:
        return (f"{order.status} on Amazon: never asked for (the bridge asks for"
                f" {', '.join(settings.orders.statuses)}, and CANCELLED to notice cancellations)")
    observation = decide(order, settings)
    if observation.status == OrderStatus.CANCELLED:
        return "CANCELLED on Amazon before it was sent: pulled, never sent, nothing kept"
    return f"{observation.status}: {observation.reason or 'not in the windows pulled'}"


def _show_glimpses(settings: Settings, drops: Path, delivered: dict[StoredFile, list[str]]) -> None:
    """The first lines of one file of each format, read as the warehouse reads it."""
    formats = {w.name: w.mapping.orders for w in settings.warehouses}
    shown: set[str] = set()
    for stored in delivered:
        warehouse, name = stored.warehouse, stored.name
        layout = formats[warehouse]
        path = drops / warehouse / "in" / name
        if layout.format in shown or not path.is_file():
            continue
        shown.add(layout.format)
        if layout.format == "xlsx":
            print(f"\n== {warehouse}/in/{name}: first rows of sheet {layout.sheet!r}, read back with openpyxl")
            print("\n".join(_xlsx_rows(path.read_bytes())))
        else:
            print(f"\n== {warehouse}/in/{name}: first lines ({layout.encoding}, as {warehouse}'s system reads it)")
            lines = path.read_bytes().decode(layout.encoding).splitlines()
            print("\n".join(lines[:GLIMPSE_LINES]) + (f"\n... ({len(lines)} lines)" if len(lines) > GLIMPSE_LINES else ""))


def _xlsx_rows(data: bytes, limit: int = 3) -> list[str]:
    from openpyxl import load_workbook

    workbook = load_workbook(io.BytesIO(data), read_only=True)
    try:
        rows = workbook.active.iter_rows(max_row=limit, values_only=True)
        return [" | ".join("" if cell is None else str(cell) for cell in row) for row in rows]
    finally:
        workbook.close()


def _show_afterwards(workdir: Path, config: Path, credentials: Path, settings: Settings,
                     delivered: dict[StoredFile, list[str]]) -> None:
    command = f"{_command()} --config {shlex.quote(str(config))}"
    print(f"\n== the folder stays usable: the sandbox and SFTP server are gone, the state is kept in {workdir}")
    print("  config bridge.toml, ledger state/ledger.sqlite, spool state/spool/*, drops sftp/*/in,"
          " confirmation files and their results sftp/*/out and drop/initech,"
          " secrets credentials/ (the state key that seals buyer data: keep it with the folder)")
    print("Try:")
    print(f"  {command} status")
    if delivered:
        stored, order_ids = next(iter(delivered.items()))
        spooled = settings.spool_dir / stored.spool_path
        print(f"  {command} status --order {sorted(order_ids)[0]}")
        print(f"  CREDENTIALS_DIRECTORY={shlex.quote(str(credentials))} {command} spool open {shlex.quote(str(spooled))}"
              f" > {shlex.quote(stored.name)}")
        print(f"    (status needs no secret; spool open needs the state key in {credentials.name}/ and writes the"
              " file byte for byte as it was delivered)")
    print(f"A re-run removes only what the demo made (listed in {MARKER}); anything else in the folder stays.")


def _command() -> str:
    """How to call the bridge from a shell: the console script if there is one, else python -m."""
    script = Path(sys.executable).parent / "fbm-bridge"
    if script.is_file():
        found = shutil.which("fbm-bridge")
        return "fbm-bridge" if found and Path(found).resolve() == script.resolve() else shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m bridge"
