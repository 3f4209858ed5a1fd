"""The sandbox's feed processing, pure: a submitted document in, a result document out.

JSON_LISTINGS_FEED gets a processing report valid against
`listings-feed-processing-report-schema-v2.json`; POST_ORDER_FULFILLMENT_DATA gets the XML
`ProcessingReport` of the classic feeds. Returns (processingStatus, result bytes, content type).
"""
from __future__ import annotations

import json
from xml.etree import ElementTree

UNKNOWN_SKU = "4000003"   # Amazon: "The SKU does not exist" style issue
BAD_QUANTITY = "90244"


def process(feed_type: str, feed_id: str, document: bytes,
            known_skus: set[str]) -> tuple[str, bytes, str]:
    if feed_type == "JSON_LISTINGS_FEED":
        return _listings(feed_id, document, known_skus)
    if feed_type == "POST_ORDER_FULFILLMENT_DATA":
        return _order_fulfillment(feed_id, document)
    return "FATAL", json.dumps({"errorDetails": f"Feed type {feed_type} is not supported by "
                                                f"the sandbox"}).encode(), "application/json"


def _listings(feed_id: str, document: bytes, known_skus: set[str]) -> tuple[str, bytes, str]:
    try:
        feed = json.loads(document)
        header, messages = feed["header"], feed["messages"]
        seller_id = str(header["sellerId"])
        if not isinstance(messages, list):
            raise TypeError("messages must be an array")
    except (ValueError, KeyError, TypeError) as exc:
        report = {"header": {"sellerId": "UNKNOWN", "version": "2.0", "feedId": feed_id},
                  "issues": [{"code": "4000001", "severity": "ERROR",
                              "message": f"The feed document could not be parsed: {exc}"}],
                  "summary": {"errors": 1, "warnings": 0, "messagesProcessed": 0,
                              "messagesAccepted": 0, "messagesInvalid": 0}}
        return "FATAL", json.dumps(report).encode(), "application/json"
    issues = []
    invalid = 0
    for message in messages:
        problems = list(_message_problems(message, known_skus))
        for code, text in problems:
            issue = {"code": code, "severity": "ERROR", "message": text}
            if isinstance(message.get("messageId"), int) and message["messageId"] >= 1:
                issue["messageId"] = message["messageId"]
            if isinstance(message.get("sku"), str) and message["sku"]:
                issue["sku"] = message["sku"]
            issues.append(issue)
        invalid += bool(problems)
    report = {"header": {"sellerId": seller_id, "version": "2.0", "feedId": feed_id},
              "issues": issues,
              "summary": {"errors": len(issues), "warnings": 0,
                          "messagesProcessed": len(messages),
                          "messagesAccepted": len(messages) - invalid,
                          "messagesInvalid": invalid}}
    return "DONE", json.dumps(report).encode(), "application/json"


def _message_problems(message: dict, known_skus: set[str]):
    sku = message.get("sku")
    if not isinstance(message.get("messageId"), int):
        yield "4000001", "messageId is required and must be an integer"
    if not isinstance(sku, str) or not sku:
        yield "4000001", "sku is required"
    elif sku not in known_skus:
        yield UNKNOWN_SKU, f"SKU '{sku}' does not exist for this selling partner"
    for patch in message.get("patches") or []:
        if patch.get("path") != "/attributes/fulfillment_availability":
            continue
        for entry in patch.get("value") or []:
            quantity = entry.get("quantity")
            if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 0:
                yield BAD_QUANTITY, (f"'fulfillment_availability.quantity' must be a "
                                     f"non-negative integer, got {quantity!r}")


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
