"""The manifests and the Dockerfile run commands the code has, with flags it
accepts, environment variables it reads, and the port it listens on; the
probes, the Service and the shutdown budget follow from those settings."""

import pytest
from pydantic import ValidationError

from tests.deploy import dockerfile
from tests.deploy.cli_contract import (
    NON_SETTINGS_ENV,
    VLLM_PASSTHROUGH,
    command,
    options,
    serve_settings,
    settings_env_names,
)
from tests.deploy.manifests import (
    REPO,
    Stack,
    container_env,
    containers,
    loraplex_containers,
    named_port,
    pod_labels,
    references,
    secret_data,
    selects,
    split_args,
)

LORAPLEX_IMAGE = "ghcr.io/loraplex/loraplex"
MIN_GPU_STARTUP_SECONDS = 15 * 60
# Between the server's drain ending and the kubelet's SIGKILL: engine shutdown.
SHUTDOWN_MARGIN_SECONDS = 10
LISTEN_EVERYWHERE = {"0.0.0.0", "::"}


def gateways(stack: Stack):
    found = list(loraplex_containers(stack.objects, "serve"))
    assert found, f"{stack.name}: no container runs `loraplex serve`"
    return found


def settings_of(container: dict, stack: Stack):
    try:
        return serve_settings(container_env(container, stack), container.get("args", []))
    except ValidationError as exc:
        pytest.fail(f"{stack.name}: the gateway's settings do not validate: {exc}")


def test_loraplex_images_run_loraplex_commands(stack: Stack):
    for obj, _, container in containers(stack.objects):
        if container["image"].startswith(LORAPLEX_IMAGE):
            cmd = container.get("command")
            assert cmd and cmd[0] == "loraplex" and len(cmd) == 2, (obj["metadata"], cmd)
            command(cmd[1])  # the subcommand exists


def test_gateway_command_is_the_image_entrypoint(stack: Stack):
    for stage in dockerfile.RUNTIME_STAGES:
        entrypoint = dockerfile.exec_form(stage, "ENTRYPOINT")
        assert entrypoint == ["loraplex", "serve"]
        for _, _, container in gateways(stack):
            assert container["command"] == entrypoint


def test_container_args_are_flags_the_command_accepts(stack: Stack):
    for obj, _, container in loraplex_containers(stack.objects):
        name = container["command"][1]
        known = options(command(name))
        passthrough = VLLM_PASSTHROUGH if name == "serve" else set()
        for flag, _ in split_args(container.get("args", [])):
            assert flag in known or flag in passthrough, (
                f"{stack.name}: {obj['kind']}/{obj['metadata']['name']} passes {flag}, "
                f"which `loraplex {name}` does not accept"
            )


def _loraplex_env_names(stack: Stack) -> dict[str, str]:
    """Every LORAPLEX_* name the stack sets, with where it is set."""
    names = {}
    for obj, _, container in containers(stack.objects):
        for name in container_env(container, stack):
            names[name] = f"{obj['kind']}/{obj['metadata']['name']}"
    for config in stack.of_kind("ConfigMap"):
        for name in config.get("data", {}):
            names[name] = f"ConfigMap/{config['metadata']['name']}"
    for secret in stack.of_kind("Secret"):
        for name in secret_data(secret):
            names[name] = f"Secret/{secret['metadata']['name']}"
    return {n: where for n, where in names.items() if n.startswith("LORAPLEX_")}


def test_loraplex_env_names_are_settings_fields(stack: Stack):
    allowed = settings_env_names() | NON_SETTINGS_ENV.keys()
    for name, where in _loraplex_env_names(stack).items():
        assert name in allowed, f"{stack.name}: {where} sets {name}, which nothing reads"


def test_dockerfile_env_names_are_settings_fields():
    allowed = settings_env_names() | NON_SETTINGS_ENV.keys()
    for stage in dockerfile.RUNTIME_STAGES:
        for name in dockerfile.env(stage):
            if name.startswith("LORAPLEX_"):
                assert name in allowed, f"Dockerfile stage {stage} sets {name}"


def test_non_settings_env_allow_list_is_read_by_the_code():
    for name, reader in NON_SETTINGS_ENV.items():
        assert name not in settings_env_names(), f"{name} is a setting: drop it from the list"
        assert name in (REPO / reader).read_text(), f"{reader} no longer reads {name}"


def test_gateway_settings_validate(stack: Stack):
    for _, _, container in gateways(stack):
        settings = settings_of(container, stack)
        assert settings.host in LISTEN_EVERYWHERE, "probes and the Service need more than loopback"


def test_container_port_is_the_port_the_gateway_listens_on(stack: Stack):
    for obj, _, container in gateways(stack):
        port = settings_of(container, stack).port
        assert named_port(container, "http") == port
        assert [p["containerPort"] for p in container["ports"]] == [port]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            check = container[probe]["httpGet"]
            assert check["path"] == "/health", probe
            assert named_port(container, check["port"]) == port, probe
        services = [
            s for s in stack.of_kind("Service") if selects(s["spec"]["selector"], pod_labels(obj))
        ]
        assert services
        for service in services:
            targets = [named_port(container, p["targetPort"]) for p in service["spec"]["ports"]]
            assert targets == [port]


def test_dockerfile_listens_where_it_exposes():
    for stage in dockerfile.RUNTIME_STAGES:
        settings = serve_settings(dockerfile.env(stage), [])
        assert dockerfile.exposed_ports(stage) == [settings.port]
        assert settings.host in LISTEN_EVERYWHERE
        healthcheck = dockerfile.of_stage(stage, "HEALTHCHECK")[0].value
        assert "/health" in healthcheck and "LORAPLEX_PORT" in healthcheck


def _startup_budget(container: dict) -> int:
    probe = container["startupProbe"]
    return probe["failureThreshold"] * probe.get("periodSeconds", 10)


def test_gpu_startup_budget_covers_loading_a_quantized_model(stacks):
    for _, _, container in gateways(stacks["gpu"]):
        assert _startup_budget(container) >= MIN_GPU_STARTUP_SECONDS


def test_rollout_deadline_covers_the_startup_budget(stack: Stack):
    for obj, _, container in gateways(stack):
        assert obj["spec"].get("progressDeadlineSeconds", 600) >= _startup_budget(container)


def test_termination_grace_covers_the_drain(stack: Stack):
    for _, spec, container in gateways(stack):
        settings = settings_of(container, stack)
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {})
        needed = pre_stop.get("seconds", 0) + settings.drain_seconds + SHUTDOWN_MARGIN_SECONDS
        grace = spec.get("terminationGracePeriodSeconds", 30)
        assert grace >= needed, f"{stack.name}: {grace} s < {needed} s to drain"


def test_every_variable_reference_is_defined(stack: Stack):
    for obj, _, container in containers(stack.objects):
        env = container_env(container, stack)
        for value in container.get("command", []) + container.get("args", []):
            for name in references(value):
                assert name in env, f"{obj['metadata']['name']}: $({name}) is not set"
