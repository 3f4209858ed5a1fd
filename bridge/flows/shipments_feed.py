"""Shipments up by the order fulfillment feed (`shipments.send = "feed"`): the packages waiting
in a run go to Amazon as one POST_ORDER_FULFILLMENT_DATA document, exactly once.

One document, in order, each step safe to interrupt at any line:
1. record   the waiting packages (at most MAX_PACKAGES, oldest first) become one document,
            `prepared`, and each is marked `sent`, carried by it, in one transaction. The
            document is not stored: it is rebuilt from its packages when it is uploaded (each
            package is one message whose MessageID and MerchantFulfillmentID are its ledger id).
2. submit   createFeedDocument, upload, `submitting`, createFeed, the feed id: see
            bridge/flows/feed_submission.py. A document left `submitting` by a crash is looked
            up with getFeeds, never sent again on a guess; one Amazon may or may not have is
            `in_doubt`, and its packages are answered so, for a person to check in Seller Central.
3. poll     getFeed. A feed Amazon has not finished stays `submitted`: the next run polls it
            again (a service run does not wait; `fbm-bridge shipments process` waits a while).
4. report   the processing report: each result maps back by its MessageID to its package, and
            from there to its file rows. No error: confirmed; an error: rejected with Amazon's
            words. A feed Amazon refused as a whole (FATAL, CANCELLED) rejects its packages, with
            why. Feed and packages in one transaction; recording a report twice changes nothing.
At most one document is ever `submitting`: a new one is made only when none is, so a feed found
on Amazon after a crash can only be that one.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from typing import Callable

from bridge.errors import AmazonUnavailable, BadFile
from bridge.flows import feed_submission
from bridge.flows.feed_submission import Checkpoint
from bridge.formats.fulfillment_feed import CONTENT_TYPE, FEED_TYPE, fulfillment_feed, parse_processing_report
from bridge.formats.shipments import PlannedPackage
from bridge.ledger import FEED_IN_FLIGHT, FeedStatus, Ledger, StoredFulfillmentFeed, StoredPackage

log = logging.getLogger("bridge.shipments")

MAX_PACKAGES = 10_000  # messages in one document; more wait for the next run's document
IN_DOUBT_ADVICE = ("check these orders in Seller Central (Manage Orders) before sending the rows again; "
                   "the bridge never sends them again by itself")


def planned(package: StoredPackage) -> PlannedPackage:
    """A package as recorded, as the formats see it: the same bytes on every re-send."""
    from bridge.mapping import Carrier

    return PlannedPackage(
        order_id=package.order_id, marketplace_id=package.marketplace_id, tracking=package.tracking_number,
        carrier=Carrier(package.carrier_code, package.carrier_name), method=package.shipping_method,
        ship_date=package.ship_date, items=package.items, rows=())


def document_of(seller_id: str, packages: list[StoredPackage]) -> bytes:
    return fulfillment_feed(seller_id, [(package.id, planned(package)) for package in packages])


class FulfillmentFeed:
    """The fulfillment feed's part of a shipments run; `feeds` makes the Feeds edge when needed."""

    def __init__(self, ledger: Ledger, feeds: Callable[[], object], *, seller_id: str,
                 checkpoint: Checkpoint | None = None, max_packages: int = MAX_PACKAGES):
        self.ledger = ledger
        self._make_feeds = feeds
        self._feeds = None
        self.seller_id = seller_id
        self.checkpoint = checkpoint or (lambda step: None)
        self.max_packages = max_packages
        self.doubts: list[str] = []  # documents found in doubt since the flow last looked: for a person

    @property
    def feeds(self):
        if self._feeds is None:
            self._feeds = self._make_feeds()
        return self._feeds

    def in_flight(self) -> list[StoredFulfillmentFeed]:
        return self.ledger.fulfillment_feeds_in(*FEED_IN_FLIGHT)

    def send_new(self, packages: list[StoredPackage], now: datetime) -> int | None:
        """Record the next document from these accepted packages, unless one is still being
        created (`submitting`). Returns its row, or None."""
        if not packages or self.ledger.fulfillment_feeds_in(FeedStatus.SUBMITTING):
            return None
        chosen = packages[:self.max_packages]
        data = document_of(self.seller_id, chosen)
        marketplaces = sorted({package.marketplace_id for package in chosen})
        row = self.ledger.record_fulfillment_feed([p.id for p in chosen], _sha256(data), marketplaces, now)
        self.checkpoint("feed_recorded")
        log.info("fulfillment feed document=%d packages=%d recorded", row, len(chosen))
        return row

    def recover(self, now: datetime) -> None:
        """Documents a crash left `submitting`: looked up on Amazon before anything else."""
        for document in self.ledger.fulfillment_feeds_in(FeedStatus.SUBMITTING):
            self._recover(document, now)

    def advance(self, now: datetime, max_wait: float, *, recover: bool = True) -> tuple[int, int]:
        """Every document not yet answered: recover, submit, poll, report. Returns (packages
        confirmed, packages rejected) by the reports read in this call."""
        if recover:
            self.recover(now)
        for document in self.ledger.fulfillment_feeds_in(FeedStatus.PREPARED):
            if self.ledger.fulfillment_feeds_in(FeedStatus.SUBMITTING):
                break  # one at a time: a crash must leave at most one to look for
            self._submit(document, now)
        return self._poll(now, max_wait)

    # --- steps -----------------------------------------------------------------------------

    def _submit(self, document: StoredFulfillmentFeed, now: datetime) -> None:
        packages = self.ledger.fulfillment_feed_packages(document.id)
        data = document_of(self.seller_id, packages)
        feed_id = feed_submission.submit(
            self.feeds, _Journal(self.ledger, document.id, _sha256(data)), feed_type=FEED_TYPE,
            content_type=CONTENT_TYPE, data=data, marketplace_ids=document.marketplaces, now=now,
            checkpoint=self.checkpoint)
        log.info("fulfillment feed submitted document=%d packages=%d feed_id=%s", document.id, len(packages), feed_id)

    def _recover(self, document: StoredFulfillmentFeed, now: datetime) -> None:
        verdict = feed_submission.recover(
            self.feeds, _Journal(self.ledger, document.id, document.sha256), feed_type=FEED_TYPE,
            started=document.submit_started_at, now=now, marketplace_id=document.marketplaces[0],
            known=self.ledger.fulfillment_feed_ids(), what=f"fulfillment feed document {document.id}",
            kind="order fulfillment feeds", advice=IN_DOUBT_ADVICE)
        if verdict == feed_submission.IN_DOUBT:
            self.doubts.append(f"fulfillment feed document {document.id} is in doubt: "
                               f"{self.ledger.fulfillment_feed(document.id).note}")

    def _poll(self, now: datetime, max_wait: float) -> tuple[int, int]:
        submitted = self.ledger.fulfillment_feeds_in(FeedStatus.SUBMITTED)
        if not submitted:
            return 0, 0
        states = self.feeds.wait([document.feed_id for document in submitted], max_wait)
        confirmed = rejected = 0
        for document in submitted:
            state = states[document.feed_id]
            if not state.finished:
                log.info("fulfillment feed still processing feed_id=%s status=%s", state.feed_id, state.status)
                continue
            done, refused = self._report(document, state.status, state.result_document_id, now)
            confirmed += done
            rejected += refused
        return confirmed, rejected

    def _report(self, document: StoredFulfillmentFeed, status: str, result_id: str | None,
                now: datetime) -> tuple[int, int]:
        packages = [p.id for p in self.ledger.fulfillment_feed_packages(document.id)]
        outcome = {"DONE": FeedStatus.DONE, "FATAL": FeedStatus.FATAL}.get(status, FeedStatus.CANCELLED)
        if result_id is None:
            why = _WITHOUT_REPORT[outcome]
            self.ledger.record_fulfillment_feed_result(document.id, outcome, now, outcomes={}, default=why,
                                                       note=f"Amazon: {status}, no report")
            log.warning("fulfillment feed %s feed_id=%s without a report: packages %s rejected", status,
                        document.feed_id, _ids(packages))
            return 0, len(packages)
        try:
            report = parse_processing_report(self.feeds.result(result_id))
        except BadFile as problem:
            raise AmazonUnavailable(f"feed {document.feed_id}: {problem}; asked again next run") from None
        self.checkpoint("report_fetched")
        if document.adopted and outcome == FeedStatus.DONE and report.processed != len(packages):
            note = (f"the feed {document.feed_id} found after an interrupted createFeed processed "
                    f"{report.processed} messages, this document has {len(packages)}: it is not this document, "
                    f"and whether Amazon has it cannot be told; {IN_DOUBT_ADVICE}")
            self.ledger.mark_fulfillment_feed_in_doubt(document.id, note, now)
            self.doubts.append(f"fulfillment feed document {document.id} is in doubt: {note}")
            return 0, len(packages)
        fallback = "" if outcome == FeedStatus.DONE else f"the feed failed as a whole ({status})"
        outcomes = {package_id: report.outcome(package_id) or fallback for package_id in packages}
        self._note_strays(document, report, set(packages))
        self.ledger.record_fulfillment_feed_result(
            document.id, outcome, now, outcomes=outcomes, result_document_id=result_id,
            counts=(report.processed, report.successful, report.with_error, report.with_warning),
            note="" if outcome == FeedStatus.DONE else f"Amazon: {status}")
        self.checkpoint("reported")
        refused = sum(1 for words in outcomes.values() if words)
        log.info("fulfillment feed %s feed_id=%s processed=%d confirmed=%d rejected=%d warnings=%d", status,
                 document.feed_id, report.processed, len(packages) - refused, refused, report.with_warning)
        return len(packages) - refused, refused

    def _note_strays(self, document: StoredFulfillmentFeed, report, carried: set[int]) -> None:
        for result in report.results:
            if result.message_id not in (None, 0) and result.message_id not in carried:
                log.warning("fulfillment feed feed_id=%s: a result names message %s, which the document does not "
                            "have: %s %s", document.feed_id, result.message_id, result.code, result.description)
            elif result.severity == "Warning":
                log.warning("fulfillment feed feed_id=%s package=%s warning %s: %s", document.feed_id,
                            result.message_id, result.code, result.description)


