"""Atomic file writes: a temporary sibling, then ``os.replace`` over the target.

Every output file of the pipeline is written this way, so a kill, a full disk or an exception
in the middle of a write leaves whatever was at the target before untouched and no temporary
file behind (a ``SIGKILL`` can leave a hidden temporary, never a partial target).

- :func:`atomic_open`: a context manager yielding an open file (``torch.save`` into it, a
  streaming writer, ...);
- :func:`atomic_path`: a context manager yielding a temporary path, for writers that want a
  file name (matplotlib, PIL, GDAL);
- :func:`atomic_write_bytes` / :func:`atomic_write_text`: the one-shot forms;
- :class:`AtomicTarget`: the write as an object (``commit`` / ``abort``), for writers that
  keep the file open across calls (:class:`drseg.data.raster.GeoTiffWriter`).

The temporary is ``.<name>.<random>.tmp`` in the target's directory (same file system, so the
rename is atomic on POSIX), created exclusively with mode ``0o666`` so the process umask
applies, as for a plain ``open(path, "w")``: the target gets the usual permissions, never
``mkstemp``'s 0600. With ``fsync=True`` the data is fsynced before the rename and the
directory after it (the rename itself durable); by default neither.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["AtomicTarget", "atomic_open", "atomic_path", "atomic_write_bytes",
           "atomic_write_text", "fsync_dir", "umask"]


def umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(directory: str | Path) -> None:
    """fsync a directory so that a rename in it is durable; errors are ignored (not every
    file system or platform allows opening a directory)."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _create_temp(path: Path) -> tuple[int, Path]:
    """Create a new, empty temporary sibling of ``path`` (``O_EXCL``, mode 0o666 & ~umask).

    Returns:
        ``(fd, tmp)``: a write-only descriptor of the file and its path.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path}: no free temporary name beside it")


def _discard(tmp: Path) -> None:
    """Delete a temporary, ignoring errors (the original exception is the one to report)."""
    with contextlib.suppress(OSError):
        tmp.unlink()


class AtomicTarget:
    """One atomic write of ``path`` in progress: write :attr:`tmp`, then :meth:`commit`
    (rename it over ``path``) or :meth:`abort` (delete it).

    The parent directory of ``path`` is created and the temporary is created (empty) at once.

    Args:
        path: the target file.
        fsync: fsync the temporary before the rename and the directory after it.
    """

    def __init__(self, path: str | Path, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = _create_temp(self.path)
        os.close(fd)

    def commit(self) -> Path:
        """Move the temporary over the target (the temporary is deleted if that fails).

        Returns:
            The target path.
        """
        try:
            if self.fsync:
                fd = os.open(self.tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.replace(self.tmp, self.path)
        except BaseException:
            _discard(self.tmp)
            raise
        if self.fsync:
            fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        """Delete the temporary; the target is left as it was."""
        _discard(self.tmp)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on a normal exit it is renamed over ``path``, on an
    exception (``KeyboardInterrupt`` too) deleted and the exception re-raised.

    The temporary exists (empty) when yielded: the writer must overwrite it, as matplotlib's
    ``savefig``, PIL's ``save`` and ``rasterio.open(.., "w")`` do.

    Args:
        path: the target file; its parent directory is created.
        fsync: fsync the data before the rename and the directory after it.
    """
    target = AtomicTarget(path, fsync=fsync)
    try:
        yield target.tmp
    except BaseException:
        target.abort()
        raise
    target.commit()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", *, encoding: str | None = None,
                fsync: bool = False) -> Iterator[IO]:
    """Yield an open temporary file; on a normal exit it is closed (flushed, and fsynced with
    ``fsync=True``) and renamed over ``path``; on an exception (``KeyboardInterrupt`` too) it
    is closed and deleted and the exception re-raised.

    Args:
        path: the target file; its parent directory is created.
        mode: a write mode of :func:`open` (``"wb"``, ``"w"``).
        encoding: text encoding (text modes only; ``None``: the locale's, as :func:`open`).
        fsync: fsync the data before the rename and the directory after it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        f = os.fdopen(fd, mode, encoding=encoding)
    except BaseException:
        os.close(fd)
        _discard(tmp)
        raise
    try:
        with f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise
    if fsync:
        fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_open`).

    Returns:
        The target path.
    """
    with atomic_open(path, "wb", fsync=fsync) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8",
                      fsync: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically, encoded with ``encoding`` and without newline
    translation (the bytes are ``text.encode(encoding)``).

    Returns:
        The target path.
    """
    return atomic_write_bytes(path, text.encode(encoding), fsync=fsync)
