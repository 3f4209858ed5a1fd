"""Local folders: the staff drop folder, the spool, and the drop contract both drops honour.

A *drop* is a place where files are handed over: a warehouse's SFTP server (`edges.sftp.SftpDrop`)
or a local folder (`FolderDrop`). Both implement `Drop`; `tests/test_drops.py` runs one contract
test class against both.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bridge.errors import FileExistsInDrop, FixTheSetup, RemotePathMissing


@dataclass(frozen=True)
class RemoteFile:
    """A regular file in a drop folder. `mtime` is seconds since the epoch (SFTP: whole seconds)."""

    name: str
    size: int
    mtime: float


class Drop(Protocol):
    """Where files are handed over. Paths are POSIX strings ("/" separates folders).

    Delivering a file is always two steps: `put_bytes` to a temporary name the caller picks, then
    `rename` to the final name. A reader of the drop therefore never sees a half-written file
    under its final name, and an existing file is never replaced: `rename` raises
    `FileExistsInDrop` instead.

    Errors: a missing folder or file raises `RemotePathMissing`; a network failure raises
    `SftpUnavailable` (retry later); refused credentials or host key raise `FixTheSetup` subclasses.
    """

    def put_bytes(self, data: bytes, remote_path: str) -> None:
        """Write exactly `data` to `remote_path`, replacing a file of that name; synced to disk."""

    def rename(self, src: str, dst: str) -> None:
        """Move `src` to `dst` atomically; raise `FileExistsInDrop` if `dst` exists (untouched)."""

    def exists(self, path: str) -> bool: ...

    def listdir(self, folder: str) -> list[RemoteFile]:
        """Regular files directly in `folder`, sorted by name (no folders, no links to folders)."""

    def read_bytes(self, path: str) -> bytes: ...

    def read_into(self, path: str, stream) -> int:
        """Copy `path` into a binary stream without holding it in memory; returns its size."""

    def remove(self, path: str) -> None: ...

    def makedirs(self, folder: str) -> None:
        """Create `folder` and missing parents; no error if it exists."""


class FolderDrop:
    """A drop in a local folder.

    Every path is taken relative to `root`, and a leading "/" means `root` itself: "/in/a.csv",
    "in/a.csv" and "./in/a.csv" all name `root/in/a.csv`. A path that climbs above `root` with
    ".." is refused (`FixTheSetup`). Symbolic links inside `root` are followed as the OS does.
    """

    def __init__(self, root: Path):
        self.root = Path(root)

    def __enter__(self) -> FolderDrop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        pass

    def put_bytes(self, data: bytes, remote_path: str) -> None:
        path = self._path(remote_path)
        with _translated(remote_path, "folder of"):
            with open(path, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())

    def rename(self, src: str, dst: str) -> None:
        source, target = self._path(src), self._path(dst)
        try:
            os.link(source, target)  # fails if target exists: no window for a clobber
        except FileExistsError:
            raise FileExistsInDrop(_exists_message(dst, self.root)) from None
        except FileNotFoundError:
            missing = src if not source.exists() else posixpath.dirname(dst) or "/"
            raise RemotePathMissing(f"{missing} does not exist in {self.root}") from None
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK):
                raise _setup_error(e, src) from None
            _rename_without_link(source, target, dst, self.root)  # folders, or no hard links
        else:
            os.unlink(source)
        _fsync_folder(target.parent)  # the new name survives a power cut

    def exists(self, path: str) -> bool:
        return self._path(path).exists()

    def listdir(self, folder: str) -> list[RemoteFile]:
        files = []
        with _translated(folder, "folder"):
            with os.scandir(self._path(folder)) as entries:
                for entry in entries:
                    try:
                        if entry.is_file():
                            st = entry.stat()
                            files.append(RemoteFile(entry.name, st.st_size, st.st_mtime))
                    except FileNotFoundError:
                        continue  # renamed or removed while we listed
        return sorted(files, key=lambda f: f.name)

    def read_bytes(self, path: str) -> bytes:
        with _translated(path, ""):
            return self._path(path).read_bytes()

    def remove(self, path: str) -> None:
        with _translated(path, ""):
            os.unlink(self._path(path))

    def read_into(self, path: str, stream) -> int:
        """Copy `path` into the binary `stream`; returns the bytes copied."""
        with _translated(path, ""):
            with open(self._path(path), "rb") as source:
                shutil.copyfileobj(source, stream, 1 << 20)
                return source.tell()

    def makedirs(self, folder: str) -> None:
        with _translated(folder, ""):
            self._path(folder).mkdir(parents=True, exist_ok=True)

    def _path(self, path: str) -> Path:
        try:
            return self.root.joinpath(*jailed_parts(path))
        except ValueError:
            raise FixTheSetup(f"path {path!r} climbs above the drop folder {self.root}") from None


def jailed_parts(path: str) -> list[str]:
    """The components of a '/'-separated path below a root ("/" is the root itself);
    ValueError if '..' would climb above it."""
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise ValueError(path)
            parts.pop()
        else:
            parts.append(part)
    return parts


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a reader sees either the old or the new file, whole.

    Writes a temporary file in the same folder, syncs it, renames it over `path`, then syncs the
    folder so the rename itself survives a power cut.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rename_without_link(source: Path, target: Path, dst: str, root: Path) -> None:
    # Only for what os.link cannot do; the check and the rename are not one step.
    if target.exists():
        raise FileExistsInDrop(_exists_message(dst, root))
    os.rename(source, target)


def _exists_message(dst: str, root: Path) -> str:
    return (
        f"{dst} already exists in {root}; the bridge never overwrites a file in a drop. "
        "Move the existing file away once it has been dealt with."
    )


class _translated:
    """Turn the OS errors a drop operation can meet into the bridge's own."""

    def __init__(self, path: str, what: str):
        self.path, self.what = path, what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        if isinstance(exc, FileNotFoundError):
            where = f"{self.what} {self.path or '/'}".strip()
            raise RemotePathMissing(f"{where} does not exist") from None
        if isinstance(exc, OSError) and not isinstance(exc, BlockingIOError):
            raise _setup_error(exc, self.path) from None
        return False


def _setup_error(exc: OSError, path: str) -> FixTheSetup:
    return FixTheSetup(f"{path}: {exc.strerror or exc}")
