"""SFTP version 3 over an SSH channel: the requests the SFTP edge sends, framed here.

paramiko provides the SSH part (transport, login, host keys, channels) through its public API;
the SFTP requests themselves are framed by this module, as draft-ietf-secsh-filexfer-02 (the
version every server speaks) and OpenSSH's `fsync@openssh.com` describe them. That is what
lets the edge keep many requests in flight, for several files at once, and flush a file to the
server's disk before it is renamed into place: paramiko's SFTP client waits for each reply in
turn and has no public call for the fsync extension.

Only protocol here, no policy: a refused request raises `OSError` as paramiko's client does
(`errno.ENOENT` for "no such file", `errno.EACCES` for "permission denied", the server's text
otherwise, `Unsupported` for "operation unsupported"); a closed channel raises `EOFError`;
a silent server `TimeoutError`. The edge decides what each means.
"""

from __future__ import annotations

import errno
import struct
from collections import deque
from dataclasses import dataclass
from typing import IO

# Packet types (filexfer-02, section 3) and the status codes (section 7).
INIT, VERSION, OPEN, CLOSE, READ, WRITE, LSTAT, FSTAT = 1, 2, 3, 4, 5, 6, 7, 8
OPENDIR, READDIR, REMOVE, MKDIR, STAT, RENAME, EXTENDED = 11, 12, 13, 14, 17, 18, 200
STATUS, HANDLE, DATA, NAME, ATTRS = 101, 102, 103, 104, 105
OK, EOF, NO_SUCH_FILE, PERMISSION_DENIED, FAILURE, OP_UNSUPPORTED = 0, 1, 2, 3, 4, 8
# Open flags (pflags) and attribute flags.
FLAG_READ, FLAG_WRITE, FLAG_CREATE, FLAG_TRUNC, FLAG_EXCL = 0x01, 0x02, 0x08, 0x10, 0x20
ATTR_SIZE, ATTR_UIDGID, ATTR_PERMISSIONS, ATTR_ACMODTIME, ATTR_EXTENDED = 0x1, 0x2, 0x4, 0x8, 0x80000000

CHUNK = 32768  # bytes per read or write request, as OpenSSH's sftp and paramiko use
_SEND_AT = 1 << 17  # queued request bytes sent to the channel once this many are waiting


class Unsupported(OSError):
    """The server answered SSH_FX_OP_UNSUPPORTED (an OSError without errno, as paramiko's)."""


@dataclass(frozen=True)
class Attributes:
    """A file's attributes, under the names paramiko's SFTPAttributes uses."""

    st_size: int | None = None
    st_mode: int | None = None
    st_mtime: int | None = None
    filename: str = ""


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


def u64(value: int) -> bytes:
    return struct.pack(">Q", value)


def string(value: bytes | str) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else value
    return struct.pack(">I", len(data)) + data


NO_ATTRIBUTES = u32(0)


class Reader:
    """The fields of one received packet, read in order."""

    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def u32(self) -> int:
        (value,) = struct.unpack_from(">I", self.data, self.at)
        self.at += 4
        return value

    def u64(self) -> int:
        (value,) = struct.unpack_from(">Q", self.data, self.at)
        self.at += 8
        return value

    def bytes(self) -> bytes:
        size = self.u32()
        value = self.data[self.at:self.at + size]
        if len(value) != size:
            raise EOFError("an SFTP packet ends early")
        self.at += size
        return value

    def text(self) -> str:
        return self.bytes().decode("utf-8", "replace")

    def more(self) -> bool:
        return self.at < len(self.data)

    def attributes(self, filename: str = "") -> Attributes:
        flags = self.u32()
        size = self.u64() if flags & ATTR_SIZE else None
        if flags & ATTR_UIDGID:
            self.u32(), self.u32()
        mode = self.u32() if flags & ATTR_PERMISSIONS else None
        mtime = None
        if flags & ATTR_ACMODTIME:
            self.u32()
            mtime = self.u32()
        if flags & ATTR_EXTENDED:
            for _ in range(self.u32()):
                self.bytes(), self.bytes()
        return Attributes(size, mode, mtime, filename)


