"""The sandbox's feed processing: a submitted document in, a result document out.

JSON_LISTINGS_FEED gets a processing report valid against
`listings-feed-processing-report-schema-v2.json` (FATAL, with one feed-level issue, for a
document that breaks `listings-feed-schema-v2.json` as a whole); POST_ORDER_FULFILLMENT_DATA gets the XML
`ProcessingReport` of the classic feeds, its valid fulfillments applied to the sandbox's orders
through a callback (the only state it touches). Returns (processingStatus, result bytes, content type).
"""
from __future__ import annotations

import json
from xml.etree import ElementTree

UNKNOWN_SKU = "4000003"   # Amazon: "The SKU does not exist" style issue
BAD_QUANTITY = "90244"


def process(feed_type: str, feed_id: str, document: bytes,
            known_skus: set[str], warnings: dict[str, str] | None = None, *,
            apply=None, marketplaces: tuple[str, ...] = ()) -> tuple[str, bytes, str]:
    """`apply(order_id, package_detail, marketplaces)` takes one valid fulfillment into the
    sandbox's orders and returns None, or (code, why) when the order refuses it; without it
    the fulfillment messages are only checked for their form."""
    if feed_type == "JSON_LISTINGS_FEED":
        return _listings(feed_id, document, known_skus, warnings or {})
    if feed_type == "POST_ORDER_FULFILLMENT_DATA":
        return _order_fulfillment(feed_id, document, apply, marketplaces)
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


# -- POST_ORDER_FULFILLMENT_DATA ----------------------------------------------------------------
# An AmazonEnvelope of OrderFulfillment messages (OrderFulfillment.xsd) gets the classic XML
# ProcessingReport. A document that is not such an envelope (not XML, another MessageType, no
# messages, repeated MessageIDs) makes the feed FATAL with one document-level result (MessageID 0),
# as Amazon answers "The XML you submitted is ill-formed at the Amazon Envelope XML level". Each
# message is checked on its own: its order id, date, carrier and items; then `apply` (the
# sandbox's orders) takes it like confirmShipment does, or says why not. A message with an error
# changes nothing. The ResultMessageCodes are the sandbox's own: the bridge keeps Amazon's words
# and never interprets a code.

ILL_FORMED = "5000"
MISSING_FIELD = "18028"
BAD_ORDER = "18100"
BAD_DATE = "18101"
BAD_CARRIER = "18102"
BAD_ITEM = "18103"


def _order_fulfillment(feed_id: str, document: bytes, apply, marketplaces) -> tuple[str, bytes, str]:
    try:
        root = ElementTree.fromstring(document)
    except ElementTree.ParseError as exc:
        return _report(feed_id, "UNKNOWN", 0, [(0, ILL_FORMED, f"The XML you submitted is ill-formed at the "
                                                               f"Amazon Envelope XML level ({exc})", "")], fatal=True)
    merchant = (root.findtext("Header/MerchantIdentifier") or "").strip() or "UNKNOWN"
    why = _envelope_problem(root)
    if why:
        return _report(feed_id, merchant, 0, [(0, ILL_FORMED, why, "")], fatal=True)
    messages = root.findall("Message")
    results = []
    for message in messages:
        message_id = int(message.findtext("MessageID").strip())
        order_id = (message.findtext("OrderFulfillment/AmazonOrderID") or "").strip()
        problem = _fulfillment_problem(message.find("OrderFulfillment"))
        if problem is None and apply is not None:
            problem = apply(order_id, _fulfillment_detail(message, feed_id), marketplaces)
        if problem is not None:
            code, text = problem
            results.append((message_id, code, text, order_id))
    return _report(feed_id, merchant, len(messages), results)


def _envelope_problem(root) -> str:
    if root.tag != "AmazonEnvelope":
        return f"the document element must be AmazonEnvelope, not {root.tag}"
    if (root.findtext("MessageType") or "").strip() != "OrderFulfillment":
        return "MessageType must be OrderFulfillment for POST_ORDER_FULFILLMENT_DATA"
    messages = root.findall("Message")
    if not messages:
        return "the envelope has no Message"
    ids = [(m.findtext("MessageID") or "").strip() for m in messages]
    if not all(i.isdigit() and 1 <= int(i) <= 2_147_483_647 for i in ids):
        return "every Message needs a MessageID from 1 to 2147483647"
    if len(set(ids)) != len(ids):
        return "MessageID values must be unique within the document"
    if any(m.find("OrderFulfillment") is None for m in messages):
        return "every Message needs an OrderFulfillment"
    return ""


