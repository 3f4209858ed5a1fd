"""How much does the mapping layer cost over writing the same file by hand?

    .venv/bin/python bench/render_orders.py [orders] [xlsx_orders]
    .venv/bin/python bench/render_orders.py --memory


Builds synthetic orders (2 lines each on average), renders them with each shipped mapping's
format through `render_orders` (one file per run), and writes the same rows/tree directly with
the library (csv, lxml, openpyxl write-only) as the baseline. Prints seconds and the ratio.
Target: CSV within 2x of plain csv.

`--memory`: peak RSS of fresh processes rendering one per-run file of 10,000 and of 100,000
orders per format, against the RSS with those orders held in memory (what a run holds anyway).
Target: the peak within 1.5x, whatever the count: files are written an order at a time.
"""

from __future__ import annotations

import csv
import gc
import io
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from lxml import etree
from openpyxl import Workbook

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.formats.orders import render_orders  # noqa: E402
from bridge.mapping import load_mapping  # noqa: E402
from bridge.records import Address, Line, Order  # noqa: E402

RUN_TIME = datetime(2026, 11, 20, 12, 30, tzinfo=timezone.utc)
START = datetime(2026, 11, 1, tzinfo=timezone.utc)

CSV_MAPPING = """
[orders]
format = "csv"
file_per = "run"
file_name = "ORD_{run_time:%Y%m%d%H%M%S}.csv"
delimiter = ";"
encoding = "cp1252"
date_format = "%d.%m.%Y"
timezone = "Europe/Berlin"
decimal_separator = ","
"""
COLUMNS = [("OrderNumber", "order.id"), ("Date", "order.purchase_date"),
           ("Name", "ship_to.name"), ("Street", "ship_to.line1"), ("Zip", "ship_to.postal_code"),
           ("City", "ship_to.city"), ("Country", "ship_to.country_code"),
           ("Pos", "line.number"), ("SKU", "line.sku"), ("Title", "line.title"),
           ("Qty", "line.quantity"), ("Price", "line.unit_price")]


def synthetic_orders(count: int) -> list[Order]:
    orders = []
    for n in range(count):
        address = Address(name=f"Käufer Nummer {n}", line1=f"Hauptstraße {n % 200}",
                          city="Düsseldorf", postal_code=f"{n % 99999:05d}", country_code="DE")
        lines = tuple(
            Line(order_item_id=f"{n:08d}{i:06d}", sku=f"SKU-{n % 5000}-{i}", asin="B0C7KQ2V1M",
                 title=f"Ceramic mug; 12 oz \"blue\" #{i}", quantity=i + 1,
                 unit_price=Decimal("14.99"), currency="EUR")
            for i in range(1 + n % 3)
        )
        orders.append(Order(
            order_id=f"302-{n:07d}-{n:07d}", marketplace_id="A1PA6795UKMFR9",
            purchase_date=START + timedelta(minutes=n), last_updated=RUN_TIME,
            status="UNSHIPPED", ship_to=address, lines=lines, currency="EUR",
        ))
    return orders


def layout(folder: Path, fmt: str):
    if fmt == "csv":
        text = CSV_MAPPING
    elif fmt == "xlsx":
        text = CSV_MAPPING.replace('"csv"', '"xlsx"').replace(".csv", ".xlsx").split(
            "delimiter")[0] + 'date_format = "%d.%m.%Y"\ntimezone = "Europe/Berlin"\n'
    else:
        text = ('[orders]\nformat = "xml"\nfile_per = "run"\n'
                'file_name = "O_{run_time:%Y%m%d%H%M%S}.xml"\ntimezone = "Europe/Berlin"\n'
                'date_format = "%d.%m.%Y"\n')
    key = "columns" if fmt != "xml" else None
    for header, source in COLUMNS:
        if key:
            text += f'[[orders.{key}]]\nheader = "{header}"\nsource = "{source}"\n'
        else:
            table = "line_fields" if source.startswith("line.") else "fields"
            element = header if table == "line_fields" or header in ("OrderNumber", "Date") \
                else f"ShipTo/{header}"
            text += f'[[orders.{table}]]\nelement = "{element}"\nsource = "{source}"\n'
    path = folder / f"{fmt}.toml"
    path.write_text(text, encoding="utf-8")
    return load_mapping(path).orders


# The baselines do by hand what the mapping declares: same values, same formats.
BERLIN = __import__("zoneinfo").ZoneInfo("Europe/Berlin")


def hand_rows(orders: list[Order]) -> list[list]:
    rows = []
    for o in orders:
        a = o.ship_to
        date = o.purchase_date.astimezone(BERLIN).strftime("%d.%m.%Y")
        for number, line in enumerate(o.lines, 1):
            rows.append([o.order_id, date, a.name, a.line1, a.postal_code, a.city,
                         a.country_code, str(number), line.sku, line.title, str(line.quantity),
                         format(line.unit_price, "f").replace(".", ",")])
    return rows


