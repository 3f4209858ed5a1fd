"""A file still being written when the bridge took it: nothing lost, nothing sent twice.

A WMS that pauses longer than `stable_seconds` exactly after a line break leaves a file that
looks complete (it ends with a line break, every row has the header's width). The bridge takes
it; the writer's open handle follows the file into processing/ and archive/ or error/, where
the rows written after the pause would never be read. Each test drops the file the way such a
writer does (an SFTP upload through the suite's OpenSSH sshd, or a process holding the local
file open) and runs the real flows with `now` as a parameter.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from bridge.ledger import GrownStatus
from shipping import SHIP_TIME, STABLE, Shipper, files, make_config, requests_sent
from harness import load
from test_shipments_flow import SlowUpload, acme_rows, result_lines

FIRST = "302-0000003-0000003;KAN-GLAS-1L;1;DHL_PAKET;00340434161094042557;20.11.2026 16:45"
LATER = "111-0000001-0000001;MUG-CER-350-BLU;2;DHL_PAKET;00340434161094042599;20.11.2026 16:50"
NAME = "VERSAND_SLOW.csv"
AGAIN = "VERSAND_SLOW-again-1.csv"  # the first inbound file of the test's ledger: id 1
PART = acme_rows(FIRST)
WHOLE = acme_rows(FIRST, LATER)
FIRST_ANSWER = "2;accepted;302-0000003-0000003;KAN-GLAS-1L;1;00340434161094042557;confirmed on Amazon as package 1"
AGAIN_ANSWER = [
    "2;duplicate;302-0000003-0000003;KAN-GLAS-1L;1;00340434161094042557;"
    "already confirmed on Amazon as package 1 from VERSAND_SLOW.csv row 2 on 2026-11-20",
    "3;accepted;111-0000001-0000001;MUG-CER-350-BLU;2;00340434161094042599;confirmed on Amazon as package 2"]


def still_written(read: int, size: int) -> str:
    return (f";read again;;;;;the file was still being written when the bridge took it: its first {read} bytes "
            f"were read and answered here, it had {size} bytes later. Nothing is lost: the whole file is taken "
            f"again as {AGAIN} and answered in results/VERSAND_SLOW-again-1.result.csv. To avoid this, the WMS "
            "should write the file under a temporary name and rename it when it is complete")


@pytest.fixture
def make(tmp_path, sshd, sftp_root, sandbox):
    def make(shipments: str = "", checkpoint=None) -> Shipper:
        shipper = Shipper(load(make_config(tmp_path, sshd, sftp_root, sandbox, "acme-csv", shipments=shipments)))
        shipper.deliver_orders()
        return shipper.restart(checkpoint) if checkpoint else shipper
    return make


class LocalWriter:
    """A process holding the file open in the local staff folder (a scanner script, say)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(path, "wb")

    def write(self, data: bytes) -> None:
        self.handle.write(data)
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def writer(shipper: Shipper, source: str, sshd):
    if source == "sftp":
        return shipper.remote, SlowUpload(sshd, shipper.remote / NAME)
    return shipper.local, LocalWriter(shipper.local / NAME)


def settle_and_take(shipper: Shipper, at):
    """Two passes `stable` apart: a file put back is listed, then taken."""
    shipper.flow.run(at)
    return shipper.flow.run(at + STABLE)


def answered_then_written_on(shipper: Shipper, sshd, part: bytes, later: bytes, name: str = NAME) -> None:
    """The WMS uploads `part` and pauses past `stable_seconds`: the bridge takes and answers it;
    then the writer goes on through the same handle, which followed the file."""
    upload = SlowUpload(sshd, shipper.remote / name)
    upload.write(part)
    try:
        shipper.ship()
        upload.write(later)
    finally:
        upload.close()


@pytest.mark.parametrize("source", ["sftp", "local"])
def test_rows_written_after_the_file_was_answered_are_taken_again_not_lost(make, sandbox, sshd, source):
    shipper = make()
    folder, upload = writer(shipper, source, sshd)
    upload.write(PART)  # header and one row, a line break: looks complete; the writer pauses
    try:
        shipper.ship()
        assert result_lines(folder, NAME) == [FIRST_ANSWER]
        assert files(folder / "archive") == {NAME: PART}
        upload.write(LATER.encode("cp1252") + b"\r\n")  # its handle followed the file into archive/
    finally:
        upload.close()

    report = shipper.flow.run(SHIP_TIME + timedelta(minutes=1))  # looks again at what it answered

    assert report.inbound.taken_again == 1
    assert files(folder) == {AGAIN: WHOLE}  # the whole file, back in the folder to be taken again
    assert files(folder / "archive") == {NAME: PART}  # the part read, which its result answers
    assert result_lines(folder, NAME) == [still_written(len(PART), len(WHOLE)), FIRST_ANSWER]
    assert shipper.ledger.inbound_grown(1).status == GrownStatus.DONE

    settle_and_take(shipper, SHIP_TIME + timedelta(minutes=2))

    assert result_lines(folder, AGAIN) == AGAIN_ANSWER
    assert files(folder / "archive") == {NAME: PART, AGAIN: WHOLE}
    assert files(folder) == files(folder / "processing") == files(folder / "error") == {}
    assert [r["orderId"] for r in requests_sent(sandbox)] == ["302-0000003-0000003", "111-0000001-0000001"]
    assert shipper.ledger.inbound_grown(1).again_id == 2
    settle_and_take(shipper, SHIP_TIME + timedelta(minutes=5))  # nothing more: the whole file did not grow
    assert len(sandbox.confirmations) == 2 and files(folder) == {}




