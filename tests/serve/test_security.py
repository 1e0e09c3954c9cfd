"""Access and limits on a gateway with API keys: roles, tenants, input limits,
back-pressure, client disconnects and a graceful SIGTERM."""

import asyncio
import json
import signal
import time

import httpx
import openai
import pytest

from loraplex.serve.auth import hash_key
from tests.fixtures.engine import BASE_NAME, GatewayProcess

pytestmark = pytest.mark.engine

ADMIN, USER, TENANT = "admin-secret", "user-secret", "tenant-secret"
KEYS = [
    {"name": "ops", "sha256": hash_key(ADMIN), "role": "admin"},
    {"name": "app", "sha256": hash_key(USER), "role": "inference"},
    {"name": "team-a", "sha256": hash_key(TENANT), "role": "inference", "adapters": ["alpha*"]},
]
PROMPT = [{"role": "user", "content": "Hello."}]


@pytest.fixture(scope="module")
def secured(tiny_model_dir, served_store, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("secured")
    keys_file = workdir / "keys.json"
    keys_file.write_text(json.dumps(KEYS))
    extra = ["--api-keys-file", str(keys_file), "--max-tokens-cap", "64", "--max-n", "2"]
    extra += ["--max-body-bytes", "65536", "--max-concurrent-per-key", "2"]
    extra += ["--drain-seconds", "30"]
    with GatewayProcess(tiny_model_dir, served_store.url, workdir, extra_args=extra) as process:
        yield process


def client(gateway, key: str | None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=key or "", max_retries=0)


def http(gateway, key: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=gateway.base_url, headers=headers, timeout=60)


def test_no_key_or_a_wrong_key_is_a_401_error_object(secured):
    for key in (None, "not-a-key"):
        response = http(secured, key).post(
            "/v1/chat/completions", json={"model": BASE_NAME, "messages": PROMPT}
        )
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "AuthenticationError"


def test_every_vllm_route_is_behind_the_keys(secured):
    for path in ("/tokenize", "/v1/completions", "/invocations", "/v1/responses"):
        assert http(secured).post(path, json={}).status_code == 401, path
    assert http(secured).get("/v1/models").status_code == 401


def test_health_and_metrics_stay_open(secured):
    assert http(secured).get("/health").status_code == 200
    assert http(secured).get("/metrics").status_code == 200


def test_inference_key_may_not_use_admin_routes_but_admin_may(secured):
    assert http(secured, USER).get("/v1/adapters").status_code == 403
    assert http(secured, ADMIN).get("/v1/adapters").status_code == 200
    answer = client(secured, USER).chat.completions.create(
        model="alpha", messages=PROMPT, max_tokens=4
    )
    assert answer.model == "alpha@1"


def test_a_tenant_sees_others_adapters_exactly_as_missing_ones(secured):
    tenant = client(secured, TENANT)
    assert tenant.chat.completions.create(model="alpha", messages=PROMPT, max_tokens=2).choices
    errors = {}
    for model in ("beta", "no-such-thing"):
        with pytest.raises(openai.NotFoundError) as err:
            tenant.chat.completions.create(model=model, messages=PROMPT, max_tokens=2)
        errors[model] = err.value.body
    assert errors["beta"]["message"].replace("beta", "X") == errors["no-such-thing"][
        "message"
    ].replace("no-such-thing", "X")
    assert {m.id for m in tenant.models.list().data} == {BASE_NAME, "alpha"}


def test_keys_are_never_logged(secured):
    for key in (ADMIN, USER, TENANT):
        assert key not in secured.tail(lines=1_000_000)


def test_limits_name_the_limit(secured):
    c = http(secured, USER)
    body = {"model": BASE_NAME, "messages": PROMPT}
    r = c.post("/v1/chat/completions", json={**body, "max_tokens": 65})
    assert r.status_code == 400 and "limit of 64" in r.json()["error"]["message"]
    r = c.post("/v1/chat/completions", json={**body, "n": 3})
    assert r.status_code == 400 and "limit of 2" in r.json()["error"]["message"]
    r = c.post(
        "/v1/chat/completions",
        json={**body, "messages": [{"role": "user", "content": "x" * 70_000}]},
    )
    assert r.status_code == 413
    r = c.post("/v1/completions", json={"model": BASE_NAME, "prompt": "word " * 3000})
    assert r.status_code == 400 and "1024" in r.json()["error"]["message"]


async def test_a_key_over_its_concurrency_gets_429_with_retry_after(secured):
    async with httpx.AsyncClient(
        base_url=secured.base_url, headers={"Authorization": f"Bearer {USER}"}, timeout=120
    ) as c:
        body = {"model": BASE_NAME, "prompt": "Once", "max_tokens": 64, "ignore_eos": True}
        responses = await asyncio.gather(*(c.post("/v1/completions", json=body) for _ in range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 2 and 429 in statuses, statuses
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.headers["retry-after"] == "1"


def test_sigterm_finishes_running_requests_then_exits_zero(secured):
    """Last in this module: it stops the module's gateway."""
    c = client(secured, USER)
    stream = c.completions.create(
        model="alpha", prompt="Once", max_tokens=60, stream=True, extra_body={"ignore_eos": True}
    )
    first = next(iter(stream))
    secured.proc.send_signal(signal.SIGTERM)
    tokens = 1 + sum(1 for _ in stream)
    assert first.choices and tokens >= 50  # the stream ran to its end
    assert secured.proc.wait(60) == 0


@pytest.fixture
def doomed(tiny_model_dir, served_store, tmp_path):
    with GatewayProcess(tiny_model_dir, served_store.url, tmp_path) as process:
        yield process


def test_engine_death_turns_health_503_and_exits_non_zero(doomed):
    import psutil

    engine = [
        p for p in psutil.Process(doomed.proc.pid).children(recursive=True)
        if "EngineCore" in " ".join(p.cmdline()) or "EngineCore" in p.name()
    ]  # fmt: skip
    assert engine, "no engine process found"
    for p in engine:
        p.kill()
    deadline = time.monotonic() + 5
    status = 200
    while time.monotonic() < deadline and status == 200:
        try:
            status = httpx.get(f"{doomed.base_url}/health", timeout=2).status_code
        except httpx.HTTPError:
            status = -1  # already gone is also not healthy
        time.sleep(0.2)
    assert status != 200
    assert doomed.proc.wait(60) != 0
