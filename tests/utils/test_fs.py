"""``utils.fs``: a file is replaced whole or not at all, from bytes or from chunks, and a failed
write leaves the old file and no temporary fragment."""

from __future__ import annotations

import os

import pytest

from opmask.utils.fs import TMP_PREFIX, atomic_write_bytes


def test_bytes_and_chunks_write_the_same_file(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    atomic_write_bytes(str(a), b"head" + b"\0" * 4 + b"body")
    atomic_write_bytes(str(b), (piece for piece in [b"head", b"\0" * 4, b"body"]))
    assert a.read_bytes() == b.read_bytes() == b"head\0\0\0\0body"
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "b.bin"]


def test_a_failing_chunk_producer_keeps_the_old_file_and_leaves_no_fragment(tmp_path):
    path = tmp_path / "index.opidx"
    atomic_write_bytes(str(path), b"old")

    def chunks():
        yield b"new part"
        raise MemoryError("the second array did not fit")

    with pytest.raises(MemoryError, match="did not fit"):
        atomic_write_bytes(str(path), chunks())
    assert path.read_bytes() == b"old"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(TMP_PREFIX)]