def test_a_parcel_of_several_rows_cut_by_the_pause_says_which_item_is_not_in_it(make, sandbox, sshd):
    mug = "111-0000002-0000002;MUG-CER-350-BLU;1;DHL_PAKET;00340434161094060019;20.11.2026 16:50"
    tea = "111-0000002-0000002;TEA-INF-SS-01;1;DHL_PAKET;00340434161094060019;20.11.2026 16:50"
    shipper = make()
    # the pause falls between the parcel's two rows (newuser-6 N1)
    answered_then_written_on(shipper, sshd, acme_rows(mug), tea.encode("cp1252") + b"\r\n")

    shipper.flow.run(SHIP_TIME + timedelta(minutes=1))
    settle_and_take(shipper, SHIP_TIME + timedelta(minutes=2))

    assert len(sandbox.confirmations) == 1  # the mug's parcel, once
    assert result_lines(shipper.remote, AGAIN) == [
        "2;duplicate;111-0000002-0000002;MUG-CER-350-BLU;1;00340434161094060019;already confirmed on Amazon as "
        "package 1 from VERSAND_SLOW.csv row 2 on 2026-11-20",
        "3;rejected;111-0000002-0000002;TEA-INF-SS-01;1;00340434161094060019;the parcel with tracking number "
        "00340434161094060019 was already confirmed on Amazon as package 1 (VERSAND_SLOW.csv row 2) without this "
        "row's item: add the item to that shipment in Seller Central, or ship it with a tracking number of its own"]


def test_a_long_name_is_put_back_under_a_name_that_stays_as_it_is(make, sandbox, sshd):
    from bridge.formats.inbound import MAX_NAME, safe_name

    name = "V" * (MAX_NAME - 4) + ".csv"  # as long as a name may be: "-again-1" must not make it longer
    shipper = make()
    answered_then_written_on(shipper, sshd, PART, LATER.encode("cp1252") + b"\r\n", name=name)

    shipper.flow.run(SHIP_TIME + timedelta(minutes=1))
    (again,) = files(shipper.remote)
    settle_and_take(shipper, SHIP_TIME + timedelta(minutes=2))

    assert len(again) <= MAX_NAME and safe_name(again) == again and again.endswith("-again-1.csv")
    assert f"results/{again[:-4]}.result.csv" in result_lines(shipper.remote, name)[0]  # named as it is written
    assert result_lines(shipper.remote, again) == [line.replace(NAME, name) for line in AGAIN_ANSWER]


def test_a_first_part_answered_into_error_is_no_alarm_once_the_whole_file_is_taken_again(make, sandbox, sshd):
    shipper = make()
    upload = SlowUpload(sshd, shipper.remote / NAME)
    upload.write(acme_rows())  # the header, then a pause: a file with no rows goes to error/
    try:
        shipper.ship()
        assert files(shipper.remote / "error") == {NAME: acme_rows()}
        upload.write(FIRST.encode("cp1252") + b"\r\n")
    finally:
        upload.close()

    shipper.flow.run(SHIP_TIME + timedelta(minutes=1))
    settle_and_take(shipper, SHIP_TIME + timedelta(minutes=2))

    assert len(sandbox.confirmations) == 1
    since = SHIP_TIME - timedelta(days=1)
    assert shipper.ledger.answered_since("shipments", "wh", since)["files_in_error"] == 0  # attack-7 F7
    assert shipper.ledger.inbound_report("shipments")["errors"] == []