def _fulfillment_problem(fulfillment) -> tuple[str, str] | None:
    """What Amazon refuses in one OrderFulfillment before looking at the order, or None."""
    if not (fulfillment.findtext("AmazonOrderID") or "").strip():
        return MISSING_FIELD, "AmazonOrderID is missing"
    date = (fulfillment.findtext("FulfillmentDate") or "").strip()
    if not _is_datetime(date):
        return BAD_DATE, f"FulfillmentDate {date!r} is not a valid date and time (ISO 8601, with its time zone)"
    data = fulfillment.find("FulfillmentData")
    code = (data.findtext("CarrierCode") or "").strip() if data is not None else ""
    name = (data.findtext("CarrierName") or "").strip() if data is not None else ""
    if not code and not name:
        return BAD_CARRIER, "FulfillmentData needs a CarrierCode or a CarrierName"
    if code and code not in _carrier_codes():
        return BAD_CARRIER, f"CarrierCode {code!r} is not a valid carrier code; use CarrierName for other carriers"
    if code == "Other" and not name:
        return BAD_CARRIER, "CarrierName is required when CarrierCode is Other"
    if data is None or not (data.findtext("ShipperTrackingNumber") or "").strip():
        return MISSING_FIELD, "ShipperTrackingNumber is missing"
    items = fulfillment.findall("Item")
    if not items:
        return BAD_ITEM, "the fulfillment lists no Item"
    for item in items:
        if not (item.findtext("AmazonOrderItemCode") or "").strip():
            return MISSING_FIELD, "Item/AmazonOrderItemCode is missing"
        quantity = (item.findtext("Quantity") or "").strip()
        if not quantity.isdigit() or int(quantity) < 1:
            return BAD_ITEM, f"Item/Quantity {quantity!r} must be a positive whole number"
    return None


def _fulfillment_detail(message, feed_id: str) -> dict:
    """The message as a confirmShipment packageDetail, for the sandbox's orders."""
    fulfillment = message.find("OrderFulfillment")
    data = fulfillment.find("FulfillmentData")
    reference = (fulfillment.findtext("MerchantFulfillmentID") or "").strip() \
        or f"feed-{feed_id}-{message.findtext('MessageID').strip()}"
    return {"packageReferenceId": reference,
            "carrierCode": (data.findtext("CarrierCode") or "").strip() or "Other",
            "carrierName": (data.findtext("CarrierName") or "").strip(),
            "shippingMethod": (data.findtext("ShippingMethod") or "").strip(),
            "trackingNumber": (data.findtext("ShipperTrackingNumber") or "").strip(),
            "shipDate": fulfillment.findtext("FulfillmentDate").strip(),
            "orderItems": [{"orderItemId": item.findtext("AmazonOrderItemCode").strip(),
                            "quantity": int(item.findtext("Quantity").strip())}
                           for item in fulfillment.findall("Item")]}


def _is_datetime(text: str) -> bool:
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return "T" in text and moment.tzinfo is not None


def _carrier_codes() -> frozenset[str]:
    from bridge.mapping import amazon_carrier_codes

    return amazon_carrier_codes()


def _report(feed_id: str, merchant: str, processed: int, results: list[tuple[int, str, str, str]],
            *, fatal: bool = False) -> tuple[str, bytes, str]:
    """The XML ProcessingReport; `results` are (MessageID, code, description, AmazonOrderID)."""
    env = ElementTree.Element("AmazonEnvelope", {
        "xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance",
        "xsi:noNamespaceSchemaLocation": "amzn-envelope.xsd"})
    header = ElementTree.SubElement(env, "Header")
    ElementTree.SubElement(header, "DocumentVersion").text = "1.02"
    ElementTree.SubElement(header, "MerchantIdentifier").text = merchant
    ElementTree.SubElement(env, "MessageType").text = "ProcessingReport"
    msg = ElementTree.SubElement(env, "Message")
    ElementTree.SubElement(msg, "MessageID").text = "1"
    report = ElementTree.SubElement(msg, "ProcessingReport")
    ElementTree.SubElement(report, "DocumentTransactionID").text = feed_id
    ElementTree.SubElement(report, "StatusCode").text = "Complete"
    summary = ElementTree.SubElement(report, "ProcessingSummary")
    bad = len({message_id for message_id, *_ in results if message_id})
    ElementTree.SubElement(summary, "MessagesProcessed").text = str(processed)
    ElementTree.SubElement(summary, "MessagesSuccessful").text = str(processed - bad)
    ElementTree.SubElement(summary, "MessagesWithError").text = str(bad)
    ElementTree.SubElement(summary, "MessagesWithWarning").text = "0"
    for message_id, code, text, order_id in results:
        result = ElementTree.SubElement(report, "Result")
        ElementTree.SubElement(result, "MessageID").text = str(message_id)
        ElementTree.SubElement(result, "ResultCode").text = "Error"
        ElementTree.SubElement(result, "ResultMessageCode").text = code
        ElementTree.SubElement(result, "ResultDescription").text = text
        if order_id:
            info = ElementTree.SubElement(result, "AdditionalInfo")
            ElementTree.SubElement(info, "AmazonOrderID").text = order_id
    ElementTree.indent(env, space="\t")
    body = ElementTree.tostring(env, encoding="utf-8", xml_declaration=True)
    return ("FATAL" if fatal else "DONE"), body, "text/xml; charset=UTF-8"
