-- The day's top 10 shops (field 207) by conversions, then clicks, then impressions (shop id breaks
-- the remaining ties, so the ranking is the same on every run), with the shop's 7-day features
-- from gold: one query over both catalogs, silver in Iceberg and gold in Postgres.
--
-- Run by the analytics asset of the same name for the days ${first_day} .. ${last_day}, whose rows
-- it replaces. Gold's row for day D is stamped with the end of D (midnight UTC
-- after it), so its 7-day window ends with the ranked day.

CREATE SCHEMA IF NOT EXISTS iceberg.analytics;

CREATE TABLE IF NOT EXISTS iceberg.analytics.top_shops_by_conversions (
    day date COMMENT 'UTC day of the impressions',
    rank bigint COMMENT '1 = most conversions that day',
    shop_id bigint COMMENT 'Shop id (field 207)',
    impressions bigint COMMENT 'Impressions of the shop that day',
    clicks bigint COMMENT 'Clicks on the shop that day',
    conversions bigint COMMENT 'Conversions of the shop that day',
    ctr double COMMENT 'clicks / impressions of the day',
    cvr double COMMENT 'conversions / clicks of the day, NULL without clicks',
    impressions_7d bigint COMMENT 'gold.shop_features: impressions in the 7 days up to the end of the day',
    conversions_7d bigint COMMENT 'gold.shop_features: conversions in the 7 days up to the end of the day',
    ctr_7d double COMMENT 'gold.shop_features: smoothed 7-day CTR',
    cvr_7d double COMMENT 'gold.shop_features: smoothed 7-day CVR'
)
COMMENT 'Daily top 10 shops by conversions with their 7-day gold features (analytics asset, Trino)'
WITH (partitioning = ARRAY['day']);

-- The days' new rows: the asset runs this as one MERGE that replaces the rows stored for the days
-- (taobao_assets/assets/analytics.py), so a reader sees the old days or the new ones.
INSERT INTO iceberg.analytics.top_shops_by_conversions
WITH shops AS (
    SELECT day, shop_id, count(*) AS impressions, sum(click) AS clicks, sum(conversion) AS conversions
    FROM iceberg.silver.impressions
    WHERE day BETWEEN ${first_day} AND ${last_day} AND shop_id IS NOT NULL
    GROUP BY day, shop_id
),
ranked AS (
    SELECT
        *,
        row_number() OVER (
            PARTITION BY day ORDER BY conversions DESC, clicks DESC, impressions DESC, shop_id
        ) AS rank
    FROM shops
)
SELECT
    r.day,
    r.rank,
    r.shop_id,
    r.impressions,
    r.clicks,
    r.conversions,
    CAST(r.clicks AS double) / r.impressions AS ctr,
    CAST(r.conversions AS double) / nullif(r.clicks, 0) AS cvr,
    g.impressions_7d,
    g.conversions_7d,
    g.ctr_7d,
    g.cvr_7d
FROM ranked AS r
LEFT JOIN postgresql.gold.shop_features AS g
    ON g.shop_id = r.shop_id
    AND g.event_timestamp = with_timezone(CAST(r.day + INTERVAL '1' DAY AS timestamp(6)), 'UTC')
WHERE r.rank <= 10;

SELECT *
FROM iceberg.analytics.top_shops_by_conversions
WHERE day BETWEEN ${first_day} AND ${last_day}
ORDER BY day, rank;
