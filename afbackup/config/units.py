"""Human units: durations ("60s", "26h") and sizes ("16MiB"), parsed from configuration and formatted for people.

``format_duration`` is the one duration formatter of the package (configured limits, ages, run times).
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}


def parse_duration(value: object) -> float:
    """Seconds from ``60``, ``"60s"``, ``"5m"``, ``"26h"``, ``"7d"`` or ``"250ms"``."""
    if isinstance(value, bool):
        raise ValueError("a duration, like 60s, 5m, 26h or 7d")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration; use e.g. 60s, 5m, 26h or 7d")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("a duration must be a finite, non-negative number")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from ``1048576``, ``"16MiB"``, ``"8MB"`` or ``"1GiB"``."""
    if isinstance(value, bool):
        raise ValueError("a size, like 16MiB")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a size; use e.g. 16MiB or 1GiB")
        unit = (match.group(2) or "b").lower()
        size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size < 0:
        raise ValueError("a size cannot be negative")
    return size


_ROUGH_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def format_duration(seconds: float, *, rough: bool = False) -> str:
    """A duration for people.

    Exact (the default, for configured values): the shortest spelling that
    ``parse_duration`` reads back as the same value: 93600 -> '26h', 1.5 -> '1.5s'.
    ``rough`` (for measured ages and run times): whole seconds, at most the two
    largest units: 40 -> '40s', 125 -> '2m5s', 18720 -> '5h12m', 273600 -> '3d4h'.
    """
    if rough:
        return _rough(seconds)
    for unit, factor in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= factor and seconds % factor == 0:
            return f"{int(seconds // factor)}{unit}"
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{seconds!r}s"


def _rough(seconds: float) -> str:
    whole = max(0, int(seconds))
    for index, (unit, size) in enumerate(_ROUGH_UNITS):
        if whole >= size or unit == "s":
            first, rest = divmod(whole, size)
            text = f"{first}{unit}"
            if index + 1 < len(_ROUGH_UNITS):
                next_unit, next_size = _ROUGH_UNITS[index + 1]
                second = rest // next_size
                text += f"{second}{next_unit}" if second else ""
            return text
    return f"{whole}s"  # pragma: no cover (the loop always returns at "s")


def format_bytes(size: float) -> str:
    """Binary units for people: 1536 -> '1.5 KiB'."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


Duration = Annotated[float, BeforeValidator(parse_duration)]
ByteSize = Annotated[int, BeforeValidator(parse_size)]
