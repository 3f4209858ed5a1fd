"""Shipments up, end to end: orders delivered over OpenSSH, the warehouse's confirmation files
dropped in its SFTP folder (or staff's local folder), confirmShipment on the SP-API sandbox.

Each test is a behaviour a warehouse or a seller relies on: the goldens confirm byte for byte;
a file is never taken early, never applied twice, always answered; a crash anywhere converges
without a package confirmed twice.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import paramiko
import pytest

from amazon_models import validate_definition
from bridge.ledger import PackageStatus
from harness import MAPPINGS, load, write_mapping
from shipping import (
    GOLDEN_INPUTS, SHIP_TIME, STABLE, Shipper, expected_requests, files, golden, make_config,
    requests_sent)

ACME_FILE = GOLDEN_INPUTS["acme-csv"]


@pytest.fixture
def make(tmp_path, sshd, sftp_root, sandbox):
    made = []

    def make(mapping: str = "acme-csv", shipments: str = "", **extra) -> Shipper:
        """A bridge with the seed's orders delivered; a second one in a test has its own state
        and folders."""
        where = f"bridge{len(made)}" if made else ""
        shipper = Shipper(load(make_config(tmp_path / where, sshd, sftp_root / where, sandbox, mapping,
                                           shipments=shipments, **extra)))
        made.append(shipper)
        shipper.deliver_orders()
        return shipper
    return make


def drop(folder: Path, name: str, data: bytes) -> None:
    """As a careful WMS does: a temporary name, then a rename."""
    (folder / f"{name}.tmp").write_bytes(data)
    (folder / f"{name}.tmp").rename(folder / name)


def acme_rows(*rows: str) -> bytes:
    header = "Auftragsnummer;Artikelnummer;Menge;Versandart;Sendungsnummer;Versanddatum\r\n"
    return (header + "".join(row + "\r\n" for row in rows)).encode("cp1252")


def result_lines(folder: Path, name: str) -> list[str]:
    return (folder / "results" / f"{Path(name).stem}.result.csv").read_text("utf-8-sig").splitlines()[1:]


def shipped_units(sandbox, order_id: str) -> dict[str, int]:
    return {item["orderItemId"]: item["fulfillment"]["quantityFulfilled"]
            for item in sandbox.order(order_id)["orderItems"]}


# --- goldens ----------------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["sftp", "local"])
@pytest.mark.parametrize("mapping", ["acme-csv", "globex-xml", "initech-xlsx"])
def test_a_golden_confirmation_file_confirms_exactly_its_packages_and_is_answered(make, sandbox, mapping, source):
    shipper = make(mapping)
    folder = shipper.remote if source == "sftp" else shipper.local
    name = GOLDEN_INPUTS[mapping]
    folder.mkdir(exist_ok=True)
    drop(folder, name, (golden(mapping) / name).read_bytes())

    report = shipper.ship()

    assert report.all_errors == []
    assert requests_sent(sandbox) == expected_requests(mapping)
    for request in requests_sent(sandbox):
        validate_definition("ordersV0.json", "ConfirmShipmentRequest", request["body"])
    assert files(folder / "results") == files(golden(mapping) / "results")
    assert files(folder / "archive") == {name: (golden(mapping) / name).read_bytes()}
    assert files(folder) == files(folder / "processing") == files(folder / "error") == {}


def test_partial_and_multi_package_shipments_leave_the_order_partially_shipped(make, sandbox):
    shipper = make()
    drop(shipper.remote, ACME_FILE, (golden("acme-csv") / ACME_FILE).read_bytes())
    shipper.ship()

    # Two parcels of 111-0000002: 4 + 2 mugs, 3 infusers; the 2 coasters not yet shipped.
    assert shipped_units(sandbox, "111-0000002-0000002") == {
        "50000002000001": 6, "50000002000002": 3, "50000002000003": 0}
    assert sandbox.order("111-0000002-0000002")["fulfillment"]["fulfillmentStatus"] == "PARTIALLY_SHIPPED"
    assert sandbox.order("302-0000003-0000003")["fulfillment"]["fulfillmentStatus"] == "SHIPPED"
    assert shipper.ledger.shipment_counts() == {"accepted": 0, "sent": 0, "confirmed": 5, "rejected": 0}


def test_the_rest_of_a_partial_shipment_arrives_in_a_later_file(make, sandbox):
    shipper = make()
    drop(shipper.remote, ACME_FILE, (golden("acme-csv") / ACME_FILE).read_bytes())
    shipper.ship()
    drop(shipper.remote, "VERSAND_20261120180500.csv", acme_rows(
        "111-0000002-0000002;CST-CORK-4PK;2;DHL_PAKET;00340434161094042588;20.11.2026 18:05"))
    shipper.ship(SHIP_TIME + timedelta(minutes=10))

    assert sandbox.order("111-0000002-0000002")["fulfillment"]["fulfillmentStatus"] == "SHIPPED"
    assert result_lines(shipper.remote, "VERSAND_20261120180500.csv") == [
        "2;accepted;111-0000002-0000002;CST-CORK-4PK;2;00340434161094042588;confirmed on Amazon as package 6"]


# --- never early --------------------------------------------------------------------------------

class SlowUpload:
    """An SFTP client writing a file in pieces through the real sshd, the way a WMS uploads."""

    def __init__(self, sshd, path: Path):
        self.client = paramiko.SSHClient()
        self.client.load_host_keys(str(sshd.known_hosts))
        self.client.connect("127.0.0.1", port=sshd.port, username=sshd.endpoint.username,
                            key_filename=str(sshd.client_key), allow_agent=False, look_for_keys=False)
        self.sftp = self.client.open_sftp()
        self.handle = self.sftp.open(str(path), "wb")

    def write(self, data: bytes) -> None:
        self.handle.write(data)
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()
        self.client.close()


def test_a_file_uploaded_slowly_in_pieces_is_not_taken_before_it_is_whole(make, sandbox, sshd):
    shipper = make()
    data = (golden("acme-csv") / ACME_FILE).read_bytes()
    upload = SlowUpload(sshd, shipper.remote / ACME_FILE)
    t = SHIP_TIME - timedelta(minutes=10)
    try:
        for piece in (data[:100], data[100:300]):
            upload.write(piece)
            shipper.flow.run(t)
            t += STABLE
            assert sandbox.confirmations == [] and files(shipper.remote / "processing") == {}
        upload.write(data[300:])
    finally:
        upload.close()
    shipper.flow.run(t)  # changed since the last listing: settles again
    assert sandbox.confirmations == []
    shipper.flow.run(t + STABLE)

    assert requests_sent(sandbox) == expected_requests("acme-csv")
    assert files(shipper.remote / "results") == files(golden("acme-csv") / "results")


def test_a_writer_that_stalls_mid_line_is_caught_by_the_content_check_and_taken_once_done(make, sandbox):
    shipper = make()
    data = (golden("acme-csv") / ACME_FILE).read_bytes()
    (shipper.remote / ACME_FILE).write_bytes(data[:-30])  # stalls longer than `stable`
    report = shipper.ship()

    assert report.inbound.incomplete == 1 and sandbox.confirmations == []
    assert files(shipper.remote) == {ACME_FILE: data[:-30]}  # put back, left alone

    (shipper.remote / ACME_FILE).write_bytes(data)
    shipper.ship(SHIP_TIME + timedelta(minutes=5))
    assert requests_sent(sandbox) == expected_requests("acme-csv")



def test_an_incomplete_file_is_counted_once_in_a_pass_that_lists_the_folder_twice(make, sandbox):
    shipper = make()
    data = (golden("acme-csv") / ACME_FILE).read_bytes()
    (shipper.remote / "STALLED.csv").write_bytes(data[:-30])
    shipper.ship()  # seen incomplete, put back
    (shipper.remote / ACME_FILE).write_bytes(data)

    report = shipper.flow.run(SHIP_TIME + timedelta(minutes=5), settle=True)  # `shipments process`: two listings

    assert report.inbound.incomplete == 1 and report.inbound.taken == 1

def test_a_file_still_incomplete_after_the_limit_goes_to_error_with_the_reason(make, sandbox):
    shipper = make(shipments="incomplete_limit_minutes = 10")
    (shipper.remote / "VERSAND_1.csv").write_bytes(acme_rows("302-0000003-0000003;KAN-GLAS-1L")[:-2])
    shipper.ship()
    shipper.ship(SHIP_TIME + timedelta(minutes=5))
    assert files(shipper.remote / "error") == {}
    shipper.ship(SHIP_TIME + timedelta(minutes=11))

    assert list(files(shipper.remote / "error")) == ["VERSAND_1.csv"]
    assert result_lines(shipper.remote, "VERSAND_1.csv") == [
        ";rejected;;;;;the file stayed incomplete for 10 minutes: the last row has 2 of 6 fields and no line break: "
        "the file may still be written (if not, complete the row, end the file with a line break and drop it "
        "again)"]


@pytest.mark.parametrize("name", ["VERSAND_1.csv.tmp", "VERSAND_1.csv.part", ".VERSAND_1.csv"])
def test_temporary_names_are_never_taken(make, sandbox, name):
    shipper = make()
    (shipper.remote / name).write_bytes((golden("acme-csv") / ACME_FILE).read_bytes())
    shipper.ship()
    shipper.ship(SHIP_TIME + timedelta(minutes=5))
    assert sandbox.confirmations == [] and list(files(shipper.remote)) == [name]


def test_with_a_marker_a_file_waits_for_it_and_the_marker_is_cleared(make, sandbox, tmp_path):
    mapping = tmp_path / "acme-marker.toml"
    write_mapping(mapping, (MAPPINGS / "acme-csv.toml").read_text("utf-8").replace(
        'result_delimiter = ";"', 'result_delimiter = ";"\nmarker = "{name}.ok"'))
    shipper = make(mapping=str(mapping).removesuffix(".toml"))
    drop(shipper.remote, ACME_FILE, (golden("acme-csv") / ACME_FILE).read_bytes())
    shipper.ship()
    assert sandbox.confirmations == []

    (shipper.remote / f"{ACME_FILE}.ok").write_bytes(b"")
    shipper.ship(SHIP_TIME + timedelta(minutes=1))
    assert requests_sent(sandbox) == expected_requests("acme-csv")
    assert files(shipper.remote) == {}


# --- never twice ------------------------------------------------------------------------------

def test_the_same_file_dropped_twice_is_answered_as_already_processed(make, sandbox):
    shipper = make()
    data = (golden("acme-csv") / ACME_FILE).read_bytes()
    drop(shipper.remote, ACME_FILE, data)
    shipper.ship()
    drop(shipper.remote, "VERSAND_copy.csv", data)
    shipper.ship(SHIP_TIME + timedelta(minutes=5))

    assert requests_sent(sandbox) == expected_requests("acme-csv")  # nothing more
    lines = result_lines(shipper.remote, "VERSAND_copy.csv")
    assert len(lines) == 6
    assert lines[0] == ("2;duplicate;302-0000003-0000003;KAN-GLAS-1L;1;00340434161094042557;"
                        "already processed on 2026-11-20 as VERSAND_20261120173000.csv (the SFTP folder): accepted "
                        "there: confirmed on Amazon as package 1")
    assert "VERSAND_copy.csv" in files(shipper.remote / "archive")



def test_a_file_repeated_in_another_folder_says_what_became_of_each_row_the_first_time(make, sandbox):
    shipper = make()
    data = acme_rows("302-0000003-0000003;KAN-GLAS-1L;1;DHL_PAKET;00340434161094042557;20.11.2026 16:45",
                     "111-0000001-0000001;MUG-CER-350-BLU;0,5;DHL_PAKET;00340434161094042599;20.11.2026 16:45")
    shipper.local.mkdir(exist_ok=True)
    drop(shipper.local, "SCAN.csv", data)
    shipper.ship()
    drop(shipper.remote, "SCAN_again.csv", data)
    shipper.ship(SHIP_TIME + timedelta(minutes=5))

    assert len(sandbox.confirmations) == 1
    assert result_lines(shipper.remote, "SCAN_again.csv") == [
        "2;duplicate;302-0000003-0000003;KAN-GLAS-1L;1;00340434161094042557;already processed on 2026-11-20 as "
        "SCAN.csv (the local staff folder): accepted there: confirmed on Amazon as package 1",
        "3;rejected;111-0000001-0000001;MUG-CER-350-BLU;0,5;00340434161094042599;already processed on 2026-11-20 "
        "as SCAN.csv (the local staff folder): rejected there: Menge: '0,5' is not a whole number of units"]
    assert "SCAN_again.csv" in files(shipper.remote / "error")  # a row of it is still to be corrected

def test_a_reused_file_name_gets_its_own_archive_and_result_names(make, sandbox):
    shipper = make()
    drop(shipper.remote, "SHIPPED.csv", acme_rows(
        "302-0000003-0000003;KAN-GLAS-1L;1;DHL_PAKET;00340434161094042557;20.11.2026 16:45"))
    shipper.ship()
    drop(shipper.remote, "SHIPPED.csv", acme_rows(
        "111-0000001-0000001;MUG-CER-350-BLU;2;DHL_PAKET;00340434161094042599;20.11.2026 16:45"))
    shipper.ship(SHIP_TIME + timedelta(minutes=5))

    assert set(files(shipper.remote / "archive")) == {"SHIPPED.csv", "SHIPPED~2.csv"}
    assert set(files(shipper.remote / "results")) == {"SHIPPED.result.csv", "SHIPPED~2.result.csv"}
    assert len(sandbox.confirmations) == 2


def test_a_package_already_confirmed_from_an_earlier_file_is_a_duplicate_row(make, sandbox):
    shipper = make()
    row = "302-0000003-0000003;KAN-GLAS-1L;1;DHL_PAKET;00340434161094042557;20.11.2026 16:45"
    drop(shipper.remote, "A.csv", acme_rows(row))
    shipper.ship()
    drop(shipper.remote, "B.csv", acme_rows(
        row, "111-0000001-0000001;MUG-CER-350-BLU;2;DHL_PAKET;00340434161094042599;20.11.2026 16:45"))
    shipper.ship(SHIP_TIME + timedelta(minutes=5))

    assert result_lines(shipper.remote, "B.csv") == [
        "2;duplicate;302-0000003-0000003;KAN-GLAS-1L;1;00340434161094042557;"
        "already confirmed on Amazon as package 1 from A.csv row 2 on 2026-11-20",
        "3;accepted;111-0000001-0000001;MUG-CER-350-BLU;2;00340434161094042599;confirmed on Amazon as package 2"]
    assert "B.csv" in files(shipper.remote / "archive")


# --- crash anywhere, restart, converge ---------------------------------------------------------

class Crash(BaseException):
    """A process death: not an error the flow may catch."""


STEPS = ["claimed", "spooled", "recorded", "read", "marked_sent", "answered", "confirmed",
         "result_uploaded", "result_renamed", "moved"]


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_any_step_then_a_restart_confirms_every_package_once_and_answers_the_file(make, sandbox, step):
    hits = {"n": 0}

    def crash(name: str) -> None:
        if name == step:
            hits["n"] += 1
            if hits["n"] == 2 or step not in ("marked_sent", "answered", "confirmed"):
                raise Crash(name)

    shipper = make().restart(checkpoint=crash)
    drop(shipper.remote, ACME_FILE, (golden("acme-csv") / ACME_FILE).read_bytes())
    shipper.flow.run(SHIP_TIME - STABLE)
    with pytest.raises(Crash):
        shipper.flow.run(SHIP_TIME)

    restarted = shipper.restart()
    restarted.flow.run(SHIP_TIME + timedelta(minutes=1))
    last = restarted.flow.run(SHIP_TIME + timedelta(minutes=2))

    assert not last.all_errors and not last.needs_a_person  # converged, nothing for a person (attack-7 F1)
    assert [row[0] for row in restarted.ledger._db.execute("select status from inbound_files")] == ["done"]
    sent = requests_sent(sandbox)
    unique = [r for n, r in enumerate(sent) if r not in sent[:n]]
    assert unique == expected_requests("acme-csv")  # a re-send repeats the same package id
    assert shipped_units(sandbox, "111-0000002-0000002") == {
        "50000002000001": 6, "50000002000002": 3, "50000002000003": 0}
    assert files(restarted.remote / "results") == files(golden("acme-csv") / "results")
    assert list(files(restarted.remote / "archive")) == [ACME_FILE]
    assert files(restarted.remote) == files(restarted.remote / "processing") == {}
    assert restarted.ledger.shipment_counts()["confirmed"] == 5


# --- Amazon's answers -------------------------------------------------------------------------

def test_amazons_rejection_is_final_for_its_package_and_reported_in_its_words(make, sandbox):
    shipper = make()
    # The mug of 111-0000005 was shipped before the bridge: Amazon refuses it again.
    drop(shipper.remote, "VERSAND_2.csv", acme_rows(
        "111-0000005-0000005;MUG-CER-350-BLU;1;DHL_PAKET;00340434161094042601;20.11.2026 16:45",
        "302-0000003-0000003;KAN-GLAS-1L;1;DHL_PAKET;00340434161094042557;20.11.2026 16:45"))
    shipper.ship()

    assert result_lines(shipper.remote, "VERSAND_2.csv") == [
        "2;rejected;111-0000005-0000005;MUG-CER-350-BLU;1;00340434161094042601;Amazon refused "
        "package 1: InvalidInput: quantity for orderItemId 50000005000001 exceeds the unshipped quantity",
        "3;accepted;302-0000003-0000003;KAN-GLAS-1L;1;00340434161094042557;confirmed on Amazon as package 2"]
    assert "VERSAND_2.csv" in files(shipper.remote / "error")
    assert shipper.ledger.package(1).status == PackageStatus.REJECTED


def test_throttling_and_5xx_are_waited_out_within_the_run(make, sandbox):
    shipper = make()
    sandbox.fail_next("confirmShipment", 429, count=2, headers={"x-amzn-RateLimit-Limit": "50"})
    sandbox.fail_next("confirmShipment", 503, count=1, body=b"")
    drop(shipper.remote, ACME_FILE, (golden("acme-csv") / ACME_FILE).read_bytes())
    assert shipper.ship().all_errors == []
    assert requests_sent(sandbox) == expected_requests("acme-csv")


def test_during_an_amazon_outage_packages_wait_and_the_file_stays_in_processing(make, sandbox):
    shipper = make()
    sandbox.fail_next("confirmShipment", 500, count=100)
    drop(shipper.remote, "B.csv", acme_rows(
        "302-0000003-0000003;KAN-GLAS-1L;1;DHL_PAKET;00340434161094042557;20.11.2026 16:45"))
    report = shipper.ship()
    assert report.waiting == 1 and any(error.startswith("send: ") for error in report.all_errors)
    assert list(files(shipper.remote / "processing")) == ["B.csv"]
    drop(shipper.remote, "B_again.csv", (shipper.remote / "processing" / "B.csv").read_bytes())
    shipper.ship(SHIP_TIME + timedelta(minutes=2))  # a repeat waits too: it will say what became of B's rows
    assert sorted(files(shipper.remote / "processing")) == ["B.csv", "B_again.csv"]

    sandbox._faults.clear()
    shipper.flow.run(SHIP_TIME + timedelta(minutes=5))
    assert len(sandbox.confirmations) == 1 and {"B.csv", "B_again.csv"} <= set(files(shipper.remote / "archive"))
    assert result_lines(shipper.remote, "B_again.csv")[0].endswith("accepted there: confirmed on Amazon as package 1")


def test_an_order_cancelled_on_amazon_after_delivery_is_reported_not_confirmed(make, sandbox, caplog):
    shipper = make()
    cancelled = sandbox.order("302-0000003-0000003")
    cancelled["fulfillment"]["fulfillmentStatus"] = "CANCELLED"
    cancelled["lastUpdatedTime"] = "2026-11-20T12:10:00Z"
    sandbox.add_order(cancelled)
    shipper.orders.run(SHIP_TIME - timedelta(hours=1))
    drop(shipper.remote, "V.csv", acme_rows(
        "302-0000003-0000003;KAN-GLAS-1L;1;DHL_PAKET;00340434161094042557;20.11.2026 16:45"))
    with caplog.at_level(logging.WARNING):
        shipper.ship()

    assert "shipped after Amazon cancelled it warehouse=wh order_id=302-0000003-0000003" in caplog.text

    assert sandbox.confirmations == []
    assert result_lines(shipper.remote, "V.csv") == [
        "2;rejected;302-0000003-0000003;KAN-GLAS-1L;1;00340434161094042557;order 302-0000003-0000003 "
        "was cancelled on Amazon after it was sent to wh, it should not have shipped: tell the seller"]


def test_an_order_the_bridge_did_not_deliver_is_looked_up_on_amazon_when_allowed(make, sandbox):
    from bridge.sandbox.spapi import load_seed
    from harness import SEED
    extra = load_seed(SEED)[0]
    extra.update(orderId="111-0000009-0000009", lastUpdatedTime="2026-11-20T17:00:00Z")
    for number, item in enumerate(extra["orderItems"], 1):
        item["orderItemId"] = f"900000090000{number:02d}"
    sandbox.add_order(extra)
    row = "111-0000009-0000009;MUG-CER-350-BLU;1;DHL_PAKET;00340434161094042700;20.11.2026 16:45"

    strict = make()
    drop(strict.remote, "A.csv", acme_rows(row))
    strict.ship()
    assert result_lines(strict.remote, "A.csv")[0].endswith("order 111-0000009-0000009 was not sent to wh by the bridge")

    lenient = make(shipments="lookup_unknown_orders = true")
    drop(lenient.remote, "B.csv", acme_rows(row))
    lenient.ship(SHIP_TIME + timedelta(minutes=5))
    assert result_lines(lenient.remote, "B.csv")[0].endswith("confirmed on Amazon as package 1")


# --- sources, status, logs ---------------------------------------------------------------------

def test_sftp_and_local_files_are_taken_in_one_run(make, sandbox):
    shipper = make()
    shipper.local.mkdir(exist_ok=True)
    drop(shipper.remote, "A.csv", acme_rows(
        "302-0000003-0000003;KAN-GLAS-1L;1;DHL_PAKET;00340434161094042557;20.11.2026 16:45"))
    drop(shipper.local, "B.csv", acme_rows(
        "111-0000001-0000001;MUG-CER-350-BLU;2;DHL_PAKET;00340434161094042599;20.11.2026 16:45"))
    shipper.ship()
    assert len(sandbox.confirmations) == 2
    assert "A.csv" in files(shipper.remote / "archive") and "B.csv" in files(shipper.local / "archive")


def test_status_shows_packages_and_the_orders_still_to_confirm_soonest_ship_by_first(make, sandbox):
    from bridge.service import status_report
    from bridge.cli import format_status

    shipper = make()
    drop(shipper.remote, ACME_FILE, (golden("acme-csv") / ACME_FILE).read_bytes())
    shipper.ship()
    report = status_report(shipper.settings, SHIP_TIME)["shipments"]

    assert report["packages"] == {"accepted": 0, "sent": 0, "confirmed": 5, "rejected": 0}
    assert [(o["order_id"], o["ship_by"], o["confirmed"], o["units"]) for o in report["unconfirmed"]] == [
        ("111-0000002-0000002", "2026-11-20T23:59:59Z", 9, 11),
        ("203-0000004-0000004", "2026-11-20T23:59:59Z", 1, 3),
        ("111-0000001-0000001", "2026-11-21T07:59:59Z", 0, 2),
        ("111-0000005-0000005", "2026-11-21T07:59:59Z", 2, 3)]
    text = format_status(status_report(shipper.settings, SHIP_TIME))
    assert "shipments: packages confirmed=5 rejected=0 waiting=0" in text
    assert "2026-11-20T23:59:59Z  111-0000002-0000002  wh  9/11 units confirmed" in text


def test_logs_name_files_and_packages_never_buyer_data(make, sandbox, caplog):
    from bridge.sandbox.spapi import load_seed
    from harness import SECRETS, SEED

    shipper = make()
    drop(shipper.remote, ACME_FILE, (golden("acme-csv") / ACME_FILE).read_bytes())
    with caplog.at_level(logging.DEBUG):
        shipper.ship()
    assert "package confirmed id=1 order_id=302-0000003-0000003" in caplog.text
    for order in load_seed(SEED):
        address = order.get("recipient", {}).get("deliveryAddress", {})
        for value in (address.get("name"), address.get("addressLine1")):
            if value:
                assert value not in caplog.text
    for secret in SECRETS.values():
        assert secret not in caplog.text
