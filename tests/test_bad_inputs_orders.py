"""Bad input to the orders flow, each case with the exact message a person sees.

One table per kind of input; the next flows (shipments, stock) keep their own tables in
`test_bad_inputs_<flow>.py` the same way. Every case runs the real bridge against the SP-API
sandbox over HTTP and the private OpenSSH server: the sandbox's fault controls (`fail_next`,
`remove_order`, `set_pii_access`) make Amazon misbehave on the wire.

Tables here:
- AMAZON_DATA_V2026 / AMAZON_DATA_V0: an order Amazon sends that the bridge cannot use. It is
  recorded as rejected and shown in `fbm-bridge status` with the reason; the rest go through.
- AMAZON_ANSWERS: Amazon (or Login with Amazon) failing. The run reports the error, is not
  caught up, and the next run catches up; exit 2 only where a person must act.
- HELD_ORDER_ANSWERS: Amazon's answer about one held order is unusable: that order is noted
  (its reason in `status`), the other held orders still come back.
- CHECK_ANSWERS: `fbm-bridge check` tells a Login with Amazon outage from refused credentials.
"""

from __future__ import annotations

import copy
import json
from datetime import timedelta

import pytest

from bridge.flows.orders import NOT_FOUND, UNUSABLE_ANSWER
from bridge.ledger import OrderStatus
from bridge.sandbox.spapi import load_seed
from bridge.sandbox.spapi_orders import to_v0
from harness import RUN_TIME, SEED, Bridge, load, sftp_warehouse, write_config

MERCHANT_ORDERS = {
    "111-0000001-0000001", "111-0000002-0000002", "302-0000003-0000003",
    "203-0000004-0000004", "111-0000005-0000005",
}
BAD_ID = "111-0000020-0000020"


@pytest.fixture
def make_bridge(tmp_path, sshd, sftp_root, sandbox):
    def make(amazon: str = "") -> Bridge:
        config = write_config(tmp_path, sandbox_url=sandbox.url, token_url=sandbox.token_url,
                              warehouses=[sftp_warehouse("wh", "acme-csv", sshd, sftp_root)], amazon=amazon)
        return Bridge(load(config))
    return make


def delivered(bridge: Bridge) -> set[str]:
    return {o.order_id for o in bridge.ledger.orders_in(OrderStatus.DELIVERED)}


def attention(bridge: Bridge) -> list[tuple[str, str, str]]:
    from bridge.service import status_report

    return [(a["order_id"], a["status"], a["reason"]) for a in status_report(bridge.settings, now=RUN_TIME)["attention"]]


def seed_order() -> dict:
    order = copy.deepcopy(load_seed(SEED)[0])
    order["orderId"] = BAD_ID
    return order


def without(*path):
    def change(order: dict) -> None:
        for key in path[:-1]:
            order = order[key]
        del order[path[-1]]
    return change


def setting(*path, value):
    def change(order: dict) -> None:
        for key in path[:-1]:
            order = order[key]
        order[path[-1]] = value
    return change


# --- Amazon data: orders the bridge cannot use ------------------------------------------------

AMAZON_DATA_V2026 = [
    ("no fulfillment data", without("fulfillment"),
     f"order {BAD_ID}: fulfillment.fulfillmentStatus is missing"),
    ("a status Amazon added since", setting("fulfillment", "fulfillmentStatus", value="ON_HOLD"),
     f"order {BAD_ID}: fulfillment.fulfillmentStatus 'ON_HOLD' is not a status the bridge knows"),
    ("a status that is not a plain word", setting("fulfillment", "fulfillmentStatus", value="UNSHIPPED\nINFO forged"),
     f"order {BAD_ID}: fulfillment.fulfillmentStatus is not a status the bridge knows"),
    ("no created time", without("createdTime"), f"order {BAD_ID}: createdTime is missing"),
    ("no order items", without("orderItems"), f"order {BAD_ID}: orderItems is missing"),
    ("an item that is not an object", lambda order: order["orderItems"].append("oops"),
     f"order {BAD_ID}: orderItems[2] is not an object"),
    ("a quantity that is not a number", lambda order: order["orderItems"][0].update(quantityOrdered="two"),
     f"order {BAD_ID}: orderItems[1].quantityOrdered is not a whole number"),
]


