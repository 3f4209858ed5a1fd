"""Which stock file a publish takes, and what a person is told (new-user review 2): a file dated
in the future is refused and takes no other file's place; a file that can never be published
(nothing to send) does not throw away the good file before it; "the last published file" is the
one Amazon processed last, so one wrong date cannot hold every later file; a held file keeps
saying so (exit 2) on every push; and the dry run makes push's own choice over every file."""

from __future__ import annotations

from datetime import timedelta

import pytest

from stocking import NOW, STABLE, Stocker, clocked_sandbox, drop, files, load, make_config, result_lines
from test_stock_intake import DAY2, FULL, acme

TYPO = "the file's stock time 2027-11-26T20:00:00Z is in the future"


@pytest.fixture
def sandbox():
    with clocked_sandbox() as running:
        yield running


@pytest.fixture
def make(tmp_path, sshd, sftp_root, sandbox):
    made = []

    def make(**options) -> Stocker:
        stocker = Stocker(load(make_config(tmp_path, sshd, sftp_root, sandbox, "acme-csv", **options)))
        made.append(stocker)
        return stocker
    yield make
    for stocker in made:
        stocker.close()


def taken_in(stocker: Stocker, name: str, data: bytes, at) -> None:
    """The service takes the file in; it waits for the publish."""
    drop(stocker.remote, name, data)
    stocker.flow.poll(at)
    stocker.flow.poll(at + STABLE)
    assert name in files(stocker.remote / "processing")


def test_a_file_dated_a_year_ahead_is_refused_and_the_good_file_before_it_is_published(make, sandbox):
    stocker = make()
    taken_in(stocker, "BESTAND_1.csv", acme(*FULL), NOW - timedelta(hours=1))
    taken_in(stocker, "BESTAND_2.csv", acme(*FULL, stand="26.11.2027 21:00"), NOW - timedelta(minutes=30))

    report = stocker.push()

    assert [(o.name, o.status) for o in report.outcomes] == [("BESTAND_2.csv", "held"), ("BESTAND_1.csv", "published")]
    assert report.notes == ["BESTAND_1.csv took the publish in place of the newer BESTAND_2.csv, which cannot be "
                            "published"]
    assert len(sandbox.feeds) == 1
    assert result_lines(stocker.remote, "BESTAND_1.csv") == [
        ";published;;;passed the safety gates. 5 SKUs sent, Amazon took 5"]
    assert result_lines(stocker.remote, "BESTAND_2.csv")[0].startswith(f";held;;;held: {TYPO}: 365 days ahead")
    assert list(files(stocker.remote / "error")) == ["BESTAND_2.csv"]
    assert files(stocker.remote / "processing") == {}


def test_a_header_only_file_does_not_throw_away_the_good_file_waiting_for_the_publish(make, sandbox):
    stocker = make()
    taken_in(stocker, "Bestand_svc.csv", acme(*FULL), NOW - timedelta(hours=1))
    taken_in(stocker, "BESTAND_leer.csv", acme(), NOW - timedelta(minutes=30))

    report = stocker.push()

    assert [o.status for o in report.outcomes] == ["held", "published"] and len(sandbox.feeds) == 1
    assert result_lines(stocker.remote, "Bestand_svc.csv") == [
        ";published;;;passed the safety gates. 5 SKUs sent, Amazon took 5"]
    assert result_lines(stocker.remote, "BESTAND_leer.csv") == [
        ";held;;;held: the file has no stock rows (it is empty or has only a header)"]
    assert list(files(stocker.remote / "error")) == ["BESTAND_leer.csv"]
    assert list(files(stocker.remote / "archive")) == ["Bestand_svc.csv"]


def test_the_file_amazon_processed_last_is_the_last_published_so_a_wrong_date_holds_one_file_at_most(make, sandbox):
    """A file dated four days ahead (within a generous tolerance) was published: the next
    day's file is older and held; once it is forced, the day after's is compared with it."""
    stocker = make(stock="future_tolerance_minutes = 10080")
    drop(stocker.remote, "TYPO.csv", acme(*FULL, stand="30.11.2026 21:00"))
    assert [o.status for o in stocker.push().outcomes] == ["published"]
    drop(stocker.remote, "DAY2.csv", acme(*FULL, stand="27.11.2026 21:00"))
    assert [o.status for o in stocker.push(DAY2).outcomes] == ["held"]
    assert [o.status for o in stocker.push(DAY2 + timedelta(minutes=5), force=True).outcomes] == ["published"]
    assert stocker.ledger.last_published_stock().name == "DAY2.csv"

    drop(stocker.remote, "DAY3.csv", acme(*FULL, stand="28.11.2026 21:00"))
    report = stocker.push(DAY2 + timedelta(days=1))

    assert [(o.name, o.status, o.reason) for o in report.outcomes] == [
        ("DAY3.csv", "published", "passed the safety gates")]


