"""How fast are confirmation files read, and does memory stay flat as they grow?

    .venv/bin/python bench/parse_shipments.py [rows]          (default 100,000)

For each shipped mapping's format (ACME CSV, Initech XLSX, Globex XML) a file of `rows` rows is
written by the simulated WMS, then read three ways, each the best of 3 in this run:
  reader   bridge.formats.readers.read_rows: rows of text, streamed
  parse    the same, typed and checked row by row (bridge.formats.shipments.parse_rows)
  baseline the library alone: plain `csv` over the decoded file / openpyxl read-only
           values / lxml iterparse clearing each record
Prints rows/s and the ratio reader/baseline (target: within 2x). Then peak RSS of a fresh
process parsing 1/4 of the rows and all of them: flat means the ratio stays near 1.

    .venv/bin/python bench/parse_shipments.py --through [rows ...]   (default 25,000 100,000 1,000,000)

The whole way a confirmation file goes in the service, each size in a fresh process: read,
checked against the orders (every row's order known, as if the bridge had delivered it),
recorded in a real ledger (rows and packages), then answered: its result file written. Prints
seconds and peak RSS per size, and each size's RSS against the smallest's (flat: near 1).
"""

from __future__ import annotations

import csv
import gc
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.formats.readers import read_rows  # noqa: E402
from bridge.formats.shipments import parse_rows  # noqa: E402
from bridge.mapping import load_mapping  # noqa: E402
from bridge.sandbox.wms import Shipped, render_confirmations, tracking_number  # noqa: E402

MAPPINGS = {"csv": "acme-csv", "xlsx": "initech-xlsx", "xml": "globex-xml"}
START = datetime(2026, 11, 20, 6, 0, tzinfo=timezone.utc)


def layout(fmt: str):
    return load_mapping(ROOT / "mappings" / f"{MAPPINGS[fmt]}.toml").shipments


def synthetic(fmt: str, rows: int) -> list[Shipped]:
    """Orders of 1-3 lines, one parcel each, shipped through the day (a minute apart)."""
    item_by_sku = layout(fmt).item_field == "sku"
    carrier = {"csv": "DHL_PAKET", "xlsx": "USPS", "xml": "UPS"}[fmt]
    lines = []
    order = 0
    while len(lines) < rows:
        order += 1
        order_id = f"111-{order:07d}-{order % 9999999:07d}"
        for line in range(1 + order % 3):
            item = f"SKU-{order % 5000}-{line}" if item_by_sku else f"{order:08d}{line:06d}"
            lines.append(Shipped(order_id, item, 1 + line, carrier, tracking_number(order_id),
                                 START + timedelta(minutes=order % 600), "Ground"))
    return lines[:rows]


def write_file(fmt: str, rows: int, folder: Path) -> Path:
    path = folder / f"shipments_{rows}.{fmt}"
    path.write_bytes(render_confirmations(layout(fmt), synthetic(fmt, rows)))
    return path


def reader(path: Path, fmt: str) -> int:
    with open(path, "rb") as stream:
        return sum(1 for _ in read_rows(stream, layout(fmt).table))


def parse(path: Path, fmt: str) -> int:
    spec = layout(fmt)
    with open(path, "rb") as stream:
        return sum(1 for _ in parse_rows(read_rows(stream, spec.table), spec))


def baseline(path: Path, fmt: str) -> int:
    if fmt == "csv":
        with open(path, encoding="cp1252", newline="") as text:
            rows = csv.reader(text, delimiter=";")
            next(rows)
            return sum(1 for _ in rows)
    if fmt == "xlsx":
        from openpyxl import load_workbook
        book = load_workbook(path, read_only=True, data_only=True)
        count = sum(1 for _ in book["Shipped"].iter_rows(min_row=2, values_only=True))
        book.close()
        return count
    from lxml import etree
    count = 0
    for _, element in etree.iterparse(str(path), tag="Item", resolve_entities=False, no_network=True):
        count += 1
        element.clear()
        while element.getprevious() is not None:
            del element.getparent()[0]
    return count


def best_of(function, *args, runs: int = 3) -> tuple[float, int]:
    times = []
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        count = function(*args)
        times.append(time.perf_counter() - start)
    return min(times), count


