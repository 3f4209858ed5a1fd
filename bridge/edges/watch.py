"""Watched local folders, through watchdog (inotify on Linux): which files a writer finished.

Only a file renamed into the folder (`FileMovedEvent`) is finished at once: a rename is atomic,
the content is whole. A close is not the end of a file: a batch script that appends a line at a
time (`echo LINE >> EXPORT.csv`) closes the file after every line. So a file written in place
(closed, created, modified: also one moved in from another file system, which shows only as
created) counts as finished once no event has touched it for `quiet` seconds (the daemon uses
min(shipments.stable_seconds, 5)). Finished means "quiet", not "complete" (a killed writer goes
quiet too): the inbound pipeline still checks the content. Files present before the watch starts
give no event: the daemon scans once at start and every few minutes for what events missed.

Only files directly in a watched folder count; its subfolders (processing/, archive/, ...)
do not. watchdog's exceptions stop here: a folder that cannot be watched raises FixTheSetup.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable

from bridge.errors import FixTheSetup


class FolderWatcher:
    def __init__(self, folders: dict[str, Path], *, quiet: float = 2.0,
                 clock: Callable[[], float] = time.monotonic,
                 make_folder: Callable[[Path], None] | None = None):
        """`folders`: a key (the warehouse) → the folder to watch; `make_folder` creates one
        that is missing (default: as the umask says)."""
        self._make_folder = make_folder or (lambda folder: folder.mkdir(parents=True, exist_ok=True))
        self._folders = {key: Path(folder).resolve() for key, folder in folders.items()}
        self._quiet = quiet
        self._clock = clock
        self._lock = threading.Lock()
        self._finished: dict[str, set[str]] = {key: set() for key in folders}
        self._maybe: dict[tuple[str, str], float] = {}
        self._observer = None
        self.changed = threading.Event()  # set when something may be ready

    def start(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                watcher._event(event)

        observer = Observer()
        for folder in self._folders.values():
            try:
                self._make_folder(folder)
                observer.schedule(Handler(), str(folder), recursive=False)
            except Exception as problem:  # OSError mostly; watchdog's own for what inotify refuses
                why = problem.strerror if isinstance(problem, OSError) and problem.strerror else problem
                raise FixTheSetup(f"cannot watch the local folder {folder}: {why}") from None
        observer.daemon = True
        observer.start()
        self._observer = observer  # only a started one: stop() joins it

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def take(self) -> dict[str, set[str]]:
        """The names finished since the last call, per key; quiet created files included."""
        now = self._clock()
        with self._lock:
            for (key, name), at in list(self._maybe.items()):
                if now - at >= self._quiet:
                    self._finished[key].add(name)
                    del self._maybe[(key, name)]
            taken = {key: names for key, names in self._finished.items() if names}
            self._finished = {key: set() for key in self._folders}
            if not self._maybe:
                self.changed.clear()
        return taken

    def pending(self) -> bool:
        """Created files still waiting to be quiet."""
        with self._lock:
            return bool(self._maybe)

    def _event(self, event) -> None:
        if event.is_directory:
            return
        kind = event.event_type  # created, modified, closed, moved, deleted, closed_no_write, opened
        path = Path(os.fsdecode(event.dest_path if kind == "moved" else event.src_path))
        key = self._key(path.parent)
        if key is None:
            return
        with self._lock:
            if kind == "moved":  # the old name is gone
                source = Path(os.fsdecode(event.src_path))
                if self._key(source.parent) == key:
                    self._maybe.pop((key, source.name), None)
                    self._finished[key].discard(source.name)
            if kind == "moved":
                self._maybe.pop((key, path.name), None)
                self._finished[key].add(path.name)
            elif kind in ("closed", "created", "modified"):
                self._finished[key].discard(path.name)  # written again: quiet first
                self._maybe[(key, path.name)] = self._clock()
            elif kind == "deleted":
                self._maybe.pop((key, path.name), None)
                self._finished[key].discard(path.name)
            else:
                return
        self.changed.set()

    def _key(self, folder: Path) -> str | None:
        for key, watched in self._folders.items():
            if folder == watched:
                return key
        return None
