"""Orders down, end to end: SP-API sandbox over HTTP → bridge → real OpenSSH sshd.

Each test is a behaviour a seller or a warehouse relies on: byte-exact files, every order once,
no gap between windows, a crash anywhere converges, bad setups give clear errors.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from datetime import timedelta
from pathlib import Path

import pytest
import sp_api.auth.access_token_client as token_cache

from bridge.flows.orders import BOOKMARK, PII_MISSING
from bridge.ledger import FileStatus, OrderStatus
from bridge.sandbox.spapi import SpApiSandbox, load_seed
from harness import RUN_TIME, SAMPLES, SECRETS, SEED, Bridge, load, sftp_warehouse, utc, write_config

MERCHANT_ORDERS = {
    "111-0000001-0000001", "111-0000002-0000002", "302-0000003-0000003",
    "203-0000004-0000004", "111-0000005-0000005",
}


@pytest.fixture
def make_bridge(tmp_path, sshd, sftp_root, sandbox):
    def make(mapping: str = "acme-csv", orders: str = 'start = "2026-11-20T08:00:00Z"', amazon: str = "",
             name: str = "wh", **extra) -> Bridge:
        config = write_config(
            tmp_path, sandbox_url=sandbox.url, token_url=sandbox.token_url,
            warehouses=[sftp_warehouse(name, mapping, sshd, sftp_root, **extra)],
            orders=orders, amazon=amazon,
        )
        return Bridge(load(config))
    return make


def drop_files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def delivered_ids(bridge: Bridge) -> set[str]:
    return {o.order_id for o in bridge.ledger.orders_in(OrderStatus.DELIVERED)}


def new_order(order_id: str, last_updated: str, **changes) -> dict:
    order = copy.deepcopy(load_seed(SEED)[0])
    order.update(orderId=order_id, lastUpdatedTime=last_updated, **changes)
    for number, item in enumerate(order["orderItems"], 1):
        item["orderItemId"] = f"{order_id.replace('-', '')}{number:02d}"
    return order


# --- files the warehouse receives -------------------------------------------------------------

@pytest.mark.parametrize("mapping", ["acme-csv", "globex-xml", "initech-xlsx"])
def test_sandbox_orders_arrive_byte_exact_as_the_mappings_golden_files(make_bridge, sftp_root, mapping):
    report = make_bridge(mapping).run(RUN_TIME)

    assert report.errors == []
    golden = drop_files(SAMPLES / mapping)
    assert drop_files(sftp_root) == golden


def test_only_unshipped_merchant_orders_are_sent_and_each_once(make_bridge, sftp_root):
    bridge = make_bridge()
    bridge.run(RUN_TIME)
    again = bridge.run(RUN_TIME + timedelta(minutes=30))

    assert delivered_ids(bridge) == MERCHANT_ORDERS  # FBA, SHIPPED and CANCELLED orders are not
    assert again.staged_files == 0 and again.delivered_files == 0
    assert len(list(sftp_root.iterdir())) == len(MERCHANT_ORDERS)


def test_no_temporary_file_is_left_in_the_drop(make_bridge, sftp_root):
    make_bridge().run(RUN_TIME)
    assert not [p for p in sftp_root.iterdir() if p.name.endswith(".part")]


def test_ship_to_country_filter_is_applied_after_download(make_bridge):
    bridge = make_bridge(orders='start = "2026-11-20T08:00:00Z"\nship_to_countries = ["DE", "GB"]')
    bridge.run(RUN_TIME)
    assert delivered_ids(bridge) == {"302-0000003-0000003", "203-0000004-0000004"}


# --- windows tile time ------------------------------------------------------------------------

def test_windows_tile_time_and_catch_up_after_downtime(make_bridge, sandbox):
    bridge = make_bridge()
    report = bridge.run(RUN_TIME)

    searches = [r for r in sandbox.requests if r.operation_id == "searchOrders"]
    bounds = [(r.query["lastUpdatedAfter"][0], r.query["lastUpdatedBefore"][0]) for r in searches]
    assert bounds[0][0] == "2026-11-20T08:00:00Z"
    assert bounds[-1][1] == "2026-11-20T12:00:00Z"  # 30 minutes behind the run
    assert all(prev[1] == nxt[0] for prev, nxt in zip(bounds, bounds[1:]))  # no gap, no double
    assert len(report.windows) == 8
    assert bridge.ledger.bookmark(BOOKMARK) == utc("2026-11-20T12:00:00")
    bridge.run(RUN_TIME + timedelta(hours=2))  # after downtime
    assert bridge.ledger.window_log(BOOKMARK) == {
        "windows": 12, "since": "2026-11-20T08:00:00Z", "until": "2026-11-20T14:00:00Z", "gaps": []}


def test_a_long_catch_up_shows_its_progress_in_status_and_in_the_log_at_each_window(make_bridge, caplog):
    from bridge.report import format_status, status_report

    # 18 windows of 30 minutes behind, 5 a run (at Amazon's real rate limit, a catch-up of a
    # weekend takes hours: 0.0056 searchOrders a second once the burst of 20 is spent).
    bridge = make_bridge(orders='start = "2026-11-20T03:00:00Z"\nmax_windows_per_run = 5')
    clock = iter(RUN_TIME + timedelta(minutes=minute) for minute in range(1000))
    bridge.flow.clock = lambda: next(clock)  # the wall clock the pace is measured with
    caplog.set_level(logging.INFO, logger="bridge.orders")
    first = bridge.run(RUN_TIME)

    assert not first.caught_up
    status = status_report(bridge.settings, now=RUN_TIME + timedelta(minutes=30))
    assert status["catch_up"] == {"since": "2026-11-20T12:30:00Z", "windows_done": 5, "windows_left": 14,
                                  "orders": 0, "caught_up_in_seconds": 30 * 60 * 14 // 5}
    assert ("catching up: 5 windows done, 14 left, 0 orders so far; caught up in about 1h24m at the pace so far"
            in format_status(status))
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("orders catching up")]
    assert len(progress) == 5
    assert progress[0].startswith("orders catching up window=2026-11-20T03:00:00Z/2026-11-20T03:30:00Z"
                                  " windows_done=1 windows_left=17 orders=0 caught_up_in=")
    assert "windows_done=5 windows_left=13" in progress[-1]
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("orders catch-up run")] == [
        "orders catch-up run from=2026-11-20T03:00:00Z windows_left=18 this_run=5: each window costs at least"
        " one call at Amazon's rate limit (searchOrders: one every 3 minutes once its burst of 20 is spent)"]
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("orders first pull")] == [
        "orders first pull from=2026-11-20T03:00:00Z (orders.start)"]

    runs, report = 1, first
    while not report.caught_up and runs < 10:
        report = bridge.run(RUN_TIME + timedelta(minutes=runs))
        runs += 1
    assert runs == 4  # 5 + 5 + 5 + 3 windows
    assert status_report(bridge.settings, now=RUN_TIME + timedelta(hours=1))["catch_up"] is None
    assert delivered_ids(bridge) == MERCHANT_ORDERS
    assert any(r.getMessage().startswith("orders caught up window_end=") for r in caplog.records)


def test_a_first_pull_without_orders_start_says_how_far_back_it_reaches(make_bridge, caplog):
    caplog.set_level(logging.INFO, logger="bridge.orders")
    bridge = make_bridge(orders="")
    bridge.run(RUN_TIME)
    bridge.run(RUN_TIME + timedelta(minutes=30))

    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("orders first pull")] == [
        "orders first pull from=2026-11-20T11:30:00Z: orders.start is not set, so orders last updated before"
        " then (open at install, not changed since) are never pulled; set orders.start to reach them"]


def test_a_wait_for_amazons_rate_limit_is_logged_with_how_long_and_why(caplog):
    from bridge.edges.amazon import RateLimiter

    slept = []
    limiter = RateLimiter({"searchOrders": (0.0056, 2)}, clock=lambda: 100.0, sleep=slept.append)
    caplog.set_level(logging.INFO, logger="bridge.amazon")
    for _ in range(3):
        limiter.acquire("searchOrders", max_wait=300)

    assert [round(s) for s in slept] == [179]
    assert [r.getMessage() for r in caplog.records] == [
        "waiting 179s for Amazon's rate limit op=searchOrders rate=0.0056/s burst=2: its usage plan allows"
        " the next call then (not an error)"]


def test_a_short_wait_for_the_rate_limit_is_not_logged(caplog):
    from bridge.edges.amazon import RateLimiter

    slept = []
    limiter = RateLimiter({"getOrder": (0.5, 1)}, clock=lambda: 100.0, sleep=slept.append)
    caplog.set_level(logging.INFO, logger="bridge.amazon")
    limiter.acquire("getOrder", max_wait=300)
    limiter.acquire("getOrder", max_wait=300)

    assert slept == [2.0] and caplog.records == []


def test_requests_follow_amazons_model(make_bridge, sandbox):
    make_bridge().run(RUN_TIME)
    search = next(r for r in sandbox.requests if r.operation_id == "searchOrders")
    query = search.query
    assert query["lastUpdatedAfter"][0].endswith("Z") and "T" in query["lastUpdatedAfter"][0]
    assert query["fulfilledBy"] == ["MERCHANT"]
    assert set(query["fulfillmentStatuses"][0].split(",")) == {"UNSHIPPED", "PARTIALLY_SHIPPED", "CANCELLED"}
    assert set(query["includedData"][0].split(",")) == {"BUYER", "RECIPIENT", "FULFILLMENT", "PROCEEDS"}
    assert "createdAfter" not in query and "MarketplaceId" not in query


def test_window_upper_bound_is_never_closer_than_two_minutes_to_now(make_bridge, sandbox):
    bridge = make_bridge(orders='start = "2026-11-20T11:50:00Z"\nlag_minutes = 2')
    bridge.run(RUN_TIME)
    last = [r for r in sandbox.requests if r.operation_id == "searchOrders"][-1]
    assert last.query["lastUpdatedBefore"][0] == "2026-11-20T12:28:00Z"


def test_an_order_updated_after_its_window_was_pulled_arrives_in_a_later_run(make_bridge, sandbox):
    bridge = make_bridge()
    bridge.run(RUN_TIME)
    sandbox.add_order(new_order("111-0000009-0000009", "2026-11-20T12:10:00Z"))
    bridge.run(RUN_TIME + timedelta(minutes=30))
    assert "111-0000009-0000009" in delivered_ids(bridge)


def test_many_pages_are_all_read_and_no_order_is_doubled(make_bridge, sandbox, sftp_root):
    for number in range(250):
        sandbox.add_order(new_order(f"111-9{number:06d}-0000001", "2026-11-20T11:40:00Z"))
    bridge = make_bridge()
    bridge.run(RUN_TIME)

    pages = [r for r in sandbox.requests if r.operation_id == "searchOrders" and "paginationToken" in r.query]
    assert len(pages) >= 2
    assert len(delivered_ids(bridge)) == 250 + len(MERCHANT_ORDERS)
    assert len(list(sftp_root.iterdir())) == 250 + len(MERCHANT_ORDERS)


def test_throttling_is_waited_out_using_the_rate_header_and_no_page_is_lost(make_bridge, sandbox):
    sandbox.fail_next("searchOrders", 429, count=3, headers={"x-amzn-RateLimit-Limit": "50"})
    bridge = make_bridge()
    report = bridge.run(RUN_TIME)
    assert report.errors == []
    assert delivered_ids(bridge) == MERCHANT_ORDERS


def test_the_services_turn_pulls_windows_for_its_slice_then_yields_and_the_next_turn_goes_on(make_bridge, caplog):
    # The service's orders job pulls for orders.pull_slice_seconds at most, so that a catch-up at
    # Amazon's rate (hours) does not hold the shipments and stock jobs back; the daemon runs it
    # again right after them. A slice of 0: one window a turn.
    bridge = make_bridge(orders='start = "2026-11-20T08:00:00Z"\npull_slice_seconds = 0')
    assert bridge.settings.orders.pull_slice == timedelta(0)
    bridge.flow.pull_slice = bridge.settings.orders.pull_slice  # as the daemon's service makes it
    caplog.set_level(logging.INFO, logger="bridge.orders")

    turns = [bridge.run(RUN_TIME)]
    while not turns[-1].caught_up and len(turns) < 20:
        turns.append(bridge.run(RUN_TIME))

    assert [len(turn.windows) for turn in turns] == [1] * 8  # 08:00 to 12:00, 30 minutes each
    assert [turn.caught_up for turn in turns] == [False] * 7 + [True]
    yielded = [r.getMessage() for r in caplog.records if r.getMessage().startswith("orders pull yields")]
    assert yielded == ["orders pull yields windows=1: the service's other due jobs run, then the pull goes on"] * 7
    assert delivered_ids(bridge) == MERCHANT_ORDERS


# --- Amazon failing ---------------------------------------------------------------------------

@pytest.mark.parametrize("status, body", [(503, b"<html>Service Unavailable</html>"), (500, b"")])
def test_amazon_5xx_keeps_the_window_open_and_a_later_run_catches_up(make_bridge, sandbox, status, body):
    sandbox.fail_next("searchOrders", status, count=50, body=body)
    bridge = make_bridge()
    report = bridge.run(RUN_TIME)

    assert report.errors and "pull" in report.errors[0]
    assert bridge.ledger.bookmark(BOOKMARK) is None
    sandbox.fail_next("searchOrders", 200, count=0)
    sandbox._faults.clear()
    bridge.run(RUN_TIME + timedelta(minutes=30))
    assert delivered_ids(bridge) == MERCHANT_ORDERS


def test_wrong_lwa_credentials_give_a_setup_error_naming_the_secrets(tmp_path, sshd, sftp_root):
    token_cache.cache.clear()
    credentials = {"client_id": "other", "client_secret": "other", "refresh_token": "other"}
    with SpApiSandbox(load_seed(SEED), credentials=credentials) as sandbox:
        config = write_config(tmp_path, sandbox_url=sandbox.url, token_url=sandbox.token_url,
                              warehouses=[sftp_warehouse("wh", "acme-csv", sshd, sftp_root)])
        report = Bridge(load(config)).run(RUN_TIME)
    assert "BRIDGE_LWA_CLIENT_SECRET" in report.errors[0]
    assert SECRETS["BRIDGE_LWA_CLIENT_SECRET"] not in report.errors[0]


# --- addresses withheld (PII role missing) ----------------------------------------------------

@pytest.mark.parametrize("orders_api", ["2026-01-01", "v0"])
def test_orders_without_address_are_held_then_delivered_when_the_address_comes(make_bridge, sandbox, sftp_root, caplog, orders_api):
    sandbox.set_pii_access(False)
    bridge = make_bridge(amazon=f'orders_api = "{orders_api}"')
    with caplog.at_level(logging.WARNING):
        bridge.run(RUN_TIME)

    assert list(sftp_root.iterdir()) == []
    held = bridge.ledger.orders_in(OrderStatus.HELD)
    assert {o.order_id for o in held} == MERCHANT_ORDERS
    assert all(o.reason == PII_MISSING for o in held)
    assert "Direct-to-Consumer Shipping" in caplog.text

    sandbox.set_pii_access(True)
    bridge.run(RUN_TIME + timedelta(minutes=30))
    assert delivered_ids(bridge) == MERCHANT_ORDERS


def test_v0_mode_delivers_the_same_files_as_v2026(make_bridge, sftp_root, sandbox):
    make_bridge("acme-csv", amazon='orders_api = "v0"').run(RUN_TIME)
    assert drop_files(sftp_root) == drop_files(SAMPLES / "acme-csv")
    rdt = [r for r in sandbox.requests if r.operation_id == "getOrders"][0]
    assert rdt.headers["x-amz-access-token"].startswith("Atz.sprdt")


# --- after delivery ---------------------------------------------------------------------------

def test_a_cancellation_after_delivery_is_reported_never_resent(make_bridge, sandbox, sftp_root, caplog):
    bridge = make_bridge()
    bridge.run(RUN_TIME)
    before = drop_files(sftp_root)
    cancelled = sandbox.order("111-0000001-0000001")
    cancelled["fulfillment"]["fulfillmentStatus"] = "CANCELLED"
    cancelled["lastUpdatedTime"] = "2026-11-20T12:10:00Z"
    sandbox.add_order(cancelled)

    with caplog.at_level(logging.WARNING):
        report = bridge.run(RUN_TIME + timedelta(minutes=30))

    assert report.changed_after_delivery == 1
    assert drop_files(sftp_root) == before
    attention = bridge.ledger.attention()
    assert attention[0]["order_id"] == "111-0000001-0000001"
    assert "CANCELLED" in attention[0]["reason"]
    assert "111-0000001-0000001" in caplog.text


# --- crash anywhere, restart, converge --------------------------------------------------------

class Crash(BaseException):
    """A process death: not an error the flow may catch."""


STEPS = ["window_fetched", "spooled", "staged", "uploaded", "marked_uploaded", "renamed"]


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("mapping", ["acme-csv", "globex-xml"])
def test_a_crash_at_any_step_then_a_restart_delivers_every_order_exactly_once(make_bridge, sftp_root, step, mapping):
    hits = {"n": 0}
    # One file per order: die on the third file, with two already through that step.
    crash_on = 3 if mapping == "acme-csv" else 1

    def crash(name: str) -> None:
        if name == step:
            hits["n"] += 1
            if hits["n"] == crash_on:
                raise Crash(name)

    bridge = make_bridge(mapping).restart(checkpoint=crash, batch_size=1)  # each step file by file
    with pytest.raises(Crash):
        bridge.run(RUN_TIME)

    restarted = bridge.restart()
    restarted.run(RUN_TIME)
    restarted.run(RUN_TIME + timedelta(minutes=30))

    assert delivered_ids(restarted) == MERCHANT_ORDERS
    assert drop_files(sftp_root) == drop_files(SAMPLES / mapping)
    counts = restarted.ledger.status_counts()
    assert counts["staged"] == counts["pending"] == 0


def test_each_orders_buyer_data_is_opened_once_a_run(make_bridge, monkeypatch):
    from collections import Counter

    from bridge.sealing import Sealer

    bridge = make_bridge("acme-csv")
    opened: Counter = Counter()
    try_open, open_ = Sealer.try_open, Sealer.open
    monkeypatch.setattr(Sealer, "try_open", lambda self, token: opened.update([token]) or try_open(self, token))
    monkeypatch.setattr(Sealer, "open", lambda self, token, what: opened.update([token]) or open_(self, token, what))
    bridge.run(RUN_TIME)
    per_record = sorted(opened.values())

    assert delivered_ids(bridge) == MERCHANT_ORDERS
    assert per_record == [1] * len(MERCHANT_ORDERS)  # each order's record once; no spool copy read back


def part_of_the_batch_undone(sftp_root: Path) -> None:
    """A crash in the middle of the batch's uploads: one file not uploaded yet, one cut short."""
    parts = sorted(p for p in sftp_root.iterdir() if p.name.endswith(".part"))
    parts[-1].unlink()
    parts[0].write_bytes(parts[0].read_bytes()[:10])


