-- Daily CTR and CVR per item category (field 206) and position (field 301), from silver impressions.
--
-- Run by the analytics asset of the same name for the days ${first_day} .. ${last_day}: one MERGE
-- replaces the days' rows in one commit, so a re-run replaces them instead of adding rows. An impression
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

MERGE INTO iceberg.analytics.ctr_cvr_by_category_position AS t
USING (
    WITH new_rows AS (
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
        GROUP BY day, category_id, position
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
    INSERT (day, category_id, position, impressions, clicks, conversions, ctr, cvr)
    VALUES (s.day, s.category_id, s.position, s.impressions, s.clicks, s.conversions, s.ctr, s.cvr);

SELECT *
FROM iceberg.analytics.ctr_cvr_by_category_position
WHERE day BETWEEN ${first_day} AND ${last_day}
ORDER BY day, impressions DESC, category_id, position;
