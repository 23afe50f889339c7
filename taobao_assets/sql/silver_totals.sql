-- Per-day totals of the silver tables in SQL that Trino and Spark both run: the cross-engine
-- check (taobao_assets/checks/analytics.py) compares their answers. ${silver} is the engine's
-- name of the silver namespace (iceberg.silver in Trino, <iceberg_catalog>.silver in Spark).

SELECT 'silver.impressions' AS source, day, count(*) AS row_count, sum(click) AS clicks,
       sum(conversion) AS conversions, count(DISTINCT sample_id) AS sample_ids
FROM ${silver}.impressions
WHERE day BETWEEN ${first_day} AND ${last_day}
GROUP BY day;

SELECT 'silver.user_context' AS source, day, count(*) AS row_count, count(user_id) AS with_user_id,
       count(DISTINCT common_feature_index) AS common_feature_indexes
FROM ${silver}.user_context
WHERE day BETWEEN ${first_day} AND ${last_day}
GROUP BY day;

SELECT 'silver.quarantine' AS source, day, count(*) AS row_count
FROM ${silver}.quarantine
WHERE day BETWEEN ${first_day} AND ${last_day}
GROUP BY day;
