"""Amazon's rate budget, and orders that should not wait.

Held orders are asked for again least recently asked first, so one that never gets an address
cannot starve the others; once addresses are back they come back in bulk, in one run. v0 spends
getOrderItems only on orders it can still send, and one Restricted Data Token a run. Everything
runs against the SP-API sandbox over HTTP and the private OpenSSH server.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import timedelta

import pytest

from bridge.edges.amazon import RATE_LIMITS, AmazonOrders, created_spans
from bridge.flows.orders import NOT_FOUND, PII_MISSING, can_still_be_sent, decide
from bridge.ledger import OrderStatus
from bridge.formats.amazon_orders import order_from_v2026
from bridge.records import FULFILLMENT_STATUSES, OrderHeader
from bridge.sandbox.spapi import SpApiSandbox, load_seed
from harness import RUN_TIME, SEED, Bridge, load, sftp_warehouse, utc, write_config
from test_orders_flow import assert_request_follows_model

APIS = ["2026-01-01", "v0"]
MERCHANT_ORDERS = {
    "111-0000001-0000001", "111-0000002-0000002", "302-0000003-0000003",
    "203-0000004-0000004", "111-0000005-0000005",
}
LATER = RUN_TIME + timedelta(minutes=30)
# Per-order reads at 100/s instead of 0.5/s, in the sandbox and the bridge alike, so that tests
# with a few hundred orders take seconds; the page-wise operations keep Amazon's plans.
PER_ORDER = {"getOrder": (100.0, 30), "v0.getOrder": (100.0, 30), "getOrderItems": (100.0, 30)}


@pytest.fixture
def sandbox():
    import sp_api.auth.access_token_client as token_cache

    token_cache.cache.clear()
    with SpApiSandbox(load_seed(SEED), rate_limits=PER_ORDER) as server:
        yield server


@pytest.fixture
def make_bridge(tmp_path, sshd, sftp_root, sandbox):
    def make(orders: str = 'start = "2026-11-20T08:00:00Z"', amazon: str = "",
             rate_limits: dict | None = None) -> Bridge:
        config = write_config(tmp_path, sandbox_url=sandbox.url, token_url=sandbox.token_url,
                              warehouses=[sftp_warehouse("wh", "acme-csv", sshd, sftp_root)],
                              orders=orders, amazon=amazon)
        bridge = Bridge(load(config))
        bridge.flow.amazon = AmazonOrders(bridge.settings.amazon, backoff=0.01,
                                          rate_limits={**RATE_LIMITS, **PER_ORDER, **(rate_limits or {})})
        return bridge
    return make


def api_setting(api: str) -> str:
    return f'orders_api = "{api}"'


def new_order(order_id: str, last_updated: str = "2026-11-20T11:40:00Z", created_seconds: int = 0,
              **changes) -> dict:
    """The seed's first order under another id; created `created_seconds` after it."""
    order = copy.deepcopy(load_seed(SEED)[0])
    created = utc(order["createdTime"][:-1]) + timedelta(seconds=created_seconds)
    order.update(orderId=order_id, lastUpdatedTime=last_updated, createdTime=created.strftime("%Y-%m-%dT%H:%M:%SZ"),
                 **changes)
    for number, item in enumerate(order["orderItems"], 1):
        item["orderItemId"] = f"{order_id.replace('-', '')}{number:02d}"
    return order


def calls(sandbox, since: int = 0, operation: str | None = None, having: str | None = None) -> list:
    return [r for r in sandbox.requests[since:]
            if r.operation_id not in (None, "lwaToken")
            and (operation is None or r.operation_id == operation)
            and (having is None or having in r.query)]


def delivered(bridge: Bridge) -> set[str]:
    return {o.order_id for o in bridge.ledger.orders_in(OrderStatus.DELIVERED)}


def held(bridge: Bridge) -> dict[str, str]:
    return {o.order_id: o.reason for o in bridge.ledger.orders_in(OrderStatus.HELD)}


# --- held orders come back in bulk, in one run ----------------------------------------------