_WITHOUT_REPORT = {
    FeedStatus.DONE: "Amazon finished the feed without a processing report, so which parcels it took cannot be "
                     "told: check the order in Seller Central",
    FeedStatus.FATAL: "the feed failed as a whole (FATAL) and Amazon gave no processing report",
    FeedStatus.CANCELLED: "the feed was cancelled on Amazon before it was processed, so nothing was "
                          "confirmed: send the rows again",
}


class _Journal:
    """One fulfillment feed document's steps, for bridge.flows.feed_submission."""

    def __init__(self, ledger: Ledger, row: int, sha256: str):
        self.ledger, self.row, self.sha256 = ledger, row, sha256

    def submitting(self, document_id: str, now: datetime) -> None:
        self.ledger.mark_fulfillment_feed_submitting(self.row, document_id, now, sha256=self.sha256)

    def submitted(self, feed_id: str, now: datetime, *, adopted: bool = False, note: str = "") -> None:
        self.ledger.mark_fulfillment_feed_submitted(self.row, feed_id, now, adopted=adopted, note=note)

    def prepared(self, note: str) -> None:
        self.ledger.mark_fulfillment_feed_prepared(self.row, note)

    def in_doubt(self, note: str, now: datetime) -> None:
        self.ledger.mark_fulfillment_feed_in_doubt(self.row, note, now)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _ids(ids: list[int]) -> str:
    return ",".join(map(str, ids))