def part_of_the_batch_renamed(sftp_root: Path) -> None:
    """A crash in the middle of the batch's renames: its first file renamed, the other not."""
    first = sorted(p for p in sftp_root.iterdir() if p.name.endswith(".part"))[0]
    first.rename(first.with_name(first.name.removesuffix(".part")))


@pytest.mark.parametrize("step, meanwhile", [
    ("spooled", None), ("staged", None), ("uploaded", None), ("uploaded", part_of_the_batch_undone),
    ("marked_uploaded", None), ("marked_uploaded", part_of_the_batch_renamed), ("renamed", None),
])
def test_a_crash_at_any_step_of_a_batch_then_a_restart_delivers_every_order_exactly_once(
        make_bridge, sftp_root, step, meanwhile):
    hits = {"n": 0}

    def crash(name: str) -> None:  # in the second batch of two files, the first batch through
        if name == step:
            hits["n"] += 1
            if hits["n"] == 2:
                raise Crash(name)

    bridge = make_bridge("acme-csv").restart(checkpoint=crash, batch_size=2)
    with pytest.raises(Crash):
        bridge.run(RUN_TIME)
    if meanwhile:
        meanwhile(sftp_root)

    restarted = bridge.restart(batch_size=2)
    restarted.run(RUN_TIME)
    restarted.run(RUN_TIME + timedelta(minutes=30))

    assert drop_files(sftp_root) == drop_files(SAMPLES / "acme-csv")  # no .part left, nothing twice
    assert delivered_ids(restarted) == MERCHANT_ORDERS
    for order_id in MERCHANT_ORDERS:
        assert [e["kind"] for e in restarted.ledger.events(order_id)].count("delivered") == 1
    assert [f.status for f in restarted.ledger.files_in(*FileStatus)] == [FileStatus.DELIVERED] * len(MERCHANT_ORDERS)
    assert restarted.ledger.attention() == []  # each file's delivery seen, none only presumed


