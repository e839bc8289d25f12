"""schemathesis over the OpenAPI spec: 200 examples per operation, no server error.

Jobs are only queued here (no coordinator runs), so fuzzing the submit starts no tuning.
schemathesis' own pytest plugin does not run on pytest 9 (it sets a node attribute that pytest
9 removed), so each operation gets a plain hypothesis test over schemathesis' strategy.
"""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from fastapi.testclient import TestClient

from tests.api.conftest import TeamAuth

EXAMPLES_PER_OPERATION = 200

OPERATIONS = [
    "POST /v1/models",
    "GET /v1/models",
    "GET /v1/models/{model_id}",
    "POST /v1/jobs",
    "GET /v1/jobs",
    "GET /v1/jobs/{job_id}",
    "GET /v1/jobs/{job_id}/events",
    "POST /v1/jobs/{job_id}/cancel",
    "GET /v1/jobs/{job_id}/artifact",
    "GET /v1/jobs/{job_id}/manifest",
    "GET /v1/jobs/{job_id}/report",
    "GET /v1/records",
    "GET /v1/records/export",
    "POST /v1/records/import",
    "POST /v1/records/promote",
]


@pytest.fixture(scope="module")
def api_schema(client: TestClient) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", client.app)


def test_every_operation_is_fuzzed(api_schema: schemathesis.BaseSchema) -> None:
    labels = {result.ok().label for result in api_schema.get_all_operations()}
    assert labels == set(OPERATIONS)


@pytest.mark.parametrize("label", OPERATIONS)
def test_no_operation_answers_a_server_error(
    api_schema: schemathesis.BaseSchema, team_a: TeamAuth, label: str
) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None
    answered: list[int] = []

    @hypothesis.given(case=operation.as_strategy())
    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    def call(case: schemathesis.Case) -> None:
        response = case.call(headers=team_a.headers)
        answered.append(response.status_code)
        assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text}"

    call()
    assert len(answered) >= EXAMPLES_PER_OPERATION * 0.9, len(answered)
