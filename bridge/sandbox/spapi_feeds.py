"""The sandbox's feed processing, pure: a submitted document in, a result document out.

JSON_LISTINGS_FEED gets a processing report valid against
`listings-feed-processing-report-schema-v2.json` (FATAL, with one feed-level issue, for a
document that breaks `listings-feed-schema-v2.json` as a whole); POST_ORDER_FULFILLMENT_DATA gets the XML
`ProcessingReport` of the classic feeds. Returns (processingStatus, result bytes, content type).
"""
from __future__ import annotations

import json
from xml.etree import ElementTree

UNKNOWN_SKU = "4000003"   # Amazon: "The SKU does not exist" style issue
BAD_QUANTITY = "90244"


def process(feed_type: str, feed_id: str, document: bytes,
            known_skus: set[str], warnings: dict[str, str] | None = None) -> tuple[str, bytes, str]:
    if feed_type == "JSON_LISTINGS_FEED":
        return _listings(feed_id, document, known_skus, warnings or {})
    if feed_type == "POST_ORDER_FULFILLMENT_DATA":
        return _order_fulfillment(feed_id, document)
    return "FATAL", json.dumps({"errorDetails": f"Feed type {feed_type} is not supported by "
                                                f"the sandbox"}).encode(), "application/json"


# -- JSON_LISTINGS_FEED ---------------------------------------------------------------------------
# A document that does not follow listings-feed-schema-v2 as a whole (not JSON, no header, wrong
# version, no messages or more than 25,000, repeated messageIds) makes the feed FATAL with one
# feed-level issue, as Amazon does ("Item 'Feed' cannot be parsed"). A message that breaks the
# schema, names a SKU the sandbox does not know or sends a bad quantity gets ERROR issues and is
# not accepted; `warnings` (SKU -> text) add a WARNING to an accepted message.

MAX_MESSAGES = 25_000
MAX_MESSAGE_ID = 2_147_483_647
OPERATIONS = ("UPDATE", "PARTIAL_UPDATE", "PATCH", "DELETE")
PATCH_OPS = ("add", "replace", "merge", "delete")
CHANNELS = ("DEFAULT", "AMAZON_NA", "AMAZON_EU", "AMAZON_JP")
INVALID_FEED = "4002001"
INVALID_MESSAGE = "4000001"
INCOMPLETE = "18448"


def _listings(feed_id: str, document: bytes, known_skus: set[str],
              warnings: dict[str, str]) -> tuple[str, bytes, str]:
    try:
        feed = json.loads(document)
    except ValueError as exc:
        return _fatal(feed_id, "UNKNOWN", f"Item 'Feed' cannot be parsed: not JSON ({exc})")
    seller_id = feed.get("header", {}).get("sellerId") if isinstance(feed, dict) and isinstance(
        feed.get("header"), dict) else None
    seller_id = seller_id if isinstance(seller_id, str) else "UNKNOWN"
    why = _feed_problem(feed)
    if why:
        return _fatal(feed_id, seller_id, f"Item 'Feed' cannot be parsed: {why}")
    messages = feed["messages"]
    issues = []
    invalid = 0
    for message in messages:
        problems = list(_message_problems(message, known_skus))
        for code, text in problems:
            issues.append(_issue(message, code, "ERROR", text))
        invalid += bool(problems)
        if not problems and message["sku"] in warnings:
            issues.append(_issue(message, INCOMPLETE, "WARNING", warnings[message["sku"]]))
    report = {"header": {"sellerId": seller_id, "version": "2.0", "feedId": feed_id},
              "issues": issues,
              "summary": {"errors": sum(i["severity"] == "ERROR" for i in issues),
                          "warnings": sum(i["severity"] == "WARNING" for i in issues),
                          "messagesProcessed": len(messages),
                          "messagesAccepted": len(messages) - invalid,
                          "messagesInvalid": invalid}}
    return "DONE", json.dumps(report).encode(), "application/json"


def _fatal(feed_id: str, seller_id: str, message: str) -> tuple[str, bytes, str]:
    report = {"header": {"sellerId": seller_id, "version": "2.0", "feedId": feed_id},
              "issues": [{"code": INVALID_FEED, "severity": "ERROR", "message": message}],
              "summary": {"errors": 1, "warnings": 0, "messagesProcessed": 0,
                          "messagesAccepted": 0, "messagesInvalid": 0}}
    return "FATAL", json.dumps(report).encode(), "application/json"


def _feed_problem(feed) -> str:
    """Why the document as a whole breaks listings-feed-schema-v2, or ""."""
    if not isinstance(feed, dict):
        return "the document is not a JSON object"
    header = feed.get("header")
    if not isinstance(header, dict) or not isinstance(header.get("sellerId"), str):
        return "header.sellerId is required"
    if header.get("version") != "2.0":
        return f"header.version must be \"2.0\", not {header.get('version')!r}"
    messages = feed.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages must be an array of 1 to 25000 messages"
    if len(messages) > MAX_MESSAGES:
        return f"messages has {len(messages)} items; at most {MAX_MESSAGES} are allowed"
    if not all(isinstance(m, dict) for m in messages):
        return "every message must be a JSON object"
    ids = [m.get("messageId") for m in messages if isinstance(m.get("messageId"), int)]
    if len(ids) != len(set(ids)):
        return "messageId values must be unique within the feed"
    return ""


