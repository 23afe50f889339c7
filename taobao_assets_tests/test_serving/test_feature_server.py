"""``feast serve`` on the feature repository serves what the Python API returns."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from deploy.service import free_port
from taobao_assets.resources.feast import FeastResource
from taobao_assets.retrieval import OnlineFeatures, feature_server, http_lookup, lookup_over_http, lookup_server
from taobao_assets.settings import Settings
from taobao_assets_tests.test_serving.conftest import COLLIDING_PAIRS, serving_env


@pytest.fixture(scope="module")
def server(feature_repo: Path, serving_settings: Settings, materialized: dict) -> Iterator[str]:
    with feature_server(feature_repo, free_port(), serving_env(serving_settings)) as url:
        yield url


@pytest.mark.parametrize("user, category", COLLIDING_PAIRS)
def test_feature_server_returns_the_python_apis_values(
    server: str, applied: FeastResource, user: int, category: int
) -> None:
    keys = {"user_id": user, "item_id": 5, "category_id": category}
    with requests.Session() as session:
        served = http_lookup(session, server, "ctr_model_v1", **keys)
    assert served == OnlineFeatures.of(applied).lookup(**keys)
    assert served["user_category_features__impressions_1d"] is not None


def test_feature_server_rejects_an_unknown_service(server: str) -> None:
    with requests.Session() as session, pytest.raises(requests.HTTPError):
        http_lookup(session, server, "no_such_service", user_id=1)


@pytest.fixture(scope="module")
def lean_server(serving_settings: Settings, materialized: dict) -> Iterator[str]:
    with lookup_server(free_port(), serving_env(serving_settings)) as url:
        yield url


@pytest.mark.parametrize("user, category", COLLIDING_PAIRS)
def test_lookup_server_returns_the_python_apis_values(
    lean_server: str, applied: FeastResource, user: int, category: int
) -> None:
    keys = {"user_id": user, "item_id": 5, "category_id": category}
    with requests.Session() as session:
        served = lookup_over_http(session, lean_server, "ctr_model_v1", **keys)
    assert served == OnlineFeatures.of(applied).lookup(**keys)
    assert served["user_category_features__impressions_1d"] is not None


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"service": "no_such_service", "entities": {"user_id": [1]}}, 404, "no_such_service"),
    ({"service": "ctr_model_v1", "entities": {"user_id": [1], "item_id": [2]}}, 422, "needs category_id"),
    ({"service": "ctr_model_v1", "entities": {"user_id": [1, 2], "item_id": [2]}}, 422, "as many values"),
])
def test_lookup_server_answers_a_bad_request_with_its_reason(lean_server: str, body: dict, status: int,
                                                             says: str) -> None:
    reply = requests.post(f"{lean_server}/lookup", json=body, timeout=10)
    assert reply.status_code == status and says in reply.json()["detail"]
