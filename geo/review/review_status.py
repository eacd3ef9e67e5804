"""One rule for what staff found on a change, shared by ``idou summary`` and ``idou harvest``.

A change's result is its own 調査状況; when that is 未確認 (or empty) it takes the strongest
result entered on the candidate parcels it lies on (課税対象 over 対象外 over 要再調査 over
誤検出), so entering 調査状況 on 調査対象の筆 alone is enough. A change on no reviewed parcel
stays 未確認.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio

from idou.errors import InputNotFound, UnreadableInput, UserInputError
from idou.geo.review.review_fields import (
    STATUS,
    STATUS_FALSE_ALARM,
    STATUS_NOT_TAXABLE,
    STATUS_RECHECK,
    STATUS_TAXABLE,
    STATUS_UNCHECKED,
)

STATUS_PRECEDENCE = (STATUS_TAXABLE, STATUS_NOT_TAXABLE, STATUS_RECHECK, STATUS_FALSE_ALARM)


@dataclass(frozen=True)
class ReviewLayers:
    """A review GeoPackage's layer names, its ``changes`` and ``candidate_parcels`` (or None)."""

    names: set[str]
    changes: gpd.GeoDataFrame
    parcels: gpd.GeoDataFrame | None


def read_review_layers(path: Path, hint: str) -> ReviewLayers:
    """Read what staff reviewed in ``path``; ``hint`` names the file to pass instead.

    Raises:
        UserInputError: ``path`` missing, not a GeoPackage, or without a ``changes`` layer.
    """
    if not path.is_file():
        raise InputNotFound(f"{path} does not exist; pass {hint}.")
    try:
        names = {row[0] for row in pyogrio.list_layers(path)}
    except pyogrio.errors.DataSourceError as exc:
        raise UnreadableInput(f"{path} is not a GeoPackage ({exc}); pass {hint}.") from exc
    if "changes" not in names:
        raise UserInputError(f"{path} has no 'changes' layer; pass the review .gpkg written "
                             "by idou detect.")
    parcels = (pyogrio.read_dataframe(path, layer="candidate_parcels")
               if "candidate_parcels" in names else None)
    return ReviewLayers(names, pyogrio.read_dataframe(path, layer="changes"), parcels)


def change_results(changes: gpd.GeoDataFrame, parcels: gpd.GeoDataFrame | None) -> pd.Series:
    """The 調査状況 of each change by the rule above (index of ``changes``)."""
    own = _status(changes)
    if parcels is None or parcels.empty or "parcel_id" not in parcels:
        return own
    by_parcel = dict(zip(parcels["parcel_id"].astype(str), _status(parcels), strict=True))
    if "parcel_ids" in changes:
        ids = changes["parcel_ids"].fillna("").astype(str)
        inherited = ids.map(lambda s: _strongest([by_parcel.get(p) for p in s.split(",") if p]))
    else:
        joined = gpd.sjoin(changes[[changes.geometry.name]],
                           parcels[["parcel_id", parcels.geometry.name]],
                           predicate="intersects")
        inherited = joined.groupby(level=0)["parcel_id"].apply(
            lambda pids: _strongest([by_parcel.get(str(p)) for p in pids])
        ).reindex(changes.index)
    return own.where(own != STATUS_UNCHECKED, inherited.fillna(STATUS_UNCHECKED))


def normalise_values(values: pd.Series) -> pd.Series:
    """Values as staff meant them: NFKC (full-width → half-width), whitespace removed; empty
    ones become missing. ``' 課税対象　'`` and ``'課税対象'`` are one value."""
    def one(value: object) -> object:
        if value is None or (isinstance(value, float) and value != value):
            return None
        text = "".join(unicodedata.normalize("NFKC", str(value)).split())
        return text or None

    return values.map(one).astype(object)


def _status(frame: pd.DataFrame) -> pd.Series:
    if STATUS not in frame:
        return pd.Series(STATUS_UNCHECKED, index=frame.index, dtype=object)
    return normalise_values(frame[STATUS]).fillna(STATUS_UNCHECKED).astype(str)


def _strongest(results: list[str | None]) -> str:
    for result in STATUS_PRECEDENCE:
        if result in results:
            return result
    return STATUS_UNCHECKED


__all__ = ["STATUS_PRECEDENCE", "ReviewLayers", "change_results", "normalise_values",
           "read_review_layers"]
