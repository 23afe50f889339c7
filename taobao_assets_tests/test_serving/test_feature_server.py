"""Both HTTP servers (``feast serve`` on the feature repository, and the project's lookup server)
serve what the Python API returns."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from deploy.service import free_port
from taobao_assets.feast_repo import FeastRepo
from taobao_assets.resources.feast import FeastResource
from taobao_assets.retrieval import OnlineFeatures, feature_server, http_lookup, lookup_over_http, lookup_server
from taobao_assets.settings import Settings
from taobao_assets_tests.test_serving.conftest import COLLIDING_PAIRS, serving_env

Lookup = Callable[..., dict[str, Any]]
#: Each server's base URL and the function that asks it for one row.
Servers = dict[str, tuple[str, Lookup]]


@pytest.fixture(scope="module")
def servers(feature_repo: Path, serving_settings: Settings, materialized: dict, generated: FeastRepo
            ) -> Iterator[Servers]:
    env = serving_env(serving_settings)
    by_refs = functools.partial(http_lookup, features=generated.feature_refs("ctr_model_v1"))
    with feature_server(feature_repo, free_port(), env) as feast, lookup_server(free_port(), env) as lean:
        yield {"feast serve": (feast, http_lookup), "feast serve, features named": (feast, by_refs),
               "lookup server": (lean, lookup_over_http)}


@pytest.mark.parametrize("server", ["feast serve", "feast serve, features named", "lookup server"])
@pytest.mark.parametrize("user, category", COLLIDING_PAIRS)
def test_http_server_returns_the_python_apis_values(
    servers: Servers, server: str, applied: FeastResource, user: int, category: int
) -> None:
    url, lookup = servers[server]
    keys = {"user_id": user, "item_id": 5, "category_id": category}
    with requests.Session() as session:
        served = lookup(session, url, "ctr_model_v1", **keys)
    assert served == OnlineFeatures.of(applied).lookup(**keys)
    assert served["user_category_features__impressions_1d"] is not None


def test_feature_server_rejects_an_unknown_service(servers: Servers) -> None:
    with requests.Session() as session, pytest.raises(requests.HTTPError):
        http_lookup(session, servers["feast serve"][0], "no_such_service", user_id=1)


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"service": "no_such_service", "entities": {"user_id": [1]}}, 404, "no_such_service"),
    ({"service": "ctr_model_v1", "entities": {"user_id": [1], "item_id": [2]}}, 422, "needs category_id"),
    ({"service": "ctr_model_v1", "entities": {"user_id": [1, 2], "item_id": [2]}}, 422, "as many values"),
])
def test_lookup_server_answers_a_bad_request_with_its_reason(
    servers: Servers, body: dict, status: int, says: str
) -> None:
    reply = requests.post(f"{servers['lookup server'][0]}/lookup", json=body, timeout=10)
    assert reply.status_code == status and says in reply.json()["detail"]
