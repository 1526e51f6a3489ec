"""ISO 8601 timestamps of the dataset format, parsed and formatted in bulk with numpy.

A dataset can hold millions of timestamps, and ``datetime.fromisoformat`` in a Python loop costs about a
second per million, so both directions work on whole arrays of characters instead.

The accepted form is the subset of ISO 8601 that both Python and PostgreSQL read the same way, so a file
that passes validation also loads into a ``timestamptz`` column unchanged::

    YYYY-MM-DD[(T| )HH:MM[:SS[.fraction of 1-9 digits]][Z|±HH|±HHMM|±HH:MM]]

A timestamp without a zone is UTC (the loader sets the session time zone to UTC for the same reason).
The fraction is checked but dropped: the dataset keeps whole seconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_TIMESTAMP_LENGTH = 40
# How far ahead of now a row's created_at may be (writers' clocks, a zone mistaken for UTC): past it the row is
# refused by the dataset checks (ml.validate) and left unread by the live refresh until its time comes. One row
# from the far future would otherwise weigh every other interaction down to nothing (ml.training's half-life
# from the newest) and hold the refresh's watermark there.
FUTURE_TOLERANCE_SECONDS = 86_400

# Offsets beyond +-15:59 are refused because PostgreSQL refuses them.
_MAX_OFFSET_HOURS = 15
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def parse_timestamps(values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Parse ISO 8601 strings into Unix seconds (UTC).

    Parameters
    ----------
    values : sequence of str
        Timestamps in the form described in the module docstring.

    Returns
    -------
    seconds : int64 array
        Unix seconds, floored to whole seconds; meaningless where ``valid`` is False.
    valid : bool array
        Which values are well-formed, existing dates and times.
    """
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=n)
    fits = lengths <= MAX_TIMESTAMP_LENGTH
    if not fits.all():
        values = [v if ok else "" for v, ok in zip(values, fits, strict=True)]
        lengths = np.where(fits, lengths, 0)
    # One row of character codes per column (column-major, so each column is contiguous), padded with
    # code 0, a non-digit, so that every value ends in a non-digit and the zone, read up to six columns past
    # the end of the time, is always in bounds. Characters outside ASCII become 255: no digit, no separator.
    width = max(int(lengths.max()), 20) + 7
    columns = np.zeros((width, n), dtype=np.uint8)
    columns[: lengths.max()] = _char_codes(values, lengths).T
    rows = np.arange(n)

    def column_of(column) -> np.ndarray:
        return columns[column] if isinstance(column, int) else columns[column, rows]

    def char_is(column, allowed: str) -> np.ndarray:
        found = np.zeros(n, dtype=bool)
        at = column_of(column)
        for c in allowed:
            found |= at == ord(c)
        return found

    def number(*digits) -> tuple[np.ndarray, np.ndarray]:
        value = np.zeros(n, dtype=np.int64)
        ok = np.ones(n, dtype=bool)
        for column in digits:
            at = column_of(column)
            value = value * 10 + at - ord("0")
            ok &= (at >= ord("0")) & (at <= ord("9"))
        return value, ok

    year, ok_y = number(0, 1, 2, 3)
    month, ok_mo = number(5, 6)
    day, ok_d = number(8, 9)
    valid = fits & (lengths >= 10) & ok_y & ok_mo & ok_d & char_is(4, "-") & char_is(7, "-")

    has_time = lengths > 10
    hour, ok_h = number(11, 12)
    minute, ok_mi = number(14, 15)
    valid &= ~has_time | (char_is(10, "T ") & ok_h & char_is(13, ":") & ok_mi)
    has_seconds = has_time & char_is(16, ":")
    second, ok_s = number(17, 18)
    valid &= ~has_seconds | ok_s
    end = np.where(has_time, np.where(has_seconds, 19, 16), 10)

    # A fraction follows the seconds only; it runs to the first non-digit after the dot.
    has_fraction = has_seconds & char_is(19, ".")
    tail = columns[20:]
    fraction_end = 20 + np.argmin((tail >= ord("0")) & (tail <= ord("9")), axis=0)
    valid &= ~has_fraction | ((fraction_end > 20) & (fraction_end <= 29))  # 1 to 9 digits
    end = np.where(has_fraction, fraction_end, end)

    # Whatever is left is the zone: nothing (UTC), Z, or a signed offset of 3, 5 or 6 characters.
    rest = lengths - end
    zulu = (rest == 1) & char_is(end, "Z")
    signed = np.isin(rest, (3, 5, 6)) & char_is(end, "+-")
    off_h, ok_oh = number(end + 1, end + 2)
    off_m4, ok_om4 = number(end + 3, end + 4)
    off_m5, ok_om5 = number(end + 4, end + 5)
    colon = char_is(end + 3, ":")
    off_m = np.select([rest == 5, rest == 6], [off_m4, off_m5], 0)
    ok_offset = ok_oh & np.select([rest == 5, rest == 6], [ok_om4, ok_om5 & colon], True)
    signed &= ok_offset & (off_h <= _MAX_OFFSET_HOURS) & (off_m <= 59)
    valid &= (rest == 0) | (has_time & (zulu | signed))
    sign = np.where(char_is(end, "-"), -1, 1)
    offset_minutes = np.where(signed, sign * (off_h * 60 + off_m), 0)

    hour = np.where(has_time, hour, 0)
    minute = np.where(has_time, minute, 0)
    second = np.where(has_seconds, second, 0)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = _DAYS_IN_MONTH[np.clip(month, 0, 12)] + ((month == 2) & leap)
    valid &= (year >= 1) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= month_days)
    valid &= (hour <= 23) & (minute <= 59) & (second <= 59)

    seconds = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
    seconds -= offset_minutes * 60
    return seconds, valid


