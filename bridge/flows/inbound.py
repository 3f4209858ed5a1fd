"""Inbound files, shared by the shipments and stock flows: taken exactly once, never early,
always answered.

A *source* is one folder files arrive in: a warehouse's SFTP folder or a local folder staff
drop files into. Inside it the pipeline keeps processing/, archive/, error/ and results/
(created if missing). The flow that owns the files supplies a `Handler`: how to check their
completeness, read them into the ledger, tell when their work is final, and word the result.

`collect` (steps 1-4) and `answer` (step 5), each safe to interrupt at any line:
1. resume   files in processing/ the ledger knows continue where they were; files it does not
            know (claimed just before a crash) are taken as new;
2. list     skip temporary names and files still waiting for their marker; a file is settled
            when its size and mtime stayed the same across two listings `stable` apart (or a
            watch saw its writer close it);
3. claim    rename it into processing/ (two pollers never both get it), copy it to the spool,
            check it is complete (an unfinished file goes back, and to error/ after a limit),
            record it (name, size, SHA-256; same content as an earlier file: a duplicate);
4. read     the handler records its rows (one transaction), or why the file is unreadable.
            The file is the unit of failure: whatever reading it raises (a bug, a library's
            surprise) answers that file into error/, never stops the folder or another one.
            A read is counted before it starts: a file whose reads twice never ended (the
            process was killed, out of memory say) is answered, never read a third time;
5. answer   once the handler says its work is final: results/<stem>.result.csv (temporary
            name, then rename), the file moved from processing/ to archive/ or error/, done.
The remote copy is touched again (step 5) only after the ledger holds the file (step 3).

Still being written. A writer that pauses longer than `stable` exactly after a line break
leaves a file that looks complete; it is taken, and the writer's open handle follows it into
processing/ and on into archive/ or error/, where the rows it writes next would never be read.
So a taken file is looked at again (its size against the bytes read): before it is
answered, while it waits (a stock file before its publish), and for `incomplete_limit` after it
was answered (`look_again`, each pass). One that grew, and still begins with the bytes read, is
recorded in the ledger first (inbound_grown: found ──▶ done), then put back in its folder whole
under `<stem>-again-<id><ext>`, to be taken again by the same rules as any new file (what was
answered already comes back as a duplicate); the first file's result says so in its first line,
and its archive/ or error/ copy is the part read. Each step is looked up before it is done again,
so a crash anywhere converges.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Callable, Iterator, Protocol, Sequence

from bridge.config import Settings, WarehouseSettings
from bridge.edges.folders import Drop, FolderDrop, RemoteFile
from bridge.edges.sftp import SftpDrop
from bridge.errors import (
    BadFile, BridgeError, FileExistsInDrop, FixTheSetup, NotRegularFile, RemotePathMissing, StateUnusable)
from bridge.flows.steps import unexpected
from bridge.formats.inbound import (
    MAX_NAME, Sighting, ignored, incomplete_reason, marker_name, name_problem, result_name, safe_name, settled,
    write_result)
from bridge.formats.readers import TableSpec
from bridge.ledger import (
    GrownStatus, InboundOutcome, InboundSource, InboundStatus, Ledger, StoredGrown, StoredInbound)
from bridge.records import iso_z, parse_iso

log = logging.getLogger("bridge.inbound")

SUBFOLDERS = ("processing", "archive", "error", "results")
RESULT_TEMP = ".part"
MAX_READS = 2  # reads of one file that may start; one killed read is retried once, not forever
STILL_WRITTEN = "read again"  # the result word of a file still being written when it was taken
CHANGED_WHILE_READ = "it changed while it was read: it is still being written"
STAT_BATCH = 500  # files whose size and mtime are asked for at once


class Checkpoint(Protocol):
    def __call__(self, step: str) -> None: ...


class Handler(Protocol):
    """What a flow (shipments, stock) tells the pipeline about its files."""

    flow: str  # the ledger's name for the flow: "shipments", "stock"
    header: Sequence[str]  # the result file's columns

    def spec(self, warehouse: WarehouseSettings) -> TableSpec:
        """How the warehouse's files are laid out (for the completeness check)."""

    def marker(self, warehouse: WarehouseSettings) -> str:
        """The marker file template the WMS writes when a file is complete, or ""."""

    def result_delimiter(self, warehouse: WarehouseSettings) -> str: ...

    def read(self, warehouse: WarehouseSettings, file: StoredInbound, stream: IO[bytes],
             now: datetime) -> None:
        """Record the file's rows in the ledger in one transaction (moving it to parsed), or
        raise BadFile for a file that cannot be read. RetryLater leaves it to the next run."""

    def ready(self, file: StoredInbound) -> bool:
        """Whether everything the file asked for has its final answer."""

    def answer(self, file: StoredInbound) -> tuple[InboundOutcome, list[Sequence[str]]]:
        """The file's outcome and its result lines, from the ledger."""

    # Optional: provisional(file) -> result lines or None. For a file not ready yet that waits
    # for a person (a held stock file): a result file written now, replaced by the final one,
    # so a warehouse that sees only its folders learns why its file waits.
    # Optional: step_aside(file, newer_name, now) -> bool. A new file has the name of `file`,
    # still in processing/: True when `file` may be answered now to make room (the stock flow:
    # a newer stock file supersedes a waiting one). Without it the new file waits its turn.
    # Optional: still_written(file, again_name, now) -> bool. `file`, not answered yet, was
    # still being written when it was taken: the whole file is taken again as `again_name`.
    # True when `file` may be answered now (the stock flow: one not yet published is passed
    # over, never published from the part read). Without it the file is answered when ready.


@dataclass(frozen=True)
class Source:
    warehouse: WarehouseSettings
    kind: InboundSource
    folder: str  # in the drop: an absolute remote path, or "/" for a local folder
    open: Callable[[], Drop]
    where: str = ""  # a local folder's path on this machine, for logs and messages

    @property
    def label(self) -> str:
        return f"{self.warehouse.name} {self.kind.value}:{self.where or self.folder}"

    def path(self, *parts: str) -> str:
        return "/".join([self.folder.rstrip("/"), *parts]) if self.folder != "/" else "/" + "/".join(parts)


