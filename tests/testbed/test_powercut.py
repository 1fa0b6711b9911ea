"""The power-cut file system keeps what was synced and forgets the rest, as a power cut does.

These run against a real FUSE mount. Where this machine cannot mount one (no /dev/fuse,
no permission) they skip, unless ``EDGEGW_REQUIRE_FUSE=1`` (CI), which makes that a failure.
The model tests at the end need no FUSE.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.testbed import FuseUnavailableError, PowerCutFS, powercut
from simulators.testbed._powercut_model import PowerCutModel


@pytest.fixture
def fs(powercut_fs: PowerCutFS) -> PowerCutFS:
    return powercut_fs


def _write(path: Path, data: bytes, *, sync: bool) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _power_cycle(fs: PowerCutFS) -> None:
    fs.cut()
    fs.restore()


# ---------------------------------------------------------------- file content
def test_a_synced_file_survives_a_cut(fs: PowerCutFS) -> None:
    path = fs.mountpoint / "kept"
    _write(path, b"acknowledged", sync=True)
    _sync_dir(fs.mountpoint)

    _power_cycle(fs)

    assert path.read_bytes() == b"acknowledged"
    assert (fs.backing_dir / "kept").read_bytes() == b"acknowledged"  # the host holds the durable state


def test_an_unsynced_write_is_lost(fs: PowerCutFS) -> None:
    path = fs.mountpoint / "f"
    _write(path, b"old", sync=True)
    _sync_dir(fs.mountpoint)
    _write(path, b"new and longer", sync=False)
    assert path.read_bytes() == b"new and longer"  # reads see the unsynced write before the cut

    stats = fs.cut()
    fs.restore()

    assert path.read_bytes() == b"old"
    assert stats.bytes_dropped == len(b"new and longer")
    assert stats.files_affected == ("/f",)


def test_a_partial_sync_keeps_what_came_before_it(fs: PowerCutFS) -> None:
    path = fs.mountpoint / "log"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"A" * 5000)
    os.fsync(fd)
    _sync_dir(fs.mountpoint)
    os.write(fd, b"B" * 5000)
    os.pwrite(fd, b"a", 0)  # an overwrite of synced data is unsynced too
    os.close(fd)

    _power_cycle(fs)

    assert path.read_bytes() == b"A" * 5000


def test_truncates_are_lost_too(fs: PowerCutFS) -> None:
    a, b = fs.mountpoint / "ftruncated", fs.mountpoint / "o_trunc"
    _write(a, b"x" * 10_000, sync=True)
    _write(b, b"hello", sync=True)
    _sync_dir(fs.mountpoint)
    fd = os.open(a, os.O_RDWR)
    os.ftruncate(fd, 100)
    os.ftruncate(fd, 8192)  # grows back with zeros, not with the old bytes
    assert os.pread(fd, 10, 4000) == bytes(10)
    os.close(fd)
    _write(b, b"W", sync=False)  # O_TRUNC
    assert b.read_bytes() == b"W"

    _power_cycle(fs)

    assert a.read_bytes() == b"x" * 10_000
    assert b.read_bytes() == b"hello"


def test_a_synced_truncate_is_kept(fs: PowerCutFS) -> None:
    path = fs.mountpoint / "f"
    _write(path, b"x" * 10_000, sync=True)
    _sync_dir(fs.mountpoint)
    fd = os.open(path, os.O_RDWR)
    os.ftruncate(fd, 10)
    os.pwrite(fd, b"y", 20)
    os.fsync(fd)
    os.close(fd)

    _power_cycle(fs)

    assert path.read_bytes() == b"x" * 10 + bytes(10) + b"y"


# ---------------------------------------------------------------- directory entries
def test_a_create_without_a_directory_fsync_disappears(fs: PowerCutFS) -> None:
    path = fs.mountpoint / "new"
    _write(path, b"content synced, name not", sync=True)

    stats = fs.cut()
    fs.restore()

    assert not path.exists()
    assert os.listdir(fs.mountpoint) == []
    assert stats.entries_undone == 1
    assert sorted(os.listdir(fs.backing_dir)) == [".powercut"]
    assert os.listdir(fs.backing_dir / ".powercut") == []


def test_a_rename_without_a_directory_fsync_is_undone(fs: PowerCutFS) -> None:
    tmp, final = fs.mountpoint / "state.json.tmp", fs.mountpoint / "state.json"
    _write(final, b"old state", sync=True)
    _write(tmp, b"new state", sync=True)
    _sync_dir(fs.mountpoint)
    os.rename(tmp, final)
    assert final.read_bytes() == b"new state"

    _power_cycle(fs)

    assert final.read_bytes() == b"old state"
    assert tmp.read_bytes() == b"new state"  # synced content follows the file, not the name


def test_a_rename_made_durable_by_a_directory_fsync_is_kept(fs: PowerCutFS) -> None:
    tmp, final = fs.mountpoint / "state.json.tmp", fs.mountpoint / "state.json"
    _write(final, b"old state", sync=True)
    _sync_dir(fs.mountpoint)
    # write-temp, fsync, rename, fsync of the directory: the recipe for an atomic replace
    _write(tmp, b"new state", sync=True)
    os.rename(tmp, final)
    _sync_dir(fs.mountpoint)

    _power_cycle(fs)

    assert final.read_bytes() == b"new state"
    assert not tmp.exists()


def test_a_rename_of_unsynced_content_keeps_the_name_but_not_the_bytes(fs: PowerCutFS) -> None:
    tmp, final = fs.mountpoint / "tmp", fs.mountpoint / "final"
    _write(tmp, b"never fsynced", sync=False)  # the classic bug: rename without fsync of the file
    os.rename(tmp, final)
    _sync_dir(fs.mountpoint)

    _power_cycle(fs)

    assert final.read_bytes() == b""
    assert not tmp.exists()


def test_an_unlink_without_a_directory_fsync_comes_back(fs: PowerCutFS) -> None:
    path = fs.mountpoint / "f"
    _write(path, b"data", sync=True)
    _sync_dir(fs.mountpoint)
    os.unlink(path)

    _power_cycle(fs)

    assert path.read_bytes() == b"data"


def test_a_subdirectory_keeps_its_own_entries(fs: PowerCutFS) -> None:
    sub = fs.mountpoint / "state"
    sub.mkdir()  # directories themselves are durable at once
    _write(sub / "a", b"a", sync=True)
    _sync_dir(sub)
    _write(sub / "b", b"b", sync=True)
    _sync_dir(fs.mountpoint)  # the parent's fsync does not cover the subdirectory's entries

    _power_cycle(fs)

    assert sorted(os.listdir(sub)) == ["a"]


# ---------------------------------------------------------------- descriptors and power
def test_descriptors_opened_before_a_cut_fail_with_eio(fs: PowerCutFS) -> None:
    path = fs.mountpoint / "f"
    _write(path, b"data", sync=True)
    _sync_dir(fs.mountpoint)
    fd = os.open(path, os.O_RDWR)
    dirfd = os.open(fs.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        stats = fs.cut()
        assert stats.descriptors_failed == 2
        assert not stats.powered
        for call in (
            lambda: os.pread(fd, 4, 0),
            lambda: os.pwrite(fd, b"x", 0),
            lambda: os.fsync(fd),
            lambda: os.fsync(dirfd),
            lambda: os.open(path, os.O_RDONLY),  # power is off: new opens fail too
        ):
            with pytest.raises(OSError, match="Input/output error"):
                call()

        fs.restore()

        with pytest.raises(OSError, match="Input/output error"):
            os.pread(fd, 4, 0)
        assert path.read_bytes() == b"data"  # new opens work
    finally:
        for d in (fd, dirfd):
            with contextlib.suppress(OSError):  # close() reports the cut too
                os.close(d)


def test_shared_mmap_works_and_msync_is_a_sync(fs: PowerCutFS) -> None:
    synced, unsynced = fs.mountpoint / "synced", fs.mountpoint / "unsynced"
    for path in (synced, unsynced):
        _write(path, bytes(8192), sync=True)
    _sync_dir(fs.mountpoint)
    for path, flush in ((synced, True), (unsynced, False)):
        with path.open("r+b") as f, mmap.mmap(f.fileno(), 8192) as m:
            m[4096:4101] = b"hello"
            if flush:
                m.flush()  # msync(MS_SYNC): the kernel writes the pages back, then fsyncs
        assert path.read_bytes()[4096:4101] == b"hello"

    _power_cycle(fs)

    assert synced.read_bytes()[4096:4101] == b"hello"
    assert unsynced.read_bytes() == bytes(8192)


def test_posix_locks_work_across_processes(fs: PowerCutFS) -> None:
    path = fs.mountpoint / "lock"
    _write(path, b"", sync=False)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys; f = open(sys.argv[1], 'r+b'); fcntl.lockf(f, fcntl.LOCK_EX); "
            "print('locked', flush=True); sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with path.open("r+b") as f:
            with pytest.raises(OSError, match=r"Resource temporarily unavailable|Permission denied"):
                fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            holder.communicate("", timeout=30)
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once the holder is gone
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


# ---------------------------------------------------------------- SQLite
_WRITER = textwrap.dedent(
    """
    import sqlite3, sys
    con = sqlite3.connect(sys.argv[1], isolation_level=None)
    con.execute("PRAGMA synchronous=" + sys.argv[2])
    i = 0
    while True:
        i += 1
        con.execute("BEGIN")
        con.executemany("INSERT INTO readings(id, payload) VALUES (?, ?)",
                        [(i * 10 + k, b"x" * 200) for k in range(10)])
        con.execute("COMMIT")
        print(i, flush=True)          # acknowledged: the commit returned
    """
)


def _sqlite_run_and_cut(
    fs: PowerCutFS, synchronous: str, *, commits: int, kill_first: bool = False
) -> tuple[int, int]:
    """Commit transactions of 10 rows in a child process, cut the power after ``commits``, SIGKILL it.

    Returns (transactions acknowledged before the cut, transactions found after it).
    """
    db = fs.mountpoint / "spool.db"
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("CREATE TABLE readings(id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
    con.close()
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(db), synchronous],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert writer.stdout is not None
    acked = 0
    try:
        while acked < commits:
            acked = int(writer.stdout.readline())
        if kill_first:
            writer.send_signal(signal.SIGKILL)
            writer.wait()
        fs.cut()
    finally:
        writer.kill()
        writer.wait()
    # Every line printed was a COMMIT that returned before the cut: after it, commits fail.
    acked = max([acked, *(int(line) for line in writer.stdout.read().split())])
    writer.stdout.close()
    fs.restore()

    con = sqlite3.connect(db, isolation_level=None)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        ids = [row[0] for row in con.execute("SELECT id FROM readings ORDER BY id")]
    finally:
        con.close()
    found = len(ids) // 10
    # Never torn: whole transactions, in order, with no gap.
    assert ids == [i * 10 + k for i in range(1, found + 1) for k in range(10)]
    return acked, found


@pytest.mark.parametrize("kill_first", [False, True], ids=["cut-then-kill", "kill-then-cut"])
def test_sqlite_wal_full_keeps_every_committed_transaction(fs: PowerCutFS, *, kill_first: bool) -> None:
    acked, found = _sqlite_run_and_cut(fs, "FULL", commits=1500, kill_first=kill_first)
    assert found >= acked


def test_sqlite_wal_normal_may_lose_the_last_transactions_but_is_never_corrupt(fs: PowerCutFS) -> None:
    # 1,500 commits of ~2 KiB pass several automatic checkpoints (every 1,000 WAL pages).
    acked, found = _sqlite_run_and_cut(fs, "NORMAL", commits=1500)
    # NORMAL syncs the WAL only at checkpoints: what was committed before the last one is
    # kept, what was committed since is gone.
    assert 0 < found < acked
    print(f"synchronous=NORMAL: {acked - found} of {acked} acknowledged transactions lost")


def test_mount_says_why_fuse_cannot_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(powercut, "fuse_problem", lambda: "no /dev/fuse: this kernel offers no FUSE")
    with pytest.raises(FuseUnavailableError, match="no /dev/fuse"):
        PowerCutFS(tmp_path / "backing", tmp_path / "mnt").mount()


# ---------------------------------------------------------------- the model, without FUSE
_Op = tuple[str, int, int]
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 20_000), st.integers(1, 9_000)),
        st.tuples(st.just("truncate"), st.integers(0, 20_000), st.just(0)),
        st.tuples(st.just("fsync"), st.just(0), st.just(0)),
        st.tuples(st.just("cut"), st.just(0), st.just(0)),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(ops=_ops)
def test_model_content_matches_a_reference(tmp_path_factory: pytest.TempPathFactory, ops: list[_Op]) -> None:
    """Reads see every write; a cut brings back exactly the content at the last fsync."""
    backing = tmp_path_factory.mktemp("model")
    model = PowerCutModel(backing)
    live, durable = bytearray(), bytearray()
    fh = model.create("/f", 0o644, os.O_RDWR)
    model.fsyncdir(model.opendir("/"))
    counter = 0

    for op, a, b in ops:
        if op == "write":
            counter += 1
            data = bytes([counter % 251 + 1]) * b
            model.write(fh, data, a)
            if a > len(live):
                live.extend(bytes(a - len(live)))
            live[a : a + b] = data
        elif op == "truncate":
            model.truncate(None, a, fh)
            live = live[:a] + bytes(max(0, a - len(live)))
        elif op == "fsync":
            model.fsync(fh)
            durable = bytearray(live)
        else:
            model.cut()
            model.restore()
            fh = model.open("/f", os.O_RDWR)
            live = bytearray(durable)
        assert model.read(fh, len(live) + 10, 0) == bytes(live)
        assert model.getattr("/f")["st_size"] == len(live)
    model.fsync(fh)
    model.close()
    assert (backing / "f").read_bytes() == bytes(live)


def _durable_tree(backing: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(backing)): p.read_bytes()
        for p in sorted(backing.rglob("*"))
        if p.is_file() and ".powercut" not in p.parts
    }


def _model_file(model: PowerCutModel, path: str, data: bytes) -> None:
    fh = model.create(path, 0o644, os.O_RDWR)
    model.write(fh, data, 0)
    model.fsync(fh)
    model.release(fh)


def _fsyncdir(model: PowerCutModel, path: str) -> None:
    fh = model.opendir(path)
    model.fsyncdir(fh)
    model.releasedir(fh)


def test_model_swap_by_renames_then_directory_fsync(tmp_path: Path) -> None:
    model = PowerCutModel(tmp_path)
    _model_file(model, "/a", b"A")
    _model_file(model, "/b", b"B")
    _fsyncdir(model, "/")
    model.rename("/a", "/t")
    model.rename("/b", "/a")
    model.rename("/t", "/b")
    _fsyncdir(model, "/")
    model.cut()
    assert _durable_tree(tmp_path) == {"a": b"B", "b": b"A"}
    assert os.listdir(tmp_path / ".powercut") == []


def test_model_cross_directory_rename_follows_each_directory(tmp_path: Path) -> None:
    model = PowerCutModel(tmp_path)
    model.mkdir("/x", 0o755)
    model.mkdir("/y", 0o755)
    _model_file(model, "/x/f", b"data")
    _fsyncdir(model, "/x")
    model.rename("/x/f", "/y/f")
    _fsyncdir(model, "/y")  # only the destination: the file keeps both names after a cut
    model.cut()
    assert _durable_tree(tmp_path) == {"x/f": b"data", "y/f": b"data"}
    assert (tmp_path / "x/f").stat().st_ino == (tmp_path / "y/f").stat().st_ino


def test_model_content_synced_through_an_unlinked_descriptor_comes_back_with_the_name(tmp_path: Path) -> None:
    model = PowerCutModel(tmp_path)
    _model_file(model, "/f", b"old")
    _fsyncdir(model, "/")
    fh = model.open("/f", os.O_RDWR)
    model.unlink("/f")
    model.write(fh, b"new", 0)
    model.fsync(fh)  # the content belongs to the file, which a cut gives its name back
    stats = model.cut()
    assert stats.entries_undone == 1
    assert _durable_tree(tmp_path) == {"f": b"new"}


def test_model_rmdir_makes_the_removal_of_its_durable_entries_durable(tmp_path: Path) -> None:
    model = PowerCutModel(tmp_path)
    model.mkdir("/d", 0o755)
    _model_file(model, "/d/f", b"x")
    _fsyncdir(model, "/d")
    model.unlink("/d/f")
    model.rmdir("/d")
    model.cut()
    assert not (tmp_path / "d").exists()


def test_model_mount_serves_what_the_backing_directory_holds(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f").write_bytes(b"prepared")
    os.link(tmp_path / "sub" / "f", tmp_path / "g")
    (tmp_path / ".powercut").mkdir()
    (tmp_path / ".powercut" / "7").write_bytes(b"left over from an unmount: had no durable name")
    model = PowerCutModel(tmp_path)
    fh = model.open("/sub/f", os.O_RDONLY)
    assert model.read(fh, 100, 0) == b"prepared"
    assert model.getattr("/g")["st_ino"] == model.getattr("/sub/f")["st_ino"]
    assert sorted(model.readdir(model.opendir("/"))) == [".", "..", "g", "sub"]  # .powercut is hidden
    assert os.listdir(tmp_path / ".powercut") == []


def test_open_files_that_lose_their_name(fs: PowerCutFS) -> None:
    path, tmp = fs.mountpoint / "f", fs.mountpoint / "tmp"
    _write(path, b"old", sync=True)
    _sync_dir(fs.mountpoint)
    with path.open("rb") as reader:
        _write(tmp, b"new", sync=True)
        os.rename(tmp, path)  # over a file that is open: libfuse hides it first
        assert os.fstat(reader.fileno()).st_nlink == 0
        assert reader.read() == b"old"
        assert sorted(os.listdir(fs.mountpoint)) == ["f"]
        with path.open("rb") as unlinked:
            os.unlink(path)
            assert os.fstat(unlinked.fileno()).st_nlink == 0
            assert unlinked.read() == b"new"

    _power_cycle(fs)

    assert sorted(os.listdir(fs.mountpoint)) == ["f"]
    assert path.read_bytes() == b"old"


def test_times_are_written_through(fs: PowerCutFS) -> None:
    path = fs.mountpoint / "g"
    _write(path, b"", sync=False)
    os.utime(path, ns=(1_000_000_000, 2_000_000_000))
    assert path.stat().st_mtime_ns == 2_000_000_000
    subprocess.run(["touch", str(path)], check=True)  # utimensat(UTIME_NOW)
    assert path.stat().st_mtime_ns > 2_000_000_000 * 1000
