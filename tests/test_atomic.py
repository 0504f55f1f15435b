"""Atomic writes (drseg.atomic): a failure keeps the previous file and leaves no temporary;
the written file gets the umask's permissions; the bytes are exactly what was written."""
from __future__ import annotations

import io
import os

import pytest
import torch

from drseg import atomic
from drseg.atomic import (AtomicTarget, atomic_open, atomic_path, atomic_write_bytes,
                          atomic_write_text)


class Boom(Exception):
    pass


def _names(d) -> list[str]:
    return sorted(p.name for p in d.iterdir())


@pytest.fixture
def umask027():
    old = os.umask(0o027)
    try:
        yield 0o027
    finally:
        os.umask(old)


def test_write_bytes_and_text(tmp_path):
    p = atomic_write_bytes(tmp_path / "sub" / "a.bin", b"\x00\x01\xff")
    assert p == tmp_path / "sub" / "a.bin" and p.read_bytes() == b"\x00\x01\xff"
    t = atomic_write_text(tmp_path / "b.txt", "caf\u00e9\r\nx\n")  # no newline translation
    assert t.read_bytes() == "caf\u00e9\r\nx\n".encode("utf-8")
    atomic_write_text(tmp_path / "b.txt", "second\n", fsync=True)
    assert t.read_text() == "second\n"
    assert _names(tmp_path) == ["b.txt", "sub"] and _names(tmp_path / "sub") == ["a.bin"]


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt, OSError])
def test_failure_mid_write_keeps_previous_file_and_no_temp(tmp_path, exc):
    p = tmp_path / "out.json"
    p.write_bytes(b"previous")
    with pytest.raises(exc):
        with atomic_open(p, "wb", fsync=True) as f:
            f.write(b"partial")
            f.flush()
            assert _names(tmp_path) != ["out.json"]  # the temporary exists meanwhile
            raise exc("mid-write")
    assert p.read_bytes() == b"previous"
    assert _names(tmp_path) == ["out.json"]


def test_failure_without_previous_file_leaves_nothing(tmp_path):
    with pytest.raises(Boom):
        with atomic_open(tmp_path / "new.txt", "w", encoding="utf-8") as f:
            f.write("x")
            raise Boom
    assert _names(tmp_path) == []


def test_failed_rename_removes_the_temporary(tmp_path):
    (tmp_path / "target").mkdir()  # os.replace(file, directory) fails
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "target", b"data")
    assert _names(tmp_path) == ["target"] and _names(tmp_path / "target") == []


def test_atomic_path_for_writers_that_want_a_name(tmp_path):
    p = tmp_path / "fig.png"
    p.write_bytes(b"old")
    with atomic_path(p) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.exists()
        tmp.write_bytes(b"new")  # overwrites the reserved (empty) temporary
    assert p.read_bytes() == b"new" and _names(tmp_path) == ["fig.png"]
    with pytest.raises(Boom):
        with atomic_path(p) as tmp:
            tmp.write_bytes(b"half")
            raise Boom
    assert p.read_bytes() == b"new" and _names(tmp_path) == ["fig.png"]


def test_atomic_target_commit_and_abort(tmp_path):
    p = tmp_path / "d" / "m.tif"
    t = AtomicTarget(p, fsync=True)
    t.tmp.write_bytes(b"1")
    assert t.commit() == p and p.read_bytes() == b"1"
    t = AtomicTarget(p)
    t.tmp.write_bytes(b"2")
    t.abort()
    assert p.read_bytes() == b"1" and _names(p.parent) == ["m.tif"]


def test_mode_follows_the_umask(tmp_path, umask027):
    assert atomic.umask() == umask027
    paths = [atomic_write_bytes(tmp_path / "a", b"x"), atomic_write_text(tmp_path / "b", "x")]
    with atomic_path(tmp_path / "c") as tmp:
        tmp.write_bytes(b"x")
    with atomic_open(tmp_path / "d", "wb", fsync=True) as f:
        f.write(b"x")
    for p in paths + [tmp_path / "c", tmp_path / "d"]:
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask027 == 0o640, p  # not mkstemp's 0600


def test_torch_save_into_atomic_open_gives_the_bytes_of_a_plain_save(tmp_path):
    obj = {"w": torch.arange(6.0).view(2, 3), "n": 3}
    with atomic_open(tmp_path / "x.pt", "wb", fsync=True) as f:
        torch.save(obj, f)
    buf = io.BytesIO()
    torch.save(obj, buf)
    assert (tmp_path / "x.pt").read_bytes() == buf.getvalue()
    back = torch.load(tmp_path / "x.pt")
    assert torch.equal(back["w"], obj["w"]) and back["n"] == 3
    assert _names(tmp_path) == ["x.pt"]


def test_geotiff_writer_that_fails_to_open_leaves_no_temporary(tmp_path):
    from drseg.data import raster

    (tmp_path / "m.tif").write_bytes(b"earlier result")
    with pytest.raises(Exception):
        raster.GeoTiffWriter(tmp_path / "m.tif", 10, 10, 1, "not-a-dtype")
    assert _names(tmp_path) == ["m.tif"] and (tmp_path / "m.tif").read_bytes() == b"earlier result"