@dataclass
class InboundReport:
    taken: int = 0
    duplicates: int = 0
    settling: int = 0  # seen, not yet settled: a second listing `stable` later takes them
    incomplete_files: set[tuple[str, str]] = field(default_factory=set)  # (source, name): once however often listed
    unreadable: int = 0
    answered: int = 0
    taken_again: int = 0  # files still being written when taken: put back whole, to be taken again
    in_error: list[str] = field(default_factory=list)  # "<source>: <name> -> results/<result>" answered into error/
    errors: list[str] = field(default_factory=list)
    needs_a_person: bool = False

    @property
    def incomplete(self) -> int:
        return len(self.incomplete_files)


def sources(settings: Settings, *, remote: bool = True, local: bool = True,
            warehouses: set[str] | None = None,
            open_drop: Callable[[WarehouseSettings], Drop] | None = None,
            folder: Callable[[WarehouseSettings], tuple[str | None, Path | None]] | None = None) -> list[Source]:
    """The folders inbound files of one flow arrive in; `folder` gives a warehouse's (remote,
    local) folders for that flow (default: its shipment folders)."""
    folder = folder or (lambda w: (w.shipments_folder, w.local_shipments_folder))
    open_drop = open_drop or (lambda w: SftpDrop(w.sftp))
    found = []
    for warehouse in settings.warehouses:
        if warehouses is not None and warehouse.name not in warehouses:
            continue
        remote_folder, local_folder = folder(warehouse)
        if remote and remote_folder:
            found.append(Source(warehouse, InboundSource.SFTP, remote_folder,
                                lambda w=warehouse: open_drop(w)))
        if local and local_folder:
            found.append(Source(warehouse, InboundSource.LOCAL, "/",
                                lambda p=local_folder: _local_drop(p, settings.shipments), where=str(local_folder)))
    return found


def _local_drop(folder: Path, rules) -> FolderDrop:
    """A staff folder: created if missing; what the bridge makes in it gets the configured
    modes, whatever the umask, so that staff can read the answers (see README)."""
    make_local_folder(folder, rules)
    return FolderDrop(folder, folder_mode=rules.local_folder_mode, file_mode=rules.local_file_mode)


def make_local_folder(folder: Path, rules) -> None:
    """Create a staff folder that is missing, with shipments.local_folder_mode (one that exists
    is the administrator's: left as it is)."""
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        FolderDrop(folder, folder_mode=rules.local_folder_mode).set_root_mode()


