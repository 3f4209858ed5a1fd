"""Package ids are never issued twice for a seller, whatever happens to the ledger.

A package's ledger id is the packageReferenceId Amazon receives (with shipments.send = "feed",
its MessageID and MerchantFulfillmentID), and Amazon takes an id it has seen on an order as an
edit of that package. So after a backup is restored, another folder's ledger accepted, or a
fresh start, the next packages get ids above every id issued before: the state folder keeps the
highest one outside the ledger (state.json), written before any package goes to Amazon.

The operator's path: `fbm-bridge` as a subprocess, OpenSSH, the SP-API sandbox.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone

import pytest
from lxml import etree

from bridge import state
from bridge.ledger import Ledger
from harness import load
from shipping import GOLDEN_INPUTS, SHIP_TIME, STABLE, Shipper, feed_documents, golden, make_config
from test_cli import bridge

ACME = GOLDEN_INPUTS["acme-csv"]
HEADER = "Auftragsnummer;Artikelnummer;Menge;Versandart;Sendungsnummer;Versanddatum\r\n"
# The next day's file: the other item of 203-0000004, and the coasters of 111-0000002, whose
# first two parcels the golden file confirmed (as packages 2 and 3).
NEXT_DAY = (HEADER + "203-0000004-0000004;TEA-INF-SS-01;2;DHL_PAKET;00340434161094099999;20.11.2026 18:30\r\n"
            "111-0000002-0000002;CST-CORK-4PK;2;DHL_PAKET;00340434161094088888;20.11.2026 18:31\r\n").encode("cp1252")


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def config(tmp_path, sshd, sftp_root, sandbox):
    """Orders delivered, a config that looks up orders a fresh ledger does not know."""
    path = make_config(tmp_path, sshd, sftp_root, sandbox, "acme-csv",
                       shipments="lookup_unknown_orders = true")
    shipper = Shipper(load(path))
    shipper.deliver_orders()
    shipper.ledger.close()
    return path


def process(config, sftp_root, name: str, data: bytes, at: datetime) -> None:
    """The file dropped in the SFTP folder, and two passes `stable` apart: taken and sent."""
    (sftp_root / "out" / name).write_bytes(data)
    bridge("shipments", "process", "--now", iso(at - STABLE), config=config)
    done = bridge("shipments", "process", "--now", iso(at), config=config)
    assert done.returncode == 0 and "errors=0" in done.stdout, done.stdout + done.stderr


def ids_sent(sandbox) -> list[tuple[str, int]]:
    """(order, package id) as Amazon received them, by confirmShipment or in a feed document."""
    sent = [(c["orderId"], int(c["packageDetail"]["packageReferenceId"])) for c in sandbox.confirmations]
    for document in feed_documents(sandbox):
        for message in etree.fromstring(document).iter("Message"):
            message_id = int(message.findtext("MessageID"))
            assert int(message.findtext("OrderFulfillment/MerchantFulfillmentID")) == message_id
            sent.append((message.findtext("OrderFulfillment/AmazonOrderID"), message_id))
    return sent


def restore_backup(config, state_dir) -> None:
    """README, Backups and restoring one: the newest backup copied over the ledger, accepted."""
    [backup] = sorted((state_dir / "backups").iterdir())
    for path in state_dir.glob("ledger.sqlite*"):
        path.unlink()
    shutil.copy(backup, state_dir / "ledger.sqlite")
    accepted = bridge("accept-restore", config=config)
    assert accepted.returncode == 0, accepted.stderr


def lose_the_ledger_and_start_afresh(config, state_dir) -> None:
    """README, A lost ledger: no backup will do; fresh-start."""
    for path in state_dir.glob("ledger.sqlite*"):
        path.unlink()
    fresh = bridge("fresh-start", "--from", "2026-11-20T18:00:00Z", config=config)
    assert fresh.returncode == 0, fresh.stderr
    assert "package ids (packageReferenceId) continue above 5: the highest this state folder issued" in fresh.stdout


def lose_the_ledger_and_state_json(config, state_dir) -> None:
    """The disk lost the ledger and state.json: the floor comes from the time."""
    (state_dir / "state.json").unlink()
    for path in state_dir.glob("ledger.sqlite*"):
        path.unlink()
    refused = bridge("shipments", "process", "--now", iso(SHIP_TIME), config=config)
    assert refused.returncode == 2 and "fresh-start --from TIME" in refused.stderr
    fresh = bridge("fresh-start", "--from", "2026-11-20T18:00:00Z", config=config)
    assert fresh.returncode == 0, fresh.stderr
    assert ("package ids (packageReferenceId) continue above" in fresh.stdout
            and "derived from the time, because this folder's record of the ids it issued is lost" in fresh.stdout)


def restored_where_only_the_ids_show_it(config, state_dir) -> None:
    """A backup copied back that nothing but the ids shows to be older (state.json's progress
    set back by hand, say): it is not refused, and still continues above the folder's ids."""
    [backup] = sorted((state_dir / "backups").iterdir())
    for path in state_dir.glob("ledger.sqlite*"):
        path.unlink()
    shutil.copy(backup, state_dir / "ledger.sqlite")
    ledger = Ledger(state_dir / "ledger.sqlite", None)
    progress = ledger.progress()
    ledger.close()
    marker = json.loads((state_dir / "state.json").read_text())
    (state_dir / "state.json").write_text(json.dumps({**marker, "progress": progress}))


