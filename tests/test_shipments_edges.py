"""The edges shipments up adds: the watched local folder (real inotify through watchdog), the
sandbox's confirmShipment refusals (Amazon's), the config keys, and the simulated WMS the demo
uses."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from amazon_models import validate_definition
from bridge.config import load_settings
from bridge.edges.folders import FolderDrop
from bridge.edges.watch import FolderWatcher
from bridge.errors import ConfigError
from bridge.sandbox.wms import confirm_delivered
from harness import MAPPINGS, SECRETS, load, write_mapping
from shipping import SHIP_TIME, Shipper, make_config


# --- the watched folder -----------------------------------------------------------------------

def wait_for(take, expected, timeout=10.0):
    found: dict[str, set[str]] = {}
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for key, names in take().items():
            found.setdefault(key, set()).update(names)
        if found == expected:
            return found
        time.sleep(0.05)
    return found


def test_the_watch_reports_a_file_moved_in_at_once_and_one_written_in_place_once_it_is_quiet(tmp_path):
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "old.csv").write_text("there before the watch: no event\n")
    clock = [0.0]
    watcher = FolderWatcher({"acme": folder}, quiet=5, clock=lambda: clock[0])
    watcher.start()
    try:
        with open(folder / "written.csv", "w") as f:
            f.write("a;b\n")
            f.flush()
            assert watcher.take() == {}  # open: not finished
        (folder / "moved.csv.tmp").write_text("x\n")  # a careful writer: temporary name, rename
        os.rename(folder / "moved.csv.tmp", folder / "moved.csv")
        (folder / "processing").mkdir()
        (folder / "processing" / "inside.csv").write_text("subfolders do not count\n")
        assert wait_for(watcher.take, {"acme": {"moved.csv"}}) == {"acme": {"moved.csv"}}
        assert watcher.pending()  # written.csv: closed, but not yet quiet
        clock[0] = 5.0
        assert watcher.take() == {"acme": {"written.csv"}}
    finally:
        watcher.stop()


def test_a_writer_that_appends_line_by_line_is_not_taken_between_lines(tmp_path):
    """`echo LINE >> EXPORT.csv` once per line: every line opens, writes and closes the file."""
    folder = tmp_path / "drop"
    folder.mkdir()
    clock = [0.0]
    watcher = FolderWatcher({"acme": folder}, quiet=5, clock=lambda: clock[0])
    watcher.start()
    try:
        for second, line in enumerate(["Auftragsnummer;Menge", "302-0000003-0000003;1", "203-0000004-0000004;2"]):
            clock[0] = second * 2.0  # a line every two seconds: never quiet for five
            with open(folder / "EXPORT.csv", "a") as f:
                f.write(line + "\r\n")
            time.sleep(0.3)  # the events arrive
            assert watcher.take() == {}
        clock[0] = 4.0 + 5.0
        assert watcher.take() == {"acme": {"EXPORT.csv"}}
    finally:
        watcher.stop()


def test_the_daemon_waits_for_a_written_file_to_be_quiet_for_at_most_five_seconds():
    from dataclasses import replace

    from bridge.config import Settings, ShipmentSettings
    from bridge.daemon import quiet_after_writes

    settings = Settings.__new__(Settings)
    object.__setattr__(settings, "shipments", ShipmentSettings())
    assert quiet_after_writes(settings) == 5.0
    object.__setattr__(settings, "shipments", replace(ShipmentSettings(), stable=timedelta(seconds=2)))
    assert quiet_after_writes(settings) == 2.0


def test_a_file_seen_only_as_created_counts_once_it_has_been_quiet(tmp_path):
    folder = tmp_path / "drop"
    folder.mkdir()
    clock = [0.0]
    watcher = FolderWatcher({"acme": folder}, quiet=2.0, clock=lambda: clock[0])
    watcher._event(type("E", (), {"is_directory": False, "event_type": "created",
                                  "src_path": str(folder / "in.csv")})())
    assert watcher.take() == {} and watcher.pending()
    clock[0] = 2.5
    assert watcher.take() == {"acme": {"in.csv"}}


# --- the sandbox refuses what Amazon refuses ----------------------------------------------------

@pytest.fixture
def api(sandbox):
    from harness import SECRETS as S
    with httpx.Client(base_url=sandbox.url, timeout=5) as client:
        token = client.post("/auth/o2/token", data={
            "grant_type": "refresh_token", "client_id": S["BRIDGE_LWA_CLIENT_ID"],
            "client_secret": S["BRIDGE_LWA_CLIENT_SECRET"],
            "refresh_token": S["BRIDGE_LWA_REFRESH_TOKEN"]}).json()["access_token"]
        client.headers["x-amz-access-token"] = token
        yield client


def body(**detail) -> dict:
    package = {"packageReferenceId": "1", "carrierCode": "UPS", "trackingNumber": "1Z999AA10123456784",
               "shipDate": "2026-11-20T12:30:00Z",
               "orderItems": [{"orderItemId": "50000001000001", "quantity": 1}], **detail}
    return {"marketplaceId": "ATVPDKIKX0DER", "packageDetail": {k: v for k, v in package.items() if v is not None}}


@pytest.mark.parametrize("request_body, message", [
    (body(carrierCode="Dhl"), "packageDetail.carrierCode 'Dhl' is not a valid carrier code; use Other with a carrierName"),
    (body(carrierCode="Other"), "packageDetail.carrierName is required when carrierCode is Other"),
    (body(carrierCode=None), "packageDetail.carrierCode is required and must be a string"),
    (body(packageReferenceId="PKG-1"), "packageDetail.packageReferenceId must be a positive number"),
    (body(shipDate="11/20/2026"), "packageDetail.shipDate must be in ISO 8601 format, got '11/20/2026'"),
    (body(orderItems=[{"orderItemId": "50000001000001", "quantity": 3}]),
     "quantity for orderItemId 50000001000001 exceeds the unshipped quantity"),
    (body(orderItems=[{"orderItemId": "99", "quantity": 1}]), "orderItemId 99 is not part of order 111-0000001-0000001"),
])
def test_the_sandbox_refuses_confirmations_amazon_refuses(api, sandbox, request_body, message):
    answer = api.post("/orders/v0/orders/111-0000001-0000001/shipmentConfirmation", json=request_body)
    assert answer.status_code == 400
    assert answer.json() == {"errors": [{"code": "InvalidInput", "message": message}]}
    validate_definition("ordersV0.json", "ConfirmShipmentErrorResponse", answer.json())
    assert sandbox.confirmations == []


def test_the_sandbox_takes_other_with_a_carrier_name(api, sandbox):
    request_body = body(carrierCode="Other", carrierName="Hermes Germany")
    validate_definition("ordersV0.json", "ConfirmShipmentRequest", request_body)
    assert api.post("/orders/v0/orders/111-0000001-0000001/shipmentConfirmation", json=request_body).status_code == 204


# --- config -----------------------------------------------------------------------------------

def config_with(tmp_path: Path, text: str, mapping: str = "acme-csv") -> Path:
    (tmp_path / "known_hosts").write_text("x ssh-ed25519 AAAA\n")
    (tmp_path / "key").write_text("x\n")
    path = tmp_path / "bridge.toml"
    path.write_text(f"""