class InboundPipeline:
    def __init__(self, settings: Settings, ledger: Ledger, handler: Handler, *, rules=None,
                 checkpoint: Checkpoint | None = None, should_stop: Callable[[], bool] | None = None):
        """`rules`: stable, incomplete_limit and ignore for this flow's files (default: the
        [shipments] settings)."""
        self.settings = settings
        self.ledger = ledger
        self.handler = handler
        self.rules = rules or settings.shipments
        self.checkpoint = checkpoint or (lambda step: None)
        self.should_stop = should_stop or (lambda: False)

    # --- 1-4: collect ------------------------------------------------------------------------

    def collect(self, source: Source, now: datetime, report: InboundReport,
                finished: set[str] | None = None) -> None:
        """Take every complete new file of `source` into the ledger and read it. `finished`:
        names a watch saw closed or moved in (settled without waiting)."""
        self._run(source, report, lambda drop: self._collect(drop, source, now, report, finished or set()))

    def _collect(self, drop: Drop, source: Source, now: datetime, report: InboundReport,
                 finished: set[str]) -> None:
        listing = drop.listdir(source.folder)  # a missing folder is a setup error, not created
        self._note_skipped(source, getattr(drop, "skipped", ()))
        for sub in SUBFOLDERS:
            drop.makedirs(source.path(sub))
        self._resume(drop, source, now, report)
        self._look_again(drop, source, now, report)
        names = {entry.name for entry in listing}
        again = self._again_names(source)  # put back whole: no marker, and settled by listings only
        marker = self.handler.marker(source.warehouse)
        before = self.ledger.sightings(self.handler.flow, source.warehouse.name, source.kind)
        seen: dict[str, dict] = {}
        for entry in listing:
            if self.should_stop():
                seen.update({n: s for n, s in before.items() if n in names and n not in seen})
                break
            if ignored(entry.name, self.rules.ignore, marker):
                continue
            if marker and entry.name not in again and marker_name(entry.name, marker) not in names:
                continue  # the WMS has not said it is complete yet
            sighting = self._consider(drop, source, entry, before.get(entry.name), now, report,
                                      entry.name in finished and entry.name not in again,
                                      "" if entry.name in again else marker)
            if sighting is not None:
                seen[entry.name] = sighting
        self.ledger.save_sightings(self.handler.flow, source.warehouse.name, source.kind, seen)

    def _consider(self, drop: Drop, source: Source, entry: RemoteFile, before: dict | None,
                  now: datetime, report: InboundReport, closed: bool, marker: str) -> dict | None:
        """Claim `entry` if it is settled and complete; return what to remember of it if not."""
        previous = Sighting(before["size"], before["mtime"], parse_iso(before["since"])) if before else None
        ok, sighting = settled(previous, entry.size, entry.mtime, now, self.rules.stable)
        remembered = {"size": sighting.size, "mtime": sighting.mtime, "since": iso_z(sighting.since)}
        unchanged = previous is not None and previous == sighting
        incomplete_since = before.get("incomplete_since") if before and unchanged else None
        limit_passed = incomplete_since is not None and \
            now - parse_iso(incomplete_since) >= self.rules.incomplete_limit
        if incomplete_since and not limit_passed:
            report.incomplete_files.add((source.label, entry.name))
            return {**remembered, "incomplete_since": incomplete_since,
                    "incomplete_reason": before.get("incomplete_reason", "")}
        if not (ok or closed or limit_passed):
            report.settling += 1
            return remembered
        if not self._claim(drop, source, entry.name, now):
            return None
        if marker:
            self._remove_quietly(drop, source.path(marker_name(entry.name, marker)))
        give_up = before.get("incomplete_reason") if limit_passed and before else None
        why = self._take(drop, source, entry.name, now, report, give_up=give_up)
        if why is None:
            return None
        report.incomplete_files.add((source.label, entry.name))
        return {**remembered, "incomplete_since": incomplete_since or iso_z(now), "incomplete_reason": why}

    def _claim(self, drop: Drop, source: Source, name: str, now: datetime) -> bool:
        for attempt in (1, 2):
            try:
                drop.rename(source.path(name), source.path("processing", name))
                break
            except RemotePathMissing:
                return False  # taken by someone else, or removed, since the listing
            except FileExistsInDrop:
                if attempt == 2 or not self._make_room(drop, source, name, now):
                    log.warning("not claimed source=%s name=%r: a file of that name is still in processing/",
                                source.label, name)
                    return False
        self.checkpoint("claimed")
        return True

    def _make_room(self, drop: Drop, source: Source, name: str, now: datetime) -> bool:
        """An older file of this name is still in processing/: answered now if the handler
        lets it step aside for the newer one."""
        step_aside = getattr(self.handler, "step_aside", None)
        older = next((f for f in self.ledger.inbound_unfinished(self.handler.flow, source.warehouse.name,
                                                                source.kind) if f.name == name), None)
        if step_aside is None or older is None or older.status != InboundStatus.PARSED \
                or not step_aside(older, name, now):
            return False
        log.info("superseded by a newer file of the same name source=%s name=%r", source.label, name)
        self._answer(drop, source, self.ledger.inbound(older.id), now)
        return True

    def _resume(self, drop: Drop, source: Source, now: datetime, report: InboundReport) -> None:
        known = {f.name: f for f in self.ledger.inbound_unfinished(self.handler.flow, source.warehouse.name, source.kind)}
        for entry in drop.listdir(source.path("processing")):
            if self.should_stop():
                return
            stored = known.get(entry.name)
            if stored is None:
                # Claimed just before a crash: taken as new (an unfinished one goes back).
                self._take(drop, source, entry.name, now, report)
            elif stored.status == InboundStatus.RECEIVED:
                self._read(source, stored, now, report)

    def _take(self, drop: Drop, source: Source, name: str, now: datetime, report: InboundReport,
              give_up: str | None = None) -> str | None:
        """Copy a claimed file to the spool, check it, record it and read it. Returns why it is
        incomplete (it is then back in the folder), or None when it is in the ledger."""
        flow, warehouse = self.handler.flow, source.warehouse.name
        folder = self.settings.inbound_dir / flow / warehouse
        folder.mkdir(parents=True, exist_ok=True)
        refused = None  # why the name is never read (a link swapped in after the listing)
        with _local_disk(folder), tempfile.NamedTemporaryFile(dir=folder, prefix=".incoming-", delete=False) as temporary:
            try:
                try:
                    drop.read_into(source.path("processing", name), _SpoolCopy(temporary, folder))
                except NotRegularFile as problem:
                    temporary.truncate(0)
                    refused = str(problem)
                temporary.flush()
                os.fsync(temporary.fileno())
                temporary.seek(0)
                digest, size = _sha256(temporary)
                why = None if refused else self._incomplete(source, temporary)
            except BaseException:
                Path(temporary.name).unlink(missing_ok=True)
                raise
        seen = None if refused else self._stat(drop, source.path("processing", name))
        if why is None and seen is not None and seen.size != size:
            why = CHANGED_WHILE_READ  # its writer is at it: put back, to settle again
        if refused:
            give_up = None
        elif why is None:
            give_up = None  # complete after all
        elif give_up is None:
            Path(temporary.name).unlink(missing_ok=True)
            self._put_back(drop, source, name)
            log.info("incomplete, left for later source=%s name=%r why=%s", source.label, name, why)
            return why
        spool = f"{flow}/{warehouse}/{digest}"
        os.replace(temporary.name, self.settings.inbound_dir / spool)
        self.checkpoint("spooled")
        stored = self.ledger.record_inbound(flow, warehouse, source.kind, name, size, digest, spool,
                                            safe_name(name), now, mtime=seen.mtime if seen is not None else None,
                                            again_of=self._again_names(source).get(name))
        self.checkpoint("recorded")
        report.taken += 1
        odd = name_problem(name)
        log.info("taken source=%s name=%r as=%s size=%d sha256=%s%s", source.label, name,
                 stored.safe_name, size, digest[:12], f" ({odd})" if odd else "")
        if give_up is not None or refused:
            self.ledger.file_failed(stored.id, refused or f"the file stayed incomplete for "
                                    f"{_minutes(self.rules.incomplete_limit)}: {why}", now)
            report.unreadable += 1
            if refused:
                log.warning("not read source=%s name=%r: %s", source.label, name, refused)
            return None
        self._read(source, stored, now, report)
        return None

    def _incomplete(self, source: Source, stream: IO[bytes]) -> str | None:
        try:
            return incomplete_reason(stream, self.handler.spec(source.warehouse))
        except BadFile:
            return None  # complete, but unreadable: `read` says why, and the file is answered
        except Exception as problem:  # a bug: the read meets it again and answers the file
            log.error("completeness check failed source=%s: %s (please report this as a bug)",
                      source.label, unexpected(problem))
            return None

    def _put_back(self, drop: Drop, source: Source, name: str) -> None:
        try:
            drop.rename(source.path("processing", name), source.path(name))
        except FileExistsInDrop:
            log.warning("incomplete file stays in processing/ source=%s name=%r: a new file of "
                        "that name arrived", source.label, name)

    def _read(self, source: Source, stored: StoredInbound, now: datetime, report: InboundReport) -> None:
        if stored.duplicate_of is not None:
            self.ledger.file_parsed(stored.id, now)
            report.duplicates += 1
            return
        path = self.settings.inbound_dir / stored.spool_path
        reads = self.ledger.start_reading(stored.id, now)
        if reads > MAX_READS:
            export = "" if self.handler.spec(source.warehouse).format == "csv" else " or export it as CSV"
            why = (f"reading it stopped the bridge {reads - 1} times (killed while reading: the file may be "
                   "too large or too complex to read), so it is not read again: if the bridge was stopped for "
                   f"another reason (a restart, a reboot), drop the same file again, otherwise split it{export} "
                   "and drop the parts")
            self.ledger.file_failed(stored.id, why, now)
            report.unreadable += 1
            log.error("unreadable source=%s name=%r: %s", source.label, stored.name, why)
            return
        try:
            with open(path, "rb") as stream:
                self.handler.read(source.warehouse, stored, stream, now)
            self.ledger.end_reading(stored.id)
        except FileNotFoundError:
            self.ledger.file_failed(stored.id, "its copy in the bridge's spool is missing; drop the file again", now)
            report.unreadable += 1
        except BadFile as problem:
            self.ledger.file_failed(stored.id, self._rest_of_a_file(str(problem), source, stored, now), now)
            report.unreadable += 1
            log.warning("unreadable source=%s name=%r: %s", source.label, stored.name, problem)
        except BridgeError:
            self.ledger.end_reading(stored.id)  # it ended: not a read that killed the process
            raise  # Amazon or the ledger unavailable, a setup problem: the file waits, the source says why
        except Exception as problem:  # a bug met on this file: the file fails, nothing else does
            what = unexpected(problem)
            self.ledger.file_failed(stored.id, f"could not be read: {what} (please report this as a bug)", now)
            report.unreadable += 1
            log.error("unreadable source=%s name=%r: %s (please report this as a bug)", source.label,
                      stored.name, what)
        self.checkpoint("read")

    # --- 5: answer ---------------------------------------------------------------------------

    def answer(self, source: Source, now: datetime, report: InboundReport) -> None:
        """Answer every parsed file of `source` whose work is final."""
        parsed = [f for f in self.ledger.inbound_unfinished(self.handler.flow, source.warehouse.name, source.kind)
                  if f.status == InboundStatus.PARSED]
        files, waiting = [], []
        provisional = getattr(self.handler, "provisional", None)
        for f in parsed:
            if self.handler.ready(f):
                files.append(f)
            elif provisional is not None and (lines := provisional(f)):
                waiting.append((f, lines))
        if waiting:
            self._run(source, report, lambda drop: self._provisional_all(drop, source, waiting, now))
        if files:
            self._run(source, report, lambda drop: self._answer_all(drop, source, files, now, report))

    def _provisional_all(self, drop: Drop, source: Source, waiting: list[tuple[StoredInbound, list]],
                         now: datetime) -> None:
        """A provisional result file for each file that waits for a person, written when its
        lines change; the final answer replaces it."""
        for stored, lines in waiting:
            with self._result_written(source, lines) as (data, digest):
                previous = self.ledger.provisional_result(stored.id)
                if previous == digest:
                    continue
                result = source.path("results", result_name(stored.safe_name))
                if drop.exists(result):
                    if previous is None or not _holds(drop, result, previous):
                        log.warning("no provisional answer source=%s name=%r: %s is someone else's",
                                    source.label, stored.name, result_name(stored.safe_name))
                        continue
                    drop.remove(result)
                _upload(drop, data, result + RESULT_TEMP)
                drop.rename(result + RESULT_TEMP, result)
                self.ledger.set_provisional_result(stored.id, digest)
                log.info("provisional answer source=%s name=%r result=%s", source.label, stored.name,
                         result_name(stored.safe_name))

    def _answer_all(self, drop: Drop, source: Source, files: list[StoredInbound], now: datetime,
                    report: InboundReport) -> None:
        """Each file on its own: one that cannot be answered now waits (and says why), the
        others are answered."""
        for stored in files:
            if self.should_stop():
                return
            try:
                outcome, result = self._answer(drop, source, stored, now)
            except FixTheSetup as problem:
                report.errors.append(f"{source.label}: {stored.name!r} not answered yet: {problem}")
                report.needs_a_person = True
                log.error("not answered source=%s name=%r: %s", source.label, stored.name, problem)
                continue
            report.answered += 1
            if outcome == InboundOutcome.ERROR:
                report.in_error.append(f"{source.label}: {stored.name!r} answered into error/ "
                                       f"(its answer: results/{result})")

    def _answer(self, drop: Drop, source: Source, stored: StoredInbound, now: datetime) -> tuple[InboundOutcome, str]:
        """Write the result file, then move the file to archive/ or error/, under names free in
        the folder: a name someone else's file already has (an old install's, a restored
        ledger's) is never overwritten, nor its result taken for this file's."""
        outcome, lines = self.handler.answer(stored)
        processing = source.path("processing", stored.name)
        in_processing = drop.exists(processing)
        grown = self.ledger.inbound_grown(stored.id)
        if grown is None and in_processing:
            grown = self._check_grown(drop, source, stored, "processing", now, self._stat(drop, processing))
        if grown is not None and grown.status == GrownStatus.EDITED:
            grown = None  # changed, but not written on at its end: answered as it was read
        if grown is not None:
            lines = chain([self._still_written_line(stored, grown)], lines)
        with self._result_written(source, lines) as (data, digest):
            name = stored.safe_name
            if in_processing:  # not moved yet: the names may still be chosen
                name = self._free_name(drop, source, stored, outcome, digest)
            result = source.path("results", result_name(name))
            provisional = self.ledger.provisional_result(stored.id)
            if provisional is not None and not _holds(drop, result, digest) and _holds(drop, result, provisional):
                drop.remove(result)  # the provisional answer: the final one takes its place
            if not _holds(drop, result, digest):
                _upload(drop, data, result + RESULT_TEMP)
                self.checkpoint("result_uploaded")
                drop.rename(result + RESULT_TEMP, result)
        self.checkpoint("result_renamed")
        target = source.path(outcome.value, name)
        if grown is not None:  # the whole file back to its folder; the part read is what is answered
            self._put_back_whole(drop, source, stored, grown, processing)
            if not drop.exists(target):
                self._restore_part_read(drop, source, stored, target)
            self.ledger.finish_inbound_grown(stored.id, now)
        else:
            try:
                drop.rename(processing, target)
            except RemotePathMissing:
                if not drop.exists(target):
                    log.warning("answered file was no longer in processing/ source=%s name=%r",
                                source.label, stored.name)
            except FileExistsInDrop:  # an SFTP server looks at the target first
                if drop.exists(processing):
                    raise
                # moved before a restart: the target is this file (its name was chosen free for it)
        self.checkpoint("moved")
        self.ledger.finish_inbound(stored.id, outcome, now)
        log.info("answered source=%s name=%r outcome=%s as=%s result=%s", source.label, stored.name,
                 outcome.value, name, result_name(name))
        return outcome, result_name(name)

    def _free_name(self, drop: Drop, source: Source, stored: StoredInbound, outcome: InboundOutcome,
                   digest: str) -> str:
        """The file's archive/error name: its safe name, or stem~id(-n) when that name (or its
        result's) is taken in the folder by a file the bridge did not write for this one.
        Recorded before anything is written under it, so a restart keeps to it."""
        stem, dot, suffix = stored.safe_name.rpartition(".")
        if not (dot and stem):
            stem, suffix = stored.safe_name, ""
        ending = f".{suffix}" if suffix else ""
        candidates = [stored.safe_name, f"{stem}~{stored.id}{ending}"]
        candidates += (f"{stem}~{stored.id}-{n}{ending}" for n in range(2, 100))
        for name in candidates:
            if drop.exists(source.path(outcome.value, name)):
                continue
            result = source.path("results", result_name(name))
            provisional = self.ledger.provisional_result(stored.id)
            if drop.exists(result) and not _holds(drop, result, digest) and not (
                    provisional is not None and _holds(drop, result, provisional)):
                continue
            if name != stored.safe_name:
                self.ledger.rename_inbound(stored.id, name)
                log.warning("name taken in the folder source=%s name=%r: answered as %s (result %s)",
                            source.label, stored.name, name, result_name(name))
            return name
        raise FileExistsInDrop(f"{stored.safe_name} and 99 other names for it are taken in "
                               f"{source.label} {outcome.value}/ or results/: clear them out")

    # --- still being written: files that grew after they were taken ----------------------------

    def look_again(self, source: Source, now: datetime, report: InboundReport) -> None:
        """`_look_again` on its own (the stock publish, right before it reads a waiting file)."""
        self._run(source, report, lambda drop: self._look_again(drop, source, now, report))

    def _look_again(self, drop: Drop, source: Source, now: datetime, report: InboundReport) -> None:
        """Taken files that were still being written: those found before a crash finished, those
        waiting in processing/ that may be answered now (the handler's `still_written`), and
        those answered in the last `incomplete_limit`, whose copy in archive/ or error/ the writer
        may still be writing into."""
        where = (self.handler.flow, source.warehouse.name, source.kind)
        for stored, grown in self.ledger.inbound_grown_open(*where):
            if grown.status == GrownStatus.FOUND and stored.status == InboundStatus.DONE:
                self._each(report, source, stored, lambda s=stored, g=grown: self._put_back_answered(
                    drop, source, s, g, now, report))
        self._look_at_waiting(drop, source, now, report)
        answered = self.ledger.inbound_answered_since(*where, now - self.rules.incomplete_limit)
        seen = self._stat_all(drop, [source.path(f.outcome.value, f.safe_name) for f, _ in answered])
        for (stored, mtime), now_seen in zip(answered, seen):
            grown = self._check_grown(drop, source, stored, stored.outcome.value, now, now_seen, mtime)
            if grown is not None and grown.status == GrownStatus.FOUND:
                self._each(report, source, stored, lambda s=stored, g=grown: self._put_back_answered(
                    drop, source, s, g, now, report))

    def _look_at_waiting(self, drop: Drop, source: Source, now: datetime, report: InboundReport) -> None:
        still_written = getattr(self.handler, "still_written", None)
        if still_written is None:
            return  # answered when its work is final, and looked at then
        waiting = [f for f in self.ledger.inbound_unfinished(self.handler.flow, source.warehouse.name, source.kind)
                   if f.status == InboundStatus.PARSED and not self.handler.ready(f)]
        known = {f.id: self.ledger.inbound_grown(f.id) for f in waiting}
        unknown = [f for f in waiting if known[f.id] is None]
        seen = dict(zip((f.id for f in unknown),
                        self._stat_all(drop, [source.path("processing", f.name) for f in unknown])))
        for stored in waiting:
            grown = known[stored.id]
            if grown is None:
                grown = self._check_grown(drop, source, stored, "processing", now, seen[stored.id])
            if grown is None or grown.status != GrownStatus.FOUND or not still_written(stored, grown.again_name, now):
                continue
            self._answer_all(drop, source, [self.ledger.inbound(stored.id)], now, report)

    def _check_grown(self, drop: Drop, source: Source, stored: StoredInbound, folder: str, now: datetime,
                     seen: RemoteFile | None, mtime: float | None = None) -> StoredGrown | None:
        """Whether the file in `folder` changed since it was taken (`mtime`: when it was taken;
        None: taken before this was recorded, not looked at); a change of size is recorded: grown
        (it is longer and begins with the bytes read: its writer went on) or edited."""
        path = source.path(folder, stored.safe_name if folder != "processing" else stored.name)
        if mtime is None:
            mtime = self.ledger.inbound_taken_mtime(stored.id)
        if seen is None or mtime is None or seen.size == stored.size:
            return None  # a writer going on makes it longer (and some servers touch the mtime of a renamed file)
        if seen.size > stored.size and _begins_with(drop, path, stored):
            again = _again_name(stored, lambda name: drop.exists(source.path(name)))
            grown = self.ledger.record_inbound_grown(stored.id, again, folder, seen.size, now)
            self.checkpoint("grown_found")
            log.warning("still being written when taken source=%s name=%r taken_size=%d size=%d in=%s/: "
                        "the whole file is put back to be taken again as %r", source.label, stored.name,
                        stored.size, seen.size, folder, grown.again_name)
            return grown
        log.info("changed after it was taken, not by writing on at its end source=%s name=%r taken_size=%d "
                 "size=%d in=%s/: left as it is", source.label, stored.name, stored.size, seen.size, folder)
        return self.ledger.record_inbound_grown(stored.id, "", folder, seen.size, now, edited=True)

    def _put_back_answered(self, drop: Drop, source: Source, stored: StoredInbound, grown: StoredGrown,
                           now: datetime, report: InboundReport) -> None:
        """An answered file grew in archive/ or error/: the whole file back to its folder, the
        part read in its place, and its result told."""
        final = source.path(grown.found_in, stored.safe_name)
        if drop.exists(final) and not _holds(drop, final, stored.sha256):
            drop.rename(final, source.path(grown.again_name))
        self.checkpoint("put_back")
        if not drop.exists(final):
            self._restore_part_read(drop, source, stored, final)
        _, lines = self.handler.answer(stored)
        self._replace_result(drop, source, stored.safe_name,
                             chain([self._still_written_line(stored, grown)], lines))
        self.ledger.finish_inbound_grown(stored.id, now)
        report.taken_again += 1
        log.info("answered again source=%s name=%r result=%s: put back whole as %r", source.label, stored.name,
                 result_name(stored.safe_name), grown.again_name)

    def _put_back_whole(self, drop: Drop, source: Source, stored: StoredInbound, grown: StoredGrown,
                        processing: str) -> None:
        try:
            drop.rename(processing, source.path(grown.again_name))
        except RemotePathMissing:
            pass  # put back before a restart
        except FileExistsInDrop:  # an SFTP server looks at the target first
            if drop.exists(processing):
                raise
            # put back before a restart
        self.checkpoint("put_back")
        log.info("put back whole source=%s name=%r as=%r", source.label, stored.name, grown.again_name)

    def _restore_part_read(self, drop: Drop, source: Source, stored: StoredInbound, path: str) -> None:
        """The bytes read (the spool copy) as the file's archive/ or error/ copy: what its result answers."""
        try:
            copy = open(self.settings.inbound_dir / stored.spool_path, "rb")
        except FileNotFoundError:
            log.warning("no copy of the part read source=%s name=%r: its spool copy is gone", source.label,
                        stored.name)
            return
        with copy:
            _upload(drop, copy, path + RESULT_TEMP)
        drop.rename(path + RESULT_TEMP, path)
        self.checkpoint("restored")

    def _replace_result(self, drop: Drop, source: Source, name: str, lines) -> None:
        """A result file written anew over the file's earlier one (the temporary first: one is
        always there but between the remove and the rename)."""
        with self._result_written(source, lines) as (data, digest):
            result = source.path("results", result_name(name))
            if _holds(drop, result, digest):
                return
            _upload(drop, data, result + RESULT_TEMP)
            self.checkpoint("result_uploaded")
            if drop.exists(result):
                drop.remove(result)
            drop.rename(result + RESULT_TEMP, result)

    @contextmanager
    def _result_written(self, source: Source, lines) -> Iterator[tuple[IO[bytes], str]]:
        """A result file written to a temporary file in the spool (read from its start), and its
        SHA-256."""
        folder = self.settings.inbound_dir / self.handler.flow
        folder.mkdir(parents=True, exist_ok=True)
        with _local_disk(folder), tempfile.TemporaryFile(dir=folder, prefix=".result-") as data:
            write_result(data, self.handler.header, lines, self.handler.result_delimiter(source.warehouse))
            data.seek(0)
            digest, _ = _sha256(data)
            yield data, digest

    def _still_written_line(self, stored: StoredInbound, grown: StoredGrown) -> list[str]:
        line = [""] * len(self.handler.header)
        line[1], line[-1] = STILL_WRITTEN, still_written_message(stored.size, grown.size, grown.again_name)
        return line

    def coming_again(self, source: Source, since: datetime) -> list[tuple[int, str]]:
        """Files put back since `since` and not yet taken again: (the id of the file taken
        first, the name it is put back under)."""
        return [(stored.id, grown.again_name) for stored, grown in self.ledger.inbound_grown_open(
            self.handler.flow, source.warehouse.name, source.kind) if parse_iso(grown.found_at) >= since]

    def _again_names(self, source: Source) -> dict[str, int]:
        """Names files were put back under and not yet taken again: name -> the file taken first."""
        return {grown.again_name: stored.id for stored, grown in self.ledger.inbound_grown_open(
            self.handler.flow, source.warehouse.name, source.kind)}

    def _rest_of_a_file(self, why: str, source: Source, stored: StoredInbound, now: datetime) -> str:
        """Why a file cannot be read, and a hint when a file of its name was taken shortly before
        (a writer that appends with `>>` after the bridge took the first part makes a new file
        of the same name, without the header)."""
        earlier = self.ledger.inbound_same_name_before(self.handler.flow, source.warehouse.name, source.kind,
                                                       stored.name, stored.id, now - self.rules.incomplete_limit)
        if earlier is None:
            return why
        return (f"{why}{' ' if why.endswith(('.', '?')) else '. '}A file of the same name was taken from this "
                f"folder at {earlier.received_at} (its answer: results/{result_name(earlier.safe_name)}): if this "
                "is the rest of that file, written after the bridge took it, join the two and drop the whole file "
                "again under a new name")

    def _each(self, report: InboundReport, source: Source, stored: StoredInbound, work: Callable[[], None]) -> None:
        """One file's work; a setup problem holds that file only, and is said."""
        try:
            work()
        except FixTheSetup as problem:
            report.errors.append(f"{source.label}: {stored.name!r} not put back yet: {problem}")
            report.needs_a_person = True
            log.error("not put back source=%s name=%r: %s", source.label, stored.name, problem)

    def _stat(self, drop: Drop, path: str) -> RemoteFile | None:
        return drop.stat_files([path])[0]

    def _stat_all(self, drop: Drop, paths: list[str]) -> list[RemoteFile | None]:
        found: list[RemoteFile | None] = []
        for start in range(0, len(paths), STAT_BATCH):
            found += drop.stat_files(paths[start:start + STAT_BATCH])
        return found

    # --- plumbing ------------------------------------------------------------------------------

    def _run(self, source: Source, report: InboundReport, work: Callable[[Drop], None]) -> None:
        """One source's work; its failure is reported and never stops the other sources."""
        try:
            with source.open() as drop:
                work(drop)
        except BridgeError as problem:
            report.errors.append(f"{source.label}: {problem}")
            report.needs_a_person |= isinstance(problem, FixTheSetup)
            log.error("inbound source=%s failed: %s", source.label, problem)
        except Exception as problem:  # a bug: this source waits, the others go on
            what = unexpected(problem)
            report.errors.append(f"{source.label}: {what}")
            report.needs_a_person = True
            log.error("inbound source=%s failed: %s (please report this as a bug)", source.label, what)

    _noted: set[tuple[str, str]] = set()  # names skipped and said so, once per process

    def _note_skipped(self, source: Source, names) -> None:
        """Links, FIFOs, devices in a local folder are never taken: said once, not every poll."""
        for name in names:
            if (source.label, name) not in InboundPipeline._noted:
                InboundPipeline._noted.add((source.label, name))
                log.warning("not taken source=%s name=%r: not a regular file (a link, a FIFO or a device); "
                            "the bridge reads only regular files", source.label, name)

    def _remove_quietly(self, drop: Drop, path: str) -> None:
        try:
            drop.remove(path)
        except BridgeError as problem:
            log.warning("marker not removed path=%s: %s", path, problem)

    def purge(self, now: datetime) -> int:
        """Delete spool copies of files answered more than retention.spool_days ago."""
        purged, _ = purge_inbound_copies(self.settings, self.ledger, now)
        for leftover in self.settings.inbound_dir.glob("*/*/.incoming-*"):
            leftover.unlink(missing_ok=True)  # a copy interrupted by a crash
        for leftover in self.settings.inbound_dir.glob("*/.shipments-*.scratch"):
            leftover.unlink(missing_ok=True)  # a read interrupted by a crash (reads end before the purge)
        return purged


