"""``python -m bench`` (``make bench``): every benchmark in turn, each writing bench/results/<name>.*."""

from __future__ import annotations

import importlib
import sys
import time

# trino_scan after silver_gold: it scans the silver table that one leaves in the lakehouse. pipeline
# last: its table also lists every other benchmark's latest ratio.
BENCHMARKS = ["bench.parser", "bench.replay", "bench.silver_gold", "bench.online_lookup", "bench.streaming",
              "bench.pit_retrieval", "bench.pit_scale", "bench.materialize", "bench.trino_scan", "bench.trust",
              "bench.pipeline"]


def main() -> int:
    for name in BENCHMARKS:
        t0 = time.monotonic()
        print(f"== {name}", flush=True)
        importlib.import_module(name).main([])
        print(f"== {name}: done in {time.monotonic() - t0:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
