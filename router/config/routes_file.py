"""Reading the routes file: a regular file of bounded size, in UTF-8."""

from __future__ import annotations

import os
import stat

from router.config.schema import ConfigError

# Largest routes file read: a real one is a few KiB; ROUTES_FILE=/dev/zero
# (or a log file named by mistake) would otherwise be read until memory ran out.
MAX_ROUTES_FILE = 1024 * 1024


def read_routes_file(file: str) -> bytes:
    """The routes file's bytes, or a ConfigError (one line) naming why not:
    it is not a regular file (a device, a pipe, a directory: opened without
    blocking, so a FIFO with no writer does not hang the start), or it is
    larger than MAX_ROUTES_FILE (no more than that is read)."""
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the routes file: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(
            f"{file}: cannot read the routes file: not a regular file (a device, a pipe "
            "or a directory); point ROUTES_FILE or --routes at routes.yaml"
        )
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read(MAX_ROUTES_FILE + 1)
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read the routes file: {exc.strerror}") from None
    _check_routes_size(file, data)
    return data


def _check_routes_size(file: str, data: bytes) -> None:
    if len(data) > MAX_ROUTES_FILE:
        raise ConfigError(
            f"{file}: the routes file is larger than {MAX_ROUTES_FILE // 1024**2} MiB: "
            "is it the right file?"
        )


def routes_text(file: str, content: bytes | None = None) -> str:
    """The routes file's text (`content`: the file as read already), or a
    ConfigError naming why it cannot be had."""
    if content is None:
        content = read_routes_file(file)
    _check_routes_size(file, content)
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{file}: the routes file is not UTF-8 (byte {exc.start}); save it as UTF-8"
        ) from None
