"""Shipments up by the order fulfillment feed (shipments.send = "feed"), end to end: orders
delivered over OpenSSH, confirmation files dropped in the warehouse's SFTP folder, one
POST_ORDER_FULFILLMENT_DATA document per run on the SP-API sandbox, which applies it to its
orders like Amazon and answers with an XML processing report.

What a seller relies on: the goldens go as byte-identical documents; every result in the report
comes back to its package and its file rows; a feed Amazon has not finished is polled again by
the next run; a crash at any step neither sends a package twice nor loses one.
"""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest

from bridge.edges.amazon_feeds import AmazonFeeds
from bridge.ledger import FeedStatus, PackageStatus
from harness import MARKETPLACES, load
from shipping import (
    GOLDEN_INPUTS, SHIP_TIME, STABLE, Shipper, expected_feed, feed_documents, files, golden, make_config)
from test_shipments_flow import acme_rows, drop, result_lines, shipped_units

ACME_FILE = GOLDEN_INPUTS["acme-csv"]
FEED = 'send = "feed"'
LATER = SHIP_TIME + timedelta(minutes=5)


@pytest.fixture
def make(tmp_path, sshd, sftp_root, sandbox):
    def make(mapping: str = "acme-csv", shipments: str = FEED) -> Shipper:
        """A bridge sending by feed, with the seed's orders delivered."""
        shipper = Shipper(load(make_config(tmp_path, sshd, sftp_root, sandbox, mapping, shipments=shipments)))
        shipper.deliver_orders()
        return shipper
    return make


def golden_file(shipper: Shipper, mapping: str = "acme-csv") -> None:
    name = GOLDEN_INPUTS[mapping]
    drop(shipper.remote, name, (golden(mapping) / name).read_bytes())


# --- goldens ----------------------------------------------------------------------------------

@pytest.mark.parametrize("mapping", ["acme-csv", "globex-xml", "initech-xlsx"])
def test_a_golden_file_goes_as_one_fulfillment_feed_document_and_each_row_is_answered(make, sandbox, mapping):
    shipper = make(mapping)
    golden_file(shipper, mapping)

    report = shipper.ship()

    document, result = expected_feed(mapping)
    assert report.all_errors == [] and report.feeds_recorded == 1 and report.feeds_waiting == 0
    assert feed_documents(sandbox) == [document]
    assert sandbox.confirmations == []  # nothing went by confirmShipment
    (feed,) = sandbox.feeds.values()
    assert feed["contentType"] == "text/xml; charset=UTF-8" and feed["status"] == "DONE"
    assert files(shipper.remote / "results") == {f"{GOLDEN_INPUTS[mapping].rsplit('.', 1)[0]}.result.csv": result}
    assert list(files(shipper.remote / "archive")) == [GOLDEN_INPUTS[mapping]]
    assert files(shipper.remote) == files(shipper.remote / "processing") == {}


def test_the_sandbox_took_each_package_of_the_document_as_a_fulfillment(make, sandbox):
    shipper = make()
    golden_file(shipper)
    shipper.ship()

    assert [(f["orderId"], f["packageReferenceId"], f["carrierCode"], f["trackingNumber"], f["via"])
            for f in sandbox.fulfillments] == [
        ("302-0000003-0000003", "1", "DHL", "00340434161094042557", "feed 50000000001"),
        ("111-0000002-0000002", "2", "DHL", "00340434161094042564", "feed 50000000001"),
        ("111-0000002-0000002", "3", "DHL", "00340434161094042571", "feed 50000000001"),
        ("203-0000004-0000004", "4", "Other", "H10236548723914", "feed 50000000001"),
        ("111-0000005-0000005", "5", "Deutsche Post", "LX981203355DE", "feed 50000000001")]
    assert sandbox.fulfillments[3]["carrierName"] == "Hermes Germany"
    (feed,) = sandbox.feeds.values()
    assert feed["marketplaceIds"] == sorted(MARKETPLACES)  # the packages' marketplaces, one document


