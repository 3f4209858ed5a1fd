"""Local folders: the staff drop folder, the spool, and the drop contract both drops honour.

A *drop* is a place where files are handed over: a warehouse's SFTP server (`edges.sftp.SftpDrop`)
or a local folder (`FolderDrop`). Both implement `Drop`; `tests/test_drops.py` runs one contract
test class against both.
"""

from __future__ import annotations

import errno
import io
import os
import posixpath
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

from bridge.errors import BridgeError, FileExistsInDrop, FixTheSetup, NotRegularFile, RemotePathMissing, TempNameBlocked


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

    # Optional: put_stream(stream, remote_path), put_bytes of a binary stream's content without
    # holding it (FolderDrop has it; a drop without it gets the bytes).

    def put_bytes(self, data: bytes, remote_path: str) -> None:
        """Write exactly `data` to a new file `remote_path`, synced to disk.

        The file is created exclusively, so a link planted under that name is never followed.
        A regular file of that name (a previous attempt's) is removed first; a link, a folder
        or anything else raises `TempNameBlocked` and is left as it is.
        """

    def rename(self, src: str, dst: str) -> None:
        """Move `src` to `dst` atomically; raise `FileExistsInDrop` if `dst` exists (untouched)."""

    def put_files(self, files: Sequence[tuple[bytes, str]]) -> list[BridgeError | None]:
        """`put_bytes` for several (data, remote path) at once, their requests in flight
        together where the drop allows. Each file's outcome, in order: None when it is written
        and synced, else the error that holds that file (`TempNameBlocked`, or the server or
        folder refusing it). A lost connection raises, as `put_bytes` does: putting again is safe."""

    def rename_files(self, pairs: Sequence[tuple[str, str]]) -> list[BridgeError | None]:
        """`rename` for several (src, dst) at once: each one's outcome, in order (None: renamed;
        `FileExistsInDrop`: `dst` exists and is left alone; ...). A lost connection raises
        `SftpUnavailable`: which renames were done is then unknown, and must be looked at."""

    def exists(self, path: str) -> bool: ...

    def stat_files(self, paths: Sequence[str]) -> list[RemoteFile | None]:
        """The size and modification time of each path, in order (its name as `RemoteFile.name`),
        asked together where the drop allows; None where it is missing or not a regular file."""

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
    ".." is refused (`FixTheSetup`).

    Anyone who may write into a staff folder could plant a symbolic link in it: files are
    listed, read and moved without following links (a link is not listed; read, it raises
    NotRegularFile; moved, the link itself moves), and the folders the bridge uses inside `root`
    must be real folders, not links. `skipped` names what the last listing left out for not
    being a regular file (links, FIFOs, devices), so the caller can say so.
    """

    def __init__(self, root: Path, *, folder_mode: int | None = None, file_mode: int | None = None):
        """`folder_mode`, `file_mode`: the permissions of the folders and files this drop makes,
        set whatever the umask (a staff folder: shared with a group); None: as the umask says."""
        self.root = Path(root)
        self.skipped: list[str] = []
        self.folder_mode, self.file_mode = folder_mode, file_mode

    def __enter__(self) -> FolderDrop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        pass

    def put_bytes(self, data: bytes, remote_path: str) -> None:
        self.put_stream(io.BytesIO(data), remote_path)

    def put_stream(self, stream, remote_path: str) -> None:
        """`put_bytes` of what `stream` holds from where it stands, copied without holding it."""
        path = self._path(remote_path)
        with _translated(remote_path, "folder of"):
            try:
                fd = os.open(path, _NEW_FILE, 0o666)
            except FileExistsError:
                mode = os.lstat(path).st_mode
                if not stat.S_ISREG(mode):
                    raise TempNameBlocked(blocked_message(remote_path, mode, str(self.root))) from None
                try:
                    os.unlink(path)  # a regular file: a previous attempt's; never written into
                except OSError as refused:
                    raise TempNameBlocked(unremovable_message(remote_path, str(self.root), refused.strerror)) from None
                fd = os.open(path, _NEW_FILE, 0o666)
            with os.fdopen(fd, "wb") as f:
                if self.file_mode is not None:
                    os.fchmod(f.fileno(), self.file_mode)
                shutil.copyfileobj(stream, f, 1 << 20)
                f.flush()
                os.fsync(f.fileno())

    def rename(self, src: str, dst: str) -> None:
        source, target = self._path(src), self._path(dst)
        try:
            os.link(source, target, follow_symlinks=False)  # fails if target exists: no clobber; a link moves as itself
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
        fsync_folder(target.parent)  # the new name survives a power cut

    def put_files(self, files: Sequence[tuple[bytes, str]]) -> list[BridgeError | None]:
        return each_file(self.put_bytes, files)

    def rename_files(self, pairs: Sequence[tuple[str, str]]) -> list[BridgeError | None]:
        return each_file(self.rename, pairs)

    def exists(self, path: str) -> bool:
        return os.path.lexists(self._path(path))  # a link counts, wherever it points

    def stat_files(self, paths: Sequence[str]) -> list[RemoteFile | None]:
        found: list[RemoteFile | None] = []
        for path in paths:
            with _translated(path, ""):
                try:
                    st = os.lstat(self._path(path))
                except FileNotFoundError:
                    st = None
            regular = st is not None and stat.S_ISREG(st.st_mode)
            found.append(RemoteFile(posixpath.basename(path), st.st_size, st.st_mtime) if regular else None)
        return found

    def listdir(self, folder: str) -> list[RemoteFile]:
        files, skipped = [], []
        with _translated(folder, "folder"):
            with os.scandir(self._path(folder)) as entries:
                for entry in entries:
                    try:
                        if entry.is_file(follow_symlinks=False):
                            st = entry.stat(follow_symlinks=False)
                            files.append(RemoteFile(entry.name, st.st_size, st.st_mtime))
                        elif not entry.is_dir(follow_symlinks=False):
                            skipped.append(entry.name)
                    except FileNotFoundError:
                        continue  # renamed or removed while we listed
        self.skipped = sorted(skipped)
        return sorted(files, key=lambda f: f.name)

    def read_bytes(self, path: str) -> bytes:
        with _translated(path, ""):
            with self._open_regular(path) as source:
                return source.read()

    def remove(self, path: str) -> None:
        with _translated(path, ""):
            os.unlink(self._path(path))

    def read_into(self, path: str, stream) -> int:
        """Copy `path` into the binary `stream`; returns the bytes copied. Only a regular file is
        read: a link or anything else raises NotRegularFile (nothing is followed or opened
        beyond it: a FIFO would block, a device never end)."""
        with _translated(path, ""):
            with self._open_regular(path) as source:
                shutil.copyfileobj(source, stream, 1 << 20)
                return source.tell()

    def makedirs(self, folder: str) -> None:
        with _translated(folder, ""):
            path = self._path(folder)
            path.mkdir(parents=True, exist_ok=True)
            for part in [path, *path.parents]:
                if part == self.root or self.root not in part.parents:
                    break
                info = os.lstat(part)
                if not stat.S_ISDIR(info.st_mode):
                    raise FixTheSetup(f"{part} is a link, not a folder: the bridge uses only real folders in "
                                      f"{self.root} (a link could send files anywhere); replace it with a folder")
                self._set_mode(part, info)

    def set_root_mode(self) -> None:
        """Give the drop folder itself `folder_mode`, if the bridge owns it (it made it)."""
        with _translated("/", "folder"):
            self._set_mode(self.root, os.stat(self.root))

    def _set_mode(self, folder: Path, info: os.stat_result) -> None:
        if self.folder_mode is not None and stat.S_IMODE(info.st_mode) != self.folder_mode \
                and info.st_uid == os.geteuid():
            os.chmod(folder, self.folder_mode)

    def _open_regular(self, path: str):
        target = self._path(path)
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as refused:
            if refused.errno == errno.ELOOP:
                raise NotRegularFile(not_regular_message(path, stat.S_IFLNK)) from None
            raise
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise NotRegularFile(not_regular_message(path, mode))
        return os.fdopen(fd, "rb")

    def _path(self, path: str) -> Path:
        try:
            return self.root.joinpath(*jailed_parts(path))
        except ValueError:
            raise FixTheSetup(f"path {path!r} climbs above the drop folder {self.root}") from None


def each_file(operation: Callable[..., None], items: Sequence[tuple]) -> list[BridgeError | None]:
    """`operation(*item)` for each item, one at a time: None, or the setup error that holds
    that item (a missing folder, a name taken, a refusal). Other errors raise."""
    outcomes: list[BridgeError | None] = []
    for item in items:
        try:
            operation(*item)
            outcomes.append(None)
        except FixTheSetup as problem:
            outcomes.append(problem)
    return outcomes


# A new file only: never an existing one, never through a link (O_EXCL alone refuses a link;
# O_NOFOLLOW says so twice).
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW


def blocked_message(path: str, mode: int, where: str) -> str:
    """Why a file cannot be uploaded under its temporary name `path` (which is `mode`)."""
    what = ("a symbolic link" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode)
            else "not a regular file")
    return (f"{path} in {where} is {what}; the bridge never writes through a link or replaces "
            f"anything but a regular file it left. Find out who put it there, remove it, and "
            f"the file goes on the next run (the drop's other files still go)")


def not_regular_message(path: str, mode: int) -> str:
    """Why a name in a drop is never read."""
    what = ("a symbolic link" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode)
            else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file")
    name = posixpath.basename(path.rstrip("/")) or path
    return (f"{name} is {what}: the bridge reads only regular files (a link could make it read any "
            "file it can); copy the file itself into the folder")


def unremovable_message(path: str, where: str, why: str | None) -> str:
    """Why a stale temporary file (a regular file) cannot be replaced."""
    return (f"{path} in {where} is left from an earlier upload and cannot be removed "
            f"({why or 'refused'}); remove it, and the file goes on the next run (the drop's "
            f"other files still go)")


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


def write_atomic(path: Path, data: bytes, *, sync_folder: bool = True) -> None:
    """Replace `path` with `data` so that a reader sees either the old or the new file, whole.

    Writes a temporary file in the same folder, syncs it, renames it over `path`, then syncs the
    folder so the rename itself survives a power cut (`sync_folder=False`: the caller syncs the
    folder once after several files, with `fsync_folder`).
    """
    import tempfile

    path = Path(path)
    # The temporary name stays within NAME_MAX (255) whatever the length of `path`'s name.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:200]}.", suffix=".tmp")
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
    if sync_folder:
        fsync_folder(path.parent)


def write_files(files: Sequence[tuple[Path, bytes]], *, writers: int = 16) -> list[OSError | None]:
    """`write_atomic` for several files at once, then each folder synced once: each file's
    outcome, in order (None: written and synced, else the OSError that file met).

    The writes run in `writers` threads: a file system's journal then commits many files'
    syncs together, where one file after another would wait for a commit each (on the
    development machine 0.35 ms a file with 16 writers against 3.7 ms one by one)."""
    def write(item: tuple[Path, bytes]) -> OSError | None:
        try:
            write_atomic(item[0], item[1], sync_folder=False)
        except OSError as problem:
            return problem
        return None

    if len(files) == 1:
        outcomes = [write(files[0])]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(writers, len(files)), thread_name_prefix="spool") as pool:
            outcomes = list(pool.map(write, files))
    for folder in {path.parent for (path, _), outcome in zip(files, outcomes) if outcome is None}:
        fsync_folder(folder)
    return outcomes


PRIVATE_FOLDER, PRIVATE_FILE = 0o700, 0o600  # buyer data: the owner only, whatever the umask


def make_private_dir(folder: Path) -> None:
    """Create `folder` (and missing parents) if needed, and make it 0700 if it is ours."""
    folder = Path(folder)
    folder.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
    info = folder.stat()
    if info.st_mode & 0o777 != PRIVATE_FOLDER and info.st_uid == os.geteuid():
        os.chmod(folder, PRIVATE_FOLDER)


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` as a file only its owner can read (0600, whatever the umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), PRIVATE_FILE)
        f.write(data)


def fsync_folder(folder: Path) -> None:
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
