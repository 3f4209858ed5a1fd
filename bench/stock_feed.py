"""A nightly stock file of 1,000,000 rows to JSON_LISTINGS_FEED documents: speed and memory.

    .venv/bin/python bench/stock_feed.py [rows] [runs]

Generates a CSV stock file (one row per SKU and bin, ';', sorted by SKU as WMS exports are, and
a shuffled copy), then turns it into feed documents the way the inventory flow does: rows read
by the bridge's own readers (`formats/readers.py`, as the intake reads a spooled file), checked
and summed (`tally_in_order`; the shuffled file, once its first SKU out of order is met, is read
again through `tally` and sorted on disk by `DiskStore`), one level per SKU (`level_tuples`), compared
with what was published (`Comparison`: nothing published, as on the first day, and every SKU
published the day before, as every day after, and with 1% of them gone since, a usual day), and written as documents of
25,000 messages each. Baseline, in the same run on the same file: a plain csv.reader pass, and a
csv.DictReader pass (named rows); the readers alone are timed too. Target: within 3x of a plain
csv read. Floors, the least any implementation could take, also in the same run: csv.reader with
each quantity made a number; that plus one JSON message per row written with an f-string; and
every row read into a list and sorted (any sort of a shuffled file costs at least that).

Peak memory (the kernel's VmHWM) is measured in fresh subprocesses that only turn an existing
file into documents, at 100,000 and 1,000,000 rows: the file is streamed, sorted on disk when
not in SKU order, and the feed written incrementally, so the 1M run should stay within 1.2x of the 100k run.
"""

from __future__ import annotations

import csv
import gc
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.edges.scratch import DiskStore  # noqa: E402
from bridge.formats.listings_feed import batches, document_chunks  # noqa: E402
from bridge.formats.readers import read_rows  # noqa: E402
from bridge.formats.stock import Comparison, NotSorted, level_tuples, tally, tally_in_order  # noqa: E402
from bridge.mapping import StockColumns, StockLayout  # noqa: E402

LAYOUT = StockLayout(format="csv", quantity_means="available", delimiter=";", buffer=1,
                     columns=StockColumns(sku="Artikelnummer", quantity="Bestand", location="Lagerplatz"))


def write_stock_file(path: Path, rows: int, shuffled: bool) -> None:
    randomly = random.Random(1)
    numbers = list(range(rows))
    if shuffled:
        randomly.shuffle(numbers)
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write("Artikelnummer;Lagerplatz;Bestand\n")
        for n in numbers:
            out.write(f"SKU-{n:07d};A-{n % 97:02d}-{n % 13};{randomly.randrange(0, 500)}\n")


def bridge_rows(path: Path):
    """The rows as the intake reads a spooled stock file."""
    with open(path, "rb") as stream:
        yield from read_rows(stream, LAYOUT.table)


class SpooledRows:
    """The rows of the spool copy, read again each time they are iterated, as the intake's
    `flows.stock_intake.SpooledRows` gives them (not imported: the flows' imports would weigh
    on the peak RSS measured here)."""

    def __init__(self, path: Path):
        self.path = path

    def __iter__(self):
        return bridge_rows(self.path)


def named_rows(path: Path):
    with open(path, newline="", encoding="utf-8") as source:
        yield from enumerate(csv.DictReader(source, delimiter=";"), 2)


def published_before(rows: int, churn: int = 0):
    """The day before's feed, as the ledger gives it (ascending SKU): every SKU of the file, and
    with `churn` one SKU in every `churn` gone since (a SKU the file no longer has, beside it)."""
    def feed():
        for n in range(rows):
            if churn and n % churn == 0:
                yield (f"SKU-{n:07d}-gone", 10, 1)
            yield (f"SKU-{n:07d}", 10, 1)
    return feed


def to_feed(path: Path, out: Path, published=tuple) -> tuple[int, int]:
    """The bridge's work on one file, as the inventory flow does it; returns (rows, documents).
    The rows are first taken as they come (a file in SKU order goes straight through); at the
    first SKU out of order they are read again from the start and sorted on disk."""
    rows = SpooledRows(path)
    try:  # `published()`: a new cursor of the ledger's, as each attempt of the flow asks for one
        counted, parts = tally_in_order(rows, LAYOUT)
        documents = write_documents(parts, counted, out, iter(published()))
        return counted.rows, documents
    except NotSorted:
        pass
    with DiskStore(folder=str(out)) as store:
        counted = tally(rows, LAYOUT, store)
        return counted.rows, write_documents(store.sorted_parts(), counted, out, iter(published()))


def write_documents(parts, counted, out: Path, published) -> int:
    levels = Comparison().follow(level_tuples(parts, LAYOUT, {}, counted.problems), published)
    documents = 0
    for part, batch in enumerate(batches(levels), 1):
        with open(out / f"part-{part:04d}.json", "wb") as target:
            for chunk in document_chunks("A3TESTSELLER", batch, LAYOUT):
                target.write(chunk)
        documents += 1
    return documents


def plain_csv(path: Path) -> int:
    with open(path, newline="", encoding="utf-8") as source:
        return sum(1 for _ in csv.reader(source, delimiter=";")) - 1


