"""A job store on each backend: a local directory, and SeaweedFS (real S3)."""

import pytest

from loraplex.adapters import open_store
from loraplex.jobs import FineTuningAPI, JobStore


@pytest.fixture(params=["local", "s3"])
def job_store(request, tmp_path) -> JobStore:
    if request.param == "local":
        url = f"file://{tmp_path / 'store'}"
    else:
        url = request.getfixturevalue("s3_store_url")
    return JobStore(open_store(url).backend)


@pytest.fixture
def api(job_store: JobStore) -> FineTuningAPI:
    return FineTuningAPI(job_store, base_name="tiny")


def chat_lines(count: int, bad: dict[int, str] | None = None) -> bytes:
    """`count` chat records as JSONL; `bad` replaces line N (1-based) with raw text."""
    import json

    lines = [
        json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                 {"role": "assistant", "content": f"a{i}"}]})
        for i in range(count)
    ]  # fmt: skip
    for number, text in (bad or {}).items():
        lines[number - 1] = text
    return ("\n".join(lines) + "\n").encode()
