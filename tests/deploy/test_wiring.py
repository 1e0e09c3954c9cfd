"""The parts agree with each other: the train Job trains for the gateway's base
and rank and publishes where it reads; the store the CPU overlay points at is
the SeaweedFS it deploys, with the bucket created; the autoscaler queries the
job and namespace Prometheus scrapes; the alerts watch that job; the API keys
parse as the gateway parses them."""

import re
from urllib.parse import urlparse

import pytest

from loraplex.serve.auth import load_keys
from loraplex.trainer.cli import FLAG_SETTINGS
from loraplex.trainer.config import load_config
from tests.deploy.cli_contract import command, flag_values, serve_settings
from tests.deploy.manifests import (
    Stack,
    container_env,
    expand,
    loraplex_containers,
    mounted_configmap_file,
    secret_data,
)


def _gateway_settings(stack: Stack):
    ((_, _, gateway),) = loraplex_containers(stack.objects, "serve")
    return serve_settings(container_env(gateway, stack), gateway.get("args", []))


def test_train_job_config_validates_for_the_gateways_base_and_rank(stack: Stack, tmp_path):
    gateway = _gateway_settings(stack)
    jobs = list(loraplex_containers(stack.objects, "train"))
    assert jobs, f"{stack.name}: no train Job"
    for _, spec, container in jobs:
        env = container_env(container, stack)
        args = [expand(arg, env) for arg in container.get("args", [])]
        flags = flag_values(command("train"), args)
        config_text = mounted_configmap_file(flags.pop("config"), container, spec, stack)
        assert config_text, "--config names no file of a mounted ConfigMap"
        (tmp_path / "train.yaml").write_text(config_text)
        overrides = {FLAG_SETTINGS[k]: v for k, v in flags.items() if k in FLAG_SETTINGS}
        config = load_config(tmp_path / "train.yaml", overrides)

        for path in config.data.train + config.data.eval:
            assert mounted_configmap_file(str(path), container, spec, stack), path
        assert config.base_model == gateway.base_model
        assert config.output.max_rank == gateway.max_lora_rank
        assert config.lora.r <= gateway.max_lora_rank
        assert config.output.store == gateway.store
        assert config.output.publish, "the example publishes what it trains"


def test_api_keys_parse_as_the_gateway_parses_them(stack: Stack):
    values = [
        data["LORAPLEX_API_KEYS"]
        for secret in stack.of_kind("Secret")
        if "LORAPLEX_API_KEYS" in (data := secret_data(secret))
    ]
    assert values, f"{stack.name}: no Secret carries LORAPLEX_API_KEYS"
    for value in values:
        keys = load_keys(None, value)
        assert keys and all(k.role in {"inference", "admin"} for k in keys)


def _scrape_job(stack: Stack) -> str:
    """The `job` label the ServiceMonitor gives the gateway's series."""
    monitor = stack.get("ServiceMonitor", "loraplex")
    service = stack.get("Service", "loraplex")
    return service["metadata"]["labels"][monitor["spec"]["jobLabel"]]


def _selector_values(expr: str, label: str) -> set[str]:
    return set(re.findall(rf'\b{label}="([^"]*)"', expr))


def test_alerts_watch_the_scraped_job(stacks):
    gpu = stacks["gpu"]
    job = _scrape_job(gpu)
    rule = gpu.get("PrometheusRule", "loraplex")
    exprs = [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]]
    jobs = set().union(*(_selector_values(e, "job") for e in exprs))
    assert jobs == {job}


def test_autoscaler_queries_the_scraped_queue_of_its_own_namespace(stacks):
    gpu = stacks["gpu"]
    scaled = gpu.get("ScaledObject", "loraplex")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    assert "vllm:num_requests_waiting" in query
    assert _selector_values(query, "job") == {_scrape_job(gpu)}
    assert _selector_values(query, "namespace") == {scaled["metadata"]["namespace"]}
    assert float(trigger["metadata"]["threshold"]) > 0
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]


def test_cpu_store_is_the_in_cluster_seaweedfs_with_its_bucket(stacks):
    cpu = stacks["cpu"]
    ((_, _, gateway),) = loraplex_containers(cpu.objects, "serve")
    env = container_env(gateway, cpu)
    endpoint = urlparse(env["LORAPLEX_S3_ENDPOINT_URL"])
    service = cpu.get("Service", endpoint.hostname)
    assert endpoint.port in [p["port"] for p in service["spec"]["ports"]]

    bucket = urlparse(_gateway_settings(cpu).store).netloc
    store = cpu.get("Deployment", service["metadata"]["name"])
    (container,) = store["spec"]["template"]["spec"]["containers"]
    script = " ".join(container["lifecycle"]["postStart"]["exec"]["command"])
    assert f"s3.bucket.create -name {bucket}" in script
    # SeaweedFS takes its admin identity from the keys the gateway signs with.
    store_env = {v["name"]: v["valueFrom"]["secretKeyRef"] for v in container["env"]}
    gateway_secret = next(s["secretRef"]["name"] for s in gateway["envFrom"] if "secretRef" in s)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert store_env[name] == {"name": gateway_secret, "key": name}


@pytest.mark.parametrize("variable", ["LORAPLEX_STORE", "LORAPLEX_BASE_MODEL"])
def test_gateway_and_trainer_read_one_configmap(stack: Stack, variable):
    """One place to change the store or the base: both read loraplex-settings."""
    sources = set()
    for _, _, container in loraplex_containers(stack.objects):
        refs = [s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s]
        assert any(variable in stack.get("ConfigMap", r)["data"] for r in refs)
        sources.update(refs)
    assert sources == {"loraplex-settings"}


def test_worker_autoscaler_follows_the_fine_tuning_queue_of_its_namespace(stacks):
    gpu = stacks["gpu"]
    scaled = gpu.get("ScaledObject", "loraplex-worker")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "loraplex-worker"
    (trigger,) = scaled["spec"]["triggers"]
    query = trigger["metadata"]["query"]
    assert "loraplex_fine_tuning_jobs_queued" in query
    assert 'status="running"' in query  # a running job keeps its worker
    assert _selector_values(query, "job") == {_scrape_job(gpu)}
    assert _selector_values(query, "namespace") == {scaled["metadata"]["namespace"]}
    assert scaled["spec"]["minReplicaCount"] == 0 < scaled["spec"]["maxReplicaCount"]


@pytest.mark.parametrize("stack_name", ["gpu", "cpu"])
def test_worker_trains_the_gateways_base_in_the_gateways_store(stacks, stack_name):
    stack = stacks[stack_name]
    ((_, _, worker),) = loraplex_containers(stack.objects, "worker")
    env = container_env(worker, stack)
    args = {a.split("=", 1)[0]: expand(a.split("=", 1)[1], env) for a in worker["args"]}
    settings = _gateway_settings(stack)
    assert args["--base-model"] == settings.base_model
    assert args["--store"] == settings.store
    assert int(args["--max-rank"]) == settings.max_lora_rank
    assert not settings.runs_embedded_worker(settings.store)  # the Deployment runs them
    options = command("worker").params
    assert {o for p in options for o in p.opts} >= set(args)
