-- The day's top 10 shops (field 207) by conversions, then clicks, then impressions (shop id breaks
-- the remaining ties, so the ranking is the same on every run), with the shop's 7-day features
-- from gold: one query over both catalogs, silver in Iceberg and gold in Postgres.
--
-- Run by the analytics asset of the same name for the days ${first_day} .. ${last_day}, whose rows
-- one MERGE replaces in one commit. Gold's row for day D is stamped with the end of D (midnight UTC
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

MERGE INTO iceberg.analytics.top_shops_by_conversions AS t
USING (
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
    ),
    new_rows AS (
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
        WHERE r.rank <= 10
    )
    -- one row per day to replace: it matches (and deletes) every stored row of its day
    SELECT d.day AS replaced_day, n.*
    FROM UNNEST(sequence(${first_day}, ${last_day})) AS d (day)
    LEFT JOIN new_rows AS n ON false
    UNION ALL
    -- the day's new rows: they match nothing and are inserted
    SELECT CAST(NULL AS date), n.*
    FROM new_rows AS n
) AS s
ON t.day = s.replaced_day
WHEN MATCHED THEN DELETE
WHEN NOT MATCHED AND s.replaced_day IS NULL THEN
    INSERT (day, rank, shop_id, impressions, clicks, conversions, ctr, cvr, impressions_7d, conversions_7d, ctr_7d, cvr_7d)
    VALUES (s.day, s.rank, s.shop_id, s.impressions, s.clicks, s.conversions, s.ctr, s.cvr, s.impressions_7d, s.conversions_7d, s.ctr_7d, s.cvr_7d);

SELECT *
FROM iceberg.analytics.top_shops_by_conversions
WHERE day BETWEEN ${first_day} AND ${last_day}
ORDER BY day, rank;