[amazon]
seller_id = "A3"
region = "eu"
marketplaces = ["A1PA6795UKMFR9"]
{text}
[[warehouses]]
name = "acme"
mapping = "{MAPPINGS / f'{mapping}.toml'}"
host = "h"
username = "u"
known_hosts = "known_hosts"
private_key = "key"
orders_folder = "/in"
shipments_folder = "/out/"
local_shipments_folder = "drop"
""")
    return path


def test_shipments_settings_have_documented_defaults(tmp_path):
    settings = load_settings(config_with(tmp_path, ""), SECRETS)
    shipments = settings.shipments
    assert (shipments.poll, shipments.rescan, shipments.stable, shipments.incomplete_limit) == (
        timedelta(seconds=60), timedelta(minutes=5), timedelta(seconds=30), timedelta(minutes=60))
    assert shipments.ignore == ("*.tmp", "*.part", ".*", "*.filepart", "*.crdownload", "*.swp", "~$*", "Thumbs.db", "desktop.ini")
    assert (shipments.send, shipments.lookup_unknown_orders) == ("confirmShipment", False)
    [acme] = settings.warehouses
    assert (acme.shipments_folder, acme.local_shipments_folder) == ("/out", tmp_path / "drop")


def test_bad_shipments_settings_are_each_reported(tmp_path):
    text = '[shipments]\npoll_seconds = 1\nsend = "email"\nlookup_unknown_orders = "yes"\nignore = ["a/b"]\n'
    path = config_with(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, SECRETS)
    assert [p.removeprefix(f"{path}: ") for p in caught.value.problems] == [
        "shipments.ignore[0]: 'a/b' must be a file name pattern like \"*.tmp\"",
        "shipments.lookup_unknown_orders: must be true or false, not 'yes'",
        "shipments.poll_seconds: must be at least 5, not 1",
        "shipments.send: 'email' is not one of confirmShipment, feed",
    ]


def test_a_shipments_folder_needs_a_mapping_that_reads_confirmations(tmp_path):
    mapping = tmp_path / "plain.toml"
    write_mapping(mapping, (MAPPINGS / "acme-csv.toml").read_text("utf-8").split("[shipments]")[0].rsplit("\n#", 1)[0])
    path = config_with(tmp_path, "", mapping=str(mapping).removesuffix(".toml"))
    with pytest.raises(ConfigError) as caught:
        load_settings(path, SECRETS)
    assert caught.value.problems == [
        f"{path}: warehouses[0].shipments_folder: the mapping plain has no [shipments] section to read the files with"]


# --- the simulated WMS (the demo's step) ---------------------------------------------------------

@pytest.mark.parametrize("mapping", ["acme-csv", "globex-xml", "initech-xlsx"])
def test_the_simulated_wms_answers_delivered_orders_and_the_bridge_confirms_them(tmp_path, sshd, sftp_root, sandbox, mapping):
    shipper = Shipper(load(make_config(tmp_path, sshd, sftp_root, sandbox, mapping)))
    shipper.deliver_orders()
    shipper.local.mkdir(parents=True, exist_ok=True)
    name = confirm_delivered(shipper.ledger, shipper.settings.warehouses[0], FolderDrop(shipper.local), "/", SHIP_TIME)

    report = shipper.ship()

    # 111-0000005's mug was shipped before the bridge delivered the order (the seed says so),
    # yet its order file lists it; the simulated WMS ships it again and Amazon refuses that parcel.
    assert report.all_errors == [] and (report.confirmed, report.rejected) == (4, 1)
    assert (shipper.local / "error" / name).is_file()
    assert {c["orderId"] for c in sandbox.confirmations} == {
        "111-0000001-0000001", "111-0000002-0000002", "302-0000003-0000003", "203-0000004-0000004"}