# --- SFTP setup problems ----------------------------------------------------------------------

def test_a_changed_host_key_stops_delivery_and_nothing_is_lost(make_bridge, sshd, sftp_root, tmp_path):
    impostor = tmp_path / "known_hosts"
    impostor.write_text(
        f"[127.0.0.1]:{sshd.port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
    )
    bridge = make_bridge(known_hosts=str(impostor))
    report = bridge.run(RUN_TIME)

    assert any("deliver" in error and "interception" in error for error in report.errors)
    assert list(sftp_root.iterdir()) == []
    assert bridge.ledger.status_counts()["staged"] == len(MERCHANT_ORDERS)

    fixed = make_bridge()  # the operator fixes known_hosts
    fixed.run(RUN_TIME + timedelta(minutes=30))
    assert delivered_ids(fixed) == MERCHANT_ORDERS


def test_buyer_names_addresses_and_secrets_never_reach_the_log(make_bridge, caplog, sandbox):
    with caplog.at_level(logging.DEBUG):
        make_bridge().run(RUN_TIME)
    text = caplog.text
    for order in load_seed(SEED):
        address = order.get("recipient", {}).get("deliveryAddress", {})
        for value in (address.get("name"), address.get("addressLine1"), order.get("buyer", {}).get("buyerEmail")):
            if value:
                assert value not in text
    for secret in SECRETS.values():
        assert secret not in text


