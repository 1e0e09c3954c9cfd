"""Property-based tests of the gateway's HTTP API (schemathesis on its own
OpenAPI schema): loraplex's routes and vLLM's chat and completions routes
must never answer with a 5xx, whatever the request. At least 500 cases.

(schemathesis' pytest plugin does not run under pytest 9, so the cases are
drawn with hypothesis from each operation's strategy.)
"""

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.fixtures.engine import GatewayProcess

pytestmark = [pytest.mark.engine, pytest.mark.slow]

ROUTES = r"^/v1/(chat/completions|completions|models|adapters.*|files.*|fine_tuning.*)$"
EXAMPLES_PER_ROUTE = 150
MIN_CASES = 500


@pytest.fixture(scope="module")
def fuzzed_gateway(tiny_model_dir, served_store, tmp_path_factory):
    """Generations are kept short, so hundreds of cases stay quick."""
    work = tmp_path_factory.mktemp("fuzzed")
    extra = ["--max-model-len", "128", "--max-tokens-cap", "16", "--max-n", "2"]
    with GatewayProcess(tiny_model_dir, served_store.url, work, extra_args=extra) as gateway:
        yield gateway


def test_no_generated_request_gets_a_server_error(fuzzed_gateway):
    schema = schemathesis.openapi.from_url(f"{fuzzed_gateway.base_url}/openapi.json")
    operations = [result.ok() for result in schema.include(path_regex=ROUTES).get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/adapters/{ref}/load"}
    calls: Counter[str] = Counter()
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_ROUTE,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case) -> None:
            calls[case.operation.label] += 1
            case.call_and_validate(checks=[not_a_server_error], timeout=60)

        fuzz()
    assert sum(calls.values()) >= MIN_CASES, dict(calls)
