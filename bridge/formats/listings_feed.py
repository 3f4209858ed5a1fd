"""Amazon's JSON_LISTINGS_FEED, pure: stock levels → feed documents; a processing report → issues.

One document holds at most 25,000 messages (Amazon's limit), one `PATCH` per seller SKU, each
message on a line of its own (wrapped here):

    {"header":{"sellerId":"A3TESTSELLER","version":"2.0"},"messages":[
    {"messageId":2,"sku":"MUG-1","operationType":"PATCH","productType":"PRODUCT","patches":[{"op":
    "merge","path":"/attributes/fulfillment_availability","value":[{"fulfillment_channel_code":
    "DEFAULT","quantity":12,"lead_time_to_ship_max_days":2}]}]},
    ...
    ]}

`merge` leaves the listing's other fulfillment_availability values (restock date, and the lead
time when the mapping gives none) as they are. Documents are written as a stream of byte chunks,
so a feed of a million SKUs never exists in memory as one object.

A message's `messageId` is the SKU's first row in the stock file. Amazon's processing report
names issues by messageId (and usually SKU), so every issue maps back to its SKU and file row
without keeping a table of ids: the row is the id, and the document itself says which SKU it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import compress, repeat
from operator import is_not, itemgetter
from typing import Iterable, Iterator, Mapping, Sequence

from bridge.errors import BadRecord
from bridge.formats.stock import StockLevel, chunks_of
from bridge.mapping import StockLayout

FEED_TYPE = "JSON_LISTINGS_FEED"
CONTENT_TYPE = "application/json; charset=UTF-8"
MAX_MESSAGES = 25_000
ATTRIBUTE_PATH = "/attributes/fulfillment_availability"
SEVERITIES = ("ERROR", "WARNING", "INFO")


def batches(levels: Iterable[StockLevel], size: int = MAX_MESSAGES) -> Iterator[list[StockLevel]]:
    """The levels with a quantity to send, `size` at a time (one list per document)."""
    batch: list[StockLevel] = []
    for chunk in chunks_of(levels, _CHUNK):
        batch += compress(chunk, map(is_not, map(_quantity_of, chunk), repeat(None)))  # None: not sent
        while len(batch) >= size:
            yield batch[:size]
            del batch[:size]
    if batch:
        yield batch


_CHUNK = 4096
_sku_of, _quantity_of, _row_of = itemgetter(0), itemgetter(1), itemgetter(2)


def document_chunks(seller_id: str, levels: Sequence[StockLevel], layout: StockLayout,
                    *, chunk_messages: int = 1000) -> Iterator[bytes]:
    """One feed document as UTF-8 byte chunks; join them for the whole document."""
    if not levels:
        raise ValueError("a listings feed document needs at least one message")
    if len(levels) > MAX_MESSAGES:
        raise ValueError(f"a listings feed document takes at most {MAX_MESSAGES:,} messages")
    before = '{"header":{"sellerId":' + _string(seller_id) + ',"version":"2.0"},"messages":[\n'
    for start in range(0, len(levels), chunk_messages):
        some = levels[start:start + chunk_messages]
        text = before + (_plain_messages(some, layout) or _messages(some, layout))
        if len(some) < chunk_messages:
            yield (text + "\n]}\n").encode("utf-8")
            return
        yield text.encode("utf-8")
        before = ",\n"
    yield b"\n]}\n"


def _plain_messages(levels: Sequence[StockLevel], layout: StockLayout) -> str:
    """The messages of `levels`, joined, when they all take the mapping's default product type
    and lead time and every SKU goes into JSON as it is (the usual case: one template around
    three values); "" otherwise."""
    if layout.product_types or layout.handling_times:
        return ""
    skus = list(map(_sku_of, levels))
    joined = "".join(skus)
    if not (joined.isascii() and joined.isprintable()) or '"' in joined or "\\" in joined:
        return ""
    head, middle, tail = _template(layout.product_type, _lead_time(layout.handling_time_days))
    return ",\n".join([f'{{"messageId":{row}{head}{sku}{middle}{quantity}{tail}' for sku, quantity, row in levels])


def _template(product_type: str, lead: str) -> tuple[str, str, str]:
    """A message around its row, SKU and quantity: what `_messages` writes for each."""
    return (',"sku":"',
            f'","operationType":"PATCH","productType":"{product_type}","patches":[{{"op":"merge","path":'
            f'"{ATTRIBUTE_PATH}","value":[{{"fulfillment_channel_code":"DEFAULT","quantity":',
            f'{lead}}}]}}]}}')


def _messages(levels: Sequence[StockLevel], layout: StockLayout) -> str:
    """The messages of `levels`, joined, one at a time."""
    product_types, default_type = layout.product_types, layout.product_type
    lead_times, default_lead_time = layout.handling_times, layout.handling_time_days
    default_lead = _lead_time(default_lead_time)
    lines: list[str] = []
    for sku, quantity, row in levels:
        if sku.isascii() and sku.isprintable() and '"' not in sku and "\\" not in sku:
            quoted = '"' + sku + '"'
        else:
            quoted = json.dumps(sku, ensure_ascii=False)
        lead = _lead_time(lead_times[sku]) if lead_times and sku in lead_times else default_lead
        product_type = product_types.get(sku, default_type) if product_types else default_type
        # One f-string per message: twice as fast as %-formatting, and a million are written.
        lines.append(
            f'{{"messageId":{row},"sku":{quoted},"operationType":"PATCH","productType":"{product_type}",'
            f'"patches":[{{"op":"merge","path":"{ATTRIBUTE_PATH}","value":[{{"fulfillment_channel_code":"DEFAULT",'
            f'"quantity":{quantity}{lead}}}]}}]}}'
        )
    return ",\n".join(lines)


def _lead_time(days: int | None) -> str:
    return "" if days is None else f',"lead_time_to_ship_max_days":{days}'


def _string(text: str) -> str:
    """A JSON string; the fast path skips json.dumps for the usual plain SKU."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return '"' + text + '"'
    return json.dumps(text, ensure_ascii=False)