@pytest.mark.parametrize("case, change, message", AMAZON_DATA_V2026, ids=[c[0] for c in AMAZON_DATA_V2026])
def test_an_order_the_bridge_cannot_use_is_shown_as_rejected_v2026(make_bridge, sandbox, case, change, message):
    order = seed_order()
    change(order)
    page = {"orders": [order], "lastUpdatedBefore": "2026-11-20T08:30:00Z"}
    sandbox.fail_next("searchOrders", 200, body=json.dumps(page).encode())
    bridge = make_bridge()
    report = bridge.run(RUN_TIME)

    assert report.errors == [] and report.caught_up
    assert attention(bridge) == [(BAD_ID, "rejected", message)]
    assert delivered(bridge) == MERCHANT_ORDERS


AMAZON_DATA_V0 = [
    ("a status Amazon added since", setting("OrderStatus", value="OnHold"),
     f"order {BAD_ID}: OrderStatus 'OnHold' is not a status the bridge knows"),
    ("no status", without("OrderStatus"), f"order {BAD_ID}: OrderStatus is missing"),
    ("no last update", without("LastUpdateDate"), f"order {BAD_ID}: LastUpdateDate is missing"),
    ("items Amazon does not know", lambda order: None,
     f"order {BAD_ID}: getOrderItems: Amazon does not know its items (404)"),
]


@pytest.mark.parametrize("case, change, message", AMAZON_DATA_V0, ids=[c[0] for c in AMAZON_DATA_V0])
def test_an_order_the_bridge_cannot_use_is_shown_as_rejected_v0(make_bridge, sandbox, case, change, message):
    order = to_v0(seed_order(), shipping_address=True, buyer_info=True)
    change(order)
    sandbox.fail_next("getOrders", 200, body=json.dumps({"payload": {"Orders": [order]}}).encode())
    bridge = make_bridge(amazon='orders_api = "v0"')
    report = bridge.run(RUN_TIME)

    assert report.errors == [] and report.caught_up
    assert attention(bridge) == [(BAD_ID, "rejected", message)]
    assert delivered(bridge) == MERCHANT_ORDERS


# --- Amazon answers: the service or its login failing -----------------------------------------

LWA_SECRETS = "check BRIDGE_LWA_CLIENT_ID, BRIDGE_LWA_CLIENT_SECRET and BRIDGE_LWA_REFRESH_TOKEN"
AMAZON_ANSWERS = [
    # case, fault, amazon settings, the run's error ({token_url} filled in), a person must act
    ("Login with Amazon down, answering an HTML page",
     ("lwaToken", 503, 5, b"<html><body>Service Unavailable</body></html>", None), "",
     "pull: Login with Amazon is unavailable (HTTP 503, not JSON, from {token_url}): not a credentials"
     " problem; retried on the next run", False),
    ("Login with Amazon failing with a JSON 500", ("lwaToken", 500, 5, None, None), "",
     "pull: Login with Amazon is unavailable (HTTP 500 from {token_url}): not a credentials problem;"
     " retried on the next run", False),
    ("Login with Amazon refusing the client",
     ("lwaToken", 401, 1, b'{"error": "invalid_client", "error_description": "Client authentication failed"}', None),
     "", f"pull: Login with Amazon refused the credentials (Client authentication failed); {LWA_SECRETS}", True),
    ("a page token Amazon sends twice",
     ("searchOrders", 200, 2, b'{"orders": [], "pagination": {"nextToken": "again"}}', None), "",
     "pull: searchOrders: Amazon sent a page token it had sent before; the pages stop here rather than"
     " loop, and are read again from the start on the next run", False),
    ("throttled for longer than the longest wait", ("searchOrders", 429, 1, None, None),
     "max_throttle_wait_seconds = 1",
     "pull: searchOrders: throttled by Amazon (429) for 179s, longer than amazon.max_throttle_wait_seconds;"
     " continued on the next run", False),
    ("throttled at every attempt", ("searchOrders", 429, 5, None, {"x-amzn-RateLimit-Limit": "50"}), "",
     "pull: searchOrders: throttled by Amazon (429) 5 times in a row; continued on the next run", False),
    ("unavailable at every attempt", ("searchOrders", 503, 5, None, None), "",
     "pull: searchOrders: Amazon error ServiceUnavailable: Service temporarily unavailable. Please try again.",
     False),
]


