"""Fixtures for the observability tests.

- `promtool`: the path of Prometheus's `promtool`, from PATH or where
  `scripts/ensure-promtool.sh` puts it. Missing, the tests fail (they do not
  skip): `make test` runs that script first.
- `live_metrics`: the session gateway's `/metrics` text after a few requests
  through it (an adapter, the base, a name that does not resolve), so the
  per-adapter histograms and vLLM's request metrics have samples.
"""

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.fixtures.engine import BASE_NAME
from tests.observability.promql import REPO

LOCAL_PROMTOOL = REPO / ".loraplex" / "bin" / "promtool"


def run_promtool(promtool: Path, *args: str, stdin: str | None = None, cwd: Path | None = None):
    return subprocess.run(
        [str(promtool), *args], input=stdin, capture_output=True, text=True, cwd=cwd, timeout=60
    )


@pytest.fixture(scope="session")
def promtool() -> Path:
    found = shutil.which("promtool") or (LOCAL_PROMTOOL if LOCAL_PROMTOOL.exists() else None)
    if found is None:
        pytest.fail("promtool not found: run scripts/ensure-promtool.sh")
    return Path(found)


@pytest.fixture(scope="session")
def live_metrics(gateway) -> str:
    with httpx.Client(base_url=gateway.base_url, timeout=60) as http:
        for model, expected in (("alpha", 200), (BASE_NAME, 200), ("no-such-adapter", 404)):
            response = http.post(
                "/v1/chat/completions",
                json={
                    "model": model,
                    "messages": [{"role": "user", "content": "Hello"}],
                    "max_tokens": 4,
                },
            )
            assert response.status_code == expected, response.text
        return http.get("/metrics").text
