"""Pure rules for inbound files (shipment confirmations, stock files): which names to take,
when a file is complete, what its archive and result files are called, and the result file's
bytes. The shipments and stock flows share them through `bridge.flows.inbound`.

Nothing here trusts a file name: names are only compared and turned into safe names; they are
never joined into a local path.
"""

from __future__ import annotations

import codecs
import csv
import fnmatch
import io
import re
import zipfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import IO, Iterable, Sequence

from bridge.errors import BadFile, IncompleteFile
from bridge.formats.readers import TableSpec, check_workbook, check_xml, checked_start, kind_problem

# Names never taken by default, each for a writer that is still busy or a file that is not data:
# *.tmp, *.part   temporary names of careful writers (the bridge's own uploads use .part)
# .*              hidden files: .DS_Store (macOS), editors' and sync tools' work files
# *.filepart      WinSCP's upload name: taking it would break the upload mid-way
# *.crdownload    a browser's download in progress
# *.swp           vi's swap file
# ~$*             Excel's and Word's owner file while a workbook is open
# Thumbs.db, desktop.ini   Windows Explorer's own files in a shared folder
DEFAULT_IGNORE = ("*.tmp", "*.part", ".*", "*.filepart", "*.crdownload", "*.swp", "~$*", "Thumbs.db", "desktop.ini")
MAX_NAME = 120  # characters kept of an inbound name in the names the bridge makes from it
RESULT_SUFFIX = ".result.csv"
_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")


# --- names ----------------------------------------------------------------------------------------

def ignored(name: str, patterns: Sequence[str], marker: str = "") -> bool:
    """Temporary and junk names (DEFAULT_IGNORE) and marker files are never taken: a writer is
    still busy with them, or they only signal another file. Patterns match whatever the case
    (a Windows share writes THUMBS.DB and Thumbs.db alike)."""
    folded = name.casefold()
    if any(fnmatch.fnmatchcase(folded, pattern.casefold()) for pattern in patterns):
        return True
    return bool(marker) and _is_marker(name, marker)


def marker_name(name: str, marker: str) -> str:
    """The marker file the WMS writes once `name` is complete: `{name}` and `{stem}` in the
    mapping's template, e.g. "{name}.ok" or "{stem}.done"."""
    return marker.format(name=name, stem=PurePosixPath(name).stem)


def _is_marker(name: str, marker: str) -> bool:
    suffix = marker.replace("{name}", "").replace("{stem}", "")
    return bool(suffix) and name.endswith(suffix) and marker.startswith(("{name}", "{stem}"))


def safe_name(name: str) -> str:
    """A name the bridge can use for archive, error and result files: letters, digits, '.',
    '_', '-' and spaces; no '..', no leading dot, at most MAX_NAME characters (the extension
    kept). Odd names are not refused: the file is handled, under this name."""
    cleaned = _UNSAFE.sub("_", name).replace("..", "_").strip(" .") or "unnamed"
    path = PurePosixPath(cleaned)
    suffix = path.suffix if len(path.suffix) <= 10 else ""
    stem = cleaned[: len(cleaned) - len(suffix)].rstrip(" .") or "unnamed"  # not 'a .csv' -> 'a .result.csv'
    if len(stem) + len(suffix) > MAX_NAME:
        stem = stem[: MAX_NAME - len(suffix)].rstrip(" .")
    return stem + suffix


def result_name(name: str) -> str:
    return f"{PurePosixPath(name).stem}{RESULT_SUFFIX}"


def name_problem(name: str) -> str:
    """Why a listed name is odd enough to mention in the result, or ""."""
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        return "its name has control characters"
    if ".." in name or "/" in name or "\\" in name:
        return "its name has '..', '/' or '\\'"
    if len(name) > MAX_NAME:
        return f"its name is {len(name)} characters long"
    return ""


# --- never early ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sighting:
    """What a poll saw of a file, and since when it has looked like that."""

    size: int
    mtime: float
    since: datetime


def settled(previous: Sighting | None, size: int, mtime: float, now: datetime,
            stable_after: timedelta) -> tuple[bool, Sighting]:
    """Whether a file has kept its size and modification time across two polls at least
    `stable_after` apart, and the sighting to remember for the next poll."""
    if previous is None or (previous.size, previous.mtime) != (size, mtime):
        return False, Sighting(size, mtime, now)
    return now - previous.since >= stable_after, previous