def dict_csv(path: Path) -> int:
    return sum(1 for _ in named_rows(path))


def floor_int(path: Path) -> int:
    """The least any reading can do: csv.reader, and each row's quantity as a number."""
    with open(path, newline="", encoding="utf-8") as source:
        rows = csv.reader(source, delimiter=";")
        next(rows)
        total = 0
        for row in rows:
            total += int(row[2])
    return total


def floor_messages(path: Path, out: Path) -> int:
    """The least any feed writer can do: that loop, plus one JSON message per row written with
    one f-string (no checks, no sums, no sort, no documents)."""
    with open(path, newline="", encoding="utf-8") as source, open(out / "floor.json", "w") as target:
        rows = csv.reader(source, delimiter=";")
        next(rows)
        for number, row in enumerate(rows, 2):
            target.write(f'{{"messageId":{number},"sku":"{row[0]}","operationType":"PATCH","productType":"PRODUCT",'
                         f'"patches":[{{"op":"merge","path":"/attributes/fulfillment_availability","value":'
                         f'[{{"fulfillment_channel_code":"DEFAULT","quantity":{int(row[2])}}}]}}]}},\n')
    return number - 1


def floor_sort(path: Path) -> int:
    """The least any sort in memory can do: every row in a list, sorted by SKU."""
    with open(path, newline="", encoding="utf-8") as source:
        rows = list(csv.reader(source, delimiter=";"))
    rows.sort()
    return len(rows)


def readers_only(path: Path) -> int:
    return sum(1 for _ in bridge_rows(path))


def best_of(runs: int, work) -> float:
    times = []
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_rss_mb(folder: Path, rows: int, shuffled: bool) -> float:
    """Peak RSS of a fresh process turning a `rows`-row file into feed documents."""
    path = folder / f"rss-{rows}-{shuffled}.csv"
    write_stock_file(path, rows, shuffled)
    out = folder / f"rss-out-{rows}-{shuffled}"
    out.mkdir()
    answer = subprocess.run([sys.executable, __file__, "--rss", str(path), str(out)],
                            capture_output=True, text=True, check=True)
    return float(answer.stdout.split()[-1])


def rss_child(path: Path, out: Path) -> None:
    to_feed(path, out)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork and exec.
    status = Path("/proc/self/status").read_text()
    print(int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024)


def main(rows: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        for shuffled in (False, True):
            path = Path(folder) / f"stock-{'shuffled' if shuffled else 'sorted'}.csv"
            write_stock_file(path, rows, shuffled)
            out = Path(folder) / f"out-{path.stem}"
            out.mkdir()
            plain = best_of(runs, lambda: plain_csv(path))
            named = best_of(runs, lambda: dict_csv(path))
            floors = [best_of(runs, lambda: floor_int(path)), best_of(runs, lambda: floor_messages(path, out)),
                      best_of(runs, lambda: floor_sort(path))]
            reading = best_of(runs, lambda: readers_only(path))
            bridge = best_of(runs, lambda: to_feed(path, out))
            daily = best_of(runs, lambda: to_feed(path, out, published_before(rows)))
            churned = best_of(runs, lambda: to_feed(path, out, published_before(rows, churn=100)))
            print(f"{rows:,} rows, {'shuffled' if shuffled else 'sorted by SKU'} (best of {runs}):")
            print(f"  plain csv.reader        {plain:6.2f} s  {rows / plain:12,.0f} rows/s")
            print(f"  csv.DictReader          {named:6.2f} s  {rows / named:12,.0f} rows/s")
            for name, floor in zip(("floor: csv.reader + int", "floor: + JSON per row", "floor: list + sort"),
                                   floors):
                print(f"  {name:24s}{floor:6.2f} s  {rows / floor:12,.0f} rows/s  = {floor / plain:.2f}x csv.reader")
            print(f"  bridge readers only     {reading:6.2f} s  {rows / reading:12,.0f} rows/s"
                  f"  = {reading / plain:.2f}x csv.reader")
            print(f"  bridge to feed docs     {bridge:6.2f} s  {rows / bridge:12,.0f} rows/s"
                  f"  = {bridge / plain:.2f}x csv.reader, {bridge / named:.2f}x csv.DictReader (target 3x)")
            print(f"  same, SKUs published      {daily:6.2f} s  {rows / daily:12,.0f} rows/s"
                  f"  = {daily / plain:.2f}x csv.reader (every day after the first)")
            print(f"  same, 1% of SKUs gone   {churned:6.2f} s  {rows / churned:12,.0f} rows/s"
                  f"  = {churned / plain:.2f}x csv.reader (a usual day)")
        for shuffled in (False, True):
            small, large = (peak_rss_mb(Path(folder), 100_000, shuffled),
                            peak_rss_mb(Path(folder), 1_000_000, shuffled))
            print(f"peak RSS ({'shuffled' if shuffled else 'sorted'}): 100k rows {small:.1f} MB, "
                  f"1M rows {large:.1f} MB = {large / small:.2f}x (target 1.2x)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rss"]:
        rss_child(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000, int(sys.argv[2]) if len(sys.argv) > 2 else 3)
