-- Two scans and aggregations of silver impressions: what bench/trino_scan.py times in Trino and
-- in DuckDB over the same Parquet files (handy queries on their own too). ${impressions} is the
-- engine's name of the table.

-- 1. Counts and sums per day and position: a scan with a small hash aggregation.
SELECT
    day,
    position,
    count(*) AS impressions,
    sum(click) AS clicks,
    sum(conversion) AS conversions,
    sum(comb_508_value) AS comb_508_value_sum
FROM ${impressions}
GROUP BY day, position
ORDER BY day, position;

-- 2. Distinct categories and shops per day and position: exact distinct counts, which need a
--    hash table of every (group, id) pair.
SELECT
    day,
    position,
    count(DISTINCT category_id) AS categories,
    count(DISTINCT shop_id) AS shops
FROM ${impressions}
GROUP BY day, position
ORDER BY day, position;
