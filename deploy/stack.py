"""Command line of the stack manager: ``python -m deploy.stack install|up|status|down|logs``.

Services are started in dependency order (Trino reads Postgres and MinIO) and stopped in reverse.
Every command is idempotent: ``up`` on a running stack only re-checks health.
"""

from __future__ import annotations

import argparse
import sys
import time

from deploy.service import Service, ServiceError
from deploy.services import SERVICES
from taobao_assets.settings import command_settings, get_settings


def _select(names: list[str], *, include_optional: bool) -> list[Service]:
    settings = get_settings()
    known = {cls.name: cls for cls in SERVICES}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown service(s) {unknown}; known: {', '.join(known)}")
    if names:
        chosen = [cls for cls in SERVICES if cls.name in names]
    else:
        chosen = [cls for cls in SERVICES if cls.default or include_optional]
    return [cls(settings) for cls in chosen]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.stack", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    for action, text in [
        ("install", "download/build what the services need into the cache"),
        ("up", "install if needed, start and health-check"),
        ("down", "stop the processes this stack started"),
        ("status", "one line per service: health, port, pid, version"),
    ]:
        p = sub.add_parser(action, help=text)
        p.add_argument("services", nargs="*", help="default: every default service")
    logs = sub.add_parser("logs", help="print the end of a service's log")
    logs.add_argument("service")
    logs.add_argument("-n", "--lines", type=int, default=60)
    args = parser.parse_args(argv)
    command_settings(parser)  # every action reads them: a bad variable is its one line, up front

    if args.action == "logs":
        (service,) = _select([args.service], include_optional=True)
        print(f"# {service.log_path}")
        print(service.log_tail(args.lines))
        return 0

    services = _select(args.services, include_optional=args.action in ("install", "down", "status"))
    try:
        if args.action == "install":
            for s in services:
                t0 = time.monotonic()
                print(f"[{s.name}] install ...", flush=True)
                s.install()
                took = time.monotonic() - t0
                print(f"[{s.name}] installed ({took:.1f}s), version {s.version()}", flush=True)
        elif args.action == "up":
            for s in services:
                t0 = time.monotonic()
                s.start()
                print(f"[{s.name}] up ({time.monotonic() - t0:.1f}s)", flush=True)
        elif args.action == "down":
            for s in reversed(services):
                s.stop()
        elif args.action == "status":
            for s in services:
                print(s.status_line())
    except ServiceError as exc:
        print(f"\nERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
