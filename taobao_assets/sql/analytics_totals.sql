-- Per-day totals of the analytics tables in SQL that Trino (which wrote them) and Spark both run:
-- the cross-engine check (taobao_assets/checks/analytics.py) compares their answers, and the
-- impressions, clicks and conversions of the first two with silver's. ${analytics} is the
-- engine's name of the analytics namespace.

SELECT 'analytics.ctr_cvr_by_category_position' AS source, day, count(*) AS row_count,
       sum(impressions) AS impressions, sum(clicks) AS clicks, sum(conversions) AS conversions
FROM ${analytics}.ctr_cvr_by_category_position
WHERE day BETWEEN ${first_day} AND ${last_day}
GROUP BY day;

SELECT 'analytics.funnel_by_segment' AS source, day, count(*) AS row_count,
       sum(impressions) AS impressions, sum(clicks) AS clicks, sum(conversions) AS conversions
FROM ${analytics}.funnel_by_segment
WHERE day BETWEEN ${first_day} AND ${last_day}
GROUP BY day;

SELECT 'analytics.top_shops_by_conversions' AS source, day, count(*) AS row_count,
       sum(impressions) AS impressions, sum(clicks) AS clicks, sum(conversions) AS conversions
FROM ${analytics}.top_shops_by_conversions
WHERE day BETWEEN ${first_day} AND ${last_day}
GROUP BY day;
