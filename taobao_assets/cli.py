"""``python -m taobao_assets.cli``: the user-facing commands of the platform.

``demo`` is what ``make demo`` runs once the stack is up: the whole pipeline end to end
(:mod:`taobao_assets.demo`), a summary, then the Dagster UI on the project's workspace;
``freshness`` prints how long the latest day's samples took from event time to each layer.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from taobao_assets.instance import prepare_home
from taobao_assets.settings import REPO_ROOT, command_settings, get_settings


def demo(rows: int, open_ui: bool, source: Path | None, limit: int | None, summary_json: Path | None) -> int:
    from taobao_assets.console import DemoLog, StageConsole

    settings = get_settings()
    console = StageConsole()
    with DemoLog(settings.logs_dir) as log:
        console.print(f"taobao-feature-platform demo; Dagster's events and details go to {log.path}")
        from taobao_assets.definitions import build_definitions
        from taobao_assets.demo import StageFailed, print_summary, run_demo, summary_facts, write_summary

        try:
            summary = run_demo(settings, build_definitions(settings), console, rows, source, limit)
        except StageFailed as failure:
            print(failure.report(log.path), file=sys.stderr)
            return 1
        facts = summary_facts(settings)
    print_summary(summary, settings, facts, log.path)
    if summary_json is not None:
        write_summary(summary_json, summary, facts)
    if summary.checks_failed:
        return 1
    return open_dagster_ui() if open_ui else 0


def open_dagster_ui() -> int:
    settings = get_settings()
    env = dict(os.environ, DAGSTER_HOME=str(prepare_home(settings)))
    print(f"Dagster UI: http://127.0.0.1:{settings.dagster_port}  (Ctrl-C to stop)", flush=True)
    dagster = Path(sys.executable).parent / "dagster"
    os.execve(
        dagster,
        [str(dagster), "dev", "-w", str(REPO_ROOT / "workspace.yaml"), "-h", "127.0.0.1",
         "-p", str(settings.dagster_port)],
        env,
    )


def freshness(day: str | None) -> int:
    """Print the freshness per hop of ``day``'s samples (default: the latest day bronze holds)."""
    from taobao_assets.demo import latest_freshness

    hops = latest_freshness(get_settings(), day)
    if hops is None:
        print("no day has bronze samples yet: run the demo (or the daily batch job) first", file=sys.stderr)
        return 1
    print(hops.table())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m taobao_assets.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("demo", help="run the whole pipeline on the running stack, then open the Dagster UI")
    run.add_argument("--rows", type=int, default=300_000,
                     help="sample lines of the generated data set, when TFP_SOURCE_DIR holds no raw files")
    run.add_argument("--source", type=Path,
                     help="folder with the four raw Ali-CCP files (default TFP_SOURCE_DIR; generated when empty)")
    run.add_argument("--limit", type=int,
                     help="use only the first N samples (half from each split) and the users they reference")
    run.add_argument("--summary-json", type=Path, help="also write the summary to this JSON file")
    run.add_argument("--no-ui", action="store_true", help="print the summary and exit")
    sub.add_parser("ui", help="open the Dagster UI on the project's instance")
    hops = sub.add_parser("freshness", help="print how long a day's samples took from event time to each layer")
    hops.add_argument("--day", help="the day (YYYY-MM-DD; default: the latest day bronze holds)")
    args = parser.parse_args(argv)
    command_settings(parser)  # every command reads them: a bad variable is its one line, up front
    if args.command == "demo":
        return demo(args.rows, open_ui=not args.no_ui, source=args.source, limit=args.limit,
                    summary_json=args.summary_json)
    if args.command == "freshness":
        return freshness(args.day)
    return open_dagster_ui()


if __name__ == "__main__":
    sys.exit(main())