@pytest.mark.parametrize("case, fault, amazon, message, needs_a_person", AMAZON_ANSWERS,
                         ids=[c[0] for c in AMAZON_ANSWERS])
def test_amazon_failing_is_reported_not_caught_up_and_the_next_run_catches_up(
        make_bridge, sandbox, case, fault, amazon, message, needs_a_person):
    operation, status, count, body, headers = fault
    sandbox.fail_next(operation, status, count=count, body=body, headers=headers)
    bridge = make_bridge(amazon=amazon)
    report = bridge.run(RUN_TIME)

    assert report.errors == [message.format(token_url=sandbox.token_url)]
    assert report.needs_a_person is needs_a_person
    assert not report.caught_up and "caught_up=no" in report.summary()
    bridge = bridge.restart()  # the next run: a new process, so the rate limits have refilled
    again = bridge.run(RUN_TIME + timedelta(minutes=30))
    assert again.errors == [] and again.caught_up and "caught_up=yes" in again.summary()
    assert delivered(bridge) == MERCHANT_ORDERS


# --- held orders: Amazon's answer about one of them -------------------------------------------

def forget(sandbox, order_id: str) -> None:
    sandbox.remove_order(order_id)


def break_created_time(sandbox, order_id: str) -> None:
    order = sandbox.order(order_id)
    del order["createdTime"]
    sandbox.add_order(order)


HELD_ORDER_ANSWERS = [
    ("Amazon no longer knows it (404)", forget, ["2026-01-01", "v0"], NOT_FOUND),
    ("Amazon's answer is unusable", break_created_time, ["2026-01-01"],
     UNUSABLE_ANSWER.format("order 111-0000001-0000001: createdTime is missing")),
]


@pytest.mark.parametrize("case, fault, api, reason", [
    (case, fault, api, reason) for case, fault, apis, reason in HELD_ORDER_ANSWERS for api in apis
], ids=[f"{case} {api}" for case, _, apis, _ in HELD_ORDER_ANSWERS for api in apis])
def test_one_held_orders_bad_answer_is_noted_and_the_others_come_back(make_bridge, sandbox, case, fault, api, reason):
    sandbox.set_pii_access(False)
    bridge = make_bridge(amazon=f'orders_api = "{api}"')
    bridge.run(RUN_TIME)
    fault(sandbox, "111-0000001-0000001")
    sandbox.set_pii_access(True)
    report = bridge.run(RUN_TIME + timedelta(minutes=30))

    assert report.errors == []
    assert delivered(bridge) == MERCHANT_ORDERS - {"111-0000001-0000001"}
    held = [row for row in attention(bridge) if row[1] == "held"]
    assert held == [("111-0000001-0000001", "held", reason)]


CHECK_ANSWERS = [
    ("Login with Amazon down", (503, b"<html>Service Unavailable</html>"), "AmazonUnavailable",
     "Login with Amazon is unavailable (HTTP 503, not JSON, from {token_url}): not a credentials problem;"
     " try again later"),
    ("Login with Amazon refusing the refresh token",
     (400, b'{"error": "invalid_grant", "error_description": "The request has an invalid grant parameter"}'),
     "AmazonAuthError", f"Login with Amazon refused the credentials (The request has an invalid grant parameter);"
     f" {LWA_SECRETS}"),
]


@pytest.mark.parametrize("case, fault, kind, message", CHECK_ANSWERS, ids=[c[0] for c in CHECK_ANSWERS])
def test_check_tells_a_login_outage_from_refused_credentials(make_bridge, sandbox, case, fault, kind, message):
    from bridge.errors import BridgeError

    status, body = fault
    sandbox.fail_next("lwaToken", status, body=body)
    with pytest.raises(BridgeError) as caught:
        make_bridge().amazon.check()
    assert type(caught.value).__name__ == kind
    assert str(caught.value) == message.format(token_url=sandbox.token_url)
