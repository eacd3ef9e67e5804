"""What a building map (家屋現況図) adds to a run: footprint scores, their threshold, and the
buildings the map lacks (from the model's building presence, when it declares it).

Part of the classify stage (:func:`idou.inference.pipeline.classify`), shared by `idou detect`,
`idou batch` and the evaluation of a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd

from idou.errors import InvalidOption
from idou.inference.contract import ModelContract


@dataclass
class BuildingEvidence:
    """What the building map adds to a run: footprint scores, its threshold, unmapped buildings.
    """

    scores: Any = None  # idou.geo.changes.building_evidence.FootprintScores, or None without a map
    threshold: float = 0.5
    keep_unmatched: bool = False
    unmapped: gpd.GeoDataFrame | None = None  # None: no layer (no building map given)
    run_info: dict[str, object] = field(default_factory=dict)


def footprint_threshold(contract: ModelContract, override: float | None = None) -> float:
    """The footprint demolished score that makes 滅失: ``override``, else the model's tuned one
    (``extra["building_map"]["threshold_demolished"]``, written by ``idou tune``), else the
    demolished channel's threshold (half the footprint must pass what makes a change polygon).
    """
    value = override
    if value is None:
        value = (contract.extra.get("building_map") or {}).get("threshold_demolished",
                                                               contract.threshold_demolished)
    if not 0.0 < float(value) < 1.0:
        raise InvalidOption(f"--threshold-footprint {value} is not a probability; pass a value "
                            "strictly between 0 and 1.")
    return float(value)


def building_evidence(probabilities: Any, presence: Any, grid: Any, contract: ModelContract,
                      buildings: gpd.GeoDataFrame | None, *,
                      threshold_footprint: float | None = None, min_area_m2: float = 8.0,
                      keep_unmatched: bool = False) -> BuildingEvidence:
    """Score the registered footprints and find buildings the map lacks (with a building map).
    """
    from idou.geo.changes import building_evidence as be

    threshold = footprint_threshold(contract, threshold_footprint)
    if buildings is None:
        return BuildingEvidence(threshold=threshold)
    scores = be.footprint_scores(probabilities, grid, buildings.geometry)
    info: dict[str, object] = {"threshold_footprint": threshold,
                               "keep_unmatched": keep_unmatched,
                               "footprint_inset_m": be.DEFAULT_INSET_M,
                               "tolerance_m": be.DEFAULT_TOLERANCE_M}
    if presence is None:
        from idou.inference.contract import OUTPUT_PRESENCE

        unmapped = be.empty_unmapped(grid.crs)
        info["unmapped_buildings"] = (
            "empty: this run was given no building presence although the model declares it"
            if OUTPUT_PRESENCE in contract.extra_outputs else
            f"empty: the model ({contract.model_name} {contract.model_version}) declares no "
            "building-presence output, so buildings missing from the map cannot be found")
    else:
        unmapped = be.unmapped_buildings(presence, grid, buildings, min_area_m2=min_area_m2)
        info["unmapped_buildings"] = (f"{len(unmapped)} buildings present in both photos on no "
                                      "registered footprint (model output 'presence')")
    return BuildingEvidence(scores=scores, threshold=threshold, keep_unmatched=keep_unmatched,
                            unmapped=unmapped, run_info=info)
