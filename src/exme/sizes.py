"""Sizes given as text in configs and on the command line: "500MB", "2GB", "1GiB"."""

import re

from exme.errors import ExmeError

_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}  # fmt: skip


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string like "500MB", "5GB", "2GiB"."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(size))
        if not match or match.group(2).upper() not in _SIZE_UNITS:
            raise ExmeError(f"invalid shard size {size!r}; use bytes or e.g. 500MB, 5GB")
        value = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])
    if value <= 0:
        raise ExmeError(f"shard size must be positive, got {size!r}")
    return value