@pytest.mark.parametrize("api", APIS)
def test_held_orders_come_back_in_one_run_with_bulk_calls_once_addresses_are_back(make_bridge, sandbox, api):
    for number in range(150):
        sandbox.add_order(new_order(f"111-8{number:06d}-0000001", created_seconds=number))
    sandbox.set_pii_access(False)
    bridge = make_bridge(amazon=api_setting(api))
    bridge.run(RUN_TIME)
    assert len(held(bridge)) == 155

    sandbox.set_pii_access(True)
    mark = len(sandbox.requests)
    report = bridge.run(LATER)

    assert report.errors == [] and held(bridge) == {}
    assert len(delivered(bridge)) == 155
    if api == "v0":  # one token for the run, 50 orders a getOrders by id, items already known
        assert len(calls(sandbox, mark, "createRestrictedDataToken")) == 1
        assert len(calls(sandbox, mark, "getOrders", having="AmazonOrderIds")) == 4
        assert calls(sandbox, mark, "getOrderItems") == []
    else:  # one probe, 100 orders a searchOrders page, the few created apart one by one
        assert len(calls(sandbox, mark, "searchOrders", having="createdAfter")) == 2
        # The probe (one never asked before), then the 151 created together in two pages,
        # then the three created far from them one by one.
        assert [r.path.rsplit("/", 1)[1] for r in calls(sandbox, mark, "getOrder")] == [
            "111-0000002-0000002", "111-0000005-0000005", "203-0000004-0000004", "302-0000003-0000003"]
    for request in calls(sandbox):
        assert_request_follows_model(request)


@pytest.mark.parametrize("api", APIS)
def test_while_addresses_are_withheld_a_run_asks_amazon_once_about_held_orders(make_bridge, sandbox, api):
    sandbox.set_pii_access(False)
    bridge = make_bridge(amazon=api_setting(api))
    bridge.run(RUN_TIME)  # eight windows
    mark = len(sandbox.requests)
    bridge.run(LATER)

    asked = calls(sandbox, mark, "createRestrictedDataToken" if api == "v0" else "getOrder")
    assert len(asked) == 1
    if api == "v0":  # the token was refused once in the first run too, not once per window
        assert len(calls(sandbox, 0, "createRestrictedDataToken")) == 2
    assert set(held(bridge).values()) == {PII_MISSING}


def test_each_run_asks_about_the_held_order_asked_least_recently(make_bridge, sandbox):
    sandbox.set_pii_access(False)
    bridge = make_bridge()
    for run in range(3):
        bridge.run(RUN_TIME + timedelta(minutes=30 * run))
    probes = [r.path.rsplit("/", 1)[1] for r in calls(sandbox, 0, "getOrder")]
    assert probes == ["111-0000001-0000001", "111-0000002-0000002", "111-0000005-0000005"]


def test_an_order_that_never_gets_its_address_cannot_starve_the_others(make_bridge, sandbox):
    stuck = sandbox.order("111-0000001-0000001")  # first in line: seen first, lowest id
    stuck["recipient"] = {}  # Amazon keeps its address back, role or not
    sandbox.add_order(stuck)
    bridge = make_bridge()
    bridge.run(RUN_TIME)  # the stuck one is held, the others delivered
    for number in range(3):  # three more orders arrive while the role is missing
        sandbox.add_order(new_order(f"111-0000{number}20-0000001", "2026-11-20T12:10:00Z"))
    sandbox.set_pii_access(False)
    bridge.run(LATER)
    assert len(held(bridge)) == 4
    sandbox.set_pii_access(True)

    bridge.run(LATER + timedelta(minutes=30))  # the stuck one was asked before: the others first
    bridge.run(LATER + timedelta(minutes=60))
    assert delivered(bridge) == MERCHANT_ORDERS - {"111-0000001-0000001"} | {
        f"111-0000{number}20-0000001" for number in range(3)}
    assert held(bridge) == {"111-0000001-0000001": PII_MISSING}


@pytest.mark.parametrize("api", APIS)
def test_a_held_order_amazon_no_longer_knows_is_noted_and_the_others_come_back(make_bridge, sandbox, api):
    from bridge.service import order_report

    sandbox.set_pii_access(False)
    bridge = make_bridge(amazon=api_setting(api))
    bridge.run(RUN_TIME)
    sandbox.remove_order("111-0000001-0000001")
    sandbox.set_pii_access(True)
    report = bridge.run(LATER)

    assert report.errors == []
    assert delivered(bridge) == MERCHANT_ORDERS - {"111-0000001-0000001"}
    assert held(bridge) == {"111-0000001-0000001": NOT_FOUND}
    history = order_report(bridge.settings, "111-0000001-0000001")["events"]
    assert [e["kind"] for e in history] == ["seen", "not_found"]
    bridge.run(LATER + timedelta(minutes=30))  # asked again, still not found: still no error
    assert held(bridge) == {"111-0000001-0000001": NOT_FOUND}


