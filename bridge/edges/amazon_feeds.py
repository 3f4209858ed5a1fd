"""The SP-API Feeds edge: any feed document in, its processing status and result document out.

    create_document(content_type)            createFeedDocument → (document id, upload URL)
    upload(url, data, content_type)          PUT the bytes to the URL, same Content-Type
    create_feed(feed_type, document, ...)    createFeed → feed id        (NOT idempotent, below)
    feed(feed_id) / wait(feed_ids, ...)      getFeed, polled with backoff until DONE, FATAL, CANCELLED
    result(document_id)                      getFeedDocument + download (gunzipped when GZIP)
    feeds_since(feed_type, since, ...)       getFeeds: what Amazon has, to recover after a crash

Built on amazon.py's plumbing (client construction with the endpoint, token URL and marketplace
traps handled, the client-side rate limiter, `_call`'s retries and error translation), used by
composition. Traps of python-amazon-sp-api's Feeds client handled here:
- its `create_feed_document(file, ...)` uploads with a 5-second timeout and sends a `str` as
  ISO-8859-1: the bridge calls it without a file and uploads the bytes itself with httpx, the
  configured timeout and retries (a PUT to a presigned URL may be repeated);
- its `get_feed_document` downloads without checking the status and decodes to `str`: the
  bridge asks only for the document's URL and downloads the bytes itself;
- createFeed is not idempotent: a retry after a timeout or a 5xx may create a second feed. It
  is therefore never retried here except after a 429 (refused, so not created); any other
  failure leaves the caller not knowing, and `CreateFeedUnknown` says so. The caller finds out
  later with `feeds_since` (getFeeds lists every feed, though without its document id);
- createFeed for JSON_LISTINGS_FEED allows 5 submissions per 5 minutes besides the operation's
  own usage plan: a second token bucket per feed type keeps to it.

What leaves this edge: AmazonUnavailable, AmazonThrottled (retry later), AmazonAuthError (fix
the setup), BridgeError (Amazon refused a request: the message says why), CreateFeedUnknown.
"""

from __future__ import annotations

import gzip
import time
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable

import httpx
from sp_api.api.feeds.feeds_2021_06_30 import FeedsV20210630
from sp_api.base import ApiResponse, fill_query_params, sp_endpoint

from bridge.config import AmazonSettings
from bridge.edges.amazon import AmazonOrders, RateLimiter
from bridge.errors import AmazonThrottled, AmazonUnavailable, BridgeError, CreateFeedUnknown
from bridge.records import iso_z

# Amazon's default usage plans from vendor/amazon/models/feeds_2021-06-30.json (rate/s, burst).
FEEDS_RATE_LIMITS: dict[str, tuple[float, int]] = {
    "createFeedDocument": (0.5, 15),
    "createFeed": (0.0083, 15),
    "getFeed": (2.0, 15),
    "getFeeds": (0.0222, 10),
    "getFeedDocument": (0.0222, 10),
}
# Per feed type, on top of createFeed's plan: JSON_LISTINGS_FEED takes 5 submissions per 5
# minutes (Amazon's announcement of 2025-05-06).
FEED_TYPE_LIMITS: dict[str, tuple[float, int]] = {"JSON_LISTINGS_FEED": (5 / 300, 5)}
TERMINAL = ("DONE", "FATAL", "CANCELLED")
FIRST_POLL_PAUSE = 15.0
LONGEST_POLL_PAUSE = 120.0


@dataclass(frozen=True)
class FeedState:
    feed_id: str
    status: str  # IN_QUEUE, IN_PROGRESS, DONE, FATAL, CANCELLED
    result_document_id: str | None = None
    created: str = ""  # Amazon's createdTime, ISO 8601

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


class _Feeds(FeedsV20210630):
    """The library's Feeds client, plus getFeedDocument without the library's download."""

    @sp_endpoint("/feeds/2021-06-30/documents/{}", method="GET")
    def feed_document(self, document_id: str, **kwargs: Any) -> ApiResponse:
        return self._request(fill_query_params(kwargs.pop("path"), document_id), params=kwargs,
                             add_marketplace=False)