def incomplete_reason(stream: IO[bytes], spec: TableSpec) -> str | None:
    """Why the file looks unfinished, or None when it is complete. Called once the file is
    settled (its size and time unchanged, or its writer quiet).

    csv: not empty, and ends with a line break or its last row has as many fields as its
    first (an editor that saves without a final line break); xlsx: a zip whose central
    directory is there; xml: parses to the end of its document element. Raises BadFile for a
    file that is complete but can never be read, so that it is answered at once: a file of
    another kind than the mapping reads (a workbook in a CSV folder, ...), broken XML, a
    DOCTYPE, a byte order mark that contradicts the encoding.
    """
    stream.seek(0, io.SEEK_END)
    size = stream.tell()
    stream.seek(0)
    try:
        if size == 0:
            return "the file is empty"
        problem = kind_problem(stream.read(_HEAD), spec)
        stream.seek(0)
        if problem:
            raise BadFile(problem)
        if spec.format == "csv":
            checked_start(stream, spec.encoding)  # a contradicting byte order mark: BadFile now
            return _csv_incomplete(stream, size, spec)
        if spec.format == "xlsx":
            return _xlsx_incomplete(stream)
        check_xml(stream)  # parsed to the end, nothing kept
        return None
    except IncompleteFile as problem:
        return str(problem)
    finally:
        stream.seek(0)


_HEAD = 1 << 16
def _csv_incomplete(stream: IO[bytes], size: int, spec: TableSpec) -> str | None:
    encoding = spec.encoding
    width = 2 if encoding == "utf-16" else 1
    stream.seek(max(0, size - width))
    tail = stream.read(width)
    big_endian = False
    if encoding == "utf-16":
        stream.seek(0)
        big_endian = stream.read(2) == codecs.BOM_UTF16_BE
        ends = tail in ((b"\x00\n", b"\x00\r") if big_endian else (b"\n\x00", b"\r\x00"))
    else:
        ends = tail in (b"\n", b"\r")
    if ends:
        return None
    return _last_row_short(stream, size, spec, big_endian)


def _last_row_short(stream: IO[bytes], size: int, spec: TableSpec, big_endian: bool) -> str | None:
    """A settled file without a final line break is complete when its last row has the first
    row's number of fields (Notepad and Excel users save such files): a row cut off mid-way has
    fewer, or an open quote."""
    codec = {"utf-8": "utf-8-sig", "cp1252": "cp1252"}.get(spec.encoding) or ("utf-16-be" if big_endian else "utf-16-le")
    skip = 2 if spec.encoding == "utf-16" else 0
    stream.seek(skip)
    first = stream.read(_HEAD)
    start = max(skip, size - _HEAD)
    start -= (start - skip) % 2 if spec.encoding == "utf-16" else 0
    stream.seek(start)
    last = stream.read(_HEAD)
    first_text = first.decode(codec, "replace")
    last_text = last.decode(codec, "replace")
    header = re.split(r"\r\n|\r|\n", first_text, maxsplit=1)[0]
    row = re.split(r"\r\n|\r|\n", last_text)[-1]
    if row.count('"') % 2:
        return "the last row has an open quote and no line break (the file may still be written)"
    expected = len(next(csv.reader([header], delimiter=spec.delimiter), []))
    found = len(next(csv.reader([row], delimiter=spec.delimiter), []))
    if found == expected:
        return None
    return (f"the last row has {found} of {expected} fields and no line break: the file may still be written "
            "(if not, complete the row, end the file with a line break and drop it again)")


def _xlsx_incomplete(stream: IO[bytes]) -> str | None:
    check_workbook(stream)  # IncompleteFile without its zip directory; BadFile past a limit
    with zipfile.ZipFile(stream) as workbook:
        names = set(workbook.namelist())
    if "xl/workbook.xml" not in names:
        raise BadFile("a zip file but not an XLSX workbook (no xl/workbook.xml)")
    return None


# --- answering ------------------------------------------------------------------------------------

def result_file(header: Sequence[str], lines: Iterable[Sequence[str]],
                delimiter: str = ",") -> bytes:
    """The result file a warehouse clerk opens in Excel: UTF-8 with a byte order mark, CRLF,
    one line per input row under the flow's `header`. A cell a spreadsheet would run as a
    formula (a file's '=HYPERLINK(...)' echoed back) is written as text, prefixed with '."""
    out = io.BytesIO()
    write_result(out, header, lines, delimiter)
    return out.getvalue()


def write_result(stream: IO[bytes], header: Sequence[str], lines: Iterable[Sequence[str]],
                 delimiter: str = ",") -> None:
    """`result_file`, written to `stream` line by line: a million lines never held at once."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="", write_through=False)
    try:
        writer = csv.writer(text, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
        writer.writerow(header)
        writer.writerows([_as_text(cell) for cell in line] for line in lines)
        text.flush()
    finally:
        text.detach()


_FORMULA_START = ("=", "+", "-", "@")  # as mapping.FORMULA_START (OWASP's list)
_SIGNED_NUMBER = re.compile(r"[-+]?[0-9]+(?:[.,][0-9]+)?\Z")


def _as_text(cell: str) -> str:
    if cell.startswith(_FORMULA_START) and not _SIGNED_NUMBER.match(cell):
        return "'" + cell
    return cell