def test_a_stop_between_pages_keeps_what_came_back_and_the_next_run_goes_on(make_bridge, sandbox, sftp_root):
    for number in range(250):
        sandbox.add_order(new_order(f"111-8{number:06d}-0000001", created_seconds=number))
    sandbox.set_pii_access(False)
    bridge = make_bridge()
    bridge.run(RUN_TIME)
    sandbox.set_pii_access(True)
    bridge.flow.should_stop = lambda: bool(calls(sandbox, 0, "searchOrders", having="createdAfter"))
    bridge.run(LATER)

    assert len(calls(sandbox, 0, "searchOrders", having="createdAfter")) == 1
    pending = bridge.ledger.status_counts()[OrderStatus.PENDING]
    assert 100 <= pending < 255 and len(held(bridge)) == 255 - pending
    bridge.flow.should_stop = lambda: False
    bridge.run(LATER + timedelta(minutes=30))
    assert len(delivered(bridge)) == 255 and len(list(sftp_root.iterdir())) == 255


def test_when_searchorders_is_at_its_rate_limit_held_orders_come_back_one_by_one(make_bridge, sandbox):
    for number in range(30):
        sandbox.add_order(new_order(f"111-8{number:06d}-0000001", created_seconds=number))
    sandbox.set_pii_access(False)
    bridge = make_bridge(amazon="max_throttle_wait_seconds = 1")
    bridge.run(RUN_TIME)
    sandbox.set_pii_access(True)
    bridge.flow.amazon = AmazonOrders(bridge.settings.amazon, backoff=0.01,
                                      rate_limits={**RATE_LIMITS, **PER_ORDER, "searchOrders": (0.0056, 1)})
    mark = len(sandbox.requests)
    report = bridge.run(LATER)  # the window takes the one searchOrders call left

    assert report.errors == [] and report.caught_up
    assert calls(sandbox, mark, "searchOrders", having="createdAfter") == []
    assert len(calls(sandbox, mark, "getOrder")) == 35
    assert len(delivered(bridge)) == 35


def test_held_orders_are_swept_in_spans_of_orders_created_close_together():
    at = utc("2026-11-20T08:00:00")
    wanted = [(f"a{n}", at + timedelta(minutes=n)) for n in range(12)]  # one dense span
    wanted += [("lone", at + timedelta(days=2))]  # asked on its own
    wanted += [(f"b{n}", at + timedelta(days=5, minutes=50 * n)) for n in range(10)]  # 50 min apart
    spans = created_spans(wanted, gap=timedelta(hours=1), least=10)
    assert [(start, end, len(ids)) for start, end, ids in spans] == [
        (at, at + timedelta(minutes=11), 12),
        (at + timedelta(days=5), at + timedelta(days=5, minutes=450), 10),
    ]


# --- v0 spends getOrderItems only on orders it can still send -------------------------------

def test_v0_asks_for_items_only_for_orders_it_can_still_send(make_bridge, sandbox):
    sandbox.add_order(new_order("111-0000009-0000009", "2026-11-20T11:45:00Z"))  # in the next run's overlap
    bridge = make_bridge(orders='start = "2026-11-20T08:00:00Z"\nship_to_countries = ["US", "DE"]\n'
                                'overlap_minutes = 30', amazon=api_setting("v0"))
    bridge.run(RUN_TIME)
    bridge.run(LATER)

    asked = [r.path.split("/")[4] for r in calls(sandbox, 0, "getOrderItems")]
    # Not the cancelled order, not the one shipping to GB, and not twice for the overlap.
    assert sorted(asked) == sorted({"111-0000001-0000001", "111-0000002-0000002", "302-0000003-0000003",
                                    "111-0000005-0000005", "111-0000009-0000009"})
    assert delivered(bridge) == set(asked)
    assert len(calls(sandbox, 0, "createRestrictedDataToken")) == 1  # one token, reused


@pytest.mark.parametrize("status", FULFILLMENT_STATUSES)
def test_the_v0_header_judgement_agrees_with_decide(make_bridge, status):
    """getOrderItems is skipped exactly for the orders decide() would cancel or skip."""
    settings = make_bridge(orders='start = "2026-11-20T08:00:00Z"\nship_to_countries = ["US", "DE"]').settings
    for data in load_seed(SEED):
        order = order_from_v2026({**data, "fulfillment": {**data["fulfillment"], "fulfillmentStatus": status}})
        for shown, country in ((order, order.country_code), (replace(order, ship_to=None), "")):
            header = OrderHeader(order.order_id, order.marketplace_id, status, country, order.last_updated)
            sendable = decide(shown, settings).status in (OrderStatus.PENDING, OrderStatus.HELD)
            assert can_still_be_sent(header, settings) == sendable, (order.order_id, country)
