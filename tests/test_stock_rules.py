"""Stock rules and safety gates, pure: rows in, one quantity per seller SKU and a verdict out."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from bridge.edges.scratch import DiskStore
from bridge.formats.stock import (
    Comparison,
    GateFacts,
    MemoryStore,
    StockLevel,
    check_gates,
    stock_levels,
    tally,
)
from bridge.formats.readers import Row
from bridge.mapping import StockColumns, StockLayout

LAYOUT = StockLayout(format="csv", quantity_means="available", columns=StockColumns(sku="SKU", quantity="Qty"))
T0 = datetime(2026, 11, 26, 21, 0, tzinfo=timezone.utc)
T1 = datetime(2026, 11, 27, 21, 0, tzinfo=timezone.utc)


def rows(*records: dict, first: int = 2) -> list[Row]:
    return [Row(number, record) for number, record in enumerate(records, first)]


def compute(records, layout=LAYOUT, in_flight=None, store=None):
    """(levels as {sku: (quantity, row)}, tally, problems as strings)."""
    store = store or MemoryStore()
    counted = tally(records, layout, store)
    levels = list(stock_levels(store.sorted_parts(), layout, in_flight or {}, counted.problems))
    return {l.sku: (l.quantity, l.row) for l in levels}, counted, [str(p) for p in counted.problems]


def test_one_row_per_sku_is_sent_as_it_is():
    levels, counted, problems = compute(rows({"SKU": "A", "Qty": "5"}, {"SKU": "B", "Qty": "0"}))
    assert levels == {"A": (5, 2), "B": (0, 3)}
    assert (counted.rows, counted.used_rows, problems) == (2, 2, [])


def test_lots_and_locations_of_one_sku_are_summed_and_the_first_row_names_it():
    layout = replace(LAYOUT, columns=StockColumns(sku="SKU", quantity="Qty", lot="Lot", location="Bin"))
    levels, _, problems = compute(rows(
        {"SKU": "B", "Qty": "1", "Lot": "L1", "Bin": "X"},
        {"SKU": "A", "Qty": "2", "Lot": "L1", "Bin": "X"},
        {"SKU": "A", "Qty": "3", "Lot": "L1", "Bin": "Y"},
        {"SKU": "A", "Qty": "4", "Lot": "L2", "Bin": "X"},
    ), layout)
    assert levels == {"A": (9, 3), "B": (1, 2)}
    assert problems == []


def test_the_sku_map_renames_and_sums_several_warehouse_skus_into_one():
    layout = replace(LAYOUT, sku_map={"100": "MUG", "200": "JUG", "201": "JUG", "900": ""})
    levels, counted, _ = compute(rows(
        {"SKU": "100", "Qty": "7"}, {"SKU": "200", "Qty": "5"}, {"SKU": "201", "Qty": "4"},
        {"SKU": "900", "Qty": "5000"}, {"SKU": "OTHER", "Qty": "1"}), layout)
    assert levels == {"MUG": (7, 2), "JUG": (9, 3), "OTHER": (1, 6)}  # unmapped: one-to-one
    assert counted.not_on_amazon == 1


def test_on_hand_subtracts_units_in_flight_and_available_does_not():
    records = rows({"SKU": "A", "Qty": "10"}, {"SKU": "B", "Qty": "1"})
    in_flight = {"A": 3, "B": 4, "C": 9}
    assert compute(records, replace(LAYOUT, quantity_means="on_hand"), in_flight)[0] == {"A": (7, 2), "B": (0, 3)}
    assert compute(records, LAYOUT, in_flight)[0] == {"A": (10, 2), "B": (1, 3)}


def test_buffer_per_warehouse_and_per_sku_floor_zero_then_cap():
    layout = replace(LAYOUT, buffer=2, buffers={"B": 0, "C": 10}, cap=50)
    levels, _, _ = compute(rows({"SKU": "A", "Qty": "100"}, {"SKU": "B", "Qty": "3"},
                                {"SKU": "C", "Qty": "4"}, {"SKU": "D", "Qty": "1"}), layout)
    assert levels == {"A": (50, 2), "B": (3, 3), "C": (0, 4), "D": (0, 5)}


def test_skus_left_alone_by_name_or_pattern_are_not_even_looked_at():
    layout = replace(LAYOUT, leave_alone=("KEEP", "*-FBA", "AMZ-??"))
    levels, counted, problems = compute(rows(
        {"SKU": "KEEP", "Qty": "1"}, {"SKU": "MUG-FBA", "Qty": "bad"}, {"SKU": "AMZ-01", "Qty": "1"},
        {"SKU": "AMZ-001", "Qty": "2"}, {"SKU": "MUG", "Qty": "3"}), layout)
    assert levels == {"AMZ-001": (2, 5), "MUG": (3, 6)}
    assert (counted.left_alone, problems) == (3, [])


@pytest.mark.parametrize("decimal, thousands, text, units", [
    (".", "", "12", 12), (".", "", " 12 ", 12), (".", "", "+3", 3), (".", "", "12.0", 12),
    (",", "", "12,0", 12), (",", ".", "1.250", 1250), (".", ",", "1,250", 1250),
    (".", " ", "1 250", 1250), (".", "'", "1'250", 1250), (".", "", "0", 0), (".", "", "-0", 0),
])
def test_number_formats(decimal, thousands, text, units):
    layout = replace(LAYOUT, decimal_separator=decimal, thousands_separator=thousands)
    assert compute(rows({"SKU": "A", "Qty": text}), layout)[0] == {"A": (units, 2)}


def test_a_bad_row_holds_back_its_sku_and_explains_the_rows_that_were_fine():
    layout = replace(LAYOUT, columns=StockColumns(sku="SKU", quantity="Qty", location="Bin"))
    levels, counted, problems = compute(rows(
        {"SKU": "A", "Qty": "4", "Bin": "X"}, {"SKU": "A", "Qty": "x", "Bin": "Y"},
        {"SKU": "B", "Qty": "5", "Bin": "X"}), layout)
    assert levels == {"A": (None, 2), "B": (5, 4)}
    assert problems == ["row 3, column 'Qty': 'x' is not a number",
                        "row 2: SKU 'A' is not sent because row 3 is bad"]
    assert (counted.rows, counted.used_rows, counted.bad_rows) == (3, 2, 1)


def test_a_sku_listed_twice_with_different_quantities_is_not_sent_with_the_same_is_counted_once():
    levels, counted, problems = compute(rows(
        {"SKU": "A", "Qty": "4"}, {"SKU": "B", "Qty": "7"}, {"SKU": "A", "Qty": "5"}, {"SKU": "B", "Qty": "7"},
        {"SKU": "A", "Qty": "4"}))
    assert levels == {"A": (None, 2), "B": (7, 3)}
    assert problems == [
        "row 2, column 'Qty': SKU 'A' is listed on rows 2, 4 and 6 with different quantities (4, 5, 4): not sent",
        "row 4, column 'Qty': SKU 'A' is listed on rows 2, 4 and 6 with different quantities (4, 5, 4): not sent",
        "row 6, column 'Qty': SKU 'A' is listed on rows 2, 4 and 6 with different quantities (4, 5, 4): not sent",
        "row 5, column 'Qty': SKU 'B' is listed again (first on row 3) with the same quantity: counted once",
    ]
    assert counted.bad_rows == 3  # warnings are not bad rows


def test_timestamps_give_the_stock_time_in_utc_and_a_bad_one_is_a_bad_row():
    layout = replace(LAYOUT, columns=StockColumns(sku="SKU", quantity="Qty", timestamp="At"),
                     timestamp_format="%d.%m.%Y %H:%M", timezone="Europe/Berlin")
    levels, counted, problems = compute(rows(
        {"SKU": "A", "Qty": "1", "At": "26.11.2026 22:00"}, {"SKU": "B", "Qty": "1", "At": "26.11.2026 21:30"},
        {"SKU": "C", "Qty": "1", "At": "26.11.26"}, {"SKU": "D", "Qty": "1", "At": ""}), layout)
    assert counted.stock_time == T0  # the latest: 22:00 in Berlin
    assert levels == {"A": (1, 2), "B": (1, 3), "C": (None, 4), "D": (1, 5)}
    assert problems == ["row 4, column 'At': timestamp '26.11.26' is not a date like DD.MM.YYYY hh:mm"]


def test_a_file_without_the_quantity_column_is_not_read_row_by_row():
    levels, counted, problems = compute(rows({"SKU": "A", "Menge": "1"}, {"SKU": "B", "Menge": "2"}))
    assert levels == {} and problems == []
    assert counted.file_problem == "the file has no column 'Qty' (its columns: 'SKU', 'Menge')"


def test_the_disk_store_gives_the_same_levels_as_memory_for_shuffled_input_with_duplicates(tmp_path):
    randomly = random.Random(7)
    records = []
    for sku in range(3000):
        for lot in range(randomly.choice((1, 1, 1, 2, 3))):
            records.append({"SKU": f"S{sku:05d}", "Qty": str(randomly.randrange(0, 50)), "Lot": f"L{lot}"})
    records += [dict(records[10]), {**records[20], "Qty": "999"}, {"SKU": records[30]["SKU"], "Qty": "x", "Lot": "Lz"}]
    randomly.shuffle(records)
    layout = replace(LAYOUT, columns=StockColumns(sku="SKU", quantity="Qty", lot="Lot"))
    in_memory = compute(rows(*records), layout)
    with DiskStore(run_size=500, chunk_size=64, folder=str(tmp_path)) as store:
        on_disk = compute(rows(*records), layout, store=store)
    assert on_disk[0] == in_memory[0] and sorted(on_disk[2]) == sorted(in_memory[2])
    assert list(on_disk[0]) == sorted(on_disk[0])  # ascending SKU order


def test_a_file_in_sku_order_gives_the_same_levels_and_problems_without_a_store():
    from bridge.formats.stock import level_tuples, tally_in_order

    randomly = random.Random(11)
    records = []
    for sku in range(3000):  # chunks of one-row SKUs, and SKUs whose rows need combining
        for lot in range(randomly.choice((1, 1, 1, 1, 2, 3))):
            records.append({"SKU": f"S{sku:05d}", "Qty": str(randomly.randrange(0, 50)), "Lot": f"L{lot}"})
    records[100] = {**records[100], "Qty": "x"}
    records.insert(200, dict(records[199]))  # a lot listed twice with the same quantity
    records.insert(300, {**records[299], "Qty": "999"})  # ... and with another
    layout = replace(LAYOUT, columns=StockColumns(sku="SKU", quantity="Qty", lot="Lot"), buffer=2, cap=40)
    stored = compute(rows(*records), layout)
    counted, parts = tally_in_order(rows(*records), layout)
    levels = {sku: (quantity, row) for sku, quantity, row in level_tuples(parts, layout, {}, counted.problems)}
    assert levels == stored[0]
    assert (counted.rows, counted.used_rows, counted.bad_rows) == (stored[1].rows, stored[1].used_rows, stored[1].bad_rows)
    assert sorted(str(p) for p in counted.problems) == sorted(stored[2])


def test_a_file_out_of_sku_order_is_found_out_at_its_first_sku_out_of_order():
    from bridge.formats.stock import NotSorted, tally_in_order

    records = [{"SKU": f"S{n:05d}", "Qty": "1"} for n in range(2000)]
    records.insert(1500, {"SKU": "S00007", "Qty": "1"})
    counted, parts = tally_in_order(rows(*records), LAYOUT)
    with pytest.raises(NotSorted):
        list(parts)


def test_a_daily_file_beside_the_same_skus_published_is_counted_sku_by_sku():
    skus = [f"S{n:05d}" for n in range(1500)]
    quantities = [None if n % 97 == 5 else 0 if n % 11 == 3 else n % 7 for n in range(1500)]
    before = [0 if n % 13 == 0 else 4 for n in range(1500)]
    lately = [n % 5 != 0 for n in range(1500)]
    comparison = Comparison()
    levels = [StockLevel(sku, quantity, n) for n, (sku, quantity) in enumerate(zip(skus, quantities), 2)]
    assert list(comparison.follow(levels, zip(skus, before, lately))) == levels
    sent = [(sku, q, b) for sku, q, b in zip(skus, quantities, before) if q is not None]
    held = [sku for sku, q, l in zip(skus, quantities, lately) if q is None and l]
    assert (comparison.skus, comparison.sent, comparison.last_published) == (1500, len(sent), sum(lately))
    assert comparison.zero == len([1 for _, q, _ in sent if q == 0])
    assert comparison.in_stock_before == len([1 for _, _, b in sent if b])
    assert comparison.dropping_to_zero == len([1 for _, q, b in sent if q == 0 and b])
    assert (comparison.missing, comparison.held_back, comparison.missing_examples) == (len(held), len(held), held[:3])
    assert comparison.zero_examples == [sku for sku, q, _ in sent if q == 0][:3]
    assert comparison.dropping_examples == [sku for sku, q, b in sent if q == 0 and b][:3]


def test_the_disk_store_merges_more_runs_than_it_can_open_at_once(tmp_path, monkeypatch):
    import bridge.edges.scratch as scratch

    monkeypatch.setattr(scratch, "FAN_IN", 3)
    parts = [(f"S{n % 997:04d}", "w", "", n, n % 7) for n in range(2, 5000)]
    random.Random(3).shuffle(parts)
    with DiskStore(run_size=100, chunk_size=16, folder=str(tmp_path)) as store:
        for start in range(0, len(parts), 250):
            store.add(parts[start:start + 250])
        merged = list(store.sorted_parts())
    assert [p[0] for p in merged] == sorted(p[0] for p in parts)
    for sku in ("S0000", "S0500"):  # the order parts came in survives, within a SKU
        assert [p for p in merged if p[0] == sku] == [p for p in parts if p[0] == sku]


# --- comparison and gates -------------------------------------------------------------------

def follow(levels, published):
    comparison = Comparison()
    passed = list(comparison.follow(levels, published))
    assert passed == list(levels)
    return comparison


def test_comparison_counts_missing_skus_and_drops_to_zero_from_the_last_published_file():
    levels = [StockLevel("A", 0, 2), StockLevel("B", 5, 3), StockLevel("C", 0, 4), StockLevel("D", None, 5)]
    published = [("A", 4, 1), ("AA", 1, 1), ("B", 0, 1), ("C", 0, 1), ("D", 3, 1), ("OLD", 2, 0), ("Z", 9, 1)]
    compared = follow(levels, published)
    assert (compared.skus, compared.sent, compared.zero) == (4, 3, 2)
    assert (compared.in_stock_before, compared.dropping_to_zero, compared.dropping_examples) == (1, 1, ["A"])
    # D is in the file but not sent (a bad row): as good as missing
    assert (compared.last_published, compared.missing, compared.missing_examples) == (6, 3, ["AA", "D", "Z"])
    assert compared.held_back == 1


def test_comparison_needs_levels_in_order():
    with pytest.raises(ValueError, match="out of order"):
        follow([StockLevel("B", 1, 2), StockLevel("A", 1, 3)], [])


def facts(*, rows=10, sent=10, last_published=0, missing=0, in_stock_before=0, dropping=0,
          stock_time=T1, last_time=None, file_problem=None, bad_rows=0, zero=0) -> GateFacts:
    compared = Comparison(skus=sent, sent=sent, zero=zero, zero_examples=["Y1", "Y2", "Y3", "Y4", "Y5", "Y6"][:zero][:3],
                          last_published=last_published, missing=missing,
                          missing_examples=["X1", "X2"][:missing], in_stock_before=in_stock_before,
                          dropping_to_zero=dropping, dropping_examples=["Z1"][:dropping])
    return GateFacts(rows=rows, file_problem=file_problem, comparison=compared, stock_time=stock_time, bad_rows=bad_rows,
                     last_stock_time=last_time, last_name="BESTAND_20261126.csv" if last_time else None)


def test_a_good_file_passes():
    verdict = check_gates(facts(last_published=10, missing=1, in_stock_before=10, dropping=2, last_time=T0), 0.10, 0.20)
    assert verdict.publish and verdict.summary() == "passed the safety gates"


@pytest.mark.parametrize("case, given, held_because", [
    ("empty", dict(rows=0, sent=0), "the file has no stock rows (it is empty or has only a header)"),
    ("no usable row", dict(rows=3, sent=0),
     "none of the file's 3 rows gives a quantity to send (see the rows' problems)"),
    ("older", dict(stock_time=T0, last_time=T1),
     "the file's stock time 2026-11-26T21:00:00Z is older than the last published file's "
     "(BESTAND_20261126.csv, 2026-11-27T21:00:00Z)"),
    ("missing", dict(last_published=10, missing=2),
     "2 of the 10 SKUs published lately (20.0%) are missing from this file, more than "
     "the limit of 10% (e.g. X1, X2)"),
    ("most rows bad", dict(rows=12, bad_rows=7),
     "7 of the file's 12 rows (58.3%) are bad, more than the limit of 50%: is it the right file, in the mapping's "
     "layout?"),
    ("zeros", dict(in_stock_before=4, dropping=1),
     "1 of the 4 SKUs in stock on Amazon (25.0%) would drop to zero, more than the limit of 20% (e.g. Z1)"),
    ("a first file of mostly zeros (nothing published to compare with)", dict(zero=6),
     "this is the first stock file to publish and 6 of its 10 SKUs (60.0%) are 0, more than the limit of 50% "
     "for a first file (e.g. Y1, Y2, Y3)"),
])
def test_each_gate_holds_the_feed_and_says_why(case, given, held_because):
    verdict = check_gates(facts(**given), 0.10, 0.20)
    assert not verdict.publish
    assert verdict.held_because == (held_because,)
    assert verdict.summary() == f"held: {held_because}"


def test_a_first_file_within_the_zero_share_passes_and_later_files_are_compared_instead():
    assert check_gates(facts(zero=5), 0.10, 0.20).publish  # half out of stock: a small shop may be
    assert check_gates(facts(zero=5), 0.10, 0.40).publish  # the limit is max(max_zero_share, 50%)
    assert not check_gates(facts(zero=9), 0.10, 0.80).publish
    assert check_gates(facts(zero=6, last_time=T0), 0.10, 0.20).publish  # the drop-to-zero gate's business


def test_shares_at_the_limit_pass():
    assert check_gates(facts(last_published=10, missing=1, in_stock_before=5, dropping=1), 0.10, 0.20).publish


def test_force_overrides_the_gates_and_says_what_it_overrode():
    verdict = check_gates(facts(last_published=10, missing=5, stock_time=T0, last_time=T1), 0.10, 0.20, force=True)
    assert verdict.publish
    assert len(verdict.overridden) == 2
    assert verdict.summary().startswith("published with --force, overriding: the file's stock time ")


def test_a_stock_time_further_ahead_than_the_tolerance_is_refused_even_with_force():
    ahead = GateFacts(rows=1, file_problem=None, comparison=Comparison(skus=1, sent=1), stock_time=T1,
                      now=T1 - timedelta(days=365), future_tolerance=timedelta(days=1))
    for force in (False, True):
        verdict = check_gates(ahead, 0.10, 0.20, force=force)
        assert not verdict.publish and verdict.final
    assert verdict.held_because == (
        "the file's stock time 2026-11-27T21:00:00Z is in the future: 365 days ahead of the bridge's clock "
        "(2025-11-27T21:00:00Z), more than the 24 hours allowed (stock.future_tolerance_minutes). Correct the "
        "timestamps (a typo in the date?) and drop the file again",
        "--force cannot publish a file dated in the future")
    within = GateFacts(rows=1, file_problem=None, comparison=Comparison(skus=1, sent=1), stock_time=T1,
                       now=T1 - timedelta(days=1), future_tolerance=timedelta(days=1))
    assert check_gates(within, 0.10, 0.20).publish


def test_force_cannot_publish_a_file_with_nothing_to_send():
    verdict = check_gates(facts(rows=0, sent=0), 0.10, 0.20, force=True)
    assert not verdict.publish
    assert verdict.summary() == ("held: the file has no stock rows (it is empty or has only a header); "
                                 "--force cannot publish it: there is nothing to send")


def test_a_sku_held_back_by_a_bad_row_counts_as_missing_for_the_missing_gate():
    """The review's hand-made file: 4 of the 5 SKUs published lately not sent (3 absent or bad)."""
    compared = Comparison()
    levels = [StockLevel("A", 5, 2), StockLevel("B", None, 3), StockLevel("C", None, 4), StockLevel("Z", 1, 5)]
    published = [("A", 5, 1), ("B", 4, 1), ("C", 3, 1), ("D", 2, 1), ("E", 1, 1)]
    list(compared.follow(levels, published))
    assert (compared.last_published, compared.missing, compared.held_back) == (5, 4, 2)
    verdict = check_gates(GateFacts(rows=12, file_problem=None, comparison=compared, stock_time=T1, bad_rows=5),
                          0.10, 0.20)
    assert verdict.held_because == (
        "4 of the 5 SKUs published lately (80.0%) are missing from this file or held back by a bad row (2 of them), "
        "more than the limit of 10% (e.g. B, C, D)",)


