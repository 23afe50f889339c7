-- Daily CTR and CVR per item category (field 206) and position (field 301), from silver impressions.
--
-- Run by the analytics asset of the same name for the days ${first_day} .. ${last_day}, whose rows
-- it replaces, so a re-run replaces them instead of adding rows. An impression
-- without a category or position is counted under NULL, so a day's rows add up to the day's
-- impressions. cvr is conversions per click (NULL without clicks).

CREATE SCHEMA IF NOT EXISTS iceberg.analytics;

CREATE TABLE IF NOT EXISTS iceberg.analytics.ctr_cvr_by_category_position (
    day date COMMENT 'UTC day of the impressions',
    category_id bigint COMMENT 'Item category id (field 206), NULL when absent',
    position bigint COMMENT 'Position id (field 301), NULL when absent',
    impressions bigint COMMENT 'Impressions of the day in the category at the position',
    clicks bigint COMMENT 'Clicks among them',
    conversions bigint COMMENT 'Conversions among them',
    ctr double COMMENT 'clicks / impressions',
    cvr double COMMENT 'conversions / clicks, NULL without clicks'
)
COMMENT 'Daily CTR and CVR per item category and position (analytics asset, computed by Trino)'
WITH (partitioning = ARRAY['day']);

-- The days' new rows: the asset runs this as one MERGE that replaces the rows stored for the days
-- (taobao_assets/assets/analytics.py), so a reader sees the old days or the new ones.
INSERT INTO iceberg.analytics.ctr_cvr_by_category_position
SELECT
    day,
    category_id,
    position,
    count(*) AS impressions,
    sum(click) AS clicks,
    sum(conversion) AS conversions,
    CAST(sum(click) AS double) / count(*) AS ctr,
    CAST(sum(conversion) AS double) / nullif(sum(click), 0) AS cvr
FROM iceberg.silver.impressions
WHERE day BETWEEN ${first_day} AND ${last_day}
GROUP BY day, category_id, position;

SELECT *
FROM iceberg.analytics.ctr_cvr_by_category_position
WHERE day BETWEEN ${first_day} AND ${last_day}
ORDER BY day, impressions DESC, category_id, position;