def test_a_file_already_holding_the_put_back_name_is_not_taken_in_its_place(make, sandbox, sshd):
    shipper = make()
    answered_then_written_on(shipper, sshd, PART, LATER.encode("cp1252") + b"\r\n")
    (shipper.remote / AGAIN).write_bytes(PART)  # a clerk's copy, under the very name (attack-7 F2)

    shipper.flow.run(SHIP_TIME + timedelta(minutes=1))

    again = AGAIN.replace("-again-1", "-again-1-2")
    assert files(shipper.remote) == {AGAIN: PART, again: WHOLE}
    settle_and_take(shipper, SHIP_TIME + timedelta(minutes=2))
    assert [r["orderId"] for r in requests_sent(sandbox)] == ["302-0000003-0000003", "111-0000001-0000001"]
    assert result_lines(shipper.remote, again) == AGAIN_ANSWER
    assert files(shipper.remote) == files(shipper.remote / "processing") == {}

def test_rows_written_while_the_file_is_in_processing_are_taken_again_before_it_is_answered(make, sandbox, sshd):
    uploads = []

    def writes_on(step: str) -> None:
        if step == "read" and uploads:  # after the part was read, before it is answered
            uploads.pop().write(LATER.encode("cp1252") + b"\r\n")

    shipper = make(checkpoint=writes_on)
    upload = SlowUpload(sshd, shipper.remote / NAME)
    upload.write(PART)
    uploads.append(upload)
    try:
        shipper.ship()
    finally:
        upload.close()

    assert result_lines(shipper.remote, NAME) == [still_written(len(PART), len(WHOLE)), FIRST_ANSWER]
    assert files(shipper.remote) == {AGAIN: WHOLE}
    assert files(shipper.remote / "archive") == {NAME: PART}

    settle_and_take(shipper, SHIP_TIME + timedelta(minutes=1))

    assert result_lines(shipper.remote, AGAIN) == AGAIN_ANSWER
    assert len(sandbox.confirmations) == 2
    assert files(shipper.remote) == files(shipper.remote / "processing") == {}


def test_an_answered_file_is_looked_at_again_only_for_incomplete_limit_minutes(make, sandbox, sshd):
    shipper = make(shipments="incomplete_limit_minutes = 10")
    answered_then_written_on(shipper, sshd, PART, LATER.encode("cp1252") + b"\r\n")

    shipper.flow.run(SHIP_TIME + timedelta(minutes=11))

    assert files(shipper.remote / "archive") == {NAME: WHOLE}  # too late: left where it is
    assert files(shipper.remote) == {} and len(sandbox.confirmations) == 1


def test_an_answered_file_changed_otherwise_than_at_its_end_is_left_alone(make, sandbox):
    """A clerk who opens the archived file and saves it edited: not a writer going on."""
    shipper = make()
    (shipper.remote / NAME).write_bytes(PART)
    shipper.ship()
    (shipper.remote / "archive" / NAME).write_bytes(WHOLE.replace(b"KAN-GLAS-1L", b"KAN-GLAS-2L"))

    shipper.flow.run(SHIP_TIME + timedelta(minutes=1))
    shipper.flow.run(SHIP_TIME + timedelta(minutes=2))

    assert files(shipper.remote) == {} and len(sandbox.confirmations) == 1
    assert result_lines(shipper.remote, NAME) == [FIRST_ANSWER]
    assert shipper.ledger.inbound_grown(1).status == GrownStatus.EDITED


def test_a_file_that_grows_while_it_is_read_is_put_back_to_settle_again(make, sandbox, sshd):
    from bridge.edges.amazon_shipments import AmazonShipments
    from bridge.edges.sftp import SftpDrop
    from bridge.flows.shipments import ShipmentsFlow

    shipper = make()
    upload = SlowUpload(sshd, shipper.remote / NAME)
    upload.write(PART)

    class WrittenDuringTheRead(SftpDrop):
        def read_into(self, path, stream):
            size = super().read_into(path, stream)
            if path.endswith(f"processing/{NAME}") and not upload.handle.closed:
                upload.write(LATER.encode("cp1252") + b"\r\n")  # the writer goes on meanwhile
                upload.close()
            return size

    flow = ShipmentsFlow(shipper.settings, shipper.ledger, AmazonShipments(shipper.settings.amazon, backoff=0.01),
                         open_drop=lambda w: WrittenDuringTheRead(w.sftp), sleep=lambda seconds: None)
    flow.run(SHIP_TIME - STABLE)
    report = flow.run(SHIP_TIME)

    assert report.inbound.incomplete == 1 and sandbox.confirmations == []
    assert files(shipper.remote) == {NAME: WHOLE}  # put back, to settle again
    flow.run(SHIP_TIME + STABLE)  # changed since the listing before it was taken: settles anew
    flow.run(SHIP_TIME + 2 * STABLE)
    assert result_lines(shipper.remote, NAME) == [FIRST_ANSWER, AGAIN_ANSWER[1]]
    assert len(sandbox.confirmations) == 2


class Crash(BaseException):
    """A process death: not an error the flow may catch."""