def _issue(message: dict, code: str, severity: str, text: str) -> dict:
    issue = {"code": code, "severity": severity, "message": text}
    if _is_id(message.get("messageId")):
        issue["messageId"] = message["messageId"]
    if isinstance(message.get("sku"), str) and message["sku"]:
        issue["sku"] = message["sku"]
    return issue


def _is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_MESSAGE_ID


def _message_problems(message: dict, known_skus: set[str]):
    sku = message.get("sku")
    if not _is_id(message.get("messageId")):
        yield INVALID_MESSAGE, "messageId is required and must be an integer from 1 to 2147483647"
    if not isinstance(sku, str) or not sku:
        yield INVALID_MESSAGE, "sku is required"
    elif sku not in known_skus:
        yield UNKNOWN_SKU, f"SKU '{sku}' does not exist for this selling partner"
    operation = message.get("operationType")
    if operation not in OPERATIONS:
        yield INVALID_MESSAGE, f"operationType must be one of {', '.join(OPERATIONS)}"
        return
    if operation == "PATCH":
        if "attributes" in message or "requirements" in message:
            yield INVALID_MESSAGE, "attributes and requirements are not allowed with PATCH"
        if not isinstance(message.get("productType"), str) or not message["productType"]:
            yield INVALID_MESSAGE, "productType is required for PATCH"
        patches = message.get("patches")
        if not isinstance(patches, list) or not patches:
            yield INVALID_MESSAGE, "patches must list at least one JSON Patch operation"
            return
        for patch in patches:
            yield from _patch_problems(patch)


def _patch_problems(patch):
    if not isinstance(patch, dict) or patch.get("op") not in PATCH_OPS \
            or not isinstance(patch.get("path"), str):
        yield INVALID_MESSAGE, f"a patch needs op ({', '.join(PATCH_OPS)}) and path"
        return
    if patch["path"] != "/attributes/fulfillment_availability":
        return
    value = patch.get("value")
    if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
        yield INVALID_MESSAGE, "'fulfillment_availability' needs a value array of objects"
        return
    for entry in value:
        if entry.get("fulfillment_channel_code") not in CHANNELS:
            yield BAD_QUANTITY, ("'fulfillment_availability.fulfillment_channel_code' must be one of "
                                 f"{', '.join(CHANNELS)}")
        quantity = entry.get("quantity")
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 0:
            yield BAD_QUANTITY, (f"'fulfillment_availability.quantity' must be a "
                                 f"non-negative integer, got {quantity!r}")
        lead = entry.get("lead_time_to_ship_max_days", 1)
        if not isinstance(lead, int) or isinstance(lead, bool) or lead < 0:
            yield BAD_QUANTITY, (f"'fulfillment_availability.lead_time_to_ship_max_days' must be a "
                                 f"non-negative integer, got {lead!r}")


def _order_fulfillment(feed_id: str, document: bytes) -> tuple[str, bytes, str]:
    try:
        root = ElementTree.fromstring(document)
        messages = root.findall("Message")
        errors = [m for m in messages if not (m.findtext("OrderFulfillment/AmazonOrderID") or "")]
    except ElementTree.ParseError:
        messages, errors = [], None
    env = ElementTree.Element("AmazonEnvelope")
    header = ElementTree.SubElement(env, "Header")
    ElementTree.SubElement(header, "DocumentVersion").text = "1.02"
    ElementTree.SubElement(header, "MerchantIdentifier").text = "SANDBOX"
    ElementTree.SubElement(env, "MessageType").text = "ProcessingReport"
    msg = ElementTree.SubElement(env, "Message")
    ElementTree.SubElement(msg, "MessageID").text = "1"
    report = ElementTree.SubElement(msg, "ProcessingReport")
    ElementTree.SubElement(report, "DocumentTransactionID").text = feed_id
    ElementTree.SubElement(report, "StatusCode").text = "Complete"
    summary = ElementTree.SubElement(report, "ProcessingSummary")
    bad = len(messages) if errors is None else len(errors)
    ElementTree.SubElement(summary, "MessagesProcessed").text = str(len(messages))
    ElementTree.SubElement(summary, "MessagesSuccessful").text = str(len(messages) - bad)
    ElementTree.SubElement(summary, "MessagesWithError").text = str(bad if errors else 0)
    ElementTree.SubElement(summary, "MessagesWithWarning").text = "0"
    for message in errors or []:
        result = ElementTree.SubElement(report, "Result")
        ElementTree.SubElement(result, "MessageID").text = message.findtext("MessageID") or "0"
        ElementTree.SubElement(result, "ResultCode").text = "Error"
        ElementTree.SubElement(result, "ResultMessageCode").text = "18028"
        ElementTree.SubElement(result, "ResultDescription").text = "AmazonOrderID is missing"
    status = "FATAL" if errors is None else "DONE"
    body = ElementTree.tostring(env, encoding="utf-8", xml_declaration=True)
    return status, body, "text/xml; charset=UTF-8"