def test_every_push_while_a_file_is_held_says_so_and_needs_a_person(make, sandbox):
    stocker = make()
    drop(stocker.remote, "DAY1.csv", acme(*FULL))
    stocker.push()
    drop(stocker.remote, "DAY2.csv", acme(*FULL[:3], stand="27.11.2026 21:00"))  # 2 of 5 SKUs missing
    assert stocker.push(DAY2).needs_a_person

    again = stocker.push(DAY2 + timedelta(minutes=5))

    assert again.needs_a_person and again.outcomes == []
    assert again.notes == [
        "'DAY2.csv' is held since 2026-11-27T22:00:30Z: 2 of the 5 SKUs published lately (40.0%) are "
        "missing from this file, more than the limit of 10% (e.g. CST-CORK-4PK, TEA-INF-SS-01); check it with "
        "the warehouse: `fbm-bridge inventory push --force` publishes it, a newer file replaces it"]


def test_the_dry_run_makes_the_choice_push_makes_over_every_file(make, sandbox, tmp_path):
    stocker = make()
    drop(stocker.remote, "Bestand_2030.csv", acme(*FULL))
    drop(stocker.remote, "Bestand_2.xlsx", b"PK\x03\x04 not a workbook")
    drop(stocker.remote, "Bestand_3.csv", acme())  # header only: nothing to send
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    preview, notes = stocker.flow.preview(scratch, now=NOW)

    assert preview.name == "Bestand_2030.csv" and preview.verdict.publish
    assert notes[0].startswith("Bestand_2.xlsx in the sftp stock folder cannot be read (")
    assert notes[0].endswith("): push would answer it into error/")
    assert notes[1:] == [
        "Bestand_2030.csv: in the sftp stock folder, not yet taken in; push would take it",
        "Bestand_3.csv: in the sftp stock folder, not yet taken in; push would take it",
        "Bestand_3.csv: push would answer it into error/ (held: the file has no stock rows (it is empty or has "
        "only a header)) and try the file before it"]

    report = stocker.push()
    assert [(o.name, o.status) for o in report.outcomes] == [("Bestand_3.csv", "held"),
                                                             ("Bestand_2030.csv", "published")]


def test_the_dry_run_names_the_held_file_and_what_force_would_do(make, sandbox, tmp_path):
    stocker = make()
    drop(stocker.remote, "DAY1.csv", acme(*FULL))
    stocker.push()
    drop(stocker.remote, "DAY2.csv", acme(*FULL[:3], stand="27.11.2026 21:00"))
    stocker.push(DAY2)
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    preview, notes = stocker.flow.preview(scratch, now=DAY2)

    assert preview is None and len(notes) == 1
    assert notes[0].startswith("'DAY2.csv' is held since 2026-11-27T22:00:30Z: 2 of the 5 SKUs")
    assert notes[0].endswith("`fbm-bridge inventory push --force` publishes it, a newer file replaces it "
                             "(with --dry-run --force: its documents)")
    forced, _ = stocker.flow.preview(scratch, now=DAY2, force=True)
    assert forced.name == "DAY2.csv"


def test_an_order_shipped_partly_by_hand_is_settled_and_its_units_stop_counting_in_flight(make, sandbox):
    """111-0000005-0000005: the plate parcel through the bridge, the mug shipped by hand in
    Seller Central. Once settled, status stops listing it and on_hand stops subtracting it."""
    stocker = make(shipments=True)
    stocker.deliver_orders()
    stocker.ledger.refresh_shipment_due()
    before = stocker.ledger.units_in_flight("wh", NOW)
    listed = {o["order_id"] for o in stocker.ledger.unconfirmed_orders()}
    assert "111-0000005-0000005" in listed

    assert stocker.ledger.settle_order("111-0000005-0000005", "mug shipped by hand", NOW)
    assert not stocker.ledger.settle_order("111-0000005-0000005", "", NOW)  # once

    after = stocker.ledger.units_in_flight("wh", NOW)
    assert sum(before.values()) - sum(after.values()) == 3  # its mug and two plates
    assert {o["order_id"] for o in stocker.ledger.unconfirmed_orders()} == listed - {"111-0000005-0000005"}
    with pytest.raises(KeyError):
        stocker.ledger.settle_order("999-0000000-0000000", "", NOW)
