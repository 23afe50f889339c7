"""The Feast declarations of taobao-feature-platform. GENERATED: do not edit by hand.

Written by `python -m taobao_assets.feast_repo generate` from the table contracts in
taobao_assets/gold_tables.py and taobao_assets/realtime_tables.py (a test fails when this file is not
what they generate). `feast -c feature_repo apply` reads it, after
`python -m taobao_assets.feast_repo write-config` wrote feature_store.yaml; the feast_registry asset
applies the same objects.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, PushSource, ValueType
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource
from feast.types import Float64, Int64

# Entities: one per key column of the contracts.
brand = Entity(
    name="brand",
    join_keys=["brand_id"],
    value_type=ValueType.INT64,
    description="Brand id (Ali-CCP field 216).",
    tags={"generated_by": "taobao_assets.feast_repo"},
)

category = Entity(
    name="category",
    join_keys=["category_id"],
    value_type=ValueType.INT64,
    description="Item category id (Ali-CCP field 206).",
    tags={"generated_by": "taobao_assets.feast_repo"},
)

item = Entity(
    name="item",
    join_keys=["item_id"],
    value_type=ValueType.INT64,
    description="Item id (Ali-CCP field 205).",
    tags={"generated_by": "taobao_assets.feast_repo"},
)

shop = Entity(
    name="shop",
    join_keys=["shop_id"],
    value_type=ValueType.INT64,
    description="Shop id (Ali-CCP field 207).",
    tags={"generated_by": "taobao_assets.feast_repo"},
)

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.INT64,
    description="User id (Ali-CCP field 101).",
    tags={"generated_by": "taobao_assets.feast_repo"},
)

# Batch sources: the Postgres tables of the gold (and streaming log) schemas.
brand_features_source = PostgreSQLSource(
    name="brand_features_source",
    table="gold.brand_features",
    timestamp_field="event_timestamp",
    description="Postgres table gold.brand_features.",
    tags={
        "generated_by": "taobao_assets.feast_repo",
        "dagster_asset_key": "gold/brand_features",
        "table": "gold.brand_features",
        "layer": "gold",
    },
)

category_features_source = PostgreSQLSource(
    name="category_features_source",
    table="gold.category_features",
    timestamp_field="event_timestamp",
    description="Postgres table gold.category_features.",
    tags={
        "generated_by": "taobao_assets.feast_repo",
        "dagster_asset_key": "gold/category_features",
        "table": "gold.category_features",
        "layer": "gold",
    },
)

item_features_source = PostgreSQLSource(
    name="item_features_source",
    table="gold.item_features",
    timestamp_field="event_timestamp",
    description="Postgres table gold.item_features.",
    tags={
        "generated_by": "taobao_assets.feast_repo",
        "dagster_asset_key": "gold/item_features",
        "table": "gold.item_features",
        "layer": "gold",
    },
)

shop_features_source = PostgreSQLSource(
    name="shop_features_source",
    table="gold.shop_features",
    timestamp_field="event_timestamp",
    description="Postgres table gold.shop_features.",
    tags={
        "generated_by": "taobao_assets.feast_repo",
        "dagster_asset_key": "gold/shop_features",
        "table": "gold.shop_features",
        "layer": "gold",
    },
)

user_category_features_source = PostgreSQLSource(
    name="user_category_features_source",
    table="gold.user_category_features",
    timestamp_field="event_timestamp",
    description="Postgres table gold.user_category_features.",
    tags={
        "generated_by": "taobao_assets.feast_repo",
        "dagster_asset_key": "gold/user_category_features",
        "table": "gold.user_category_features",
        "layer": "gold",
    },
)

user_features_source = PostgreSQLSource(
    name="user_features_source",
    table="gold.user_features",
    timestamp_field="event_timestamp",
    description="Postgres table gold.user_features.",
    tags={
        "generated_by": "taobao_assets.feast_repo",
        "dagster_asset_key": "gold/user_features",
        "table": "gold.user_features",
        "layer": "gold",
    },
)

item_realtime_source = PostgreSQLSource(
    name="item_realtime_source",
    table="streaming.item_realtime",
    timestamp_field="event_timestamp",
    description="Postgres table streaming.item_realtime.",
    tags={
        "generated_by": "taobao_assets.feast_repo",
        "dagster_asset_key": "streaming/item_realtime",
        "table": "streaming.item_realtime",
        "layer": "streaming",
    },
)

user_category_realtime_source = PostgreSQLSource(
    name="user_category_realtime_source",
    table="streaming.user_category_realtime",
    timestamp_field="event_timestamp",
    description="Postgres table streaming.user_category_realtime.",
    tags={
        "generated_by": "taobao_assets.feast_repo",
        "dagster_asset_key": "streaming/user_category_realtime",
        "table": "streaming.user_category_realtime",
        "layer": "streaming",
    },
)

user_realtime_source = PostgreSQLSource(
    name="user_realtime_source",
    table="streaming.user_realtime",
    timestamp_field="event_timestamp",
    description="Postgres table streaming.user_realtime.",
    tags={
        "generated_by": "taobao_assets.feast_repo",
        "dagster_asset_key": "streaming/user_realtime",
        "table": "streaming.user_realtime",
        "layer": "streaming",
    },
)

# Push sources: what the streaming run writes into the real-time views.
item_realtime_push = PushSource(
    name="item_realtime_push",
    batch_source=item_realtime_source,
    description="Pushes of the streaming run into the item_realtime view.",
    tags={
        "generated_by": "taobao_assets.feast_repo",
        "dagster_asset_key": "streaming/item_realtime",
        "table": "streaming.item_realtime",
        "layer": "streaming",
    },
)

user_category_realtime_push = PushSource(
    name="user_category_realtime_push",
    batch_source=user_category_realtime_source,
    description="Pushes of the streaming run into the user_category_realtime view.",
    tags={
        "generated_by": "taobao_assets.feast_repo",
        "dagster_asset_key": "streaming/user_category_realtime",
        "table": "streaming.user_category_realtime",
        "layer": "streaming",
    },
)

user_realtime_push = PushSource(
    name="user_realtime_push",
    batch_source=user_realtime_source,
    description="Pushes of the streaming run into the user_realtime view.",
    tags={
        "generated_by": "taobao_assets.feast_repo",
        "dagster_asset_key": "streaming/user_realtime",
        "table": "streaming.user_realtime",
        "layer": "streaming",
    },
)

# Feature views: one per table contract.
brand_features = FeatureView(
    name="brand_features",
    entities=[brand],
    ttl=timedelta(days=1),
    schema=[
        Field(name="brand_id", dtype=Int64, description="Brand id (Ali-CCP field 216)."),
        Field(
            name="impressions_1d",
            dtype=Int64,
            description="Impressions of the brand in the 1 day(s) up to the end of the day.",
        ),
        Field(
            name="clicks_1d",
            dtype=Int64,
            description="Clicks on the brand in the 1 day(s) up to the end of the day.",
        ),
        Field(
            name="conversions_1d",
            dtype=Int64,
            description="Conversions of the brand in the 1 day(s) up to the end of the day.",
        ),
        Field(
            name="ctr_1d",
            dtype=Float64,
            description=(
                "Smoothed CTR of the brand in the 1 day(s) up to the end of the day: clicks plus 100 pseudo"
                " impressions at the global CTR of the window, over impressions plus the same."
            ),
        ),
        Field(
            name="cvr_1d",
            dtype=Float64,
            description=(
                "Smoothed CVR (conversions per click) of the brand in the 1 day(s) up to the end of the "
                "day, shrunk towards the global CVR with 200 pseudo clicks."
            ),
        ),
        Field(
            name="impressions_3d",
            dtype=Int64,
            description="Impressions of the brand in the 3 day(s) up to the end of the day.",
        ),
        Field(
            name="clicks_3d",
            dtype=Int64,
            description="Clicks on the brand in the 3 day(s) up to the end of the day.",
        ),
        Field(
            name="conversions_3d",
            dtype=Int64,
            description="Conversions of the brand in the 3 day(s) up to the end of the day.",
        ),
        Field(
            name="ctr_3d",
            dtype=Float64,
            description=(
                "Smoothed CTR of the brand in the 3 day(s) up to the end of the day: clicks plus 100 pseudo"
                " impressions at the global CTR of the window, over impressions plus the same."
            ),
        ),
        Field(
            name="cvr_3d",
            dtype=Float64,
            description=(
                "Smoothed CVR (conversions per click) of the brand in the 3 day(s) up to the end of the "
                "day, shrunk towards the global CVR with 200 pseudo clicks."
            ),
        ),
        Field(
            name="impressions_7d",
            dtype=Int64,
            description="Impressions of the brand in the 7 day(s) up to the end of the day.",
        ),
        Field(
            name="clicks_7d",
            dtype=Int64,
            description="Clicks on the brand in the 7 day(s) up to the end of the day.",
        ),
        Field(
            name="conversions_7d",
            dtype=Int64,
            description="Conversions of the brand in the 7 day(s) up to the end of the day.",
        ),
        Field(
            name="ctr_7d",
            dtype=Float64,
            description=(
                "Smoothed CTR of the brand in the 7 day(s) up to the end of the day: clicks plus 100 pseudo"
                " impressions at the global CTR of the window, over impressions plus the same."
            ),
        ),
        Field(
            name="cvr_7d",
            dtype=Float64,
            description=(
                "Smoothed CVR (conversions per click) of the brand in the 7 day(s) up to the end of the "
                "day, shrunk towards the global CVR with 200 pseudo clicks."
            ),
        ),
    ],
    source=brand_features_source,
    online=True,
    description="Per brand and day: counters and smoothed CTR/CVR.",
    tags={
        "generated_by": "taobao_assets.feast_repo",
        "dagster_asset_key": "gold/brand_features",
        "table": "gold.brand_features",
        "layer": "gold",
    },
)

category_features = FeatureView(
    name="category_features",
    entities=[category],
    ttl=timedelta(days=1),
    schema=[
        Field(name="category_id", dtype=Int64, description="Item category id (Ali-CCP field 206)."),
        Field(
            name="impressions_1d",
            dtype=Int64,
            description="Impressions of the category in the 1 day(s) up to the end of the day.",
        ),
        Field(
            name="clicks_1d",
            dtype=Int64,
            description="Clicks on the category in the 1 day(s) up to the end of the day.",
        ),
        Field(
            name="conversions_1d",
            dtype=Int64,
            description="Conversions of the category in the 1 day(s) up to the end of the day.",
        ),
        Field(
            name="ctr_1d",
            dtype=Float64,
            description=(
                "Smoothed CTR of the category in the 1 day(s) up to the end of the day: clicks plus 100 "
                "pseudo impressions at the global CTR of the window, over impressions plus the same."
            ),
        ),
        Field(
            name="cvr_1d",
            dtype=Float64,
            description=(
                "Smoothed CVR (conversions per click) of the category in the 1 day(s) up to the end of the "
                "day, shrunk towards the global CVR with 200 pseudo clicks."
            ),
        ),
        Field(
            name="impressions_3d",
            dtype=Int64,
            description="Impressions of the category in the 3 day(s) up to the end of the day.",
        ),
        Field(
            name="clicks_3d",
            dtype=Int64,
            description="Clicks on the category in the 3 day(s) up to the end of the day.",
        ),
        Field(
            name="conversions_3d",
            dtype=Int64,
            description="Conversions of the category in the 3 day(s) up to the end of the day.",
        ),
        Field(
            name="ctr_3d",
            dtype=Float64,
            description=(
                "Smoothed CTR of the category in the 3 day(s) up to the end of the day: clicks plus 100 "
                "pseudo impressions at the global CTR of the window, over impressions plus the same."
            ),
        ),
        Field(
            name="cvr_3d",
            dtype=Float64,
            description=(
                "Smoothed CVR (conversions per click) of the category in the 3 day(s) up to the end of the "
                "day, shrunk towards the global CVR with 200 pseudo clicks."
            ),
        ),
        Field(
            name="impressions_7d",
            dtype=Int64,
            description="Impressions of the category in the 7 day(s) up to the end of the day.",
        ),
        Field(
            name="clicks_7d",
            dtype=Int64,
            description="Clicks on the category in the 7 day(s) up to the end of the day.",
        ),
        Field(
            name="conversions_7d",
            dtype=Int64,
            description="Conversions of the category in the 7 day(s) up to the end of the day.",
        ),
        Field(
            name="ctr_7d",
            dtype=Float64,
            description=(
                "Smoothed CTR of the category in the 7 day(s) up to the end of the day: clicks plus 100 "
                "pseudo impressions at the global CTR of the window, over impressions plus the same."
            ),
        ),
        Field(
            name="cvr_7d",
            dtype=Float64,
            description=(
                "Smoothed CVR (conversions per click) of the category in the 7 day(s) up to the end of the "
                "day, shrunk towards the global CVR with 200 pseudo clicks."
            ),
        ),
    ],
    source=category_features_source,
    online=True,
    description="Per item category and day: counters and smoothed CTR/CVR.",
    tags={
        "generated_by": "taobao_assets.feast_repo",
        "dagster_asset_key": "gold/category_features",
        "table": "gold.category_features",
        "layer": "gold",
    },
)

item_features = FeatureView(
    name="item_features",
    entities=[item],
    ttl=timedelta(days=1),
    schema=[
        Field(name="item_id", dtype=Int64, description="Item id (Ali-CCP field 205)."),
        Field(
            name="impressions_1d",
            dtype=Int64,
            description="Impressions of the item in the 1 day(s) up to the end of the day.",
        ),
        Field(
            name="clicks_1d",
            dtype=Int64,
            description="Clicks on the item in the 1 day(s) up to the end of the day.",
        ),
        Field(
            name="conversions_1d",
            dtype=Int64,
            description="Conversions of the item in the 1 day(s) up to the end of the day.",
        ),
        Field(
            name="ctr_1d",
            dtype=Float64,
            description=(
                "Smoothed CTR of the item in the 1 day(s) up to the end of the day: clicks plus 100 pseudo "
                "impressions at the global CTR of the window, over impressions plus the same."
            ),
        ),
        Field(
            name="cvr_1d",
            dtype=Float64,
            description=(
                "Smoothed CVR (conversions per click) of the item in the 1 day(s) up to the end of the day,"
                " shrunk towards the global CVR with 200 pseudo clicks."
            ),
        ),
        Field(
            name="impressions_3d",
            dtype=Int64,
            description="Impressions of the item in the 3 day(s) up to the end of the day.",
        ),
        Field(
            name="clicks_3d",
            dtype=Int64,
            description="Clicks on the item in the 3 day(s) up to the end of the day.",
        ),
        Field(
            name="conversions_3d",
            dtype=Int64,
            description="Conversions of the item in the 3 day(s) up to the end of the day.",
        ),
        Field(
            name="ctr_3d",
            dtype=Float64,
            description=(
                "Smoothed CTR of the item in the 3 day(s) up to the end of the day: clicks plus 100 pseudo "
                "impressions at the global CTR of the window, over impressions plus the same."
            ),
        ),
        Field(
            name="cvr_3d",
            dtype=Float64,
            description=(
                "Smoothed CVR (conversions per click) of the item in the 3 day(s) up to the end of the day,"
                " shrunk towards the global CVR with 200 pseudo clicks."
            ),
        ),
        Field(
            name="impressions_7d",
            dtype=Int64,
            description="Impressions of the item in the 7 day(s) up to the end of the day.",
        ),
        Field(
            name="clicks_7d",
            dtype=Int64,
            description="Clicks on the item in the 7 day(s) up to the end of the day.",
        ),
        Field(
            name="conversions_7d",
            dtype=Int64,
            description="Conversions of the item in the 7 day(s) up to the end of the day.",
        ),
        Field(
            name="ctr_7d",
            dtype=Float64,
            description=(
                "Smoothed CTR of the item in the 7 day(s) up to the end of the day: clicks plus 100 pseudo "
                "impressions at the global CTR of the window, over impressions plus the same."
            ),
        ),
        Field(
            name="cvr_7d",
            dtype=Float64,
            description=(
                "Smoothed CVR (conversions per click) of the item in the 7 day(s) up to the end of the day,"
                " shrunk towards the global CVR with 200 pseudo clicks."
            ),
        ),
    ],
    source=item_features_source,
    online=True,
    description="Per item and day: activity counters and smoothed CTR/CVR.",
    tags={
        "generated_by": "taobao_assets.feast_repo",
        "dagster_asset_key": "gold/item_features",
        "table": "gold.item_features",
        "layer": "gold",
    },
)

shop_features = FeatureView(
    name="shop_features",
    entities=[shop],
    ttl=timedelta(days=1),
    schema=[
        Field(name="shop_id", dtype=Int64, description="Shop id (Ali-CCP field 207)."),
        Field(
            name="impressions_1d",
            dtype=Int64,
            description="Impressions of the shop in the 1 day(s) up to the end of the day.",
        ),
        Field(
            name="clicks_1d",
            dtype=Int64,
            description="Clicks on the shop in the 1 day(s) up to the end of the day.",
        ),
        Field(
            name="conversions_1d",
            dtype=Int64,
            description="Conversions of the shop in the 1 day(s) up to the end of the day.",
        ),
        Field(
            name="ctr_1d",
            dtype=Float64,
            description=(
                "Smoothed CTR of the shop in the 1 day(s) up to the end of the day: clicks plus 100 pseudo "
                "impressions at the global CTR of the window, over impressions plus the same."
            ),
        ),
        Field(
            name="cvr_1d",
            dtype=Float64,
            description=(
                "Smoothed CVR (conversions per click) of the shop in the 1 day(s) up to the end of the day,"
                " shrunk towards the global CVR with 200 pseudo clicks."
            ),
        ),
        Field(
            name="impressions_3d",
            dtype=Int64,
            description="Impressions of the shop in the 3 day(s) up to the end of the day.",
        ),
        Field(
            name="clicks_3d",
            dtype=Int64,
            description="Clicks on the shop in the 3 day(s) up to the end of the day.",
        ),
        Field(
            name="conversions_3d",
            dtype=Int64,
            description="Conversions of the shop in the 3 day(s) up to the end of the day.",
        ),
        Field(
            name="ctr_3d",
            dtype=Float64,
            description=(
                "Smoothed CTR of the shop in the 3 day(s) up to the end of the day: clicks plus 100 pseudo "
                "impressions at the global CTR of the window, over impressions plus the same."
            ),
        ),
        Field(
            name="cvr_3d",
            dtype=Float64,
            description=(
                "Smoothed CVR (conversions per click) of the shop in the 3 day(s) up to the end of the day,"
                " shrunk towards the global CVR with 200 pseudo clicks."
            ),
        ),
        Field(
            name="impressions_7d",
            dtype=Int64,
            description="Impressions of the shop in the 7 day(s) up to the end of the day.",
        ),
        Field(
            name="clicks_7d",
            dtype=Int64,
            description="Clicks on the shop in the 7 day(s) up to the end of the day.",
        ),
        Field(
            name="conversions_7d",
            dtype=Int64,
            description="Conversions of the shop in the 7 day(s) up to the end of the day.",
        ),
        Field(
            name="ctr_7d",
            dtype=Float64,
            description=(
                "Smoothed CTR of the shop in the 7 day(s) up to the end of the day: clicks plus 100 pseudo "
                "impressions at the global CTR of the window, over impressions plus the same."
            ),
        ),
        Field(
            name="cvr_7d",
            dtype=Float64,
            description=(
                "Smoothed CVR (conversions per click) of the shop in the 7 day(s) up to the end of the day,"
                " shrunk towards the global CVR with 200 pseudo clicks."
            ),
        ),
    ],
    source=shop_features_source,
    online=True,
    description="Per shop and day: counters and smoothed CTR/CVR.",
    tags={
        "generated_by": "taobao_assets.feast_repo",
        "dagster_asset_key": "gold/shop_features",
        "table": "gold.shop_features",
        "layer": "gold",
    },
)

user_category_features = FeatureView(
    name="user_category_features",
    entities=[user, category],
    ttl=timedelta(days=1),
    schema=[
        Field(name="user_id", dtype=Int64, description="User id (Ali-CCP field 101)."),
        Field(name="category_id", dtype=Int64, description="Item category id (Ali-CCP field 206)."),
        Field(
            name="impressions_1d",
            dtype=Int64,
            description=(
                "Impressions of the user in the category in the 1 day(s) up to the end of the day."
            ),
        ),
        Field(
            name="clicks_1d",
            dtype=Int64,
            description="Clicks on the user in the category in the 1 day(s) up to the end of the day.",
        ),
        Field(
            name="conversions_1d",
            dtype=Int64,
            description=(
                "Conversions of the user in the category in the 1 day(s) up to the end of the day."
            ),
        ),
        Field(
            name="ctr_1d",
            dtype=Float64,
            description=(
                "Smoothed CTR of the user in the category in the 1 day(s) up to the end of the day: clicks "
                "plus 100 pseudo impressions at the global CTR of the window, over impressions plus the "
                "same."
            ),
        ),
        Field(
            name="cvr_1d",
            dtype=Float64,
            description=(
                "Smoothed CVR (conversions per click) of the user in the category in the 1 day(s) up to the"
                " end of the day, shrunk towards the global CVR with 200 pseudo clicks."
            ),
        ),
        Field(
            name="impressions_3d",
            dtype=Int64,
            description=(
                "Impressions of the user in the category in the 3 day(s) up to the end of the day."
            ),
        ),
        Field(
            name="clicks_3d",
            dtype=Int64,
            description="Clicks on the user in the category in the 3 day(s) up to the end of the day.",
        ),
        Field(
            name="conversions_3d",
            dtype=Int64,
            description=(
                "Conversions of the user in the category in the 3 day(s) up to the end of the day."
            ),
        ),
        Field(
            name="ctr_3d",
            dtype=Float64,
            description=(
                "Smoothed CTR of the user in the category in the 3 day(s) up to the end of the day: clicks "
                "plus 100 pseudo impressions at the global CTR of the window, over impressions plus the "
                "same."
            ),
        ),
        Field(
            name="cvr_3d",
            dtype=Float64,
            description=(
                "Smoothed CVR (conversions per click) of the user in the category in the 3 day(s) up to the"
                " end of the day, shrunk towards the global CVR with 200 pseudo clicks."
            ),
        ),
        Field(
            name="impressions_7d",
            dtype=Int64,
            description=(
                "Impressions of the user in the category in the 7 day(s) up to the end of the day."
            ),
        ),
        Field(
            name="clicks_7d",
            dtype=Int64,
            description="Clicks on the user in the category in the 7 day(s) up to the end of the day.",
        ),
        Field(
            name="conversions_7d",
            dtype=Int64,
            description=(
                "Conversions of the user in the category in the 7 day(s) up to the end of the day."
            ),
        ),
        Field(
            name="ctr_7d",
            dtype=Float64,
            description=(
                "Smoothed CTR of the user in the category in the 7 day(s) up to the end of the day: clicks "
                "plus 100 pseudo impressions at the global CTR of the window, over impressions plus the "
                "same."
            ),
        ),
        Field(
            name="cvr_7d",
            dtype=Float64,
            description=(
                "Smoothed CVR (conversions per click) of the user in the category in the 7 day(s) up to the"
                " end of the day, shrunk towards the global CVR with 200 pseudo clicks."
            ),
        ),
    ],
    source=user_category_features_source,
    online=True,
    description="Per user, item category and day: counters and smoothed CTR/CVR.",
    tags={
        "generated_by": "taobao_assets.feast_repo",
        "dagster_asset_key": "gold/user_category_features",
        "table": "gold.user_category_features",
        "layer": "gold",
    },
)

user_features = FeatureView(
    name="user_features",
    entities=[user],
    ttl=timedelta(days=1),
    schema=[
        Field(name="user_id", dtype=Int64, description="User id (Ali-CCP field 101)."),
        Field(
            name="impressions_1d",
            dtype=Int64,
            description="Impressions of the user in the 1 day(s) up to the end of the day.",
        ),
        Field(
            name="clicks_1d",
            dtype=Int64,
            description="Clicks on the user in the 1 day(s) up to the end of the day.",
        ),
        Field(
            name="conversions_1d",
            dtype=Int64,
            description="Conversions of the user in the 1 day(s) up to the end of the day.",
        ),
        Field(
            name="ctr_1d",
            dtype=Float64,
            description=(
                "Smoothed CTR of the user in the 1 day(s) up to the end of the day: clicks plus 100 pseudo "
                "impressions at the global CTR of the window, over impressions plus the same."
            ),
        ),
        Field(
            name="cvr_1d",
            dtype=Float64,
            description=(
                "Smoothed CVR (conversions per click) of the user in the 1 day(s) up to the end of the day,"
                " shrunk towards the global CVR with 200 pseudo clicks."
            ),
        ),
        Field(
            name="impressions_3d",
            dtype=Int64,
            description="Impressions of the user in the 3 day(s) up to the end of the day.",
        ),
        Field(
            name="clicks_3d",
            dtype=Int64,
            description="Clicks on the user in the 3 day(s) up to the end of the day.",
        ),
        Field(
            name="conversions_3d",
            dtype=Int64,
            description="Conversions of the user in the 3 day(s) up to the end of the day.",
        ),
        Field(
            name="ctr_3d",
            dtype=Float64,
            description=(
                "Smoothed CTR of the user in the 3 day(s) up to the end of the day: clicks plus 100 pseudo "
                "impressions at the global CTR of the window, over impressions plus the same."
            ),
        ),
        Field(
            name="cvr_3d",
            dtype=Float64,
            description=(
                "Smoothed CVR (conversions per click) of the user in the 3 day(s) up to the end of the day,"
                " shrunk towards the global CVR with 200 pseudo clicks."
            ),
        ),
        Field(
            name="impressions_7d",
            dtype=Int64,
            description="Impressions of the user in the 7 day(s) up to the end of the day.",
        ),
        Field(
            name="clicks_7d",
            dtype=Int64,
            description="Clicks on the user in the 7 day(s) up to the end of the day.",
        ),
        Field(
            name="conversions_7d",
            dtype=Int64,
            description="Conversions of the user in the 7 day(s) up to the end of the day.",
        ),
        Field(
            name="ctr_7d",
            dtype=Float64,
            description=(
                "Smoothed CTR of the user in the 7 day(s) up to the end of the day: clicks plus 100 pseudo "
                "impressions at the global CTR of the window, over impressions plus the same."
            ),
        ),
        Field(
            name="cvr_7d",
            dtype=Float64,
            description=(
                "Smoothed CVR (conversions per click) of the user in the 7 day(s) up to the end of the day,"
                " shrunk towards the global CVR with 200 pseudo clicks."
            ),
        ),
        Field(
            name="user_category_id",
            dtype=Int64,
            description=(
                "User profile: user category (field 121), from the user's latest context of the day."
            ),
        ),
        Field(
            name="user_group_id",
            dtype=Int64,
            description="User profile: user group (field 122), from the user's latest context of the day.",
        ),
        Field(
            name="gender_id",
            dtype=Int64,
            description="User profile: gender (field 124), from the user's latest context of the day.",
        ),
        Field(
            name="age_id",
            dtype=Int64,
            description="User profile: age bucket (field 125), from the user's latest context of the day.",
        ),
        Field(
            name="consumption_1_id",
            dtype=Int64,
            description=(
                "User profile: consumption level 1 (field 126), from the user's latest context of the day."
            ),
        ),
        Field(
            name="consumption_2_id",
            dtype=Int64,
            description=(
                "User profile: consumption level 2 (field 127), from the user's latest context of the day."
            ),
        ),
        Field(
            name="occupation_id",
            dtype=Int64,
            description="User profile: occupation (field 128), from the user's latest context of the day.",
        ),
        Field(
            name="geography_id",
            dtype=Int64,
            description="User profile: geography (field 129), from the user's latest context of the day.",
        ),
        Field(
            name="hist_category_distinct",
            dtype=Int64,
            description=(
                "History diversity: distinct category ids the user interacted with in the 14 days before "
                "(field 109_14), from the latest context of the day."
            ),
        ),
        Field(
            name="hist_shop_distinct",
            dtype=Int64,
            description=(
                "History diversity: distinct shop ids the user interacted with in the 14 days before (field"
                " 110_14), from the latest context of the day."
            ),
        ),
        Field(
            name="hist_brand_distinct",
            dtype=Int64,
            description=(
                "History diversity: distinct brand ids the user interacted with in the 14 days before "
                "(field 127_14), from the latest context of the day."
            ),
        ),
        Field(
            name="hist_intention_distinct",
            dtype=Int64,
            description=(
                "History diversity: distinct intention ids the user interacted with in the 14 days before "
                "(field 150_14), from the latest context of the day."
            ),
        ),
    ],
    source=user_features_source,
    online=True,
    description="Per user and day: activity counters, smoothed CTR/CVR, profile and history diversity.",
    tags={
        "generated_by": "taobao_assets.feast_repo",
        "dagster_asset_key": "gold/user_features",
        "table": "gold.user_features",
        "layer": "gold",
    },
)

item_realtime = FeatureView(
    name="item_realtime",
    entities=[item],
    ttl=timedelta(days=1),
    schema=[
        Field(name="item_id", dtype=Int64, description="Item id (Ali-CCP field 205)."),
        Field(
            name="impressions_today",
            dtype=Int64,
            description="Impressions of the item since the start of the UTC day of event_timestamp.",
        ),
        Field(
            name="clicks_today",
            dtype=Int64,
            description="Clicks on the item since the start of the UTC day of event_timestamp.",
        ),
        Field(
            name="conversions_today",
            dtype=Int64,
            description="Conversions of the item since the start of the UTC day of event_timestamp.",
        ),
        Field(
            name="ctr_today",
            dtype=Float64,
            description=(
                "Smoothed CTR of the item since the start of the UTC day of event_timestamp "
                "(taobao_assets.features.smoothed_ctr, 100 pseudo impressions at the global CTR of the "
                "latest gold day, or of the stream itself until there is one)."
            ),
        ),
        Field(
            name="impressions_1h",
            dtype=Int64,
            description="Impressions of the item in the 60 minutes of event time up to event_timestamp.",
        ),
        Field(
            name="clicks_1h",
            dtype=Int64,
            description="Clicks on the item in the 60 minutes of event time up to event_timestamp.",
        ),
        Field(
            name="conversions_1h",
            dtype=Int64,
            description="Conversions of the item in the 60 minutes of event time up to event_timestamp.",
        ),
        Field(
            name="ctr_1h",
            dtype=Float64,
            description=(
                "Smoothed CTR of the item in the 60 minutes of event time up to event_timestamp "
                "(taobao_assets.features.smoothed_ctr, 100 pseudo impressions at the global CTR of the "
                "latest gold day, or of the stream itself until there is one)."
            ),
        ),
    ],
    source=item_realtime_push,
    online=True,
    description="Per item, pushed by the streaming run: today's and last hour's counters and CTR.",
    tags={
        "generated_by": "taobao_assets.feast_repo",
        "dagster_asset_key": "streaming/item_realtime",
        "table": "streaming.item_realtime",
        "layer": "streaming",
    },
)

user_category_realtime = FeatureView(
    name="user_category_realtime",
    entities=[user, category],
    ttl=timedelta(days=1),
    schema=[
        Field(name="user_id", dtype=Int64, description="User id (Ali-CCP field 101)."),
        Field(name="category_id", dtype=Int64, description="Item category id (Ali-CCP field 206)."),
        Field(
            name="impressions_today",
            dtype=Int64,
            description=(
                "Impressions of the user in the item category since the start of the UTC day of "
                "event_timestamp."
            ),
        ),
        Field(
            name="clicks_today",
            dtype=Int64,
            description=(
                "Clicks on the user in the item category since the start of the UTC day of event_timestamp."
            ),
        ),
        Field(
            name="conversions_today",
            dtype=Int64,
            description=(
                "Conversions of the user in the item category since the start of the UTC day of "
                "event_timestamp."
            ),
        ),
        Field(
            name="ctr_today",
            dtype=Float64,
            description=(
                "Smoothed CTR of the user in the item category since the start of the UTC day of "
                "event_timestamp (taobao_assets.features.smoothed_ctr, 100 pseudo impressions at the global"
                " CTR of the latest gold day, or of the stream itself until there is one)."
            ),
        ),
        Field(
            name="impressions_1h",
            dtype=Int64,
            description=(
                "Impressions of the user in the item category in the 60 minutes of event time up to "
                "event_timestamp."
            ),
        ),
        Field(
            name="clicks_1h",
            dtype=Int64,
            description=(
                "Clicks on the user in the item category in the 60 minutes of event time up to "
                "event_timestamp."
            ),
        ),
        Field(
            name="conversions_1h",
            dtype=Int64,
            description=(
                "Conversions of the user in the item category in the 60 minutes of event time up to "
                "event_timestamp."
            ),
        ),
        Field(
            name="ctr_1h",
            dtype=Float64,
            description=(
                "Smoothed CTR of the user in the item category in the 60 minutes of event time up to "
                "event_timestamp (taobao_assets.features.smoothed_ctr, 100 pseudo impressions at the global"
                " CTR of the latest gold day, or of the stream itself until there is one)."
            ),
        ),
    ],
    source=user_category_realtime_push,
    online=True,
    description=(
        "Per user and item category, pushed by the streaming run: today's and last hour's counters and CTR."
    ),
    tags={
        "generated_by": "taobao_assets.feast_repo",
        "dagster_asset_key": "streaming/user_category_realtime",
        "table": "streaming.user_category_realtime",
        "layer": "streaming",
    },
)

user_realtime = FeatureView(
    name="user_realtime",
    entities=[user],
    ttl=timedelta(days=1),
    schema=[
        Field(name="user_id", dtype=Int64, description="User id (Ali-CCP field 101)."),
        Field(
            name="impressions_today",
            dtype=Int64,
            description="Impressions of the user since the start of the UTC day of event_timestamp.",
        ),
        Field(
            name="clicks_today",
            dtype=Int64,
            description="Clicks on the user since the start of the UTC day of event_timestamp.",
        ),
        Field(
            name="conversions_today",
            dtype=Int64,
            description="Conversions of the user since the start of the UTC day of event_timestamp.",
        ),
        Field(
            name="ctr_today",
            dtype=Float64,
            description=(
                "Smoothed CTR of the user since the start of the UTC day of event_timestamp "
                "(taobao_assets.features.smoothed_ctr, 100 pseudo impressions at the global CTR of the "
                "latest gold day, or of the stream itself until there is one)."
            ),
        ),
        Field(
            name="impressions_1h",
            dtype=Int64,
            description="Impressions of the user in the 60 minutes of event time up to event_timestamp.",
        ),
        Field(
            name="clicks_1h",
            dtype=Int64,
            description="Clicks on the user in the 60 minutes of event time up to event_timestamp.",
        ),
        Field(
            name="conversions_1h",
            dtype=Int64,
            description="Conversions of the user in the 60 minutes of event time up to event_timestamp.",
        ),
        Field(
            name="ctr_1h",
            dtype=Float64,
            description=(
                "Smoothed CTR of the user in the 60 minutes of event time up to event_timestamp "
                "(taobao_assets.features.smoothed_ctr, 100 pseudo impressions at the global CTR of the "
                "latest gold day, or of the stream itself until there is one)."
            ),
        ),
    ],
    source=user_realtime_push,
    online=True,
    description="Per user, pushed by the streaming run: today's and last hour's counters and CTR.",
    tags={
        "generated_by": "taobao_assets.feast_repo",
        "dagster_asset_key": "streaming/user_realtime",
        "table": "streaming.user_realtime",
        "layer": "streaming",
    },
)

# Feature services: the views each model consumes.
ctr_model_v1 = FeatureService(
    name="ctr_model_v1",
    features=[
        user_features,
        item_features,
        category_features,
        user_category_features,
    ],
    description="CTR model v1: user, item, category and user x category gold features of the day before.",
    tags={"generated_by": "taobao_assets.feast_repo"},
)

ctr_model_v1_realtime = FeatureService(
    name="ctr_model_v1_realtime",
    features=[
        user_features,
        item_features,
        category_features,
        user_category_features,
        user_realtime,
        item_realtime,
        user_category_realtime,
    ],
    description=(
        "CTR model v1 plus today's and last hour's counters of the user, the item and the user in the "
        "item's category (online)."
    ),
    tags={"generated_by": "taobao_assets.feast_repo"},
)