def peak_kib() -> int:
    """This process's peak RSS. Not ru_maxrss: Linux carries that over from the parent that
    forked it; VmHWM starts afresh with the new program."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_rss(fmt: str, rows: int, folder: Path) -> int:
    """KiB of peak RSS of a fresh process that parses a `rows`-row file."""
    path = write_file(fmt, rows, folder)
    done = subprocess.run([sys.executable, __file__, "--rss", fmt, str(path)], capture_output=True,
                          text=True, check=True)
    return int(done.stdout.strip())


def main(rows: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        print(f"{rows:,} rows per file; best of 3; rows/s (higher is better)")
        print(f"{'format':6} {'reader':>12} {'parse':>12} {'baseline':>12} {'reader/baseline':>16} {'parse/baseline':>15}")
        for fmt in ("csv", "xlsx", "xml"):
            path = write_file(fmt, rows, Path(folder))
            (t_read, n1), (t_parse, n2), (t_base, n3) = (best_of(f, path, fmt) for f in (reader, parse, baseline))
            assert n1 == n2 == n3 == rows, (n1, n2, n3)
            print(f"{fmt:6} {rows / t_read:12,.0f} {rows / t_parse:12,.0f} {rows / t_base:12,.0f} "
                  f"{t_read / t_base:15.2f}x {t_parse / t_base:14.2f}x")
        print("peak RSS of a fresh process parsing the file (KiB):")
        for fmt in ("csv", "xlsx", "xml"):
            small, large = peak_rss(fmt, rows // 4, Path(folder)), peak_rss(fmt, rows, Path(folder))
            print(f"{fmt:6} {rows // 4:>8,} rows: {small:,}  {rows:,} rows: {large:,}  ratio {large / small:.2f}")


def synthetic_facts(fmt: str):
    """The orders `synthetic` ships, as the ledger would know them: delivered to "wh" the day
    before, each line with the units the file ships."""
    from bridge.formats.shipments import OrderFacts
    from bridge.records import Line

    item_by_sku = layout(fmt).item_field == "sku"

    def facts(order_id: str):
        order = int(order_id.split("-")[1])
        lines = tuple(Line(f"{order:08d}{line:06d}", f"SKU-{order % 5000}-{line}" if item_by_sku else f"S{line}",
                           "B0", "x", 1 + line) for line in range(1 + order % 3))
        return OrderFacts(order_id, "ATVPDKIKX0DER", START - timedelta(days=1), lines, "wh")
    return facts


def through(path: Path, fmt: str) -> int:
    """Take the file the whole way through a real ledger and its result file; returns rows."""
    import hashlib
    from types import SimpleNamespace

    from bridge.flows.shipments import ShipmentFiles
    from bridge.formats import inbound
    from bridge.formats.shipments import RESULT_HEADER
    from bridge.ledger import InboundSource, Ledger
    from bridge.sealing import Sealer, new_key

    with tempfile.TemporaryDirectory() as state:
        ledger = Ledger(Path(state) / "ledger.sqlite", Sealer(new_key()))
        with open(path, "rb") as stream:
            digest = hashlib.file_digest(stream, "sha256").hexdigest()
        now = START + timedelta(days=1)
        stored = ledger.record_inbound("shipments", "wh", InboundSource.LOCAL, path.name, path.stat().st_size, digest,
                                       path.name, path.name, now)
        warehouse = SimpleNamespace(name="wh", mapping=SimpleNamespace(shipments=layout(fmt)))
        files = ShipmentFiles(ledger, synthetic_facts(fmt))
        with open(path, "rb") as stream:
            files.read(warehouse, stored, stream, now)
        outcome, lines = files.answer(ledger.inbound(stored.id))
        with open(Path(state) / "result.csv", "wb") as out:
            if hasattr(inbound, "write_result"):
                inbound.write_result(out, RESULT_HEADER, lines, ";")
            else:
                out.write(inbound.result_file(RESULT_HEADER, lines, ";"))
        rows = ledger._db.execute("select count(*) from shipment_rows").fetchone()[0]
        ledger.close()
        return rows


def main_through(sizes: list[int], fmt: str = "csv") -> None:
    print(f"the whole way ({fmt}): read, checked, recorded in a ledger, answered; a fresh process per size")
    print(f"{'rows':>10} {'seconds':>9} {'peak RSS KiB':>13} {'RSS / smallest':>15}")
    smallest = None
    with tempfile.TemporaryDirectory() as folder:
        for rows in sizes:
            path = write_file(fmt, rows, Path(folder))
            start = time.perf_counter()
            done = subprocess.run([sys.executable, __file__, "--through-rss", fmt, str(path)], capture_output=True,
                                  text=True, check=True)
            seconds = time.perf_counter() - start
            counted, kib = map(int, done.stdout.split())
            assert counted == rows, (counted, rows)
            smallest = smallest or kib
            print(f"{rows:>10,} {seconds:>9.1f} {kib:>13,} {kib / smallest:>14.2f}x")
            path.unlink()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rss"]:
        parse(Path(sys.argv[3]), sys.argv[2])
        print(peak_kib())
    elif sys.argv[1:2] == ["--through-rss"]:
        print(through(Path(sys.argv[3]), sys.argv[2]), peak_kib())
    elif sys.argv[1:2] == ["--through"]:
        main_through([int(n) for n in sys.argv[2:]] or [25_000, 100_000, 1_000_000])
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