class Session:
    """One SFTP session on one SSH channel. Requests are queued with `send` (nothing waits);
    `reply` sends what is queued and waits for one request's answer, keeping any other
    answer that comes first. Not for use by several threads at once."""

    def __init__(self, channel, timeout: float):
        self._channel = channel
        self._received = bytearray()
        self._queued: list[bytes] = []
        self._queued_size = 0
        self._next = 1
        self._early: dict[int, tuple[int, Reader]] = {}
        channel.settimeout(timeout)
        channel.invoke_subsystem("sftp")
        self._channel.sendall(struct.pack(">IBI", 5, INIT, 3))
        kind, body = self._packet()
        if kind != VERSION:
            raise EOFError(f"the server answered SFTP's hello with packet type {kind}")
        reply = Reader(body)
        self.version = reply.u32()
        self.extensions: dict[str, bytes] = {}
        while reply.more():
            name = reply.text()
            self.extensions[name] = reply.bytes()

    def get_channel(self):
        return self._channel

    def close(self) -> None:
        self._channel.close()

    # -- framing -------------------------------------------------------------------------------

    def send(self, kind: int, *fields: bytes) -> int:
        """Queue one request; its id, to collect its answer with `reply`."""
        number = self._next
        self._next = (self._next + 1) & 0xFFFFFFFF or 1
        body = b"".join(fields)
        packet = struct.pack(">IBI", len(body) + 5, kind, number) + body
        self._queued.append(packet)
        self._queued_size += len(packet)
        if self._queued_size >= _SEND_AT:
            self.flush()
        return number

    def flush(self) -> None:
        if self._queued:
            data = b"".join(self._queued)
            self._queued.clear()
            self._queued_size = 0
            self._channel.sendall(data)

    def reply(self, number: int) -> tuple[int, Reader]:
        """The answer to request `number`: (packet type, its fields after the id)."""
        self.flush()
        while number not in self._early:
            kind, body = self._packet()
            answer = Reader(body)
            self._early[answer.u32()] = (kind, answer)
        return self._early.pop(number)

    def _packet(self) -> tuple[int, bytes]:
        while len(self._received) < 4 or len(self._received) < 4 + struct.unpack_from(">I", self._received)[0]:
            data = self._channel.recv(1 << 16)
            if not data:
                raise EOFError("the server closed the SFTP session")
            self._received += data
        (size,) = struct.unpack_from(">I", self._received)
        kind, body = self._received[4], bytes(self._received[5:4 + size])
        del self._received[:4 + size]
        return kind, body

    # -- answers ---------------------------------------------------------------------------------

    def status(self, number: int) -> None:
        """Wait for a request answered by a status: return if OK, else raise its error."""
        kind, answer = self.reply(number)
        if kind != STATUS:
            raise EOFError(f"expected a status, the server sent packet type {kind}")
        code = answer.u32()
        if code != OK:
            raise status_error(code, answer.text() if answer.more() else "")

    def handle(self, number: int) -> bytes:
        return self._expect(number, HANDLE).bytes()

    def attributes(self, number: int) -> Attributes:
        return self._expect(number, ATTRS).attributes()

    def _expect(self, number: int, wanted: int) -> Reader:
        kind, answer = self.reply(number)
        if kind == wanted:
            return answer
        if kind == STATUS:
            code = answer.u32()
            raise status_error(code, answer.text() if answer.more() else "")
        raise EOFError(f"expected packet type {wanted}, the server sent {kind}")

    def data(self, number: int) -> bytes | None:
        """The bytes a READ got, or None at the end of the file."""
        kind, answer = self.reply(number)
        if kind == DATA:
            return answer.bytes()
        if kind == STATUS:
            code = answer.u32()
            if code == EOF:
                return None
            raise status_error(code, answer.text() if answer.more() else "")
        raise EOFError(f"expected data, the server sent packet type {kind}")

    # -- requests, one at a time -------------------------------------------------------------------

    def open(self, path: str, flags: int) -> bytes:
        return self.handle(self.send(OPEN, string(path), u32(flags), NO_ATTRIBUTES))

    def close_handle(self, handle: bytes) -> None:
        self.status(self.send(CLOSE, string(handle)))

    def stat(self, path: str) -> Attributes:
        return self.attributes(self.send(STAT, string(path)))

    def lstat(self, path: str) -> Attributes:
        return self.attributes(self.send(LSTAT, string(path)))

    def rename(self, src: str, dst: str) -> None:
        """SFTP v3's rename, which never replaces an existing file (OpenSSH: link, unlink)."""
        self.status(self.send(RENAME, string(src), string(dst)))

    def posix_rename(self, src: str, dst: str) -> None:
        """OpenSSH's posix-rename@openssh.com, which replaces `dst` (the edge never uses it)."""
        self.status(self.send(EXTENDED, string("posix-rename@openssh.com"), string(src), string(dst)))

    def remove(self, path: str) -> None:
        self.status(self.send(REMOVE, string(path)))

    def mkdir(self, path: str) -> None:
        self.status(self.send(MKDIR, string(path), u32(ATTR_PERMISSIONS), u32(0o777)))

    def listdir_attr(self, path: str) -> list[Attributes]:
        """The entries of folder `path` but `.` and `..`, with their attributes."""
        handle = self.handle(self.send(OPENDIR, string(path)))
        entries: list[Attributes] = []
        try:
            while True:
                kind, answer = self.reply(self.send(READDIR, string(handle)))
                if kind == STATUS:
                    code = answer.u32()
                    if code == EOF:
                        return entries
                    raise status_error(code, answer.text() if answer.more() else "")
                if kind != NAME:
                    raise EOFError(f"expected names, the server sent packet type {kind}")
                for _ in range(answer.u32()):
                    name = answer.text()
                    answer.bytes()  # the long name, as `ls -l` would show it
                    attributes = answer.attributes(name)
                    if name not in (".", ".."):
                        entries.append(attributes)
        finally:
            self.close_handle(handle)

    def read_into(self, path: str, stream: IO[bytes], window: int = 64) -> int:
        """Copy file `path` into `stream`, `window` reads in flight; returns the bytes copied.
        Reads on to the end of the file, however large it was when opened."""
        handle = self.open(path, FLAG_READ)
        copied = 0
        try:
            pending: deque[tuple[int, int]] = deque()  # (offset, request)
            offset, ended = 0, False
            while not ended or pending:
                while not ended and len(pending) < window:
                    pending.append((offset, self.send(READ, string(handle), u64(offset), u32(CHUNK))))
                    offset += CHUNK
                at, number = pending.popleft()
                data = self.data(number)
                if ended:
                    continue  # beyond an end already met: only collected
                if data is None:
                    ended = True
                    continue
                stream.write(data)
                copied = at + len(data)
                if len(data) < CHUNK:  # a short read: go on from where it stopped
                    for _, rest in pending:
                        self.reply(rest)
                    pending.clear()
                    offset = copied
        finally:
            self.close_handle(handle)
        return copied


def status_error(code: int, text: str) -> OSError:
    """The error a refusal raises, as paramiko's client raises it."""
    if code == NO_SUCH_FILE:
        return OSError(errno.ENOENT, text or "No such file")
    if code == PERMISSION_DENIED:
        return OSError(errno.EACCES, text or "Permission denied")
    if code == OP_UNSUPPORTED:
        return Unsupported(text or "Operation unsupported")
    return OSError(text or f"the server refused with status {code}")