AFTER_ANSWER = ["grown_found", "put_back", "restored", "result_uploaded"]
BEFORE_ANSWER = ["grown_found", "result_uploaded", "result_renamed", "put_back", "restored", "moved"]


@pytest.mark.parametrize("where, step", [("archive", step) for step in AFTER_ANSWER]
                         + [("processing", step) for step in BEFORE_ANSWER])
def test_a_crash_at_any_step_of_taking_a_file_again_converges(make, sandbox, sshd, where, step):
    uploads, armed = [], {"on": False, "crashed": False}

    def crash(name: str) -> None:
        if name == "read" and where == "processing" and uploads:
            uploads.pop().write(LATER.encode("cp1252") + b"\r\n")
        if name == "grown_found":
            armed["on"] = True
        if armed["on"] and name == step and not armed["crashed"]:
            armed["crashed"] = True
            raise Crash(name)

    shipper = make(checkpoint=crash)
    upload = SlowUpload(sshd, shipper.remote / NAME)
    upload.write(PART)
    try:
        if where == "processing":
            uploads.append(upload)
            shipper.flow.run(SHIP_TIME - STABLE)
            with pytest.raises(Crash):
                shipper.flow.run(SHIP_TIME)
        else:
            shipper.ship()
            upload.write(LATER.encode("cp1252") + b"\r\n")
            with pytest.raises(Crash):
                shipper.flow.run(SHIP_TIME + timedelta(minutes=1))
    finally:
        upload.close()

    restarted = shipper.restart()
    for minutes in (2, 3, 4):
        restarted.flow.run(SHIP_TIME + timedelta(minutes=minutes))

    folder = restarted.remote
    assert result_lines(folder, NAME) == [still_written(len(PART), len(WHOLE)), FIRST_ANSWER]
    assert result_lines(folder, AGAIN) == AGAIN_ANSWER
    assert files(folder / "archive") == {NAME: PART, AGAIN: WHOLE}
    assert files(folder) == files(folder / "processing") == files(folder / "error") == {}
    assert set(files(folder / "results")) == {"VERSAND_SLOW.result.csv", "VERSAND_SLOW-again-1.result.csv"}
    sent = requests_sent(sandbox)
    assert [r["orderId"] for n, r in enumerate(sent) if r not in sent[:n]] == [
        "302-0000003-0000003", "111-0000001-0000001"]  # a re-send repeats the same package id
    assert restarted.ledger.shipment_counts()["confirmed"] == 2


def test_the_rest_of_a_file_appended_after_it_was_taken_says_what_it_likely_is(make, sandbox):
    """A script appending a line at a time with `>>` opens the file by its name each time: after
    the bridge took the first part, the next line makes a new file of the same name, without
    the header. Its rejection says what it likely is."""
    shipper = make()
    shipper.local.mkdir(parents=True, exist_ok=True)
    with open(shipper.local / "SCAN_1.csv", "ab") as scan:
        scan.write(PART)
    shipper.ship()
    with open(shipper.local / "SCAN_1.csv", "ab") as scan:  # the next parcel, scanned later
        scan.write(LATER.encode("cp1252") + b"\r\n")

    shipper.ship(SHIP_TIME + timedelta(minutes=2))

    assert result_lines(shipper.local, "SCAN_1.csv") == [FIRST_ANSWER]
    assert result_lines(shipper.local, "SCAN_1~2.csv") == [
        ";rejected;;;;;row 1 has 6 fields and none is one of the columns 'Auftragsnummer', 'Artikelnummer', "
        "'Menge', 'Versandart', 'Sendungsnummer', 'Versanddatum': is the header row missing, or is this another "
        "layout's file? A file of the same name was taken from this folder at 2026-11-20T18:00:00Z (its answer: "
        "results/SCAN_1.result.csv): if this is the rest of that file, written after the bridge took it, join the "
        "two and drop the whole file again under a new name"]


@pytest.mark.parametrize("name, again", [
    ("VERSAND.csv", "VERSAND-again-7.csv"),
    ("VERSAND-again-6.csv", "VERSAND-again-7.csv"),  # put back once already: the name does not grow
    ("VERSAND-again-6-2.csv", "VERSAND-again-7.csv"),
    ("VERSAND", "VERSAND-again-7"),
    ("-again-6.csv", "-again-6-again-7.csv"),  # nothing but the mark: kept
])
def test_the_put_back_name_carries_one_mark(name, again):
    from bridge.flows.inbound import _again_name
    from bridge.ledger import StoredInbound

    stored = StoredInbound(7, "shipments", "wh", "sftp", name, name, 1, "", "received", None, "", None, "", "")
    assert _again_name(stored, lambda candidate: False) == again
