"""Human units in configuration: durations and sizes, parsed strictly, printed exactly."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from afbackup.config.units import format_bytes, format_duration, parse_duration, parse_size


# -- parse_duration ---------------------------------------------------------------
@pytest.mark.parametrize(("text", "seconds"), [
    ("60s", 60.0), ("5m", 300.0), ("26h", 93600.0), ("7d", 604800.0), ("1w", 604800.0),
    ("250ms", 0.25), ("1.5h", 5400.0), ("0", 0.0), ("90", 90.0), (" 60 s ", 60.0),
    (60, 60.0), (0.5, 0.5), (0, 0.0),
])
def test_parse_duration_accepts(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [
    "", "s", "5 minutes", "5mins", "60S", "1e3", "-5s", "1h30m", "1.", ".5s", "inf", "nan", "5 m s",
])
def test_parse_duration_rejects_malformed_text(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("value", [True, False])
def test_parse_duration_rejects_booleans(value):
    # TOML `timeout = true` must not silently become 1 second
    with pytest.raises(ValueError):
        parse_duration(value)


def test_parse_duration_rejects_negative_numbers():
    with pytest.raises(ValueError, match="negative"):
        parse_duration(-1)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_parse_duration_rejects_non_finite_numbers(value):
    with pytest.raises(ValueError):
        parse_duration(value)


# -- parse_size -------------------------------------------------------------------
@pytest.mark.parametrize(("text", "size"), [
    ("16MiB", 16 * 2**20), ("1GiB", 2**30), ("8MB", 8_000_000), ("1KiB", 1024), ("1kib", 1024),
    ("1KB", 1000), ("1.5KiB", 1536), ("1TiB", 2**40), ("1 MiB", 2**20), ("1B", 1), ("0", 0),
    ("1048576", 2**20), (5 * 2**20, 5 * 2**20),
])
def test_parse_size_accepts(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "1M", "1Mi", "MiB", "16 MiBs", "-1", "1e6", "inf", "1PiB", "one MiB"])
def test_parse_size_rejects_malformed_text(text):
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_parse_size_rejects_negative_ints_and_booleans():
    with pytest.raises(ValueError, match="negative"):
        parse_size(-1)
    with pytest.raises(ValueError):
        parse_size(True)


def test_parse_size_returns_whole_bytes():
    assert parse_size("1.5B") == 1
    assert isinstance(parse_size("0.5KiB"), int)


# -- format_duration / format_bytes ------------------------------------------------
@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (1, "1s"), (59, "59s"), (60, "1m"), (90, "90s"), (3600, "1h"), (93600, "26h"),
    (86400, "1d"), (604800, "1w"), (1209600, "2w"), (0.25, "0.25s"), (1.5, "1.5s"),
])
def test_format_duration_uses_the_largest_exact_unit(seconds, text):
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**9))
def test_format_duration_round_trips_whole_seconds(seconds):
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (5, "5s"), (5.9, "5s"), (-3, "0s"), (600, "10m"), (125, "2m5s"), (3600 * 5 + 720, "5h12m"),
    (3600 * 5 + 59, "5h"), (86400 * 3 + 3600 * 4, "3d4h"), (86400, "1d"), (86400 + 30, "1d"),
])
def test_rough_durations_keep_the_two_largest_units(seconds, text):
    assert format_duration(seconds, rough=True) == text


def test_format_duration_is_exact_for_milliseconds():
    assert parse_duration(format_duration(1234.567)) == 1234.567


@pytest.mark.parametrize(("size", "text"), [
    (0, "0 B"), (1, "1 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
    (2**20, "1.0 MiB"), (int(5.5 * 2**30), "5.5 GiB"), (2**40, "1.0 TiB"), (2**50, "1024.0 TiB"),
])
def test_format_bytes_uses_binary_units(size, text):
    assert format_bytes(size) == text