def test_partial_and_multi_package_shipments_by_feed_leave_the_order_partially_shipped(make, sandbox):
    shipper = make()
    golden_file(shipper)
    shipper.ship()

    assert shipped_units(sandbox, "111-0000002-0000002") == {
        "50000002000001": 6, "50000002000002": 3, "50000002000003": 0}
    assert sandbox.order("111-0000002-0000002")["fulfillment"]["fulfillmentStatus"] == "PARTIALLY_SHIPPED"
    assert sandbox.order("302-0000003-0000003")["fulfillment"]["fulfillmentStatus"] == "SHIPPED"
    assert shipper.ledger.shipment_counts() == {"accepted": 0, "sent": 0, "confirmed": 5, "rejected": 0}

    drop(shipper.remote, "VERSAND_2.csv", acme_rows(
        "111-0000002-0000002;CST-CORK-4PK;2;DHL_PAKET;00340434161094042588;20.11.2026 18:05"))
    shipper.ship(SHIP_TIME + timedelta(minutes=10))
    assert sandbox.order("111-0000002-0000002")["fulfillment"]["fulfillmentStatus"] == "SHIPPED"
    assert result_lines(shipper.remote, "VERSAND_2.csv") == [
        "2;accepted;111-0000002-0000002;CST-CORK-4PK;2;00340434161094042588;confirmed on Amazon as package 6 "
        "(feed 50000000002)"]


# --- Amazon's answers, row by row ----------------------------------------------------------------

def test_each_error_in_the_report_rejects_its_package_and_its_rows_in_amazons_words(make, sandbox):
    shipper = make()
    # The seller shipped 111-0000005's mug by hand before the bridge: Amazon has none unshipped.
    drop(shipper.remote, "VERSAND_2.csv", acme_rows(
        "111-0000005-0000005;MUG-CER-350-BLU;1;DHL_PAKET;00340434161094042601;20.11.2026 16:45",
        "302-0000003-0000003;KAN-GLAS-1L;1;DHL_PAKET;00340434161094042557;20.11.2026 16:45",
        "111-0000005-0000005;PLT-STN-27CM-4;1;DHL_PAKET;00340434161094042601;20.11.2026 16:45"))
    report = shipper.ship()

    assert (report.confirmed, report.rejected) == (1, 1)
    assert result_lines(shipper.remote, "VERSAND_2.csv") == [
        "2;rejected;111-0000005-0000005;MUG-CER-350-BLU;1;00340434161094042601;Amazon refused package 1 "
        "(feed 50000000001): 18103: quantity for orderItemId 50000005000001 exceeds the unshipped quantity",
        "3;accepted;302-0000003-0000003;KAN-GLAS-1L;1;00340434161094042557;confirmed on Amazon as package 2 "
        "(feed 50000000001)",
        "4;rejected;111-0000005-0000005;PLT-STN-27CM-4;1;00340434161094042601;Amazon refused package 1 "
        "(feed 50000000001): 18103: quantity for orderItemId 50000005000001 exceeds the unshipped quantity"]
    assert "VERSAND_2.csv" in files(shipper.remote / "error")
    assert [shipper.ledger.package(n).status for n in (1, 2)] == [PackageStatus.REJECTED, PackageStatus.CONFIRMED]
    assert shipped_units(sandbox, "111-0000005-0000005")["50000005000002"] == 0  # a refused message changes nothing


def test_an_order_amazon_cancelled_after_the_file_was_read_is_refused_by_the_feed(make, sandbox):
    shipper = make()
    sandbox.feed_polls_until_done = 2
    drop(shipper.remote, "V.csv", acme_rows(
        "302-0000003-0000003;KAN-GLAS-1L;1;DHL_PAKET;00340434161094042557;20.11.2026 16:45"))
    shipper.ship()  # read and sent; Amazon has not processed it yet
    cancelled = sandbox.order("302-0000003-0000003")["fulfillment"]
    sandbox.update_order("302-0000003-0000003", fulfillment={**cancelled, "fulfillmentStatus": "CANCELLED"})
    shipper.flow.run(LATER)

    assert result_lines(shipper.remote, "V.csv") == [
        "2;rejected;302-0000003-0000003;KAN-GLAS-1L;1;00340434161094042557;Amazon refused package 1 "
        "(feed 50000000001): 18100: Order 302-0000003-0000003 is cancelled"]


# --- across runs ----------------------------------------------------------------------------------

