"""The declared contract of each gold table: columns, types, descriptions, entity keys, TTL.

It is written once here and travels as the gold assets' metadata. The Postgres IO manager creates
tables from it, an asset check compares it with the table in Postgres, and the Feast repository
(``feature_repo/repo.py``) is generated from it, so what Dagster shows, what Postgres holds and
what Feast serves are the same thing (:mod:`taobao_assets.feature_tables`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from taobao_assets.feature_tables import Column, FeatureTable
from taobao_assets.features import CTR_PRIOR_STRENGTH, CVR_PRIOR_STRENGTH, WINDOWS_DAYS

SCHEMA = "gold"
METADATA_KEY = "taobao/gold_table"


@dataclass(frozen=True)
class GoldTable(FeatureTable):
    """A table of the gold schema: one row per entity and day, written by the daily batch."""

    schema: ClassVar[str] = SCHEMA
    metadata_key: ClassVar[str] = METADATA_KEY
    timestamp_description: ClassVar[str] = (
        "End of the day the features were computed over (exclusive): usable from then on.")


def counter_features(what: str) -> tuple[Column, ...]:
    """Impressions, clicks, conversions and smoothed CTR/CVR of ``what`` over each window."""
    columns = []
    for w in WINDOWS_DAYS:
        span = f"in the {w} day(s) up to the end of the day"
        columns += [
            Column(f"impressions_{w}d", "int64", f"Impressions of {what} {span}."),
            Column(f"clicks_{w}d", "int64", f"Clicks on {what} {span}."),
            Column(f"conversions_{w}d", "int64", f"Conversions of {what} {span}."),
            Column(f"ctr_{w}d", "float64",
                   f"Smoothed CTR of {what} {span}: clicks plus {CTR_PRIOR_STRENGTH:g} pseudo impressions "
                   f"at the global CTR of the window, over impressions plus the same."),
            Column(f"cvr_{w}d", "float64",
                   f"Smoothed CVR (conversions per click) of {what} {span}, shrunk towards the global CVR "
                   f"with {CVR_PRIOR_STRENGTH:g} pseudo clicks."),
        ]
    return tuple(columns)


def _key(name: str, field_id: str, what: str) -> Column:
    return Column(name, "int64", f"{what} (Ali-CCP field {field_id}).")


USER_ID = _key("user_id", "101", "User id")
CATEGORY_ID = _key("category_id", "206", "Item category id")

PROFILE = tuple(
    Column(name, "int64", f"User profile: {what} (field {fid}), from the user's latest context of the day.")
    for name, fid, what in [
        ("user_category_id", "121", "user category"), ("user_group_id", "122", "user group"),
        ("gender_id", "124", "gender"), ("age_id", "125", "age bucket"),
        ("consumption_1_id", "126", "consumption level 1"), ("consumption_2_id", "127", "consumption level 2"),
        ("occupation_id", "128", "occupation"), ("geography_id", "129", "geography"),
    ]
)
HISTORY_DIVERSITY = tuple(
    Column(f"hist_{what}_distinct", "int64",
           f"History diversity: distinct {what} ids the user interacted with in the 14 days before "
           f"(field {fid}), from the latest context of the day.")
    for what, fid in [("category", "109_14"), ("shop", "110_14"), ("brand", "127_14"), ("intention", "150_14")]
)

GOLD_TABLES = (
    GoldTable("user_features", (USER_ID,),
              (*counter_features("the user"), *PROFILE, *HISTORY_DIVERSITY),
              "Per user and day: activity counters, smoothed CTR/CVR, profile and history diversity."),
    GoldTable("item_features", (_key("item_id", "205", "Item id"),),
              counter_features("the item"), "Per item and day: activity counters and smoothed CTR/CVR."),
    GoldTable("category_features", (CATEGORY_ID,),
              counter_features("the category"), "Per item category and day: counters and smoothed CTR/CVR."),
    GoldTable("shop_features", (_key("shop_id", "207", "Shop id"),),
              counter_features("the shop"), "Per shop and day: counters and smoothed CTR/CVR."),
    GoldTable("brand_features", (_key("brand_id", "216", "Brand id"),),
              counter_features("the brand"), "Per brand and day: counters and smoothed CTR/CVR."),
    GoldTable("user_category_features", (USER_ID, CATEGORY_ID), counter_features("the user in the category"),
              "Per user, item category and day: counters and smoothed CTR/CVR."),
)