def _char_codes(values: Sequence[str], lengths: np.ndarray) -> np.ndarray:
    """An n x max-length matrix of the values' character codes (0 past each end, 255 outside ASCII)."""
    longest = int(lengths.max())
    if lengths.min() == longest:  # the usual case: one fixed format, encoded in one go
        try:
            return np.frombuffer("".join(values).encode("ascii"), dtype=np.uint8).reshape(len(values), longest)
        except UnicodeEncodeError:
            pass
    wide = np.array(values, dtype=f"<U{longest}").view(np.uint32).reshape(len(values), longest)
    return np.minimum(wide, 255).astype(np.uint8)


def format_timestamps(seconds: np.ndarray) -> np.ndarray:
    """Format Unix seconds as ``YYYY-MM-DDTHH:MM:SSZ``.

    Parameters
    ----------
    seconds : int array
        Unix seconds (UTC) between years 1 and 9999.

    Returns
    -------
    bytes array of dtype ``S20``
    """
    seconds = np.asarray(seconds, dtype=np.int64)
    days, second_of_day = np.divmod(seconds, 86400)
    year, month, day = _civil_from_days(days)
    hour, rem = np.divmod(second_of_day, 3600)
    minute, second = np.divmod(rem, 60)
    out = np.empty((seconds.shape[0], 20), dtype=np.uint8)
    for column, char in ((4, "-"), (7, "-"), (10, "T"), (13, ":"), (16, ":"), (19, "Z")):
        out[:, column] = ord(char)
    for value, first, width in (
        (year, 0, 4),
        (month, 5, 2),
        (day, 8, 2),
        (hour, 11, 2),
        (minute, 14, 2),
        (second, 17, 2),
    ):
        for k in range(width - 1, -1, -1):
            value, d = np.divmod(value, 10)
            out[:, first + k] = d + ord("0")
    return out.view("S20").ravel()


def _days_from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm)."""
    y = year - (month <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    doy = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The inverse of :func:`_days_from_civil`."""
    z = days + 719468
    era = np.floor_divide(z, 146097)
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + (month <= 2)
    return year, month, day
