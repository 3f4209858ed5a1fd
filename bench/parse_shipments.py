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
"""

from __future__ import annotations

import csv
import gc
import io
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


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rss"]:
        parse(Path(sys.argv[3]), sys.argv[2])
        print(peak_kib())
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
