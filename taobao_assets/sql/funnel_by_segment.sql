-- Impression -> click -> conversion funnel per day and user segment (gender, field 124, and age
-- bucket, field 125), counted in events and in distinct users.
--
-- The segment of an impression comes from its user context (silver.user_context, joined on
-- common_feature_index), in the version gold uses too: the latest one with an event time before
-- the end of the impression's day (a context row is valid from its event time until the next
-- version of the same index). An impression whose context is unknown counts under a NULL
-- segment, so a day's rows add up to the day's impressions.
--
-- Run by the analytics asset of the same name for the days ${first_day} .. ${last_day}, whose rows
-- it replaces.

CREATE SCHEMA IF NOT EXISTS iceberg.analytics;

CREATE TABLE IF NOT EXISTS iceberg.analytics.funnel_by_segment (
    day date COMMENT 'UTC day of the impressions',
    gender_id bigint COMMENT 'Gender id (field 124) of the user context, NULL when unknown',
    age_id bigint COMMENT 'Age bucket id (field 125) of the user context, NULL when unknown',
    impressions bigint COMMENT 'Impressions of the segment that day',
    clicks bigint COMMENT 'Clicks among them',
    conversions bigint COMMENT 'Conversions among them',
    users bigint COMMENT 'Distinct users with an impression',
    users_clicking bigint COMMENT 'Distinct users with a click',
    users_converting bigint COMMENT 'Distinct users with a conversion',
    ctr double COMMENT 'clicks / impressions',
    cvr double COMMENT 'conversions / clicks, NULL without clicks',
    conversions_per_impression double COMMENT 'conversions / impressions'
)
COMMENT 'Daily impression -> click -> conversion funnel per gender and age (analytics asset, Trino)'
WITH (partitioning = ARRAY['day']);

-- The days' new rows: the asset runs this as one MERGE that replaces the rows stored for the days
-- (taobao_assets/assets/analytics.py), so a reader sees the old days or the new ones.
INSERT INTO iceberg.analytics.funnel_by_segment
WITH contexts AS (
    SELECT
        common_feature_index,
        user_id,
        gender_id,
        age_id,
        event_time AS valid_from,
        lead(event_time) OVER (
            PARTITION BY common_feature_index ORDER BY event_time, source_file, source_line
        ) AS valid_until
    FROM iceberg.silver.user_context
    WHERE event_time < with_timezone(CAST(${last_day} + INTERVAL '1' DAY AS timestamp(6)), 'UTC')
),
impressions AS (
    SELECT
        i.day,
        i.click,
        i.conversion,
        c.user_id,
        c.gender_id,
        c.age_id
    FROM iceberg.silver.impressions AS i
    LEFT JOIN contexts AS c
        ON c.common_feature_index = i.common_feature_index
        AND c.valid_from < with_timezone(CAST(i.day + INTERVAL '1' DAY AS timestamp(6)), 'UTC')
        AND (c.valid_until IS NULL
             OR c.valid_until >= with_timezone(CAST(i.day + INTERVAL '1' DAY AS timestamp(6)), 'UTC'))
    WHERE i.day BETWEEN ${first_day} AND ${last_day}
)
SELECT
    day,
    gender_id,
    age_id,
    count(*) AS impressions,
    sum(click) AS clicks,
    sum(conversion) AS conversions,
    count(DISTINCT user_id) AS users,
    count(DISTINCT user_id) FILTER (WHERE click = 1) AS users_clicking,
    count(DISTINCT user_id) FILTER (WHERE conversion = 1) AS users_converting,
    CAST(sum(click) AS double) / count(*) AS ctr,
    CAST(sum(conversion) AS double) / nullif(sum(click), 0) AS cvr,
    CAST(sum(conversion) AS double) / count(*) AS conversions_per_impression
FROM impressions
GROUP BY day, gender_id, age_id;

SELECT *
FROM iceberg.analytics.funnel_by_segment
WHERE day BETWEEN ${first_day} AND ${last_day}
ORDER BY day, impressions DESC, gender_id, age_id;