def test_status_lists_what_needs_attention(make_bridge, sandbox):
    from bridge.service import status_report

    sandbox.set_pii_access(False)
    bridge = make_bridge()
    bridge.run(RUN_TIME)
    report = status_report(bridge.settings, now=RUN_TIME)
    assert report["orders"]["held"] == len(MERCHANT_ORDERS)
    assert report["window_end"] == "2026-11-20T12:00:00Z"
    assert {item["order_id"] for item in report["attention"]} == MERCHANT_ORDERS
    json.dumps(report)


# --- every request is one Amazon's models allow -----------------------------------------------

MODELS = {
    "searchOrders": ("orders_2026-01-01.json", "/orders/2026-01-01/orders", "get"),
    "getOrder": ("orders_2026-01-01.json", "/orders/2026-01-01/orders/{orderId}", "get"),
    "getOrders": ("ordersV0.json", "/orders/v0/orders", "get"),
    "v0.getOrder": ("ordersV0.json", "/orders/v0/orders/{orderId}", "get"),
    "getOrderItems": ("ordersV0.json", "/orders/v0/orders/{orderId}/orderItems", "get"),
    "createRestrictedDataToken": ("tokens_2021-03-01.json", "/tokens/2021-03-01/restrictedDataToken", "post"),
}


def assert_request_follows_model(request) -> None:
    from amazon_models import load_model

    model_file, path, method = MODELS[request.operation_id]
    parameters = {p["name"]: p for p in load_model(model_file)["paths"][path][method]["parameters"] if p.get("in") == "query"}
    for name, values in request.query.items():
        assert name in parameters, f"{request.operation_id}: {name} is not a parameter of the model"
        spec = parameters[name]
        items = [item for value in values for item in value.split(",")] if spec.get("type") == "array" else values
        allowed = spec.get("items", {}).get("enum") if spec.get("type") == "array" else spec.get("enum")
        for item in items:
            assert not allowed or item in allowed, f"{request.operation_id}: {name}={item} not in {allowed}"
            if name.lower().endswith(("after", "before")):
                assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", item), f"{name}={item} is not ISO 8601 with T and Z"
    for spec in parameters.values():
        if spec.get("required"):
            assert spec["name"] in request.query, f"{request.operation_id}: required {spec['name']} missing"


