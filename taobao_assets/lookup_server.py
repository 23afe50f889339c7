"""The project's lookup API over HTTP: the lean online reader behind one small endpoint.

``python -m taobao_assets.lookup_server [--host 127.0.0.1] [--port 6567]`` serves

- ``POST /lookup`` with ``{"service": "ctr_model_v1", "entities": {"user_id": [1, 2], ...}}``:
  the service's features for each row, column-wise and keyed ``<view>__<feature>``, exactly as
  :meth:`taobao_assets.online_read.OnlineReader.read` (and so Feast's ``get_online_features``)
  gives them; an unknown service is a 404, a missing join key a 422 naming it;
- ``GET /health``.

Unlike ``feast serve``, it resolves a service once per registry refresh, not per request. The
handler is ``async`` and calls the reader directly: a lookup is a fraction of a millisecond of
Redis round trip and decoding, less than handing it to a thread pool would cost. One process;
run several behind a load balancer to use more cores.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import Response
from feast.errors import FeatureServiceNotFoundException
from pydantic import BaseModel

from taobao_assets.online_read import OnlineReader
from taobao_assets.resources.feast import FeastResource
from taobao_assets.settings import get_settings

DEFAULT_PORT = 6567


class LookupRequest(BaseModel):
    service: str
    #: Join key -> one value per row.
    entities: dict[str, list[int]]


def make_app(reader: OnlineReader) -> FastAPI:
    app = FastAPI(title="taobao-feature-platform lookup")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/lookup")
    async def lookup(request: LookupRequest) -> Response:
        sizes = {len(values) for values in request.entities.values()}
        if len(sizes) > 1:
            raise HTTPException(422, f"every join key needs as many values; got {sizes}")
        rows = [dict(zip(request.entities, values, strict=True)) for values in zip(*request.entities.values(),
                                                                                    strict=True)]
        try:
            columns: dict[str, list[Any]] = reader.read(request.service, rows)
        except FeatureServiceNotFoundException as error:
            raise HTTPException(404, str(error)) from None
        except ValueError as error:
            raise HTTPException(422, str(error)) from None
        return Response(orjson.dumps(columns), media_type="application/json")

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m taobao_assets.lookup_server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    feast = FeastResource.from_settings(get_settings())
    app = make_app(OnlineReader(feast.store(), feast.redis.client()))
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
