-- Per-day totals of one gold table (${table}) in SQL that Trino and Postgres both run: the
-- cross-engine check (taobao_assets/checks/analytics.py) compares their answers. ${gold} is the
-- engine's name of the gold schema (postgresql.gold in Trino, gold in Postgres). A row of day D
-- is stamped with the end of D, so the days ${first_day_end} .. ${last_day_end} are selected by
-- their end.

SELECT '${table}' AS source, event_timestamp, count(*) AS row_count,
       sum(impressions_1d) AS impressions_1d, sum(clicks_1d) AS clicks_1d,
       sum(conversions_1d) AS conversions_1d,
       sum(impressions_3d) AS impressions_3d, sum(clicks_3d) AS clicks_3d,
       sum(conversions_3d) AS conversions_3d,
       sum(impressions_7d) AS impressions_7d, sum(clicks_7d) AS clicks_7d,
       sum(conversions_7d) AS conversions_7d
FROM ${gold}.${table}
WHERE event_timestamp BETWEEN ${first_day_end} AND ${last_day_end}
GROUP BY event_timestamp;
