"""Files that readers never see half-written: write to a fsynced temporary file beside the
target, then rename it over the target and fsync the folder."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable

TMP_PREFIX = ".tmp-"


def atomic_write_bytes(path: str, data: bytes | Iterable[bytes]) -> None:
    """Write ``data`` (bytes, or chunks written one after the other so a large file need not be
    joined in memory) to ``path`` so readers see the old file or the whole new one, never a part.

    The file's mode follows the user's umask (like any file ``open`` creates).
    """
    tmp = durable_tmp(path, data)
    publish(tmp, path)


def durable_tmp(path: str, data: bytes | Iterable[bytes]) -> str:
    """``data`` (bytes or chunks of bytes) in a fsynced temporary file beside ``path``; returns
    its path. If writing fails (or a chunk's producer raises), the temporary file is removed."""
    folder = os.path.dirname(os.path.abspath(path))
    name = f"{TMP_PREFIX}{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}"
    tmp = os.path.join(folder, name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def publish(tmp: str, path: str) -> None:
    """Rename the durable ``tmp`` to ``path`` and make the rename durable."""
    try:
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    folder = os.path.dirname(os.path.abspath(path))
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