@pytest.mark.parametrize("orders_api", ["2026-01-01", "v0"])
def test_every_request_uses_only_what_amazons_model_defines(make_bridge, sandbox, orders_api):
    sandbox.set_pii_access(False)  # so held orders are asked for again too
    bridge = make_bridge(amazon=f'orders_api = "{orders_api}"')
    bridge.run(RUN_TIME)
    sandbox.set_pii_access(True)
    bridge.run(RUN_TIME + timedelta(minutes=30))

    checked = {r.operation_id for r in sandbox.requests}
    assert checked >= ({"searchOrders", "getOrder"} if orders_api == "2026-01-01"
                       else {"getOrders", "getOrderItems", "createRestrictedDataToken"})
    if orders_api == "v0":  # held orders asked for by id
        assert any("AmazonOrderIds" in r.query for r in sandbox.requests if r.operation_id == "getOrders")
    for request in sandbox.requests:
        if request.operation_id in MODELS:
            assert_request_follows_model(request)


def test_an_order_amazon_sends_in_an_unusable_shape_is_reported_and_the_rest_go_through(make_bridge, sandbox):
    from bridge.service import status_report

    broken = new_order("111-0000010-0000010", "2026-11-20T11:55:00Z")
    del broken["createdTime"]
    sandbox.add_order(broken)
    bridge = make_bridge()
    bridge.run(RUN_TIME)

    assert delivered_ids(bridge) == MERCHANT_ORDERS
    assert bridge.ledger.bookmark(BOOKMARK) == utc("2026-11-20T12:00:00")
    attention = status_report(bridge.settings, now=RUN_TIME)["attention"]
    assert [(a["order_id"], a["status"]) for a in attention] == [("111-0000010-0000010", "rejected")]
    assert "createdTime" in attention[0]["reason"]


def test_a_refused_sftp_login_keeps_files_staged_and_says_what_to_fix(make_bridge, sftp_root, tmp_path):
    import subprocess

    stranger = tmp_path / "stranger_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    bridge = make_bridge(private_key=str(stranger))
    report = bridge.run(RUN_TIME)

    assert report.needs_a_person
    assert any("deliver" in error and "refused" in error.lower() for error in report.errors)
    assert list(sftp_root.iterdir()) == []
    assert bridge.ledger.status_counts()["staged"] == len(MERCHANT_ORDERS)


def test_a_dry_run_shows_exactly_the_files_a_run_would_send_and_changes_nothing(make_bridge, sandbox, sftp_root):
    sandbox.add_order(new_order("111-0000011-0000011", "2026-11-20T11:30:00Z",
                                recipient={}))  # no address: would be held
    bridge = make_bridge()
    preview = bridge.flow.preview(RUN_TIME)

    assert list(sftp_root.iterdir()) == []
    assert bridge.ledger.bookmark(BOOKMARK) is None
    assert sum(bridge.ledger.status_counts().values()) == 0
    assert {rendered.name: rendered.data for _, rendered in preview.files} == drop_files(SAMPLES / "acme-csv")
    assert preview.not_sent == {"111-0000011-0000011": f"held: {PII_MISSING}",
                                "111-0000008-0000008": "cancelled: cancelled on Amazon before delivery"}
    assert preview.summary().splitlines()[0] == (
        "dry run: windows=8 window=2026-11-20T08:00:00Z/2026-11-20T12:00:00Z files=5 not_sent=2")

    bridge.run(RUN_TIME)
    assert drop_files(sftp_root) == {rendered.name: rendered.data for _, rendered in preview.files}
    assert bridge.flow.preview(RUN_TIME).files == []  # nothing left to send