AFTERWARDS = [restore_backup, lose_the_ledger_and_start_afresh, lose_the_ledger_and_state_json,
              restored_where_only_the_ids_show_it]


@pytest.mark.parametrize("send", ["confirmShipment", "feed"])
@pytest.mark.parametrize("afterwards", AFTERWARDS, ids=[f.__name__ for f in AFTERWARDS])
def test_new_packages_get_ids_above_every_id_issued_before(config, sftp_root, sandbox, send, afterwards):
    config.write_text(config.read_text() + f'send = "{send}"\n')
    state_dir = config.parent / "state"
    assert bridge("backup", config=config).returncode == 0  # the nightly backup, before the file
    process(config, sftp_root, ACME, (golden("acme-csv") / ACME).read_bytes(), SHIP_TIME)
    before = ids_sent(sandbox)
    assert sorted(package for _, package in before) == [1, 2, 3, 4, 5]
    coasters_before = {ref: dict(lines) for ref, lines in sandbox._packages["111-0000002-0000002"].items()}

    afterwards(config, state_dir)
    process(config, sftp_root, "VERSAND_2.csv", NEXT_DAY, SHIP_TIME + timedelta(hours=1))

    after = ids_sent(sandbox)[len(before):]
    assert len(after) == 2
    assert min(package for _, package in after) > max(package for _, package in before)
    assert len(set(after + before)) == len(after) + len(before)
    coasters = sandbox._packages["111-0000002-0000002"]
    assert {ref: coasters[ref] for ref in coasters_before} == coasters_before  # the first parcels stand
    assert len(coasters) == len(coasters_before) + 1
    marker = json.loads((state_dir / "state.json").read_text())
    assert marker["package_ids"] == max(package for _, package in after)


def test_the_highest_id_reaches_state_json_before_the_package_reaches_amazon(config, sftp_root, sandbox):
    state_dir = config.parent / "state"
    seen = []

    class Watched(list):
        def append(self, request):  # what state.json says at the moment Amazon takes a package
            seen.append((int(request["packageDetail"]["packageReferenceId"]),
                         json.loads((state_dir / "state.json").read_text())["package_ids"]))
            super().append(request)

    sandbox.confirmations = Watched()
    process(config, sftp_root, ACME, (golden("acme-csv") / ACME).read_bytes(), SHIP_TIME)

    assert [package for package, _ in seen] == [1, 2, 3, 4, 5]
    assert all(kept >= package for package, kept in seen)


