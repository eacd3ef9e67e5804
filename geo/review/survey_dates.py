"""調査日 as staff write it: ISO dates, 2026/10/1, 2026年10月1日, 令和8年10月1日, R8.10.1.

The GeoPackage keeps 調査日 as ``YYYY-MM-DD`` (its DATE encoding); a value that is no date
idou can read is kept as the staff typed it, never dropped.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from typing import Any

import pandas as pd

# first year of each era (元年)
ERAS = {"令和": 2019, "R": 2019, "平成": 1989, "H": 1989, "昭和": 1926, "S": 1926}
_SEP = r"\s*[年月./\-]\s*"
_ERA_DATE = re.compile(rf"^({'|'.join(ERAS)})\s*(元|\d{{1,2}}){_SEP}(\d{{1,2}}){_SEP}"
                       r"(\d{1,2})\s*日?$", re.IGNORECASE)
_YMD = re.compile(rf"^(\d{{4}}){_SEP}(\d{{1,2}}){_SEP}(\d{{1,2}})\s*日?$")


def survey_date_text(value: Any) -> str | None:
    """``YYYY-MM-DD`` for a date idou can read, the text itself otherwise, None when empty."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, dt.datetime | dt.date | pd.Timestamp):
        return value.strftime("%Y-%m-%d")
    text = str(value).strip()
    if not text:
        return None
    plain = unicodedata.normalize("NFKC", text).upper()
    match = _ERA_DATE.match(plain)
    if match:
        era, year, month, day = match.groups()
        start = ERAS[era]
        ymd = (start + (1 if year == "元" else int(year)) - 1, int(month), int(day))
    elif (match := _YMD.match(plain)) is not None:
        ymd = (int(match[1]), int(match[2]), int(match[3]))
    else:
        parsed = pd.to_datetime(plain, errors="coerce")
        return text if pd.isna(parsed) else parsed.strftime("%Y-%m-%d")
    try:
        return dt.date(*ymd).isoformat()
    except ValueError:
        return text


def survey_dates(values: pd.Series) -> pd.Series:
    """:func:`survey_date_text` of each value (an object column)."""
    return pd.Series([survey_date_text(v) for v in values], index=values.index, dtype=object)
