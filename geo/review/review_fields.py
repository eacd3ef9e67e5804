"""Names shared by the review GeoPackage, its QGIS styles, the merge and harvest.

Column naming rule (one rule, used everywhere): a column whose *values* staff read or write
as Japanese text has a Japanese name (``地番``, ``所在``, ``異動区分``, ``調査状況``, ``調査者``,
``調査日``, ``備考``, ``検出状況``); ids, numbers and machine fields have ASCII names
(``parcel_id``, ``change_id``, ``area_m2``, ``score_max``, ``priority`` …) and a Japanese alias
(see :data:`ALIASES`) that QGIS shows in forms and the attribute table.
"""

from __future__ import annotations

CHANGE_TYPES = ("new", "extension", "demolished", "rebuilt")
CLASS_JA = {"new": "新築", "extension": "増築", "demolished": "滅失", "rebuilt": "建替"}
CLASS_ORDER_JA = ("建替", "新築", "増築", "滅失")
CLASS_COLOURS = {"新築": "#e31a1c", "増築": "#ff7f00", "滅失": "#1f78b4", "建替": "#6a3d9a"}
#: Change the building map does not support (with ``--buildings``, change_type ``other``):
#: kept, not a candidate.
OTHER_CLASS_JA = "その他の変化"
OTHER_COLOUR = "#969696"
#: The layer of buildings present in both photos that the building map lacks.
UNMAPPED_LAYER = "unmapped_buildings"

STATUS = "調査状況"
SURVEYOR = "調査者"
SURVEY_DATE = "調査日"
NOTE = "備考"
DETECTION = "検出状況"
MAIN_CLASS = "主な異動区分"
REVIEW_FIELDS = (STATUS, SURVEYOR, SURVEY_DATE, NOTE)

STATUS_UNCHECKED = "未確認"
STATUS_TAXABLE = "課税対象"
STATUS_NOT_TAXABLE = "対象外"
STATUS_FALSE_ALARM = "誤検出"
STATUS_RECHECK = "要再調査"
STATUS_VALUES = (STATUS_UNCHECKED, STATUS_TAXABLE, STATUS_NOT_TAXABLE, STATUS_FALSE_ALARM,
                 STATUS_RECHECK)

DETECTED = "検出"
NOT_DETECTED_AGAIN = "再実行で未検出"

ALIASES: dict[str, str] = {
    "parcel_id": "筆ID",
    "change_id": "異動ID",
    "channel": "検出種別",
    "change_type": "異動区分(英)",
    "area_m2": "面積㎡",
    "changed_area_m2": "異動面積㎡",
    "score_max": "確信度",
    "score_mean": "平均確信度",
    "n_changes": "異動件数",
    "priority": "調査優先順位",
    "shares": "異動内訳",
    "change_ids": "異動ID一覧",
    "building_ids": "既存家屋ID",
    "building_id": "家屋ID",
    "status": "処理状況",
    "label": "教師ラベル",
    "footprint_score": "滅失スコア",
    "candidate_id": "候補ID",
}
