"""``python -m taobao_assets.cli``: the user-facing commands of the platform.

``demo`` is what ``make demo`` runs once the stack is up: the whole pipeline end to end
(:mod:`taobao_assets.demo`), a summary, then the Dagster UI on the project's workspace.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from taobao_assets.settings import REPO_ROOT, get_settings


def demo(rows: int, open_ui: bool) -> int:
    from taobao_assets.definitions import defs
    from taobao_assets.demo import StageFailed, print_summary, run_demo, summary_facts

    settings = get_settings()
    try:
        summary = run_demo(settings, defs, rows)
    except StageFailed as failure:
        print(f"\nFAILED: {failure}\nService logs: {settings.logs_dir}", file=sys.stderr)
        return 1
    print_summary(summary, settings, summary_facts(settings, defs))
    if summary.checks_failed:
        return 1
    return open_dagster_ui() if open_ui else 0


def open_dagster_ui() -> int:
    settings = get_settings()
    dagster_home = settings.state_dir / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, DAGSTER_HOME=str(dagster_home))
    print(f"Dagster UI: http://127.0.0.1:{settings.dagster_port}  (Ctrl-C to stop)", flush=True)
    dagster = Path(sys.executable).parent / "dagster"
    os.execve(
        dagster,
        [str(dagster), "dev", "-w", str(REPO_ROOT / "workspace.yaml"), "-h", "127.0.0.1",
         "-p", str(settings.dagster_port)],
        env,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m taobao_assets.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("demo", help="run the whole pipeline on the running stack, then open the Dagster UI")
    run.add_argument("--rows", type=int, default=300_000,
                     help="sample lines of the generated data set, when TFP_SOURCE_DIR holds no raw files")
    run.add_argument("--no-ui", action="store_true", help="print the summary and exit")
    sub.add_parser("ui", help="open the Dagster UI on the project's instance")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.rows, open_ui=not args.no_ui)
    return open_dagster_ui()


if __name__ == "__main__":
    sys.exit(main())