def test_a_file_of_the_same_name_in_the_drop_is_never_overwritten_and_the_others_still_go(make_bridge, sftp_root):
    clash = sftp_root / "ACME_AUF_111-0000001-0000001.csv"
    clash.write_bytes(b"the warehouse's own file\r\n")
    bridge = make_bridge()
    report = bridge.run(RUN_TIME)

    assert clash.read_bytes() == b"the warehouse's own file\r\n"
    assert report.needs_a_person and any("never overwrites" in error for error in report.errors)
    assert delivered_ids(bridge) == MERCHANT_ORDERS - {"111-0000001-0000001"}

    clash.unlink()  # staff moved it away after asking the warehouse
    bridge.run(RUN_TIME + timedelta(minutes=30))
    assert drop_files(sftp_root) == drop_files(SAMPLES / "acme-csv")


# --- review findings: state moved, spool lost, .part removed, settings changed ----------------

def crash_at(step: str):
    def checkpoint(name: str) -> None:
        if name == step:
            raise Crash(name)
    return checkpoint


def test_a_bug_in_one_step_is_reported_and_the_other_steps_still_run(make_bridge, sftp_root):
    calls = {"n": 0}

    def fails_once(name: str) -> None:
        if name == "staged" and calls["n"] == 0:
            calls["n"] += 1
            raise RuntimeError("a bug")

    bridge = make_bridge("acme-csv").restart(checkpoint=fails_once, batch_size=1)  # staged file by file
    report = bridge.run(RUN_TIME)
    assert report.needs_a_person
    assert any(e.startswith("render: unexpected RuntimeError at") for e in report.errors)
    assert len(list(sftp_root.iterdir())) == 1  # the file staged before the bug was still delivered
    bridge.run(RUN_TIME + timedelta(minutes=30))
    assert delivered_ids(bridge) == MERCHANT_ORDERS


def test_staged_files_survive_moving_the_state_folder(make_bridge, sftp_root, tmp_path):
    import shutil

    bridge = make_bridge("globex-xml").restart(checkpoint=crash_at("uploaded"))
    with pytest.raises(Crash):
        bridge.run(RUN_TIME)
    bridge.ledger.close()
    for leftover in sftp_root.iterdir():
        leftover.unlink()  # the interrupted upload's .part
    shutil.move(tmp_path / "state", tmp_path / "moved-state")
    config = tmp_path / "bridge.toml"
    config.write_text(config.read_text().replace(str(tmp_path / "state"), str(tmp_path / "moved-state")))

    moved = Bridge(load(config))
    moved.run(RUN_TIME)
    assert delivered_ids(moved) == MERCHANT_ORDERS
    assert drop_files(sftp_root) == drop_files(SAMPLES / "globex-xml")


def test_a_lost_spool_copy_of_a_staged_file_is_rendered_again_not_a_crash(make_bridge, sftp_root):
    bridge = make_bridge("globex-xml").restart(checkpoint=crash_at("staged"))
    with pytest.raises(Crash):
        bridge.run(RUN_TIME)
    for spooled in bridge.settings.spool_dir.glob("*/*"):
        spooled.unlink()

    restarted = bridge.restart()
    report = restarted.run(RUN_TIME)
    assert report.errors == []
    restarted.run(RUN_TIME)
    assert drop_files(sftp_root) == drop_files(SAMPLES / "globex-xml")


def test_an_uploaded_file_whose_part_vanished_is_not_resent_but_shown_to_staff(make_bridge, sftp_root):
    bridge = make_bridge("globex-xml").restart(checkpoint=crash_at("marked_uploaded"))
    with pytest.raises(Crash):
        bridge.run(RUN_TIME)
    [part] = sftp_root.iterdir()
    part.unlink()  # someone's housekeeping

    restarted = bridge.restart()
    restarted.run(RUN_TIME)
    assert list(sftp_root.iterdir()) == []  # never sent twice on a guess
    unconfirmed = [a for a in restarted.ledger.attention() if "ask wh whether they received it" in a["reason"]]
    assert {a["order_id"] for a in unconfirmed} == MERCHANT_ORDERS


def test_held_orders_filtered_out_by_a_settings_change_come_back_when_it_is_undone(make_bridge, sandbox):
    sandbox.set_pii_access(False)
    make_bridge().run(RUN_TIME)  # all held: no address
    sandbox.set_pii_access(True)
    narrowed = make_bridge(orders='start = "2026-11-20T08:00:00Z"\nship_to_countries = ["DE"]')
    narrowed.run(RUN_TIME)
    held = {o.order_id: o.reason for o in narrowed.ledger.orders_in(OrderStatus.HELD)}
    assert "ship-to country US is not in orders.ship_to_countries" in held["111-0000001-0000001"]
    narrowed.ledger.close()

    widened = make_bridge()
    widened.run(RUN_TIME + timedelta(minutes=30))
    assert delivered_ids(widened) == MERCHANT_ORDERS


def test_orders_for_a_warehouse_that_was_renamed_go_to_the_warehouse_that_takes_them_now(make_bridge, sftp_root):
    bridge = make_bridge().restart(checkpoint=crash_at("spooled"))
    with pytest.raises(Crash):
        bridge.run(RUN_TIME)  # orders pending for "wh"
    bridge.ledger.close()
    renamed = make_bridge(name="wh-renamed")
    renamed.run(RUN_TIME)
    assert delivered_ids(renamed) == MERCHANT_ORDERS
    assert {o.warehouse for o in renamed.ledger.orders_in(OrderStatus.DELIVERED)} == {"wh-renamed"}


