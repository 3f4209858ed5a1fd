"""Submitting a feed document exactly once: shared by the stock flow (JSON_LISTINGS_FEED) and
the shipments flow (POST_ORDER_FULFILLMENT_DATA).

createFeed has no idempotency key, and a second copy of a feed is not harmless (a stock feed
processed twice puts back units that orders took in between; a fulfillment feed twice confirms
parcels twice or fails with confusing errors). The window is between Amazon creating the feed
and the ledger recording its id: a crash there, or a timeout or 5xx answer to createFeed (the
feed may exist or not). The design around it, for every flow that submits feeds:

- `submit`: createFeedDocument and upload (harmless to repeat: an unused document expires),
  then `submitting` is recorded with the time *before* createFeed, then the feed id. The edge
  never retries createFeed except after a 429 (a refusal).
- `recover`: a document found `submitting` without a feed id is never sent again on a guess.
  getFeeds lists the feeds of that type created since shortly before that time, leaving out
  the ones the ledger knows. None: Amazon never got it; it goes back to `prepared` and is sent.
  Exactly one: that is ours; it is adopted (the flow checks its report: it must count as many
  messages as the document). Several (another tool submitted feeds of that type too):
  `in_doubt`, shown to a person, never resent by the bridge. A flow keeps at most one of its
  documents `submitting` at a time, so a feed found this way cannot be another of its own.

The flow owns its ledger rows; it hands in a `Journal` that records one document's steps.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Iterable, Protocol

from bridge.edges.amazon_feeds import AmazonFeeds
from bridge.errors import CreateFeedUnknown

log = logging.getLogger("bridge.feeds")

RECOVERY_MARGIN = timedelta(minutes=10)  # clock skew between this machine and Amazon
RECOVERY_DELAY = timedelta(minutes=2)  # let a just-created feed show up in getFeeds first
RESENT, ADOPTED, IN_DOUBT = "resent", "adopted", "in_doubt"


class Checkpoint(Protocol):
    def __call__(self, step: str) -> None: ...


class Journal(Protocol):
    """How a flow records the steps of one of its feed documents in the ledger."""

    def submitting(self, document_id: str, now: datetime) -> None:
        """Recorded before createFeed, with the time getFeeds is later asked from."""

    def submitted(self, feed_id: str, now: datetime, *, adopted: bool = False, note: str = "") -> None: ...

    def prepared(self, note: str) -> None:
        """An interrupted createFeed that never reached Amazon: the document goes again."""

    def in_doubt(self, note: str, now: datetime) -> None:
        """Whether Amazon has the document cannot be told: a person decides."""


def submit(feeds: AmazonFeeds, journal: Journal, *, feed_type: str, content_type: str, data: bytes,
           marketplace_ids: Iterable[str], now: datetime, checkpoint: Checkpoint) -> str:
    """Upload `data` as a new feed document and create its feed; returns the feed id.
    CreateFeedUnknown (RetryLater) leaves the document `submitting` for `recover`."""
    document_id, url = feeds.create_document(content_type)
    checkpoint("document_created")
    feeds.upload(url, data, content_type)
    checkpoint("uploaded")
    journal.submitting(document_id, now)
    checkpoint("submitting")
    feed_id = feeds.create_feed(feed_type, document_id, list(marketplace_ids))
    checkpoint("feed_created")
    journal.submitted(feed_id, now)
    checkpoint("submitted")
    return feed_id


def recover(feeds: AmazonFeeds, journal: Journal, *, feed_type: str, started: datetime | None,
            now: datetime, marketplace_id: str, known: set[str], what: str, kind: str,
            advice: str) -> str:
    """A createFeed that may or may not have reached Amazon: look before sending again.

    `known`: feed ids the ledger holds (never taken for the lost one); `what` names the document
    in messages ("document 2 of stock file 7"), `kind` the feeds counted ("listings feeds"),
    `advice` what a person does with an in-doubt one. Returns RESENT, ADOPTED or IN_DOUBT."""
    started = started or now
    if now - started < RECOVERY_DELAY:
        raise CreateFeedUnknown(f"{what}: createFeed was interrupted just now; checking with Amazon on the next run")
    candidates = [state.feed_id for state in feeds.feeds_since(feed_type, started - RECOVERY_MARGIN, marketplace_id)
                  if state.feed_id not in known]
    if not candidates:
        journal.prepared("createFeed was interrupted before Amazon created the feed; sent again")
        log.warning("%s: interrupted createFeed never reached Amazon; sending again", what)
        return RESENT
    if len(candidates) == 1:
        journal.submitted(candidates[0], now, adopted=True,
                          note=f"feed {candidates[0]} found on Amazon after an interrupted createFeed")
        log.warning("%s: interrupted createFeed had reached Amazon as feed %s", what, candidates[0])
        return ADOPTED
    ids = ", ".join(candidates)
    journal.in_doubt(f"createFeed was interrupted and Amazon has {len(candidates)} {kind} from then that the "
                     f"bridge did not record ({ids}); {advice}", now)
    log.error("%s in doubt: unknown feeds %s", what, ids)
    return IN_DOUBT