class AmazonFeeds:
    def __init__(
        self,
        settings: AmazonSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rate_limits: dict[str, tuple[float, int]] | None = None,
        attempts: int = 5,
        backoff: float = 2.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.settings = settings
        self._sleep = sleep
        self._attempts = attempts
        self._backoff = backoff
        limits = {**FEEDS_RATE_LIMITS, **(rate_limits or {})}
        self._api = AmazonOrders(settings, sleep=sleep, clock=clock, rate_limits=limits,
                                 attempts=attempts, backoff=backoff)
        # createFeed gets one attempt per call: only a 429 is retried, by `create_feed` itself.
        self._once = AmazonOrders(settings, sleep=sleep, clock=clock, rate_limits=limits,
                                  attempts=1, backoff=backoff)
        self._per_type = RateLimiter({**FEED_TYPE_LIMITS, **{k: v for k, v in (rate_limits or {}).items()
                                                             if k in FEED_TYPE_LIMITS}},
                                     clock=clock, sleep=sleep)
        self._http = httpx.Client(timeout=httpx.Timeout(settings.timeout_seconds), transport=transport)

    def close(self) -> None:
        self._http.close()

    # --- documents -----------------------------------------------------------------------

    def create_document(self, content_type: str) -> tuple[str, str]:
        """createFeedDocument → (feed document id, presigned upload URL, valid 5 minutes)."""
        client = self._api._client(_Feeds)
        response = self._api._call("createFeedDocument", client.create_feed_document, None, content_type)
        document_id, url = response.payload.get("feedDocumentId"), response.payload.get("url")
        if not isinstance(document_id, str) or not isinstance(url, str):
            raise AmazonUnavailable("createFeedDocument answered without a document id and URL")
        return document_id, url

    def upload(self, url: str, data: bytes, content_type: str) -> None:
        """PUT the document's bytes to the presigned URL (a repeated PUT is harmless)."""
        if not isinstance(data, bytes):
            raise TypeError("feed documents are uploaded as bytes")
        self._transfer("upload", lambda: self._http.put(url, content=data, headers={"Content-Type": content_type}))

    def result(self, document_id: str) -> bytes:
        """getFeedDocument, then the document's bytes, decompressed when Amazon says GZIP."""
        client = self._api._client(_Feeds)
        response = self._api._call("getFeedDocument", client.feed_document, document_id)
        url = response.payload.get("url")
        if not isinstance(url, str):
            raise AmazonUnavailable(f"getFeedDocument {document_id} answered without a URL")
        data = self._transfer("download", lambda: self._http.get(url))
        if response.payload.get("compressionAlgorithm") == "GZIP":
            try:
                return gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as problem:
                raise AmazonUnavailable(f"feed document {document_id} is not valid GZIP ({problem})") from None
        return data

    # --- feeds ---------------------------------------------------------------------------

    def create_feed(self, feed_type: str, document_id: str, marketplace_ids: Iterable[str],
                    options: dict[str, str] | None = None) -> str:
        """createFeed → feed id. Raises CreateFeedUnknown when Amazon may or may not have
        created the feed (timeout, connection lost, 5xx): see `feeds_since`."""
        client = self._once._client(_Feeds)
        extra = {"marketplaceIds": list(marketplace_ids)}
        if options:
            extra["feedOptions"] = dict(options)
        limit = self.settings.max_throttle_wait_seconds
        self._per_type.acquire(feed_type, limit)
        for attempt in range(1, self._attempts + 1):
            try:
                response = self._once._call("createFeed", client.create_feed, feed_type, document_id, **extra)
                break
            except AmazonThrottled as problem:
                # A 429 is a refusal: nothing was created, so trying again is safe.
                wait = problem.retry_after or self._pause(attempt)
                if attempt == self._attempts or wait > limit:
                    raise
                self._sleep(wait)
            except AmazonUnavailable as problem:
                raise CreateFeedUnknown(f"createFeed for document {document_id}: {problem}; Amazon may "
                                        "have created the feed") from None
        feed_id = response.payload.get("feedId")
        if not isinstance(feed_id, str) or not feed_id:
            raise CreateFeedUnknown(f"createFeed for document {document_id} answered without a feed id "
                                    "(HTTP 5xx or empty body); Amazon may have created the feed")
        return feed_id

    def feed(self, feed_id: str) -> FeedState:
        client = self._api._client(_Feeds)
        response = self._api._call("getFeed", client.get_feed, feed_id)
        state = _state(response.payload)
        if state is None or state.feed_id != feed_id:
            raise AmazonUnavailable(f"getFeed {feed_id} answered without the feed")
        return state

    def wait(self, feed_ids: Iterable[str], max_wait: float) -> dict[str, FeedState]:
        """Poll getFeed until every feed is DONE, FATAL or CANCELLED, or `max_wait` seconds of
        pauses have passed; pauses grow from 15 s to 2 minutes. Returns each feed's last state."""
        states = {feed_id: self.feed(feed_id) for feed_id in feed_ids}
        waited, pause = 0.0, FIRST_POLL_PAUSE
        while not all(state.finished for state in states.values()) and waited < max_wait:
            pause = min(pause, max_wait - waited)
            self._sleep(pause)
            waited += pause
            pause = min(pause * 2, LONGEST_POLL_PAUSE)
            for feed_id, state in states.items():
                if not state.finished:
                    states[feed_id] = self.feed(feed_id)
        return states

    def feeds_since(self, feed_type: str, since: datetime, marketplace_id: str) -> list[FeedState]:
        """getFeeds: every feed of `feed_type` created since `since`, all pages."""
        client = self._api._client(_Feeds)
        params: dict[str, Any] = {"feedTypes": [feed_type], "createdSince": iso_z(since),
                                  "marketplaceIds": [marketplace_id], "pageSize": 100}
        found: list[FeedState] = []
        while True:
            response = self._api._call("getFeeds", client.get_feeds, **params)
            feeds = response.payload.get("feeds")
            if not isinstance(feeds, list):
                raise AmazonUnavailable("getFeeds answered without a feeds list")
            found.extend(state for state in map(_state, feeds) if state is not None)
            token = response.next_token or response.payload.get("nextToken")
            if not token:
                return found
            params = {"nextToken": token}  # the model: nextToken alone on later pages

    # --- plumbing ------------------------------------------------------------------------

    def _transfer(self, what: str, request: Callable[[], httpx.Response]) -> bytes:
        """An upload or download to Amazon's storage, retried on network errors and 5xx."""
        for attempt in range(1, self._attempts + 1):
            try:
                answer = request()
            except httpx.HTTPError as problem:
                if attempt == self._attempts:
                    raise AmazonUnavailable(f"feed document {what} failed: {problem}") from None
                self._sleep(self._pause(attempt))
                continue
            if answer.status_code < 300:
                return answer.content
            if answer.status_code >= 500 and attempt < self._attempts:
                self._sleep(self._pause(attempt))
                continue
            if answer.status_code >= 500:
                raise AmazonUnavailable(f"feed document {what} failed: HTTP {answer.status_code}")
            # 4xx from the storage: an expired URL or a Content-Type that differs from the
            # document's. A new document next time; the body is the storage's error, not data.
            raise BridgeError(f"feed document {what} refused: HTTP {answer.status_code} "
                              f"{answer.text[:200].strip()}")
        raise AssertionError("unreachable")

    def _pause(self, attempt: int) -> float:
        return min(60.0, self._backoff * 2 ** (attempt - 1))


def _state(payload: Any) -> FeedState | None:
    if not isinstance(payload, dict) or not isinstance(payload.get("feedId"), str):
        return None
    status = payload.get("processingStatus")
    result = payload.get("resultFeedDocumentId")
    return FeedState(
        feed_id=payload["feedId"],
        status=status if isinstance(status, str) else "",
        result_document_id=result if isinstance(result, str) and result else None,
        created=str(payload.get("createdTime") or ""),
    )