def test_a_feed_amazon_has_not_finished_is_polled_again_by_the_next_runs(make, sandbox):
    shipper = make()
    sandbox.feed_polls_until_done = 3
    golden_file(shipper)

    first = shipper.ship()
    assert (first.feeds_recorded, first.feeds_waiting, first.waiting) == (1, 1, 5)
    assert list(files(shipper.remote / "processing")) == [ACME_FILE] and files(shipper.remote / "results") == {}
    drop(shipper.remote, "VERSAND_2.csv", acme_rows(
        "111-0000001-0000001;MUG-CER-350-BLU;2;DHL_PAKET;00340434161094042599;20.11.2026 17:00"))
    second = shipper.ship(LATER)  # two runs: the first feed is done; the next file goes in a second one
    assert (second.feeds_recorded, second.feeds_waiting) == (1, 1)
    assert files(shipper.remote / "results")[f"{ACME_FILE[:-4]}.result.csv"] == expected_feed("acme-csv")[1]
    assert list(files(shipper.remote / "processing")) == ["VERSAND_2.csv"]

    for minutes in (6, 7):
        last = shipper.flow.run(SHIP_TIME + timedelta(minutes=minutes))
    assert last.feeds_waiting == 0 and last.all_errors == []
    assert len(feed_documents(sandbox)) == 2  # each package sent once, in one of two documents
    assert result_lines(shipper.remote, "VERSAND_2.csv") == [
        "2;accepted;111-0000001-0000001;MUG-CER-350-BLU;2;00340434161094042599;confirmed on Amazon as package 6 "
        "(feed 50000000002)"]


def test_a_service_run_never_waits_for_amazon_and_shipments_process_waits_a_while(make, sandbox):
    shipper = make()
    pauses: list[float] = []
    shipper.flow.fulfillment._feeds = AmazonFeeds(shipper.settings.amazon, sleep=pauses.append, backoff=0.01)
    sandbox.feed_polls_until_done = 3
    golden_file(shipper)
    shipper.ship()  # as the service runs it
    assert pauses == [] and shipper.flow.fulfillment.in_flight()

    shipper.flow.run(LATER, settle=True)  # as `fbm-bridge shipments process` runs it
    assert pauses == [15.0] and not shipper.flow.fulfillment.in_flight()


def test_a_document_with_amazon_is_carried_on_after_switching_back_to_confirm_shipment(make, sandbox, tmp_path):
    shipper = make()
    sandbox.feed_polls_until_done = 3
    golden_file(shipper)
    shipper.ship()
    config = shipper.settings.path
    config.write_text(config.read_text().replace(FEED, 'send = "confirmShipment"'))
    shipper.ledger.close()
    switched = Shipper(load(config))
    drop(switched.remote, "VERSAND_2.csv", acme_rows(
        "111-0000001-0000001;MUG-CER-350-BLU;2;DHL_PAKET;00340434161094042599;20.11.2026 17:00"))
    switched.ship(LATER)
    switched.flow.run(LATER + timedelta(minutes=1))

    assert len(feed_documents(sandbox)) == 1  # the feed's packages never went another way
    assert [c["orderId"] for c in sandbox.confirmations] == ["111-0000001-0000001"]
    assert files(switched.remote / "results")[f"{ACME_FILE[:-4]}.result.csv"] == expected_feed("acme-csv")[1]
    assert result_lines(switched.remote, "VERSAND_2.csv")[0].endswith("confirmed on Amazon as package 6")


def test_status_counts_packages_a_feed_carries_as_waiting_until_its_report(make, sandbox):
    from bridge.cli import format_status
    from bridge.service import status_report

    shipper = make()
    sandbox.feed_polls_until_done = 3
    golden_file(shipper)
    shipper.ship()

    report = status_report(shipper.settings, SHIP_TIME)
    assert report["shipments"]["packages"] == {"accepted": 0, "sent": 5, "confirmed": 0, "rejected": 0}
    text = format_status(report)
    assert "shipments: packages confirmed=0 rejected=0 waiting=5" in text
    assert "  fulfillment feed 50000000001: 5 packages, submitted 2026-11-20T18:00:00Z, waiting for Amazon" in text


# --- crash anywhere, restart, converge ---------------------------------------------------------

class Crash(BaseException):
    """A process death: not an error the flow may catch."""