def purge_inbound_copies(settings: Settings, ledger: Ledger, now: datetime) -> tuple[int, int]:
    """Delete the spool copies of inbound files answered more than retention.spool_days ago (a
    copy two files share goes with the last of them), and what answering a file from a local
    staff folder left there: its copy in archive/ or error/ (if it is still the file taken in)
    and its result file. Returns (files whose copies went, local files deleted)."""
    old = ledger.inbound_spool_to_delete(now - timedelta(days=settings.retention.spool_days))
    for stored in old:
        ledger.mark_inbound_spool_deleted(stored.id, now)
    in_use = ledger.inbound_spool_in_use()
    local = 0
    for stored in old:
        if stored.spool_path not in in_use:
            (settings.inbound_dir / stored.spool_path).unlink(missing_ok=True)
        if stored.source == InboundSource.LOCAL:
            local += _purge_local_answer(settings, stored)
    return len(old), local


def _purge_local_answer(settings: Settings, stored: StoredInbound) -> int:
    """A local staff folder's archive/ or error/ copy of an answered file and its result: the
    bridge made them on this machine, and a WMS's file may hold buyer names and addresses.
    (A warehouse's SFTP folders are the warehouse's: the bridge deletes nothing there.)"""
    warehouse = next((w for w in settings.warehouses if w.name == stored.warehouse), None)
    if warehouse is None or stored.outcome is None:
        return 0
    folder = warehouse.local_shipments_folder if stored.flow == "shipments" else warehouse.local_stock_folder
    if folder is None:
        return 0
    deleted = 0
    copy = folder / stored.outcome.value / stored.safe_name
    try:
        with copy.open("rb") as file:
            same = hashlib.file_digest(file, "sha256").hexdigest() == stored.sha256
    except OSError:
        same = False  # gone already, or not a file the bridge can read: left alone
    for path in ([copy] if same else []) + [folder / "results" / result_name(stored.safe_name)]:
        try:
            path.unlink()
            deleted += 1
        except FileNotFoundError:
            pass
        except OSError as problem:
            log.warning("retention: not deleted path=%s: %s", path, problem.strerror)
    return deleted


