"""Files that readers never see half-written: write to a fsynced temporary file beside the
target, then rename it over the target and fsync the folder."""

from __future__ import annotations

import os
import secrets

TMP_PREFIX = ".tmp-"


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one, never a part.

    The file's mode follows the user's umask (like any file ``open`` creates).
    """
    tmp = durable_tmp(path, data)
    publish(tmp, path)


def durable_tmp(path: str, data: bytes) -> str:
    """``data`` in a fsynced temporary file beside ``path``; returns its path."""
    folder = os.path.dirname(os.path.abspath(path))
    name = f"{TMP_PREFIX}{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}"
    tmp = os.path.join(folder, name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
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
