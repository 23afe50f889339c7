"""``python -m taobao_assets.cli``: the user-facing commands of the platform.

``demo`` is what ``make demo`` runs once the stack is up: it opens the Dagster UI on the project's
workspace. Later stages (synthetic data, replay, backfill, Feast) plug in here.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from taobao_assets.settings import REPO_ROOT, get_settings


def demo() -> int:
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
    sub.add_parser("demo", help="open the Dagster UI on the running stack")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo()
    return 2


if __name__ == "__main__":
    sys.exit(main())