def test_a_dry_run_shows_the_ids_a_restored_ledger_will_continue_with(config, sftp_root, sandbox):
    state_dir = config.parent / "state"
    assert bridge("backup", config=config).returncode == 0
    process(config, sftp_root, ACME, (golden("acme-csv") / ACME).read_bytes(), SHIP_TIME)
    restored_where_only_the_ids_show_it(config, state_dir)

    sftp_root.joinpath("next.csv").write_bytes(NEXT_DAY)
    done = bridge("replay", str(sftp_root / "next.csv"), "--warehouse", "wh", "--dry-run",
                  "--now", iso(SHIP_TIME), config=config)

    assert done.returncode == 0, done.stderr
    assert '"packageReferenceId": "6"' in done.stdout and '"packageReferenceId": "7"' in done.stdout


def test_the_time_floor_is_above_ids_of_an_earlier_time_floor_and_fits_a_feed_message_id():
    earlier = state.time_floor(datetime(2026, 11, 20, tzinfo=timezone.utc))
    later = state.time_floor(datetime(2026, 11, 21, tzinfo=timezone.utc))

    assert later - earlier == 86400  # room for one package a second in between
    assert state.time_floor(datetime(2090, 1, 1, tzinfo=timezone.utc)) < 2**31 - 1  # MessageID's range


def test_a_restored_ledger_records_why_its_ids_jumped(config, sftp_root, sandbox):
    state_dir = config.parent / "state"
    assert bridge("backup", config=config).returncode == 0
    process(config, sftp_root, ACME, (golden("acme-csv") / ACME).read_bytes(), SHIP_TIME)
    restored_where_only_the_ids_show_it(config, state_dir)

    assert bridge("status", config=config).returncode == 0
    bridge("shipments", "process", "--now", iso(SHIP_TIME), config=config)

    ledger = Ledger(state_dir / "ledger.sqlite", None)
    try:
        events = [e for e in ledger.state_events() if e["kind"] == "package_ids_continued"]
        assert [e["detail"] for e in events] == [
            "package ids continue above 5, the highest this state folder issued; the ledger knew only 0"
            " (an older copy?)"]
        assert ledger.next_package_id() == 6
    finally:
        ledger.close()


def test_a_backup_from_before_a_confirmation_file_is_refused_and_accept_restore_keeps_that_file(
        config, sftp_root, sandbox):
    state_dir = config.parent / "state"
    assert bridge("backup", config=config).returncode == 0
    process(config, sftp_root, ACME, (golden("acme-csv") / ACME).read_bytes(), SHIP_TIME)
    [backup] = sorted((state_dir / "backups").iterdir())
    for path in state_dir.glob("ledger.sqlite*"):
        path.unlink()
    shutil.copy(backup, state_dir / "ledger.sqlite")
    [copy] = (state_dir / "inbound" / "shipments" / "wh").iterdir()

    refused = bridge("shipments", "process", "--now", iso(SHIP_TIME), config=config)
    accepted = bridge("accept-restore", config=config)

    assert refused.returncode == 2 and "is older than this state folder's last run" in refused.stderr
    assert accepted.returncode == 0, accepted.stderr
    [aside] = state_dir.glob("after-restore-*")
    assert accepted.stdout.splitlines()[1:] == [
        "1 confirmation or stock file(s) were taken in that this ledger does not know (what they confirmed on Amazon"
        " is not in it: `status` may list those orders as not confirmed). Their copies (named by their SHA-256;"
        " the files themselves are in the folders' archive/ or error/) are kept in"
        f" {aside} for retention.spool_days (30 days), never deleted before:",
        f"  {aside / 'inbound' / 'shipments' / 'wh' / copy.name}  received {accepted.stdout.split('received ')[1][:20]}",
        "package ids (packageReferenceId) continue above 5: the highest this state folder issued",
    ]
    assert (aside / "inbound" / "shipments" / "wh" / copy.name).read_bytes() == (golden("acme-csv") / ACME).read_bytes()
