"""Point-in-time training set at scale: the platform's offline store alone, 10 M entity rows.

``python -m bench.pit_scale [--rows 10000000] [--days 7] [--repeat 3]`` draws the impressions and
writes their gold as :mod:`bench.pit_retrieval` does (database ``<db>_pit_scale``, Feast project
``pit_scale``), then times ``get_historical_features(entity rows, ctr_model_v1).to_df()`` with the
platform's store ``--repeat`` times: seconds, entity rows/s and the growth of the process's peak
RSS during the call (median, min, max). DuckDB, the reference of ``bench.pit_retrieval``, is not
run: its load and join grew the process by 3.4 GB per million rows there, more than this machine
has at 10 M. Results go to ``bench/results/pit_scale.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench import Spread, machine, markdown_table, write_results
from bench.pit_retrieval import Setup, feast_frame, summary, timed
from taobao_assets.assets.serving import TRAINING_SERVICE


def run(rows: int, days: int, seed: int, repeat: int) -> dict[str, Any]:
    setup = Setup.make("pit_scale", rows, days, seed)
    store = setup.feast.store()
    service = store.get_feature_service(TRAINING_SERVICE)
    entities = setup.entities
    runs = []
    for _ in range(repeat):
        timing, frame = timed(lambda: feast_frame(store, service, entities))
        if len(frame) != rows:
            raise RuntimeError(f"the training set has {len(frame)} rows for {rows} entity rows")
        del frame
        runs.append(timing)
    return {"benchmark": "pit_scale", "service": TRAINING_SERVICE, "entity_rows": rows, "days": days,
            "repeat": repeat, "gold_rows": setup.gold_rows, "setup_s": round(setup.seconds, 1),
            "platform": summary(runs, rows), "machine": machine()}


def markdown(result: dict[str, Any]) -> str:
    side = result["platform"]
    seconds, rss = Spread(**side["seconds"]), Spread(**side["rss_growth_mb"])
    table = markdown_table(["path", "entity rows", "seconds, median (min-max)", "entity rows/s",
                            "peak RSS growth MB, median (min-max)"],
                           [["platform store: get_historical_features(DataFrame).to_df()",
                             f"{result['entity_rows']:,}", seconds.text(".1f"), f"{side['rows_per_s']:,.0f}",
                             rss.text(",.0f")]])
    return ("## Point-in-time training set at scale (bench/pit_scale.py)\n\n"
            f"`{result['service']}` for {result['entity_rows']:,} impressions over {result['days']} days; gold rows "
            f"{result['gold_rows']} (setup {result['setup_s']} s, not timed); {result['repeat']} runs.\n\n" + table
            + f"\nMachine: {result['machine']['cpus']} CPUs, load average {result['machine']['load_average']}.\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pit_scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="entity rows (impressions)")
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3, help="runs (the figures are medians)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.repeat < 3:
        parser.error("--repeat must be at least 3: the figures are medians")
    result = run(args.rows, args.days, args.seed, args.repeat)
    json_path, md_path = write_results("pit_scale", result, markdown(result))
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