class _SpoolCopy:
    """The spool copy a drop reads a file into. A local write that fails (the state folder's
    disk full) is the bridge's own problem: raised as StateUnusable, which a drop passes on as
    it is, instead of an OSError the SFTP edge would take for the server refusing the read."""

    def __init__(self, file: IO[bytes], folder: Path):
        self.file, self.folder = file, folder

    def write(self, data) -> int:
        with _local_disk(self.folder):
            return self.file.write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        with _local_disk(self.folder):
            return self.file.seek(offset, whence)

    def truncate(self, size: int | None = None) -> int:
        with _local_disk(self.folder):
            return self.file.truncate(size)

    def flush(self) -> None:
        with _local_disk(self.folder):
            self.file.flush()


class _local_disk:
    """OSErrors of the bridge's own files in `folder` as StateUnusable, naming the folder."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, problem, tb) -> bool:
        if isinstance(problem, OSError) and not isinstance(problem, StateUnusable):
            if problem.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StateUnusable(f"the state folder's disk is full: cannot write in {self.folder} "
                                    f"({problem.strerror}); free some space: the file is taken again on the next "
                                    "run") from None
            raise StateUnusable(f"cannot write in {self.folder}: "
                                f"{problem.strerror or problem}") from None
        return False


class _Digest:
    """A write-only stream that hashes what it gets (a drop may rewind it to retry)."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        if offset == 0 and whence == 0:
            self.hash = hashlib.sha256()
        return 0

    def truncate(self, size: int | None = None) -> int:
        return 0