STEPS = ["claimed", "spooled", "recorded", "read", "feed_recorded", "document_created", "uploaded", "submitting",
         "feed_created", "submitted", "report_fetched", "reported", "result_uploaded", "result_renamed", "moved"]


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_any_step_then_a_restart_sends_each_package_in_exactly_one_feed(make, sandbox, step):
    def crash(name: str) -> None:
        if name == step:
            raise Crash(name)

    shipper = make().restart(checkpoint=crash)
    golden_file(shipper)
    shipper.flow.run(SHIP_TIME - STABLE)
    with pytest.raises(Crash):
        shipper.flow.run(SHIP_TIME)

    restarted = shipper.restart()
    restarted.flow.run(LATER)  # a createFeed left in doubt is looked up two minutes on
    restarted.flow.run(LATER + timedelta(minutes=1))

    document, result = expected_feed("acme-csv")
    assert feed_documents(sandbox) == [document]  # exactly once, byte for byte
    assert len(sandbox.fulfillments) == 5
    assert shipped_units(sandbox, "111-0000002-0000002") == {
        "50000002000001": 6, "50000002000002": 3, "50000002000003": 0}
    assert files(restarted.remote / "results") == {f"{ACME_FILE[:-4]}.result.csv": result}
    assert list(files(restarted.remote / "archive")) == [ACME_FILE]
    assert files(restarted.remote) == files(restarted.remote / "processing") == {}
    assert restarted.ledger.shipment_counts()["confirmed"] == 5
    (stored,) = restarted.ledger.fulfillment_feeds_in(*FeedStatus)
    assert stored.adopted == (step == "feed_created")


def test_an_interrupted_create_feed_is_looked_up_not_sent_again_in_the_same_run(make, sandbox):
    shipper = make()
    sandbox.fail_next("createFeed", 500)  # Amazon's answer is lost: the feed may exist or not
    golden_file(shipper)
    report = shipper.ship()
    assert any("Amazon may have created the feed" in error for error in report.all_errors)
    assert feed_documents(sandbox) == []

    shipper.flow.run(SHIP_TIME + timedelta(minutes=1))  # too soon to ask getFeeds
    assert feed_documents(sandbox) == []
    shipper.flow.run(LATER)
    assert feed_documents(sandbox) == [expected_feed("acme-csv")[0]]


def test_a_feed_that_cannot_be_told_apart_from_another_tools_is_left_to_a_person(make, sandbox):
    def crash(name: str) -> None:
        if name == "feed_created":
            raise Crash(name)

    shipper = make().restart(checkpoint=crash)
    drop(shipper.remote, "V.csv", acme_rows(
        "302-0000003-0000003;KAN-GLAS-1L;1;DHL_PAKET;00340434161094042557;20.11.2026 16:45"))
    shipper.flow.run(SHIP_TIME - STABLE)
    with pytest.raises(Crash):
        shipper.flow.run(SHIP_TIME)
    another_tools_feed(sandbox)

    restarted = shipper.restart()
    report = restarted.flow.run(LATER)

    assert report.needs_a_person
    assert len(feed_documents(sandbox)) == 2  # never sent again
    assert result_lines(restarted.remote, "V.csv") == [
        '2;rejected;302-0000003-0000003;KAN-GLAS-1L;1;00340434161094042557;"Amazon may or may not have package 1: '
        "createFeed was interrupted and Amazon has 2 order fulfillment feeds from then that the bridge did not "
        "record (50000000001, 50000000002); check these orders in Seller Central (Manage Orders) before sending "
        'the rows again; the bridge never sends them again by itself"']  # quoted: it holds the delimiter
    assert "V.csv" in files(restarted.remote / "error")


def another_tools_feed(sandbox, marketplace: str = "A1PA6795UKMFR9") -> None:
    """Another program of the seller's submits an order fulfillment feed of its own (for the
    marketplace of 302-0000003-0000003: a feed for another one could not be the bridge's)."""
    with httpx.Client(base_url=sandbox.url) as api:
        api.headers["x-amz-access-token"] = api.post("/auth/o2/token", data={
            "grant_type": "refresh_token", "client_id": "other-tool", "client_secret": "s",
            "refresh_token": "Atzr|other"}).json()["access_token"]
        created = api.post("/feeds/2021-06-30/documents", json={"contentType": "text/xml"}).json()
        httpx.put(created["url"], content=b"<AmazonEnvelope/>", headers={"Content-Type": "text/xml"})
        answer = api.post("/feeds/2021-06-30/feeds", content=json.dumps({
            "feedType": "POST_ORDER_FULFILLMENT_DATA", "marketplaceIds": [marketplace],
            "inputFeedDocumentId": created["feedDocumentId"]}), headers={"Content-Type": "application/json"})
        assert answer.status_code == 202
