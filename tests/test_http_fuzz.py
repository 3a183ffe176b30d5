"""Schemathesis fuzzes the served OpenAPI schema: no generated request may get a 5xx."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

from tests.services import ApiServer


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    place = tmp_path_factory.mktemp("http-fuzz")
    server = ApiServer(place / "serve.log", f"sqlite:///{place}/sessions.sqlite").start()
    yield server
    server.stop()


SHARDS = 4
"""The routes are fuzzed in this many tests (every SHARDS-th route each), which xdist runs side by side."""


@pytest.mark.parametrize("shard", range(SHARDS))
def test_no_generated_request_gets_a_server_error(fuzzed: ApiServer, shard: int) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9  # every route is fuzzed, GET and POST start_session apart
    strategies = []
    for operation in operations[shard::SHARDS]:
        known_key = {"model_key": "q_and_a"} if "{model_key}" in operation.path else None
        strategies += [
            (operation.as_strategy(GenerationMode.POSITIVE), False),
            (operation.as_strategy(GenerationMode.NEGATIVE), True),
            (operation.as_strategy(GenerationMode.POSITIVE, path_parameters=known_key), False),  # past a 404
        ]
    for strategy, negative in strategies:

        @given(case=strategy)
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def no_server_error(case: schemathesis.Case) -> None:
            response = case.call(timeout=30)
            assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text)

        try:
            no_server_error()
        except Unsatisfiable:
            assert negative  # a route with nothing to get wrong (GET /health) has no negative case