def test_a_cancellation_that_arrives_while_its_file_is_still_in_the_spool_is_never_sent(make_bridge, sandbox, sftp_root):
    bridge = make_bridge("globex-xml").restart(checkpoint=crash_at("staged"))
    with pytest.raises(Crash):
        bridge.run(RUN_TIME)
    cancelled = sandbox.order("111-0000002-0000002")
    cancelled["fulfillment"]["fulfillmentStatus"] = "CANCELLED"
    cancelled["lastUpdatedTime"] = "2026-11-20T12:10:00Z"
    sandbox.add_order(cancelled)

    restarted = bridge.restart()
    restarted.run(RUN_TIME + timedelta(minutes=30))
    assert delivered_ids(restarted) == MERCHANT_ORDERS - {"111-0000002-0000002"}
    assert restarted.ledger.order_row("111-0000002-0000002")["status"] == "cancelled"
    [sent] = drop_files(sftp_root).values()
    assert b"111-0000002-0000002" not in sent


def test_shipping_progress_after_delivery_is_history_not_an_alarm(make_bridge, sandbox):
    bridge = make_bridge()
    bridge.run(RUN_TIME)
    progressed = sandbox.order("111-0000001-0000001")
    progressed["fulfillment"]["fulfillmentStatus"] = "PARTIALLY_SHIPPED"
    progressed["lastUpdatedTime"] = "2026-11-20T12:10:00Z"
    sandbox.add_order(progressed)
    report = bridge.run(RUN_TIME + timedelta(minutes=30))

    assert report.changed_after_delivery == 0
    assert bridge.ledger.attention() == []
    assert any(e["kind"] == "amazon_status" for e in bridge.ledger.events("111-0000001-0000001"))


def test_when_two_warehouses_fail_a_setup_problem_outranks_a_network_one(tmp_path, sshd, sftp_root, sandbox):
    impostor = tmp_path / "known_hosts"
    impostor.write_text(f"[127.0.0.1]:{sshd.port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    config = write_config(
        tmp_path, sandbox_url=sandbox.url, token_url=sandbox.token_url,
        warehouses=[
            sftp_warehouse("down", "acme-csv", sshd, sftp_root, port=1, ship_to_countries=["US"]),
            sftp_warehouse("impostor", "acme-csv", sshd, sftp_root, known_hosts=str(impostor)),
        ],
    )
    report = Bridge(load(config)).run(RUN_TIME)
    assert report.needs_a_person
    [error] = [e for e in report.errors if e.startswith("deliver:")]
    assert "interception" in error and "127.0.0.1" in error


def test_an_order_whose_service_level_the_warehouse_has_no_product_for_waits_named_in_status(make_bridge, sandbox):
    same_day = new_order("111-0000012-0000012", "2026-11-20T11:40:00Z")
    same_day["fulfillment"]["fulfillmentServiceLevel"] = "SAME_DAY"
    sandbox.add_order(same_day)
    bridge = make_bridge("acme-csv")
    report = bridge.run(RUN_TIME)

    assert report.unrenderable == 1
    assert delivered_ids(bridge) == MERCHANT_ORDERS
    [waiting] = bridge.ledger.attention()
    assert waiting["order_id"] == "111-0000012-0000012" and waiting["status"] == "unrenderable"
    assert "'SAME_DAY' has no entry in the column's map" in waiting["reason"]


# --- one file never blocks the others; names unique by construction; messages say what is true --

def test_a_link_planted_as_a_files_part_blocks_only_that_file_and_status_says_why(make_bridge, sftp_root, tmp_path):
    from bridge.cli import format_status
    from bridge.service import status_report

    victim = tmp_path / "victim"
    victim.write_bytes(b"not the bridge's")
    planted = sftp_root / "ACME_AUF_111-0000001-0000001.csv.part"
    planted.symlink_to(victim)
    bridge = make_bridge("acme-csv")
    report = bridge.run(RUN_TIME)

    assert victim.read_bytes() == b"not the bridge's"
    assert delivered_ids(bridge) == MERCHANT_ORDERS - {"111-0000001-0000001"}  # the others went
    [error] = report.errors
    assert error.startswith(f"deliver: {planted} in sftp ") and "is a symbolic link" in error
    status = status_report(bridge.settings, RUN_TIME)
    [waiting] = status["files_in_flight"]
    assert waiting["name"] == "ACME_AUF_111-0000001-0000001.csv" and "is a symbolic link" in waiting["problem"]
    line = next(l for l in format_status(status).splitlines() if l.startswith("in flight:"))
    assert line.startswith("in flight: wh ACME_AUF_111-0000001-0000001.csv (staged, waiting since 2026-11-20T12:30:00Z: ")
    assert "delivered on the next run" not in format_status(status)

    planted.unlink()  # a person looked and removed it
    bridge.run(RUN_TIME + timedelta(minutes=30))
    assert drop_files(sftp_root) == drop_files(SAMPLES / "acme-csv")
    assert status_report(bridge.settings, RUN_TIME)["files_in_flight"] == []


def test_an_order_id_too_long_for_a_file_name_holds_only_that_order(make_bridge, sandbox):
    long_id = "111-" + "7" * 240
    sandbox.add_order(new_order(long_id, "2026-11-20T11:40:00Z"))
    bridge = make_bridge("acme-csv")
    report = bridge.run(RUN_TIME)

    assert report.errors == [] and report.unrenderable == 1
    assert delivered_ids(bridge) == MERCHANT_ORDERS
    assert bridge.ledger.order_row(long_id)["reason"] == (
        "its file name would be 257 bytes long; the drop takes at most 250 (255 less the temporary suffix)")