def plain_csv(orders: list[Order]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
    writer.writerow([h for h, _ in COLUMNS])
    writer.writerows(hand_rows(orders))
    return out.getvalue().encode("cp1252")


def plain_xml(orders: list[Order]) -> bytes:
    root = etree.Element("Orders")
    sub = etree.SubElement
    for o in orders:
        a = o.ship_to
        order = sub(root, "Order")
        sub(order, "OrderNumber").text = o.order_id
        sub(order, "Date").text = o.purchase_date.astimezone(BERLIN).strftime("%d.%m.%Y")
        ship_to = sub(order, "ShipTo")
        for tag, value in (("Name", a.name), ("Street", a.line1), ("Zip", a.postal_code),
                           ("City", a.city), ("Country", a.country_code)):
            sub(ship_to, tag).text = value
        lines = sub(order, "Lines")
        for number, line in enumerate(o.lines, 1):
            element = sub(lines, "Line")
            for tag, value in (("Pos", str(number)), ("SKU", line.sku), ("Title", line.title),
                               ("Qty", str(line.quantity)), ("Price", str(line.unit_price))):
                sub(element, tag).text = value
    etree.indent(root)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def plain_xlsx(orders: list[Order]) -> bytes:
    book = Workbook(write_only=True)
    sheet = book.create_sheet("Orders")
    sheet.append([h for h, _ in COLUMNS])
    for row in hand_rows(orders):
        row[7], row[10], row[11] = int(row[7]), int(row[10]), Decimal(row[11].replace(",", "."))
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def timed(function, *args) -> float:
    best = float("inf")
    for _ in range(5):
        gc.collect()  # each attempt starts from the same heap
        start = time.perf_counter()
        function(*args)
        best = min(best, time.perf_counter() - start)
    return best


def rss_mb(field: str) -> float:
    """This process's VmRSS (now) or VmHWM (its peak), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_of_one_render(fmt: str, count: int) -> None:
    """In a fresh process: the RSS with `count` orders held in memory, and the peak while one
    per-run file of them is rendered (the peak is reset to the current RSS in between)."""
    orders = synthetic_orders(count)
    with tempfile.TemporaryDirectory() as folder:
        mapping = layout(Path(folder), fmt)
    gc.collect()
    held = rss_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM starts again from VmRSS
    result = render_orders(mapping, orders, RUN_TIME)
    peak = rss_mb("VmHWM")
    size = sum(len(f.data) for f in result.files)
    print(f"{held:.1f} {peak:.1f} {size}")


def memory(counts: tuple[int, ...] = (10_000, 100_000)) -> None:
    import subprocess

    for fmt in ("xml", "xlsx", "csv"):
        for count in counts:
            done = subprocess.run([sys.executable, __file__, "--rss", fmt, str(count)], capture_output=True,
                                  text=True, check=True)
            held, peak, size = done.stdout.split()
            print(f"{fmt:5} {count:>7} orders: RSS with the orders held {float(held):7.1f} MB, peak while"
                  f" rendering one file of them {float(peak):7.1f} MB ({int(size) / 1e6:.0f} MB file):"
                  f" {float(peak) / float(held):.2f}x (target at most 1.5x)")


def main(count: int = 100_000, xlsx_count: int = 20_000) -> None:
    orders = synthetic_orders(count)
    # The input lives for the whole run: freeze it so the collector does not rescan 100,000
    # orders on every collection, for both sides alike (a real run holds a few hundred).
    gc.collect()
    gc.freeze()
    lines = sum(len(o.lines) for o in orders)
    print(f"{count} orders, {lines} lines (best of 5)")
    with tempfile.TemporaryDirectory() as folder:
        layouts = {fmt: layout(Path(folder), fmt) for fmt in ("csv", "xml", "xlsx")}
    check = render_orders(layouts["csv"], orders[:1000], RUN_TIME).files[0].data
    assert check == plain_csv(orders[:1000]), "the baseline must write the same file"
    for fmt, baseline, subset in (("csv", plain_csv, orders), ("xml", plain_xml, orders),
                                  ("xlsx", plain_xlsx, orders[:xlsx_count])):
        ours = timed(lambda: render_orders(layouts[fmt], subset, RUN_TIME))
        theirs = timed(baseline, subset)
        print(f"{fmt:5} {len(subset):>7} orders  render_orders {ours:7.3f}s  "
              f"direct {theirs:7.3f}s  ratio {ours / theirs:5.2f}x")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rss"]:
        memory_of_one_render(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1:2] == ["--memory"]:
        memory()
    else:
        main(*(int(a) for a in sys.argv[1:]))