def test_the_dry_run_writes_out_how_each_quantity_is_worked_out():
    from bridge.formats.stock import explain_levels

    layout = replace(LAYOUT, columns=StockColumns(sku="SKU", quantity="Qty", lot="Lot"), buffer=1, cap=1000)
    store = MemoryStore()
    records = [("A", "1250", "L1"), ("A", "40", "L2"), ("A", "12", "L3"), ("B", "x", ""), ("C", "0", ""),
               ("D", "5", "L"), ("D", "5", "L")]
    tally([Row(n, {"SKU": s, "Qty": q, "Lot": lot}) for n, (s, q, lot) in enumerate(records, 2)], layout, store)
    assert list(explain_levels(store.sorted_parts(), layout, {})) == [
        "A: rows 2, 3, 4: 1,250 + 40 + 12 = 1,302 − 1 buffer = 1,301, cap 1,000 → sends 1,000",
        "B: row 5: not sent (a bad row, or one lot listed with different quantities)",
        "C: row 6: 0 − 1 buffer = -1, floor 0 → sends 0",
        "D: rows 7, 8: 5 (a lot listed twice counts once) − 1 buffer = 4 → sends 4"]
    on_hand = replace(layout, quantity_means="on_hand", cap=None)
    assert list(explain_levels(store.sorted_parts(), on_hand, {"A": 2}))[0] == (
        "A: rows 2, 3, 4: 1,250 + 40 + 12 = 1,302 − 2 in flight − 1 buffer = 1,299 → sends 1,299")