class _Prefix(_Digest):
    """A write-only stream that hashes only its first `limit` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit, self.seen = limit, 0

    def write(self, data: bytes) -> int:
        if self.seen < self.limit:
            self.hash.update(data[:self.limit - self.seen])
        self.seen += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        if offset == 0 and whence == 0:
            self.seen = 0
        return super().seek(offset, whence)


def _upload(drop: Drop, data: IO[bytes], path: str) -> None:
    """A result file to the drop: streamed where the drop can (`put_stream`), else whole."""
    data.seek(0)
    put_stream = getattr(drop, "put_stream", None)
    if put_stream is not None:
        put_stream(data, path)
    else:
        drop.put_bytes(data.read(), path)


def _holds(drop: Drop, path: str, digest: str) -> bool:
    """Whether `path` exists and holds exactly the bytes whose SHA-256 is `digest`."""
    if not drop.exists(path):
        return False
    sink = _Digest()
    try:
        drop.read_into(path, sink)
    except (RemotePathMissing, BadFile):
        return False
    return sink.hash.hexdigest() == digest


def _sha256(stream: IO[bytes]) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    stream.seek(0)
    return digest.hexdigest(), size


def still_written_message(read: int, size: int, again: str) -> str:
    """The first line of the result of a file that was still being written when it was taken."""
    return (f"the file was still being written when the bridge took it: its first {read:,} bytes were read and "
            f"answered here, it had {size:,} bytes later. Nothing is lost: the whole file is taken again as "
            f"{again} and answered in results/{result_name(again)}. To avoid this, the WMS should write the "
            "file under a temporary name and rename it when it is complete")


_AGAIN_MARK = re.compile(r"-again-\d+(?:-\d+)?\Z")


def _again_name(stored: StoredInbound, taken: Callable[[str], bool]) -> str:
    """The name a file still being written when it was taken is put back under: its own (made
    safe, so that its archive and result names are this one), with -again-<id> before the
    extension, and -<n> after the id when a file of that name is in the folder (it would be
    taken in its place)."""
    name = safe_name(stored.name)
    stem, dot, suffix = name.rpartition(".")
    if not (dot and stem):
        stem, dot, suffix = name, "", ""
    stem = _AGAIN_MARK.sub("", stem) or stem  # a file put back before, still being written: one mark, the newest
    for n in range(1, 100):
        mark = f"-again-{stored.id}{f'-{n}' if n > 1 else ''}"
        short = stem[:MAX_NAME - len(mark) - len(dot + suffix)].rstrip(" .") or "unnamed"  # a safe name as it is
        again = f"{short}{mark}{dot}{suffix}"
        if not taken(again):
            return again
    return again


def _begins_with(drop: Drop, path: str, stored: StoredInbound) -> bool:
    """Whether the file at `path` begins with exactly the bytes that were read of it."""
    sink = _Prefix(stored.size)
    try:
        drop.read_into(path, sink)
    except (RemotePathMissing, BadFile):
        return False
    return sink.hash.hexdigest() == stored.sha256


def _minutes(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


# --- what `fbm-bridge check` proves of the inbound folders -------------------------------------

PROBE_PREFIX = ".fbm-bridge-probe-"  # a leading dot and RESULT_TEMP: every listing ignores it


def check_sources(settings: Settings, *, open_drop: Callable[[WarehouseSettings], Drop] | None = None
                  ) -> list[tuple[bool, str]]:
    """For `check`: each shipments and stock folder (SFTP and local) readable, and processing/,
    archive/, error/ and results/ writable (a probe file created and removed in each, or in the
    folder itself where the first pass will make them). Changes nothing else; (ok, line) each."""
    found = [("shipments", source) for source in sources(settings, open_drop=open_drop)]
    found += [("stock", source) for source in sources(
        settings, open_drop=open_drop, folder=lambda w: (w.stock_folder, w.local_stock_folder))]
    lines = []
    for flow, source in found:
        where = f"{source.warehouse.name} {flow} {source.kind.value}:{source.where or source.folder}"
        try:
            lines.append((True, f"{where}: {_check_source(source)}"))
        except BridgeError as problem:
            lines.append((False, f"{where}: {problem}"))
    return lines


def _check_source(source: Source) -> str:
    if source.kind is InboundSource.LOCAL:
        folder = Path(source.where)
        if not folder.exists() and not folder.is_symlink():
            parent = next(p for p in folder.parents if p.exists())
            if not os.access(parent, os.W_OK | os.X_OK):
                raise FixTheSetup(f"{folder} does not exist and this user cannot create it ({parent} is not"
                                  " writable)")
            return "not there yet: the first pass makes it"
        if not folder.is_dir():
            raise FixTheSetup(f"{folder} is not a folder")
        drop: Drop = FolderDrop(folder)
    else:
        drop = source.open()
    with drop:
        drop.listdir(source.folder)
        later = []
        for sub in SUBFOLDERS:
            if drop.exists(source.path(sub)):
                _prove_writable(drop, source, source.path(sub))
            else:
                later.append(sub)
        if later:
            _prove_writable(drop, source, source.folder)
    made = f" ({', '.join(later)} made by the first pass)" if later else ""
    return f"readable; {', '.join(SUBFOLDERS)} writable{made}"


def _prove_writable(drop: Drop, source: Source, folder: str) -> None:
    """Create and remove a probe file named as a temporary file, so that nobody takes it."""
    probe = f"{folder.rstrip('/')}/{PROBE_PREFIX}{os.urandom(4).hex()}{RESULT_TEMP}"
    try:
        drop.put_bytes(b"", probe)
    except FixTheSetup as problem:
        if source.kind is InboundSource.LOCAL:  # the edge names paths inside the folder: name it whole
            why = str(problem).rpartition(": ")[2]
            raise FixTheSetup(f"{Path(source.where, folder.lstrip('/'))} is not writable: {why}") from None
        raise FixTheSetup(f"{folder} is not writable: {problem}") from None
    drop.remove(probe)
