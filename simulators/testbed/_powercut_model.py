"""The state behind :class:`~simulators.testbed.powercut.PowerCutFS`: durable on the host, the rest in memory.

No FUSE here: :class:`PowerCutModel` takes paths and handles and raises :class:`OSError`
with the errno a file system would return, so it can be driven directly in tests.
The semantics are stated in :mod:`simulators.testbed.powercut`; in short:

- The backing directory on the host always holds exactly the *durable* state: each durable
  name of a file is a hard link there; a file with no durable name yet (created, not yet
  made durable by an fsync of its directory) lives at ``.powercut/<ino>`` on the host.
- Per file, writes and truncates since its last fsync/fdatasync are kept in memory
  (:class:`~simulators.testbed._powercut_file.OverlayFile`).
- Per directory, ``entries`` is the live namespace and ``durable`` the file names as of the
  directory's last fsync (the same as its host links). Directories themselves are created,
  removed and renamed on the host at once.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from simulators.testbed._powercut_file import PAGE, OverlayFile

__all__ = ["STAGING", "PowerCutModel", "PowerCutStats"]

_UTIME_NOW, _UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
STAGING = ".powercut"  # at the root of the backing directory; hidden from the mount
HIDDEN_PREFIX = ".fuse_hidden"  # libfuse renames an unlinked open file to such a name


def _err(code: int, what: str = "") -> OSError:
    return OSError(code, os.strerror(code), what) if what else OSError(code, os.strerror(code))


@dataclass(frozen=True)
class PowerCutStats:
    """Counters since the mount, and what the last :meth:`PowerCutModel.cut` dropped."""

    writes: int = 0  # write calls that reached the file system
    bytes_written: int = 0
    syncs: int = 0  # fsync/fdatasync of files
    dir_syncs: int = 0  # fsync of directories
    cuts: int = 0
    powered: bool = True  # False between cut() and restore()
    # the last cut:
    bytes_dropped: int = 0  # bytes written since the last fsync of their file, discarded
    files_affected: tuple[str, ...] = ()  # paths whose content or directory entry went back
    entries_undone: int = 0  # directory entries (create, rename, unlink, link) undone
    descriptors_failed: int = 0  # open file and directory handles that now fail with EIO

    def as_dict(self) -> dict[str, object]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


class _Dir:
    __slots__ = ("durable", "entries", "hidden", "ino", "name", "parent")

    def __init__(self, ino: int, parent: _Dir | None, name: str) -> None:
        self.ino = ino
        self.parent = parent
        self.name = name
        self.entries: dict[str, OverlayFile | _Dir] = {}
        self.durable: dict[str, OverlayFile] = {}
        self.hidden: dict[str, OverlayFile] = {}  # libfuse's .fuse_hidden* names of unlinked open files

    def rel(self) -> str:
        parts: list[str] = []
        node: _Dir | None = self
        while node is not None and node.parent is not None:
            parts.append(node.name)
            node = node.parent
        return "/" + "/".join(reversed(parts))


@dataclass
class _Handle:
    node: OverlayFile | _Dir
    epoch: int


class PowerCutModel:
    """Durable state on the host under ``backing``, unsynced changes in memory. Thread-safe via ``lock``.

    Every public method takes ``lock`` itself; the FUSE adapter and the control thread
    call them concurrently.
    """

    def __init__(self, backing: Path) -> None:
        self.backing = backing.resolve()
        self.lock = threading.RLock()
        self.powered = True
        self._epoch = 0
        self._next_ino = 2
        self._next_fh = 1
        self._handles: dict[int, _Handle] = {}
        self._files: dict[int, OverlayFile] = {}
        self._writes = self._bytes_written = self._syncs = self._dir_syncs = 0
        self._last_cut = PowerCutStats()  # what the last cut dropped (and how many cuts so far)
        staging = self.backing / STAGING
        # Files that had no durable name when the last mount ended are gone, as after a cut.
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        self.root = _Dir(1, None, "")
        self._scan(self.root, self.backing, {})

    # ------------------------------------------------------------------ host layout
    def _scan(self, d: _Dir, host: Path, by_host_ino: dict[tuple[int, int], OverlayFile]) -> None:
        with os.scandir(host) as it:
            for entry in it:
                if d is self.root and entry.name == STAGING:
                    continue
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    sub = _Dir(self._ino(), d, entry.name)
                    d.entries[entry.name] = sub
                    self._scan(sub, Path(entry.path), by_host_ino)
                elif stat.S_ISREG(st.st_mode):
                    key = (st.st_dev, st.st_ino)
                    f = by_host_ino.get(key)
                    if f is None:
                        f = by_host_ino[key] = OverlayFile(self._ino(), None, st.st_size)
                        self._files[f.ino] = f
                    d.entries[entry.name] = f
                    d.durable[entry.name] = f
                    f.links.add((d, entry.name))
                    f.durable_links.add((d, entry.name))
                # symlinks, fifos, sockets, devices: not served

    def _ino(self) -> int:
        self._next_ino += 1
        return self._next_ino

    def _host_dir(self, d: _Dir) -> str:
        return str(self.backing) + (d.rel() if d.parent is not None else "")

    def _host_name(self, d: _Dir, name: str) -> str:
        return f"{self._host_dir(d)}/{name}"

    def _staging(self, f: OverlayFile) -> str:
        return f"{self.backing}/{STAGING}/{f.ino}"

    def _host_path(self, f: OverlayFile) -> str:
        if f.durable_links:
            d, name = next(iter(f.durable_links))
            return self._host_name(d, name)
        return self._staging(f)

    def _fd(self, f: OverlayFile) -> int:
        if f.fd is None:
            f.fd = os.open(self._host_path(f), os.O_RDWR | os.O_CLOEXEC)
        return f.fd

    def _release_host(self, f: OverlayFile) -> None:
        """Forget a file that has no durable name and nothing referring to it."""
        if f.fd is not None:
            os.close(f.fd)
            f.fd = None
        if f.staged:
            os.unlink(self._staging(f))
            f.staged = False
        self._files.pop(f.ino, None)

    def _maybe_free(self, f: OverlayFile) -> None:
        if not f.links and not f.durable_links and f.opens == 0:
            self._release_host(f)

    def _drop_durable(self, d: _Dir, name: str) -> None:
        """Remove the durable name ``d/name`` on the host (keeping the file's bytes if it is still used)."""
        f = d.durable.pop(name)
        f.durable_links.discard((d, name))
        host = self._host_name(d, name)
        if not f.durable_links and not f.staged:
            os.link(host, self._staging(f))
            f.staged = True
        os.unlink(host)
        self._maybe_free(f)

    def _add_durable(self, d: _Dir, name: str, f: OverlayFile) -> None:
        os.link(self._host_path(f), self._host_name(d, name))
        d.durable[name] = f
        f.durable_links.add((d, name))
        if f.staged:
            os.unlink(self._staging(f))
            f.staged = False

    def _clear_host_name(self, d: _Dir, name: str) -> None:
        """A directory is about to take ``name`` on the host: a durable file there goes now."""
        if name in d.durable:
            self._drop_durable(d, name)

    # ------------------------------------------------------------------ lookups
    def _check_power(self) -> None:
        if not self.powered:
            raise _err(errno.EIO)

    def _lookup(self, path: str) -> OverlayFile | _Dir:
        node: OverlayFile | _Dir = self.root
        for part in path.split("/"):
            if not part:
                continue
            if not isinstance(node, _Dir):
                raise _err(errno.ENOTDIR, path)
            child = node.entries.get(part) or node.hidden.get(part)
            if child is None:
                raise _err(errno.ENOENT, path)
            node = child
        return node

    def _parent(self, path: str) -> tuple[_Dir, str]:
        head, _, name = path.rstrip("/").rpartition("/")
        parent = self._lookup(head or "/")
        if not isinstance(parent, _Dir):
            raise _err(errno.ENOTDIR, path)
        if not name or (parent is self.root and name == STAGING):
            raise _err(errno.EPERM, path)
        return parent, name

    def _file(self, path: str) -> OverlayFile:
        node = self._lookup(path)
        if isinstance(node, _Dir):
            raise _err(errno.EISDIR, path)
        return node

    def _dir(self, path: str) -> _Dir:
        node = self._lookup(path)
        if not isinstance(node, _Dir):
            raise _err(errno.ENOTDIR, path)
        return node

    def _handle(self, fh: int) -> _Handle:
        h = self._handles.get(fh)
        if h is None:
            raise _err(errno.EBADF)
        if h.epoch != self._epoch or not self.powered:
            raise _err(errno.EIO)
        return h

    def _file_handle(self, fh: int) -> OverlayFile:
        node = self._handle(fh).node
        if isinstance(node, _Dir):
            raise _err(errno.EISDIR)
        return node

    def _new_handle(self, node: OverlayFile | _Dir) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = _Handle(node, self._epoch)
        if isinstance(node, OverlayFile):
            node.opens += 1
        return fh

    # ------------------------------------------------------------------ attributes
    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, int]:
        with self.lock:
            if fh is not None:
                node = self._handle(fh).node
            else:
                assert path is not None
                if path == "/":
                    node = self.root
                else:
                    self._check_power()
                    node = self._lookup(path)
            if isinstance(node, _Dir):
                st = os.stat(self._host_dir(node))
                size, nlink = st.st_size, 2
            else:
                st = os.fstat(self._fd(node))
                size, nlink = node.size, len(node.links)  # 0 once unlinked (SQLite checks)
            return {
                "st_mode": st.st_mode,
                "st_ino": node.ino,
                "st_nlink": nlink,
                "st_uid": st.st_uid,
                "st_gid": st.st_gid,
                "st_size": size,
                "st_blocks": (size + 511) // 512,
                "st_blksize": PAGE,
                "st_atime": st.st_atime_ns,
                "st_mtime": st.st_mtime_ns,
                "st_ctime": st.st_ctime_ns,
            }

    def statfs(self) -> dict[str, int]:
        sv = os.statvfs(self.backing)
        names = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_namemax")
        return {k: getattr(sv, k) for k in names}

    def chmod(self, path: str, mode: int) -> None:
        with self.lock:
            self._check_power()
            node = self._lookup(path)
            if isinstance(node, _Dir):
                os.chmod(self._host_dir(node), stat.S_IMODE(mode))
            else:
                os.fchmod(self._fd(node), stat.S_IMODE(mode))

    def chown(self, path: str, uid: int, gid: int) -> None:
        with self.lock:
            self._check_power()
            node = self._lookup(path)
            if isinstance(node, _Dir):
                os.chown(self._host_dir(node), uid, gid)
            else:
                os.fchown(self._fd(node), uid, gid)

    def utimens(self, path: str, times: tuple[int, int] | None) -> None:
        with self.lock:
            self._check_power()
            node = self._lookup(path)
            target: int | str = self._host_dir(node) if isinstance(node, _Dir) else self._fd(node)
            if times is None:
                os.utime(target)
                return
            # libfuse passes utimensat's UTIME_NOW / UTIME_OMIT as tv_nsec with tv_sec 0
            st = os.stat(target)
            now = time.time_ns()

            def pick(t: int, current: int) -> int:
                return now if t == _UTIME_NOW else current if t == _UTIME_OMIT else t

            os.utime(target, ns=(pick(times[0], st.st_atime_ns), pick(times[1], st.st_mtime_ns)))

    # ------------------------------------------------------------------ directories
    def readdir(self, fh: int) -> list[str]:
        with self.lock:
            node = self._handle(fh).node
            if not isinstance(node, _Dir):
                raise _err(errno.ENOTDIR)
            return [".", "..", *node.entries]

    def opendir(self, path: str) -> int:
        with self.lock:
            self._check_power()
            return self._new_handle(self._dir(path))

    def releasedir(self, fh: int) -> None:
        with self.lock:
            self._handles.pop(fh, None)

    def mkdir(self, path: str, mode: int) -> None:
        with self.lock:
            self._check_power()
            parent, name = self._parent(path)
            if name in parent.entries:
                raise _err(errno.EEXIST, path)
            self._clear_host_name(parent, name)
            os.mkdir(self._host_name(parent, name), mode)
            parent.entries[name] = _Dir(self._ino(), parent, name)

    def rmdir(self, path: str) -> None:
        with self.lock:
            self._check_power()
            parent, name = self._parent(path)
            d = self._dir(path)
            if d.entries:
                raise _err(errno.ENOTEMPTY, path)
            for durable_name in list(d.durable):
                self._drop_durable(d, durable_name)
            os.rmdir(self._host_dir(d))
            del parent.entries[name]

    def fsyncdir(self, fh: int) -> None:
        """Make the directory's file entries durable: the host links now equal the live names."""
        with self.lock:
            d = self._handle(fh).node
            if not isinstance(d, _Dir):
                raise _err(errno.ENOTDIR)
            self._dir_syncs += 1
            for name, f in list(d.durable.items()):
                if d.entries.get(name) is not f:
                    self._drop_durable(d, name)
            for name, node in d.entries.items():
                if isinstance(node, OverlayFile) and name not in d.durable:
                    self._add_durable(d, name, node)

    # ------------------------------------------------------------------ names
    def create(self, path: str, mode: int, flags: int) -> int:
        with self.lock:
            self._check_power()
            parent, name = self._parent(path)
            existing = parent.entries.get(name)
            if existing is not None:
                if flags & os.O_EXCL:
                    raise _err(errno.EEXIST, path)
                return self.open(path, flags)
            f = OverlayFile(self._ino(), None, 0)
            f.fd = os.open(self._staging(f), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode & 0o7777)
            f.staged = True
            self._files[f.ino] = f
            parent.entries[name] = f
            f.links.add((parent, name))
            return self._new_handle(f)

    def unlink(self, path: str) -> None:
        with self.lock:
            self._check_power()
            parent, name = self._parent(path)
            f = self._file(path)
            if parent.hidden.pop(name, None) is not None:
                return  # libfuse removes the hidden name of an unlinked file at its last close
            del parent.entries[name]
            f.links.discard((parent, name))
            self._maybe_free(f)

    def link(self, target: str, path: str) -> None:
        """Hard link ``path`` to the existing file ``target`` (``ln target path``)."""
        with self.lock:
            self._check_power()
            f = self._file(target)
            parent, name = self._parent(path)
            if name in parent.entries:
                raise _err(errno.EEXIST, path)
            parent.entries[name] = f
            f.links.add((parent, name))

    def rename(self, old: str, new: str) -> None:
        with self.lock:
            self._check_power()
            src_parent, src_name = self._parent(old)
            node = self._lookup(old)
            dst_parent, dst_name = self._parent(new)
            dst = dst_parent.entries.get(dst_name)
            if dst is node:
                return
            if isinstance(node, _Dir):
                self._rename_dir(node, dst_parent, dst_name, dst)
            elif dst_name.startswith(HIDDEN_PREFIX):
                # libfuse's way to unlink a file that is still open: an unlink here, plus a
                # name that keeps serving that file's descriptors (fstat, ftruncate).
                del src_parent.entries[src_name]
                node.links.discard((src_parent, src_name))
                dst_parent.hidden[dst_name] = node
            else:
                if isinstance(dst, _Dir):
                    raise _err(errno.EISDIR, new)
                del src_parent.entries[src_name]
                node.links.discard((src_parent, src_name))
                dst_parent.entries[dst_name] = node
                node.links.add((dst_parent, dst_name))
                if dst is not None:
                    dst.links.discard((dst_parent, dst_name))
                    self._maybe_free(dst)

    def _rename_dir(self, d: _Dir, parent: _Dir, name: str, dst: OverlayFile | _Dir | None) -> None:
        ancestor: _Dir | None = parent
        while ancestor is not None:
            if ancestor is d:
                raise _err(errno.EINVAL, "cannot move a directory into itself")
            ancestor = ancestor.parent
        if isinstance(dst, OverlayFile):
            raise _err(errno.ENOTDIR)
        if dst is not None:
            if dst.entries:
                raise _err(errno.ENOTEMPTY)
            for durable_name in list(dst.durable):
                self._drop_durable(dst, durable_name)
        else:
            self._clear_host_name(parent, name)
        os.rename(self._host_dir(d), self._host_name(parent, name))
        assert d.parent is not None
        del d.parent.entries[d.name]
        parent.entries[name] = d
        d.parent, d.name = parent, name

    # ------------------------------------------------------------------ content
    def open(self, path: str, flags: int) -> int:
        with self.lock:
            self._check_power()
            f = self._file(path)
            if flags & os.O_TRUNC and flags & os.O_ACCMODE != os.O_RDONLY:
                f.truncate(0)
            return self._new_handle(f)

    def release(self, fh: int) -> None:
        with self.lock:
            h = self._handles.pop(fh, None)
            if h is None or h.epoch != self._epoch or not isinstance(h.node, OverlayFile):
                return
            h.node.opens -= 1
            self._maybe_free(h.node)

    def flush(self, fh: int) -> None:
        with self.lock:
            self._handle(fh)  # close() is no sync: it only fails once the power is cut

    def read(self, fh: int, size: int, offset: int) -> bytes:
        with self.lock:
            f = self._file_handle(fh)
            return f.read(self._fd(f), size, offset)

    def write(self, fh: int, data: bytes, offset: int) -> int:
        with self.lock:
            f = self._file_handle(fh)
            f.write(self._fd(f), data, offset)
            self._writes += 1
            self._bytes_written += len(data)
            return len(data)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> None:
        with self.lock:
            if fh is not None:
                f = self._file_handle(fh)
            else:
                assert path is not None
                self._check_power()
                f = self._file(path)
            f.truncate(length)

    def fsync(self, fh: int) -> None:
        """fsync and fdatasync alike: the file's content and size become durable (its names do not)."""
        with self.lock:
            f = self._file_handle(fh)
            self._syncs += 1
            f.sync(self._fd(f))

    # ------------------------------------------------------------------ power
    def cut(self) -> PowerCutStats:
        """Drop every unsynced write and directory change; every open handle fails with EIO from now."""
        with self.lock:
            affected: set[str] = set()
            dropped = 0
            for f in self._files.values():
                if f.changed:
                    dropped += f.pending
                    affected.add(self._describe(f))
            undone = 0
            for d in self._walk(self.root):
                live_files = {n: x for n, x in d.entries.items() if isinstance(x, OverlayFile)}
                for name in set(live_files) | set(d.durable):
                    if live_files.get(name) is not d.durable.get(name):
                        undone += 1
                        affected.add(f"{d.rel().rstrip('/')}/{name}")
                d.entries = {n: x for n, x in d.entries.items() if isinstance(x, _Dir)}
                d.hidden.clear()
                d.entries.update(d.durable)
            failed = sum(1 for h in self._handles.values() if h.epoch == self._epoch)
            for f in list(self._files.values()):
                f.links = set(f.durable_links)
                f.opens = 0
                f.reset()
                if not f.durable_links:
                    self._release_host(f)
            self._epoch += 1
            self.powered = False
            self._last_cut = PowerCutStats(
                cuts=self._last_cut.cuts + 1,
                bytes_dropped=dropped,
                files_affected=tuple(sorted(affected)),
                entries_undone=undone,
                descriptors_failed=failed,
            )
            return self.stats()

    def restore(self) -> PowerCutStats:
        """Power back: the durable state is served and new opens work; old handles keep failing."""
        with self.lock:
            self.powered = True
            return self.stats()

    def stats(self) -> PowerCutStats:
        with self.lock:
            return replace(
                self._last_cut,
                writes=self._writes,
                bytes_written=self._bytes_written,
                syncs=self._syncs,
                dir_syncs=self._dir_syncs,
                powered=self.powered,
            )

    def _describe(self, f: OverlayFile) -> str:
        names = f.links or f.durable_links
        if not names:
            return f"<unlinked file {f.ino}>"
        return min(f"{d.rel().rstrip('/')}/{name}" for d, name in names)

    def _walk(self, d: _Dir) -> list[_Dir]:
        out = [d]
        for node in d.entries.values():
            if isinstance(node, _Dir):
                out.extend(self._walk(node))
        return out

    def close(self) -> None:
        """Close the host descriptors (at unmount); the host keeps exactly the durable state."""
        with self.lock:
            for f in list(self._files.values()):
                if f.fd is not None:
                    os.close(f.fd)
                    f.fd = None
