"""confirmShipment on SP-API (Orders v0, not deprecated), through python-amazon-sp-api.

Built on `bridge.edges.amazon.AmazonOrders` by composition: the same client construction, LWA
token handling, rate limiter and retries (429 waits as the rate header says, 5xx and network
errors with backoff). What leaves this module:

- nothing, when Amazon answered 204 (ordersV0: "Success", no content): the package is confirmed;
- `AmazonRejected` with Amazon's own words for a 400/404/409/413/415: final for that package;
- `AmazonThrottled`, `AmazonUnavailable` (retry later: the package stays waiting, and is sent
  again with the same packageReferenceId, which edits rather than adds);
- `AmazonAuthError` (fix the setup).

The library reports success of a no-content call only as a payload {"status_code": 204}; a 5xx
with an empty body also raises nothing and comes back as an empty payload. Only 204 counts as
confirmed here: any other answer that is not Amazon's (a 200 with a proxy's or a captive
portal's page, a body where there should be none) leaves the outcome unknown. It is asked again
with the same packageReferenceId (an edit of the same package, never a second one) and, failing
that, the package stays `sent` and goes again on the next run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from sp_api.base import ApiResponse, SellingApiException
from sp_api.base.exceptions import SellingApiForbiddenException, SellingApiRequestThrottledException

from bridge.config import AmazonSettings
from bridge.edges.amazon import RATE_LIMITS, AmazonOrders, _OrdersV0
from bridge.errors import AmazonRejected, AmazonUnavailable
from bridge.records import Order

# Amazon's published default usage plan for confirmShipment (ordersV0.json): 2/s, burst 10.
CONFIRM_SHIPMENT = "confirmShipment"
SHIPMENT_RATE_LIMITS = {**RATE_LIMITS, CONFIRM_SHIPMENT: (2.0, 10)}
_FINAL = (400, 404, 409, 413, 415, 422)


@dataclass(frozen=True)
class _Refused:
    """A 4xx answer carried out of AmazonOrders._call, which would otherwise make it a bare
    BridgeError without Amazon's code."""

    message: str


class AmazonShipments:
    def __init__(self, settings: AmazonSettings, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 rate_limits: dict[str, tuple[float, int]] | None = None, attempts: int = 5,
                 backoff: float = 2.0):
        self._amazon = AmazonOrders(settings, sleep=sleep, clock=clock,
                                    rate_limits=rate_limits or SHIPMENT_RATE_LIMITS,
                                    attempts=attempts, backoff=backoff)
        self._orders_client = None

    def confirm(self, order_id: str, request: dict) -> None:
        """Send one package's ConfirmShipmentRequest (see formats.shipments.confirm_request)."""
        # One client for every call: building one loads the CA bundle twice (about 90 ms),
        # half of the 0.5 s that Amazon's 2 calls a second leave per package.
        if self._orders_client is None:
            self._orders_client = self._amazon._client(_OrdersV0)
        client = self._orders_client

        def call(**body) -> ApiResponse | _Refused:
            try:
                answer = client.confirm_shipment(order_id, **body)
            except (SellingApiRequestThrottledException, SellingApiForbiddenException):
                raise  # AmazonOrders._call waits out a 429 and reports a 403
            except SellingApiException as problem:
                if getattr(problem, "code", 500) in _FINAL:
                    return _Refused(_amazon_words(problem))
                raise
            status = answer.payload.get("status_code") if isinstance(answer.payload, dict) else None
            if status != 204 or (answer.headers or {}).get("content-length", "0") != "0":
                # Not Amazon's answer; AmazonOrders._call retries a ValueError with backoff.
                raise ValueError(_not_amazons_answer(status))
            return answer
        try:
            answer = self._amazon._call(CONFIRM_SHIPMENT, call, **request)
        except AmazonUnavailable as problem:
            raise AmazonUnavailable(f"{problem}; order {order_id}'s package is sent again next run") from None
        if isinstance(answer, _Refused):
            raise AmazonRejected(answer.message)

    def order(self, order_id: str) -> Order | None:
        """An order fresh from Amazon, for confirmation rows naming an order the bridge did not
        deliver (when the config allows looking them up)."""
        return self._amazon.order(order_id)

    @property
    def rejected(self) -> list[tuple[str, str]]:
        return self._amazon.rejected


def _not_amazons_answer(status: object) -> str:
    if isinstance(status, int) and 200 <= status < 300:
        return (f"HTTP {status} where Amazon answers 204 without content (a proxy's or portal's page?): "
                "the outcome is unknown")
    return "no answer (HTTP 5xx, or a body that is not Amazon's): the outcome is unknown"


def _amazon_words(problem: SellingApiException) -> str:
    errors = problem.error if isinstance(getattr(problem, "error", None), list) else []
    parts = []
    for error in errors:
        if isinstance(error, dict):
            text = ": ".join(str(error[k]) for k in ("code", "message") if error.get(k))
            if error.get("details"):
                text += f" ({error['details']})"
            parts.append(text)
    return "; ".join(parts) or str(getattr(problem, "message", "") or problem)
