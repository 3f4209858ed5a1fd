"""The drop contract, run against both drops: SFTP (a real OpenSSH server) and a local folder."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest

from bridge.edges.folders import FolderDrop, RemoteFile, write_atomic
from bridge.edges.sftp import SftpDrop
from bridge.errors import FileExistsInDrop, FixTheSetup, NotRegularFile, RemotePathMissing, TempNameBlocked


@pytest.fixture(params=["sftp", "folder"])
def make_drop(request, tmp_path):
    """A factory of drops on one shared place, and the base path of that place in the drop."""
    opened = []
    if request.param == "sftp":
        base = str(request.getfixturevalue("sftp_root"))

        def make():
            opened.append(SftpDrop(request.getfixturevalue("sshd").endpoint, attempts=1))
            return opened[-1]
    else:
        base = "/"

        def make():
            opened.append(FolderDrop(tmp_path))
            return opened[-1]
    make.local = Path(base) if request.param == "sftp" else tmp_path  # the same place, seen locally
    yield make, base.rstrip("/")
    for drop in opened:
        drop.close()


@pytest.fixture
def drop(make_drop):
    make, base = make_drop
    return make(), base


class TestDropContract:
    def test_put_read_list_remove(self, drop):
        drop, base = drop
        drop.makedirs(f"{base}/in/sub")
        drop.makedirs(f"{base}/in/sub")  # again: no error
        drop.put_bytes(b"b" * 10, f"{base}/in/b.csv")
        drop.put_bytes(b"first version, longer", f"{base}/in/a.csv")
        drop.put_bytes(b"second", f"{base}/in/a.csv")  # overwrite is allowed for put
        listing = drop.listdir(f"{base}/in")
        assert [(f.name, f.size) for f in listing] == [("a.csv", 6), ("b.csv", 10)]
        assert all(isinstance(f, RemoteFile) and f.mtime > 1e9 for f in listing)
        assert drop.read_bytes(f"{base}/in/a.csv") == b"second"
        assert drop.exists(f"{base}/in/a.csv") and drop.exists(f"{base}/in/sub")
        drop.remove(f"{base}/in/a.csv")
        assert not drop.exists(f"{base}/in/a.csv")
        assert [f.name for f in drop.listdir(f"{base}/in")] == ["b.csv"]

    def test_empty_and_larger_files(self, drop):
        drop, base = drop
        big = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4, several SFTP packets
        drop.put_bytes(b"", f"{base}/empty")
        drop.put_bytes(big, f"{base}/big")
        assert drop.read_bytes(f"{base}/empty") == b""
        assert drop.read_bytes(f"{base}/big") == big

    def test_missing_paths(self, drop):
        drop, base = drop
        with pytest.raises(RemotePathMissing, match="nowhere"):
            drop.listdir(f"{base}/nowhere")
        with pytest.raises(RemotePathMissing, match="nowhere"):
            drop.put_bytes(b"x", f"{base}/nowhere/a.tmp")
        with pytest.raises(RemotePathMissing):
            drop.read_bytes(f"{base}/missing.csv")
        with pytest.raises(RemotePathMissing):
            drop.remove(f"{base}/missing.csv")
        with pytest.raises(RemotePathMissing):
            drop.rename(f"{base}/missing.tmp", f"{base}/missing.csv")

    def test_rename_into_place(self, drop):
        drop, base = drop
        drop.put_bytes(b"order 1", f"{base}/.o1.csv.tmp")
        drop.rename(f"{base}/.o1.csv.tmp", f"{base}/o1.csv")
        assert [f.name for f in drop.listdir(base)] == ["o1.csv"]
        assert drop.read_bytes(f"{base}/o1.csv") == b"order 1"

    def test_rename_never_overwrites(self, drop):
        drop, base = drop
        drop.put_bytes(b"the warehouse has not read me yet", f"{base}/o1.csv")
        drop.put_bytes(b"new", f"{base}/o1.csv.tmp")
        with pytest.raises(FileExistsInDrop, match="o1.csv already exists"):
            drop.rename(f"{base}/o1.csv.tmp", f"{base}/o1.csv")
        assert drop.read_bytes(f"{base}/o1.csv") == b"the warehouse has not read me yet"
        assert drop.read_bytes(f"{base}/o1.csv.tmp") == b"new"  # left for the caller
        drop.put_bytes(b"still usable", f"{base}/o2.csv.tmp")  # session survives the refusal
        drop.rename(f"{base}/o2.csv.tmp", f"{base}/o2.csv")

    def test_a_batch_is_put_and_renamed_with_each_files_own_outcome(self, drop):
        drop, base = drop
        drop.makedirs(f"{base}/in/o2.csv.part")  # a folder under one temporary name
        drop.put_bytes(b"the warehouse has not read me yet", f"{base}/in/o3.csv")
        put = drop.put_files([(b"order 1", f"{base}/in/o1.csv.part"), (b"order 2", f"{base}/in/o2.csv.part"),
                              (b"order 3", f"{base}/in/o3.csv.part")])
        assert [type(outcome) for outcome in put] == [type(None), TempNameBlocked, type(None)]
        renamed = drop.rename_files([(f"{base}/in/o1.csv.part", f"{base}/in/o1.csv"),
                                     (f"{base}/in/o3.csv.part", f"{base}/in/o3.csv")])
        assert renamed[0] is None and type(renamed[1]) is FileExistsInDrop
        assert "o3.csv already exists" in str(renamed[1])
        assert [f.name for f in drop.listdir(f"{base}/in")] == ["o1.csv", "o3.csv", "o3.csv.part"]
        assert drop.read_bytes(f"{base}/in/o1.csv") == b"order 1"
        assert drop.read_bytes(f"{base}/in/o3.csv") == b"the warehouse has not read me yet"
        assert drop.rename_files([(f"{base}/in/o3.csv.part", f"{base}/in/o4.csv")]) == [None]  # still usable

    def test_stat_files_gives_size_and_mtime_of_each_file_or_none(self, make_drop):
        make, base = make_drop
        drop = make()
        drop.makedirs(f"{base}/in/sub")
        drop.put_bytes(b"12345", f"{base}/in/a.csv")
        (make.local / "in" / "a.csv").touch()
        os.utime(make.local / "in" / "a.csv", (1_700_000_000, 1_700_000_000))
        a, missing, folder = drop.stat_files([f"{base}/in/a.csv", f"{base}/in/missing.csv", f"{base}/in/sub"])
        assert a == RemoteFile("a.csv", 5, 1_700_000_000.0)
        assert missing is None and folder is None  # a folder is not a file the bridge takes
        assert drop.stat_files([]) == []
        with open(make.local / "in" / "a.csv", "ab") as grown:
            grown.write(b"6")
        assert drop.stat_files([f"{base}/in/a.csv"])[0].size == 6

    def test_read_into_copies_a_file_into_a_stream(self, drop):
        drop, base = drop
        big = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4: several reads
        drop.put_bytes(big, f"{base}/big")
        drop.put_bytes(b"", f"{base}/empty")
        out, empty = io.BytesIO(), io.BytesIO()
        assert drop.read_into(f"{base}/big", out) == len(big) and out.getvalue() == big
        assert drop.read_into(f"{base}/empty", empty) == 0 and empty.getvalue() == b""
        with pytest.raises(RemotePathMissing):
            drop.read_into(f"{base}/missing.csv", io.BytesIO())

    def test_put_never_writes_through_a_link_planted_under_its_name(self, make_drop, tmp_path_factory):
        make, base = make_drop
        outside = tmp_path_factory.mktemp("outside") / "victim"
        outside.write_bytes(b"not yours")
        os.symlink(outside, make.local / "o1.csv.part")
        os.symlink(outside.parent / "missing", make.local / "o2.csv.part")  # dangling: no creating it
        drop = make()
        for name in ("o1.csv.part", "o2.csv.part"):
            with pytest.raises(TempNameBlocked) as caught:
                drop.put_bytes(b"order data", f"{base}/{name}")
            assert f"/{name} in " in str(caught.value)
            assert "is a symbolic link; the bridge never writes through a link" in str(caught.value)
            assert (make.local / name).is_symlink()  # left as it was, for a person to look at
        assert outside.read_bytes() == b"not yours"
        assert not (outside.parent / "missing").exists()
        drop.put_bytes(b"still usable", f"{base}/o3.csv.part")  # the session goes on

    def test_put_replaces_a_stale_regular_file_without_writing_into_it(self, make_drop, tmp_path_factory):
        make, base = make_drop
        drop = make()
        drop.put_bytes(b"a previous attempt, cut short", f"{base}/o1.csv.part")
        outside = tmp_path_factory.mktemp("outside") / "victim"
        outside.write_bytes(b"not yours")
        os.link(outside, make.local / "o2.csv.part")  # a hard link is a regular file too
        drop.put_bytes(b"order 1", f"{base}/o1.csv.part")
        drop.put_bytes(b"order 2", f"{base}/o2.csv.part")
        assert drop.read_bytes(f"{base}/o1.csv.part") == b"order 1"
        assert drop.read_bytes(f"{base}/o2.csv.part") == b"order 2"
        assert outside.read_bytes() == b"not yours"  # the name was replaced, not the file

    def test_a_stale_file_that_cannot_be_removed_blocks_only_its_own_name(self, make_drop):
        import subprocess

        make, base = make_drop
        drop = make()
        drop.put_bytes(b"a previous attempt", f"{base}/o1.csv.part")
        stale = make.local / "o1.csv.part"
        # Immutable: not even root may remove it (the tests run as root, as CI does).
        if subprocess.run(["chattr", "+i", str(stale)], capture_output=True).returncode:
            pytest.skip("chattr +i is not available on this file system")
        try:
            with pytest.raises(TempNameBlocked) as caught:
                drop.put_bytes(b"order 1", f"{base}/o1.csv.part")
            assert "o1.csv.part in " in str(caught.value)
            assert "is left from an earlier upload and cannot be removed (" in str(caught.value)
            drop.put_bytes(b"order 2", f"{base}/o2.csv.part")  # the others still go
        finally:
            subprocess.run(["chattr", "-i", str(stale)], check=True)
        assert stale.read_bytes() == b"a previous attempt"

    def test_put_leaves_a_folder_under_its_name_alone(self, drop):
        drop, base = drop
        drop.makedirs(f"{base}/o1.csv.part")
        with pytest.raises(TempNameBlocked, match="o1.csv.part in .* is a folder"):
            drop.put_bytes(b"x", f"{base}/o1.csv.part")
        assert drop.exists(f"{base}/o1.csv.part")

    def test_links_are_never_listed(self, make_drop, tmp_path_factory):
        make, base = make_drop
        drop = make()
        secret = tmp_path_factory.mktemp("outside") / "id_ed25519"
        secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
        drop.makedirs(f"{base}/in")
        drop.put_bytes(b"a", f"{base}/in/a.csv")
        os.symlink(secret, make.local / "in" / "key.csv")
        os.symlink(make.local / "in" / "a.csv", make.local / "in" / "b.csv")
        os.mkfifo(make.local / "in" / "fifo.csv")
        assert [f.name for f in drop.listdir(f"{base}/in")] == ["a.csv"]

    def test_listing_never_shows_half_written_final_name(self, make_drop):
        make, base = make_drop
        writer, reader = make(), make()
        data = b"x" * (4 << 20)
        seen: list[list[RemoteFile]] = []
        done = threading.Event()

        def deliver():
            try:
                for i in range(3):
                    writer.put_bytes(data, f"{base}/.f{i}.tmp")
                    writer.rename(f"{base}/.f{i}.tmp", f"{base}/f{i}.csv")
            finally:
                done.set()

        thread = threading.Thread(target=deliver)
        thread.start()
        while not done.is_set():
            seen.append(reader.listdir(base))
        thread.join()
        seen.append(reader.listdir(base))
        finals = [f for listing in seen for f in listing if not f.name.startswith(".")]
        assert finals, "the reader never saw a delivered file"
        assert {f.size for f in finals} == {len(data)}
        assert sum(1 for listing in seen for f in listing if f.name.startswith(".")) > 0
        assert [f.name for f in seen[-1]] == ["f0.csv", "f1.csv", "f2.csv"]


def test_folder_drop_paths_stay_under_root(tmp_path):
    drop = FolderDrop(tmp_path / "drop")
    drop.makedirs("/in")
    drop.put_bytes(b"x", "in/../in/./a.csv")
    assert (tmp_path / "drop/in/a.csv").read_bytes() == b"x"
    with pytest.raises(FixTheSetup, match="climbs above"):
        drop.read_bytes("../secret")


def test_folder_drop_renames_folders_without_clobbering(tmp_path):
    drop = FolderDrop(tmp_path)
    drop.makedirs("a")
    drop.makedirs("b")
    with pytest.raises(FileExistsInDrop):
        drop.rename("a", "b")
    drop.rename("a", "c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "c"]


def test_write_atomic_replaces_whole_and_leaves_no_temp(tmp_path):
    target = tmp_path / "state.json"
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_folder_drop_never_reads_through_a_link_and_moves_a_link_as_itself(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("SECRET-LWA-TOKEN")
    drop = FolderDrop(tmp_path / "drop")
    drop.makedirs("/processing")
    os.symlink(secret, tmp_path / "drop" / "processing" / "steal.csv")
    os.mkfifo(tmp_path / "drop" / "processing" / "fifo.csv")
    with pytest.raises(NotRegularFile, match="^steal.csv is a symbolic link: the bridge reads only regular files"):
        drop.read_into("/processing/steal.csv", open(os.devnull, "wb"))
    with pytest.raises(NotRegularFile, match="^steal.csv is a symbolic link"):
        drop.read_bytes("/processing/steal.csv")
    with pytest.raises(NotRegularFile, match="^fifo.csv is a FIFO"):  # opened without blocking
        drop.read_bytes("/processing/fifo.csv")
    drop.makedirs("/error")
    drop.rename("/processing/steal.csv", "/error/steal.csv")
    assert (tmp_path / "drop" / "error" / "steal.csv").is_symlink()
    assert os.readlink(tmp_path / "drop" / "error" / "steal.csv") == str(secret)
    assert drop.exists("/error/steal.csv") and not drop.exists("/processing/steal.csv")


def test_folder_drop_refuses_a_subfolder_that_is_a_link(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "drop").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "drop" / "results")
    with pytest.raises(FixTheSetup, match="results is a link, not a folder: the bridge uses only real folders"):
        FolderDrop(tmp_path / "drop").makedirs("/results")
