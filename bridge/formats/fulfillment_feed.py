"""The order fulfillment feed (POST_ORDER_FULFILLMENT_DATA), pure: packages in, an XML
AmazonEnvelope out; Amazon's XML ProcessingReport in, each message's result out.

The alternative to confirmShipment (`shipments.send = "feed"`): one document per run, each
package one message whose MessageID is the package's ledger id, so every result in the
report maps back to its package and from there to its file rows. MerchantFulfillmentID is the
same id: a package sent again (after a crash) is the same fulfillment to Amazon.

Shapes from Amazon's OrderFulfillment.xsd and amzn-base.xsd: FulfillmentData takes a
CarrierCode from Amazon's list or, for any other carrier, a CarrierName (never both).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from bridge.errors import BadFile
from bridge.formats.shipments import PlannedPackage
from bridge.records import iso_z

FEED_TYPE = "POST_ORDER_FULFILLMENT_DATA"
CONTENT_TYPE = "text/xml; charset=UTF-8"
DOCUMENT_VERSION = "1.01"


def fulfillment_feed(merchant_id: str, packages: Iterable[tuple[int, PlannedPackage]]) -> bytes:
    from lxml import etree  # here, not at import: a service that sends no feed never loads lxml
    """The feed document; `packages` are (package id, package): the id is the MessageID."""
    envelope = etree.Element("AmazonEnvelope", nsmap={"xsi": "http://www.w3.org/2001/XMLSchema-instance"})
    envelope.set("{http://www.w3.org/2001/XMLSchema-instance}noNamespaceSchemaLocation", "amzn-envelope.xsd")
    header = etree.SubElement(envelope, "Header")
    _text(header, "DocumentVersion", DOCUMENT_VERSION)
    _text(header, "MerchantIdentifier", merchant_id)
    _text(envelope, "MessageType", "OrderFulfillment")
    for package_id, package in packages:
        message = etree.SubElement(envelope, "Message")
        _text(message, "MessageID", str(package_id))
        fulfillment = etree.SubElement(message, "OrderFulfillment")
        _text(fulfillment, "AmazonOrderID", package.order_id)
        _text(fulfillment, "MerchantFulfillmentID", str(package_id))
        _text(fulfillment, "FulfillmentDate", iso_z(package.ship_date))
        data = etree.SubElement(fulfillment, "FulfillmentData")
        if package.carrier.code == "Other":
            _text(data, "CarrierName", package.carrier.name)
        else:
            _text(data, "CarrierCode", package.carrier.code)
        if package.method:
            _text(data, "ShippingMethod", package.method)
        _text(data, "ShipperTrackingNumber", package.tracking)
        for item_id, quantity in package.items:
            item = etree.SubElement(fulfillment, "Item")
            _text(item, "AmazonOrderItemCode", item_id)
            _text(item, "Quantity", str(quantity))
    etree.indent(envelope, space="  ")
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8") + b"\n"


def _text(parent, name: str, value: str):
    element = parent.makeelement(name)
    parent.append(element)
    element.text = value
    return element


@dataclass(frozen=True)
class ReportResult:
    message_id: int | None  # None: a result about the whole document
    severity: str  # "Error" or "Warning"
    code: str
    description: str


@dataclass
class ProcessingReport:
    status: str  # StatusCode: "Complete", ...
    processed: int = 0
    successful: int = 0
    with_error: int = 0
    with_warning: int = 0
    results: list[ReportResult] = field(default_factory=list)

    def errors_for(self, message_id: int) -> list[ReportResult]:
        return [r for r in self.results if r.message_id == message_id and r.severity == "Error"]

    def document_errors(self) -> list[ReportResult]:
        return [r for r in self.results if r.message_id in (None, 0) and r.severity == "Error"]

    def outcome(self, message_id: int) -> str:
        """What the report says of one package: "" (confirmed) or Amazon's words (rejected)."""
        errors = self.errors_for(message_id) or self.document_errors()
        return "; ".join(f"{r.code}: {r.description}" for r in errors)


def parse_processing_report(document: bytes) -> ProcessingReport:
    """Amazon's XML ProcessingReport, read without resolving entities or touching the network."""
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False)
    try:
        root = etree.fromstring(document, parser)
    except etree.XMLSyntaxError as problem:
        raise BadFile(f"the processing report is not XML: {problem}") from None
    if root.getroottree().docinfo.internalDTD is not None:
        raise BadFile("the processing report has a DOCTYPE; refused")
    report = root.find("Message/ProcessingReport")
    if report is None:
        raise BadFile("the processing report has no Message/ProcessingReport")
    summary = report.find("ProcessingSummary")

    def count(name: str) -> int:
        text = summary.findtext(name) if summary is not None else None
        return int(text) if text and text.strip().isdigit() else 0

    results = []
    for result in report.findall("Result"):
        message = (result.findtext("MessageID") or "").strip()
        results.append(ReportResult(
            message_id=int(message) if message.isdigit() else None,
            severity=(result.findtext("ResultCode") or "").strip(),
            code=(result.findtext("ResultMessageCode") or "").strip(),
            description=(result.findtext("ResultDescription") or "").strip()))
    return ProcessingReport(status=(report.findtext("StatusCode") or "").strip(),
                            processed=count("MessagesProcessed"), successful=count("MessagesSuccessful"),
                            with_error=count("MessagesWithError"), with_warning=count("MessagesWithWarning"),
                            results=results)
