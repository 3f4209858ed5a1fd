"""Deliver 1,000 files of ~1 KB to a private OpenSSH server, put-to-temp then rename each:
through the bridge's SftpDrop (file by file, and in batches), through the paramiko internals
the edge used before, and through OpenSSH's own `sftp -b` with the same key.

    .venv/bin/python bench/sftp_delivery.py [--files 1000] [--size 1024] [--rounds 3]

Every timing includes connecting and logging in. The bridge fsyncs each file before renaming
it (fsync@openssh.com); OpenSSH's `put` does not, `put -f` does, so `openssh-f` is the
like-for-like comparison. The shipped mappings' files are 0.4 to 7 KB (samples/).

- `bridge`       SftpDrop.put_bytes + rename, one file after the other (the edge as it is:
                 paramiko's public API for SSH, SFTP requests framed by edges/sftp_wire.py)
- `bridge-batch` SftpDrop.put_files + rename_files, 100 files a batch, as the orders flow does
- `internals`    one file after the other, each file's writes, fsync, fstat and close sent in
                 one burst through paramiko's private SFTPClient internals (_request,
                 _read_response, _expecting, _write_all): the edge before issue 6, kept here
                 only to measure whether dropping it cost anything
- `openssh-f`    `sftp -b` with `put -f` + `rename`;  `openssh`: plain `put` + `rename`
Targets: the bridge no slower than OpenSSH; the internals kept only if they win by over 10%.
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import paramiko  # noqa: E402
from paramiko.message import Message  # noqa: E402
from paramiko.sftp import CMD_CLOSE, CMD_EXTENDED, CMD_FSTAT, CMD_OPEN, CMD_WRITE, int64  # noqa: E402
from paramiko.sftp import SFTP_FLAG_CREATE, SFTP_FLAG_EXCL, SFTP_FLAG_WRITE  # noqa: E402
from sshd import OpenSshd  # noqa: E402

from bridge.edges.sftp import SftpDrop, SftpEndpoint  # noqa: E402

BATCH = 100


def payloads(count: int, size: int) -> list[tuple[str, bytes]]:
    line = b"order-id,sku,qty,name,street,city,zip,country\n"
    return [(f"order-{i:05}.csv", (line * (size // len(line) + 1))[:size]) for i in range(count)]


def endpoint_of(server: OpenSshd, fsync: bool = True) -> SftpEndpoint:
    return SftpEndpoint("127.0.0.1", server.port, server.user, server.known_hosts,
                        private_key=server.client_key, fsync=fsync)


def with_bridge(server: OpenSshd, folder: Path, files: list[tuple[str, bytes]], fsync: bool = True) -> float:
    start = time.perf_counter()
    with SftpDrop(endpoint_of(server, fsync)) as drop:
        for name, data in files:
            drop.put_bytes(data, f"{folder}/{name}.part")
            drop.rename(f"{folder}/{name}.part", f"{folder}/{name}")
    return time.perf_counter() - start


def with_bridge_batches(server: OpenSshd, folder: Path, files: list[tuple[str, bytes]]) -> float:
    start = time.perf_counter()
    with SftpDrop(endpoint_of(server)) as drop:
        for at in range(0, len(files), BATCH):
            batch = files[at:at + BATCH]
            assert drop.put_files([(data, f"{folder}/{name}.part") for name, data in batch]) == [None] * len(batch)
            pairs = [(f"{folder}/{name}.part", f"{folder}/{name}") for name, _ in batch]
            assert drop.rename_files(pairs) == [None] * len(batch)
    return time.perf_counter() - start


def with_internals(server: OpenSshd, folder: Path, files: list[tuple[str, bytes]]) -> float:
    """The edge before issue 6: paramiko's SFTPClient, each file's requests in one burst."""
    start = time.perf_counter()
    client = paramiko.SSHClient()
    client.load_host_keys(str(server.known_hosts))
    client.connect("127.0.0.1", port=server.port, username=server.user, key_filename=str(server.client_key),
                   allow_agent=False, look_for_keys=False)
    sftp = client.open_sftp()
    for name, data in files:
        flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_EXCL
        handle = sftp._request(CMD_OPEN, f"{folder}/{name}.part", flags, paramiko.SFTPAttributes())[1].get_binary()
        requests = [(CMD_WRITE, handle, int64(at), data[at:at + 32768]) for at in range(0, len(data), 32768)]
        requests += [(CMD_EXTENDED, "fsync@openssh.com", handle), (CMD_FSTAT, handle), (CMD_CLOSE, handle)]
        for number in _send_together(sftp, requests):
            sftp._read_response(number)
        sftp.rename(f"{folder}/{name}.part", f"{folder}/{name}")
    client.close()
    return time.perf_counter() - start


def _send_together(sftp: paramiko.SFTPClient, requests: list[tuple]) -> list[int]:
    frames, numbers = [], []
    with sftp._lock:
        for kind, *args in requests:
            msg = Message()
            msg.add_int(sftp.request_number)
            for item in args:
                msg.add_int64(item) if isinstance(item, int64) else msg.add_string(item)
            body = msg.asbytes()
            frames.append(struct.pack(">IB", len(body) + 1, kind) + body)
            numbers.append(sftp.request_number)
            sftp._expecting[sftp.request_number] = type(None)
            sftp.request_number += 1
    sftp._write_all(b"".join(frames))
    return numbers


def with_openssh(server: OpenSshd, folder: Path, files: list[tuple[str, bytes]], put: str = "put") -> float:
    local = Path(tempfile.mkdtemp(prefix="bench-local-"))
    batch = local / "batch"
    with open(batch, "w") as f:
        for name, data in files:
            (local / name).write_bytes(data)
            f.write(f'{put} "{local / name}" "{folder}/{name}.part"\n')
            f.write(f'rename "{folder}/{name}.part" "{folder}/{name}"\n')
    command = [
        "sftp", "-q", "-b", str(batch), "-P", str(server.port), "-i", str(server.client_key),
        "-o", f"UserKnownHostsFile={server.known_hosts}", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-F", "/dev/null",
        f"{server.user}@127.0.0.1",
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def check_delivered(folder: Path, files: list[tuple[str, bytes]]) -> None:
    names = sorted(os.listdir(folder))
    assert names == sorted(name for name, _ in files), f"{folder}: {len(names)} files"
    assert all((folder / name).read_bytes() == data for name, data in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3, help="best of N for each client")
    args = parser.parse_args()
    files = payloads(args.files, args.size)
    with OpenSshd() as server:
        clients = {
            "bridge": with_bridge,
            "bridge-batch": with_bridge_batches,
            "bridge-nf": partial(with_bridge, fsync=False),  # a warehouse with fsync = false
            "internals": with_internals,
            "openssh": with_openssh,
            "openssh-f": partial(with_openssh, put="put -f"),
        }
        times: dict[str, list[float]] = {client: [] for client in clients}
        for _ in range(args.rounds):  # alternate, so all see the same machine load
            for client, deliver in clients.items():
                folder = Path(tempfile.mkdtemp(dir=server.dir))
                times[client].append(deliver(server, folder, files))
                check_delivered(folder, files)
        best = {client: args.files / min(spent) for client, spent in times.items()}
        for client, spent in times.items():
            print(f"{client:12} {best[client]:8.0f} files/s  "
                  f"(best of {args.rounds}: {min(spent):.2f} s for {args.files} files of {args.size} bytes)")
    print(f"ratio bridge/openssh-f       = {best['bridge'] / best['openssh-f']:.2f}  (both fsync, file by file)")
    print(f"ratio bridge-batch/openssh-f = {best['bridge-batch'] / best['openssh-f']:.2f}  (both fsync)")
    print(f"ratio bridge-nf/openssh      = {best['bridge-nf'] / best['openssh']:.2f}  (neither fsyncs)")
    print(f"ratio internals/bridge       = {best['internals'] / best['bridge']:.2f}  (keep the internals only above 1.10)")


if __name__ == "__main__":
    main()
