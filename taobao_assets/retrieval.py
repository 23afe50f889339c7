"""Online feature lookup: a feature service's values for one impression's entities, from Redis.

Python::

    from taobao_assets.retrieval import OnlineFeatures
    features = OnlineFeatures.from_settings().lookup(user_id=123, item_id=456, category_id=7)

CLI::

    python -m taobao_assets.retrieval online --user 123 --item 456 --category 7 [--service ctr_model_v1]

Values are keyed ``<view>__<feature>`` (several views share feature names such as ``ctr_7d``).
A service needs the join keys of all its views; one left out is an error naming the views that
need it, rather than a silent row of nulls.

The same lookup over HTTP: ``python -m taobao_assets.lookup_server`` serves it (:func:`lookup_server`
runs it, :func:`lookup_over_http` asks it); Feast's own server works too, slower:
:func:`feature_server` runs ``feast serve`` on a feature repository (``feature_repo/`` after
``python -m taobao_assets.feast_repo write-config``) and :func:`http_lookup` asks its
``POST /get-online-features``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from feast.errors import FeatureServiceNotFoundException

from deploy.service import stop_process_group
from taobao_assets.feast_repo import FEATURE_SERVICES
from taobao_assets.gold_tables import GOLD_TABLES
from taobao_assets.online_read import OnlineReader
from taobao_assets.resources.feast import FeastResource
from taobao_assets.settings import get_settings

DEFAULT_SERVICE = "ctr_model_v1"
#: The services the CLI can read: those the project generates and the Feast apply job registers.
#: Known without the registry, so an unknown name is refused before a server is asked (Feast's
#: own answer to it is a traceback from deep inside the registry).
SERVICES = tuple(spec.name for spec in FEATURE_SERVICES)
#: Every join key a gold table declares: one CLI option each (``user_id`` -> ``--user``).
ENTITY_KEYS = sorted({key.name for table in GOLD_TABLES for key in table.keys})


@dataclass
class OnlineFeatures:
    """The project's lookup API: the lean reader of :mod:`taobao_assets.online_read` (the values
    ``get_online_features`` gives, read without its per-call Python)."""

    reader: OnlineReader

    @classmethod
    def of(cls, feast: FeastResource) -> OnlineFeatures:
        return cls(OnlineReader(feast.store(), feast.redis.client()))

    @classmethod
    def from_settings(cls) -> OnlineFeatures:
        return cls.of(FeastResource.from_settings(get_settings()))

    def lookup(self, service: str = DEFAULT_SERVICE, **keys: int) -> dict[str, Any]:
        """The service's features for one entity row; ``keys`` are join keys (``user_id=...``)."""
        row = {k: v for k, v in keys.items() if v is not None}
        return {name: values[0] for name, values in self.reader.read(service, [row]).items()}


@contextmanager
def http_process(command: list[str], url: str, what: str, env: dict[str, str] | None = None,
                 timeout: float = 120.0) -> Iterator[str]:
    """``command`` (an HTTP server at ``url``) running while the block runs, from the moment its
    ``/health`` answers; yields ``url``. It is its own process group, stopped (SIGTERM, then
    SIGKILL) with its workers; ``what`` names it in errors."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited with {process.returncode}: "
                                   f"{(process.stderr.read() if process.stderr else '')[-2000:]}")
            try:
                if requests.get(f"{url}/health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not healthy at {url} after {timeout:.0f} s")
            time.sleep(0.25)
        yield url
    finally:
        stop_process_group(process, wait=10)


def feature_server(repo: Path, port: int, env: dict[str, str] | None = None, timeout: float = 120.0
                   ) -> AbstractContextManager[str]:
    """``feast serve`` on ``repo`` at 127.0.0.1:``port`` while the block runs; yields its base URL."""
    feast = Path(sys.executable).parent / "feast"
    command = [str(feast), "-c", str(repo), "serve", "-h", "127.0.0.1", "-p", str(port), "--no-access-log",
               "--max-requests", "0"]
    return http_process(command, f"http://127.0.0.1:{port}", f"feast serve on {repo}", env, timeout)


def lookup_server(port: int, env: dict[str, str] | None = None, timeout: float = 60.0
                  ) -> AbstractContextManager[str]:
    """The project's lookup server (:mod:`taobao_assets.lookup_server`) while the block runs."""
    command = [sys.executable, "-m", "taobao_assets.lookup_server", "--port", str(port)]
    return http_process(command, f"http://127.0.0.1:{port}", "the lookup server", env, timeout)


def lookup_over_http(session: requests.Session, url: str, service: str, **keys: int) -> dict[str, Any]:
    """:meth:`OnlineFeatures.lookup` through the lookup server: the same names, the same values."""
    reply = session.post(f"{url}/lookup", json={"service": service, "entities": {k: [v] for k, v in keys.items()}},
                         timeout=10)
    reply.raise_for_status()
    return {name: values[0] for name, values in reply.json().items()}


def http_lookup(session: requests.Session, url: str, service: str, features: list[str] | None = None,
                **keys: int) -> dict[str, Any]:
    """:meth:`OnlineFeatures.lookup` through a feature server: the same names, the same values.

    With ``features`` (the service's ``view:feature`` references) the request names them instead
    of the service: ``feast serve`` then skips its registry lookup of the service, about 6 ms a
    request in Feast 0.67 (it rebuilds the service object from the registry's protobuf each time).
    """
    wanted: dict[str, Any] = {"features": features} if features else {"feature_service": service}
    reply = session.post(f"{url}/get-online-features", json={
        **wanted, "entities": {k: [v] for k, v in keys.items()}, "full_feature_names": True,
    }, timeout=10)
    reply.raise_for_status()
    body = reply.json()
    return {name: result["values"][0]
            for name, result in zip(body["metadata"]["feature_names"], body["results"], strict=True)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m taobao_assets.retrieval", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    online = sub.add_parser("online", help="one entity row's features of a feature service, from Redis")
    online.add_argument("--service", default=DEFAULT_SERVICE,
                        help=f"one of {', '.join(SERVICES)} (default: %(default)s)")
    for key in ENTITY_KEYS:
        online.add_argument(f"--{key.removesuffix('_id')}", type=int, dest=key, help=f"{key} (join key)")
    args = parser.parse_args(argv)
    if args.service not in SERVICES:
        print(f"error: --service {args.service!r} is not a feature service of this project: "
              f"use one of {', '.join(SERVICES)}", file=sys.stderr)
        return 2
    keys = {k: getattr(args, k) for k in ENTITY_KEYS}
    try:
        values = OnlineFeatures.from_settings().lookup(args.service, **keys)
    except FeatureServiceNotFoundException as error:  # a service of the project, not applied yet
        print(f"error: {error}: register the project's services first (Dagster's feast_apply_job; "
              f"the demo runs it)", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(values, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