def test_an_order_whose_id_cleans_to_an_earlier_files_name_waits_named(make_bridge, sandbox, sftp_root):
    sandbox.add_order(new_order("111-0000021/0000021", "2026-11-20T11:40:00Z"))
    bridge = make_bridge("acme-csv")
    bridge.run(RUN_TIME)
    sandbox.add_order(new_order("111-0000021_0000021", "2026-11-20T12:10:00Z"))
    report = bridge.run(RUN_TIME + timedelta(minutes=30))

    assert report.errors == []
    assert "111-0000021/0000021" in delivered_ids(bridge)
    assert bridge.ledger.order_row("111-0000021_0000021")["reason"] == (
        "its file name ACME_AUF_111-0000021_0000021.csv was already used in wh for another order's file"
        " (their ids differ only in characters a file name cannot hold)")
    assert len(list(sftp_root.iterdir())) == len(MERCHANT_ORDERS) + 1


@pytest.mark.parametrize("damage, why", [
    ("garbage", "its spool copy is damaged (it does not open with BRIDGE_STATE_KEY, its orders' records do)"),
    ("other file", "its spool copy changed since it was staged"),
])
def test_a_damaged_spool_copy_is_taken_back_and_rendered_again(make_bridge, sftp_root, damage, why):
    bridge = make_bridge("globex-xml").restart(checkpoint=crash_at("staged"))
    with pytest.raises(Crash):
        bridge.run(RUN_TIME)
    [spooled] = bridge.settings.spool_dir.glob("*/*")
    spooled.write_bytes(b"garbage" if damage == "garbage" else bridge.ledger.seal_file(b"<Orders/>"))

    restarted = bridge.restart()
    first = restarted.run(RUN_TIME)
    restarted.run(RUN_TIME)
    assert first.errors == []
    assert drop_files(sftp_root) == drop_files(SAMPLES / "globex-xml")
    events = restarted.ledger.events("111-0000001-0000001")
    assert f"staged -> pending: {why}" in [e["detail"] for e in events]


def test_a_wrong_key_is_named_and_never_taken_for_a_damaged_spool_copy(make_bridge, sftp_root):
    from dataclasses import replace

    from bridge.errors import FixTheSetup
    from bridge.ledger import FileStatus
    from bridge.sealing import new_key

    bridge = make_bridge("globex-xml").restart(checkpoint=crash_at("staged"))
    with pytest.raises(Crash):
        bridge.run(RUN_TIME)
    bridge.ledger.close()
    try:
        wrong = Bridge(replace(bridge.settings, state_key=new_key()))
        errors = wrong.run(RUN_TIME).errors
        wrong.ledger.close()
    except FixTheSetup as refused:  # a ledger that knows its key refuses another at once
        errors = [str(refused)]
    assert any("cannot be opened with BRIDGE_STATE_KEY" in e or "is not the key the state" in e
               for e in errors)

    right = Bridge(bridge.settings)
    assert [f.status for f in right.ledger.files_in(FileStatus.STAGED)] == [FileStatus.STAGED]  # kept
    right.run(RUN_TIME)
    assert drop_files(sftp_root) == drop_files(SAMPLES / "globex-xml")


def test_two_runs_in_the_same_second_give_a_per_run_file_the_next_free_name(make_bridge, sftp_root):
    orders = 'start = "2026-11-20T09:00:00Z"\nwindow_minutes = 60\nmax_windows_per_run = 1'
    bridge = make_bridge("globex-xml", orders=orders)
    first = bridge.run(RUN_TIME)
    crashing = bridge.restart(checkpoint=crash_at("spooled"))
    with pytest.raises(Crash):
        crashing.run(RUN_TIME)  # the same second; crashes before the file is staged
    second = crashing.restart().run(RUN_TIME)  # rendered again: the same name

    assert first.errors == second.errors == []
    assert sorted(drop_files(sftp_root)) == ["GLOBEX_ORDERS_20261120T123000Z-2.xml", "GLOBEX_ORDERS_20261120T123000Z.xml"]
    sent = drop_files(sftp_root)["GLOBEX_ORDERS_20261120T123000Z-2.xml"]
    assert b"203-0000004-0000004" in sent and b"111-0000001-0000001" not in sent


def test_an_unrenderable_order_is_logged_at_error_once_not_on_every_run(make_bridge, sandbox, caplog):
    same_day = new_order("111-0000012-0000012", "2026-11-20T11:40:00Z")
    same_day["fulfillment"]["fulfillmentServiceLevel"] = "SAME_DAY"
    sandbox.add_order(same_day)
    bridge = make_bridge("acme-csv")
    caplog.set_level(logging.DEBUG, logger="bridge.orders")
    for minutes in (0, 30, 60):
        bridge.run(RUN_TIME + timedelta(minutes=minutes))

    lines = [r for r in caplog.records if "order cannot be laid out" in r.getMessage()]
    assert [r.levelname for r in lines] == ["ERROR", "DEBUG", "DEBUG"]
    assert [e["kind"] for e in bridge.ledger.events("111-0000012-0000012")].count("unrenderable") == 1


def test_a_newline_in_an_order_id_cannot_forge_a_log_line_or_a_status_row(make_bridge, sandbox, caplog):
    from bridge.cli import format_status
    from bridge.service import status_report

    forged = "111-0000013-0000013\nINFO bridge.orders delivered warehouse=wh"
    sandbox.add_order(new_order(forged, "2026-11-20T11:40:00Z"))
    caplog.set_level(logging.DEBUG)
    bridge = make_bridge("acme-csv")
    bridge.run(RUN_TIME)

    assert bridge.ledger.order_row(forged)["reason"] == "order.id has a control character at position 20"
    assert not [r for r in caplog.records if "\n" in r.getMessage()]
    assert any(repr(forged) in r.getMessage() for r in caplog.records)
    status = format_status(status_report(bridge.settings, RUN_TIME))
    assert not [line for line in status.splitlines() if line.startswith("INFO")]
    assert f"  {forged!r}  unrenderable  order.id has a control character at position 20" in status