def messages_of(document: bytes) -> dict[int, tuple[str, int]]:
    """messageId → (SKU, quantity) of a document this module wrote."""
    found: dict[int, tuple[str, int]] = {}
    for message in json.loads(document)["messages"]:
        value = message["patches"][0]["value"][0]
        found[message["messageId"]] = (message["sku"], value["quantity"])
    return found


# --- the processing report ------------------------------------------------------------------


@dataclass(frozen=True)
class FeedIssue:
    """One issue of Amazon's processing report, mapped back to the stock file."""

    severity: str  # ERROR (the SKU's update was not applied), WARNING or INFO
    message: str  # Amazon's words
    code: str = ""
    sku: str = ""
    row: int | None = None  # the SKU's first row in the stock file; None: about the whole document
    attribute: str = ""

    def __str__(self) -> str:
        where = f"row {self.row}, SKU {self.sku!r}" if self.row is not None else "the whole feed"
        code = f" [{self.code}]" if self.code else ""
        return f"{where}: Amazon {self.severity.lower()}{code}: {self.message}"


@dataclass(frozen=True)
class ProcessingReport:
    processed: int
    accepted: int
    invalid: int
    errors: int
    warnings: int
    issues: tuple[FeedIssue, ...]

    def rejected(self) -> set[str]:
        """SKUs whose update Amazon did not apply."""
        return {issue.sku for issue in self.issues if issue.severity == "ERROR" and issue.sku}


def read_report(data: bytes, messages: Mapping[int, tuple[str, int]]) -> ProcessingReport:
    """Amazon's JSON processing report (listings-feed-processing-report-schema-v2) → issues,
    each mapped to its SKU and stock-file row through the submitted document's `messages`."""
    try:
        report = json.loads(data)
    except ValueError as problem:
        raise BadRecord(f"the feed's processing report is not JSON ({problem})") from None
    if not isinstance(report, dict) or not isinstance(report.get("issues", []), list):
        raise BadRecord("the feed's processing report has no list of issues")
    summary = report.get("summary") if isinstance(report.get("summary"), dict) else {}
    issues = tuple(_issue(raw, messages) for raw in report.get("issues", []) if isinstance(raw, dict))
    return ProcessingReport(
        processed=_count(summary, "messagesProcessed"),
        accepted=_count(summary, "messagesAccepted"),
        invalid=_count(summary, "messagesInvalid"),
        errors=_count(summary, "errors"),
        warnings=_count(summary, "warnings"),
        issues=issues,
    )


def _issue(raw: dict, messages: Mapping[int, tuple[str, int]]) -> FeedIssue:
    message_id = raw.get("messageId")
    known = messages.get(message_id) if isinstance(message_id, int) else None
    severity = raw.get("severity") if raw.get("severity") in SEVERITIES else "ERROR"
    sku = raw.get("sku") if isinstance(raw.get("sku"), str) else ""
    text = str(raw.get("message") or "no message")
    if known is None and isinstance(message_id, int):
        text += f" (message {message_id} is not in the submitted document)"
    return FeedIssue(
        severity=severity,
        message=text,
        code=str(raw.get("code") or ""),
        sku=sku or (known[0] if known else ""),
        row=message_id if known is not None else None,
        attribute=str(raw.get("attributeName") or ""),
    )


def _count(summary: dict, key: str) -> int:
    value = summary.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
