"""Deliver 1,000 files of ~1 KB to a private OpenSSH server, put-to-temp then rename each:
through the bridge's SftpDrop, and through OpenSSH's own `sftp -b` with the same key.

    .venv/bin/python bench/sftp_delivery.py [--files 1000] [--size 1024]

Every timing includes connecting and logging in. The bridge fsyncs each file before renaming
it; OpenSSH's `put` does not, `put -f` does, so `openssh-f` is the like-for-like comparison.
Target: the bridge no slower than OpenSSH.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from sshd import OpenSshd  # noqa: E402

from bridge.edges.sftp import SftpDrop, SftpEndpoint  # noqa: E402


def payloads(count: int, size: int) -> list[tuple[str, bytes]]:
    line = b"order-id,sku,qty,name,street,city,zip,country\n"
    return [(f"order-{i:05}.csv", (line * (size // len(line) + 1))[:size]) for i in range(count)]


def with_bridge(server: OpenSshd, folder: Path, files: list[tuple[str, bytes]],
                fsync: bool = True) -> float:
    endpoint = SftpEndpoint("127.0.0.1", server.port, server.user, server.known_hosts,
                            private_key=server.client_key, fsync=fsync)
    start = time.perf_counter()
    with SftpDrop(endpoint) as drop:
        for name, data in files:
            drop.put_bytes(data, f"{folder}/.{name}.tmp")
            drop.rename(f"{folder}/.{name}.tmp", f"{folder}/{name}")
    return time.perf_counter() - start


def with_openssh(server: OpenSshd, folder: Path, files: list[tuple[str, bytes]],
                 put: str = "put") -> float:
    local = Path(tempfile.mkdtemp(prefix="bench-local-"))
    batch = local / "batch"
    with open(batch, "w") as f:
        for name, data in files:
            (local / name).write_bytes(data)
            f.write(f'{put} "{local / name}" "{folder}/.{name}.tmp"\n')
            f.write(f'rename "{folder}/.{name}.tmp" "{folder}/{name}"\n')
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
            "bridge": with_bridge,  # fsyncs every file (fsync@openssh.com), the default
            "bridge-nf": partial(with_bridge, fsync=False),  # a warehouse with fsync = false
            "openssh": with_openssh,  # plain put: no fsync
            "openssh-f": partial(with_openssh, put="put -f"),  # put -f: fsync, like the bridge
        }
        times: dict[str, list[float]] = {client: [] for client in clients}
        for _ in range(args.rounds):  # alternate, so both see the same machine load
            for client, deliver in clients.items():
                folder = Path(tempfile.mkdtemp(dir=server.dir))
                times[client].append(deliver(server, folder, files))
                check_delivered(folder, files)
        best = {client: args.files / min(spent) for client, spent in times.items()}
        for client, spent in times.items():
            print(f"{client:9} {best[client]:8.0f} files/s  "
                  f"(best of {args.rounds}: {min(spent):.2f} s for {args.files} files)")
    print(f"ratio bridge/openssh-f = {best['bridge'] / best['openssh-f']:.2f}  (both fsync)")
    print(f"ratio bridge/openssh   = {best['bridge'] / best['openssh']:.2f}  (openssh without fsync)")
    print(f"ratio bridge-nf/openssh = {best['bridge-nf'] / best['openssh']:.2f}  (neither fsyncs)")


if __name__ == "__main__":
    main()
