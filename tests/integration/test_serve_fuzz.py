"""Property-based fuzzing of `ragtune serve` against its own OpenAPI schema (schemathesis + Hypothesis): for every
operation, a bounded number of generated requests, fitting the schema and not fitting it, sent to the real server;
no answer may be a 5xx, and every answer must have a documented status, content type and a body that fits its
schema."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import patience

pytestmark = [pytest.mark.slow, pytest.mark.integration]

EXAMPLES = 120  # per operation and mode: a few hundred requests per endpoint, about a minute for the whole file
OPERATIONS = [("POST", "/v1/ask"), ("POST", "/v1/feedback"), ("GET", "/v1/whoami"), ("GET", "/healthz"),
              ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/")]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api_schema(served):
    return schemathesis.openapi.from_url(f"{served['url']}/openapi.json")


def test_the_schema_lists_every_operation(api_schema):
    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


CASES = [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS] + \
    [(m, p, GenerationMode.NEGATIVE) for m, p in OPERATIONS if m == "POST"]  # only bodies can be made invalid


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_no_5xx_and_answers_fit_the_schema(api_schema, served, method, path, mode):
    operation = api_schema[path][method]
    statuses: Counter = Counter()
    cases = operation.as_strategy(generation_mode=mode)
    if path == "/v1/feedback" and mode == GenerationMode.POSITIVE:  # half of the votes name a real answer
        rid = httpx.post(f"{served['url']}/v1/ask", json={"question": "What is the name of Marrowfield's internal "
                                                                      "wiki?"}, timeout=patience(20)).json()["request_id"]
        cases = st.tuples(cases, st.booleans()).map(lambda t: _naming(t[0], rid) if t[1] else t[0])

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=cases)
    def fuzz(case) -> None:
        statuses[case.call_and_validate(base_url=served["url"], timeout=patience(20), checks=CHECKS).status_code] += 1

    fuzz()
    if method == "POST":  # the bodies really were many; valid ones were both refused and accepted
        assert sum(statuses.values()) >= EXAMPLES // 2, statuses
        assert len(statuses) >= 2 if mode == GenerationMode.POSITIVE else set(statuses) <= {400, 413}, statuses


def _naming(case, request_id: str):
    if isinstance(case.body, dict):
        case.body["request_id"] = request_id
    return case