def test_a_sku_on_thousands_of_rows_is_explained_in_one_short_line():
    from bridge.formats.stock import explain_levels

    layout = replace(LAYOUT, columns=StockColumns(sku="SKU", quantity="Qty", lot="Lot"))
    store = MemoryStore()
    tally([Row(n, {"SKU": "A", "Qty": "1", "Lot": f"L{n}"}) for n in range(2, 20_002)], layout, store)

    (line,) = explain_levels(store.sorted_parts(), layout, {})

    assert line == ("A: rows 2, 3, 4, 5, 6, ... (19,995 more): 1 + 1 + 1 + 1 + 1 + ... (19,995 more) = 20,000"
                    " → sends 20,000")


def test_the_problems_a_dry_run_shows_put_errors_before_warnings_however_they_came():
    from bridge.formats.stock import ProblemLog, RowProblem

    class Sink(list):
        add = list.append

        def bad_rows(self):
            return 0

    log = ProblemLog(Sink(), keep=5)
    for row in range(2, 62):  # a SKU listed twice on every other row of a file in SKU order
        log.append(RowProblem(row, "Qty", "listed again with the same quantity: counted once", severity="warning"))
    log.append(RowProblem(900, "Qty", "'five' is not a number"))

    assert [problem.row for problem in log[:5]] == [900, 2, 3, 4, 5]
    assert len(log) == 61


def test_the_comparison_counts_a_daily_file_with_a_few_skus_gone_and_a_few_new():
    yesterday = [(f"SKU-{n:06d}", 3, True) for n in range(5_000) if n % 97]  # 97, 194, ... new today
    today = [(f"SKU-{n:06d}", 2 if n % 5 else 0, n) for n in range(5_000) if n % 89]  # 89, 178, ... gone
    published = {sku for sku, _, _ in yesterday}
    comparison = Comparison()

    assert list(comparison.follow(today, yesterday)) == today
    assert (comparison.skus, comparison.last_published, comparison.missing) == (
        len(today), len(yesterday), len(published - {sku for sku, _, _ in today}))
    assert (comparison.zero, comparison.dropping_to_zero) == (
        sum(quantity == 0 for _, quantity, _ in today), sum(quantity == 0 and sku in published for sku, quantity, _ in today))
