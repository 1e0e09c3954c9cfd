"""The kustomizations build, hold what each deployment needs, and every name
one object uses for another (ConfigMaps, Secrets, volumes, selectors, ports,
scale targets, routes) resolves inside the same deployment."""

import json

import pytest
import yaml

from tests.deploy.manifests import (
    K8S,
    NAMESPACE,
    TARGETS,
    Stack,
    containers,
    named_port,
    pod_labels,
    secret_data,
    selects,
    workloads,
)

MONITORING = K8S / "monitoring"
# `kubectl apply` (client side) keeps the whole object in an annotation of at most 256 KiB.
LAST_APPLIED_LIMIT = 256 * 1024


@pytest.mark.parametrize("target", TARGETS)
def test_every_kustomization_builds(builds, target):
    objects = builds[target]
    assert objects, f"k8s/{target} builds to nothing"
    for obj in objects:
        assert {"apiVersion", "kind", "metadata"} <= obj.keys()
        assert obj["metadata"].get("name"), obj


def test_gpu_overlay_deploys_the_gateway_with_its_operations(stacks):
    kinds = {o["kind"] for o in stacks["gpu"].objects}
    assert {
        "Namespace",
        "ConfigMap",
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "PrometheusRule",
        "ScaledObject",
    } <= kinds
    for obj in stacks["gpu"].objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]


def test_monitoring_files_ship_with_the_gpu_overlay(stacks):
    gpu = stacks["gpu"]
    rule = yaml.safe_load((MONITORING / "prometheus-rule.yaml").read_text())
    assert gpu.get("PrometheusRule", rule["metadata"]["name"])["spec"] == rule["spec"]
    dashboards = [
        c for c in gpu.of_kind("ConfigMap") if c["metadata"]["labels"].get("grafana_dashboard")
    ]
    assert len(dashboards) == 1
    (dashboard,) = dashboards
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = dashboard["data"].values()
    assert json.loads(text) == json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert len(json.dumps(dashboard)) < LAST_APPLIED_LIMIT


def test_cpu_overlay_runs_on_a_bare_cluster_without_gpus(stacks):
    cpu = stacks["cpu"]
    kinds = {o["kind"] for o in cpu.objects}
    assert kinds.isdisjoint({"ServiceMonitor", "PrometheusRule", "ScaledObject"})
    assert kinds.isdisjoint({"InferencePool", "HTTPRoute"})
    assert cpu.find("PersistentVolumeClaim", "loraplex-models") is None
    assert "nvidia.com/gpu" not in json.dumps(cpu.objects)
    # Self-contained: its own store, its own (throwaway) credentials, the train Job.
    assert cpu.find("Deployment", "seaweedfs") and cpu.find("Service", "seaweedfs")
    (secret,) = cpu.of_kind("Secret")
    assert secret["metadata"]["name"].startswith("loraplex-secrets")
    assert cpu.find("Job", "loraplex-train-pirate")
    images = {c["image"] for _, _, c in containers(cpu.objects) if "loraplex" in c["image"]}
    assert images and all(image.endswith("-cpu") for image in images)


def test_examples_kustomization_lists_every_example(builds):
    listed = yaml.safe_load((K8S / "examples" / "kustomization.yaml").read_text())["resources"]
    files = sorted(p.name for p in (K8S / "examples").glob("*.yaml") if p.stem != "kustomization")
    assert sorted(listed) == files


def test_workloads_find_their_configmaps_secrets_and_volumes(stack: Stack):
    for obj, spec, container in containers(stack.objects):
        where = f"{stack.name}: {obj['kind']}/{obj['metadata']['name']}"
        for source in container.get("envFrom", []):
            if ref := source.get("configMapRef"):
                assert stack.find("ConfigMap", ref["name"]), f"{where}: {ref}"
            if ref := source.get("secretRef"):
                assert stack.find("Secret", ref["name"]), f"{where}: {ref}"
        for var in container.get("env", []):
            if ref := var.get("valueFrom", {}).get("secretKeyRef"):
                secret = stack.get("Secret", ref["name"])
                assert ref["key"] in secret_data(secret), f"{where}: {ref}"
        volumes = {v["name"] for v in spec.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, f"{where}: mount {mount['name']}"
    for _, spec in workloads(stack.objects):
        for volume in spec.get("volumes", []):
            if claim := volume.get("persistentVolumeClaim"):
                assert stack.find("PersistentVolumeClaim", claim["claimName"]), volume
            if config := volume.get("configMap"):
                assert stack.find("ConfigMap", config["name"]), volume


def _pods_selected(stack: Stack, selector: dict) -> list[tuple[dict, dict]]:
    return [(o, s) for o, s in workloads(stack.objects) if selects(selector, pod_labels(o))]


def test_services_select_pods_and_their_ports(stack: Stack):
    for service in stack.of_kind("Service"):
        pods = _pods_selected(stack, service["spec"]["selector"])
        assert [o["kind"] for o, _ in pods] == ["Deployment"], service["metadata"]["name"]
        container = pods[0][1]["containers"][0]
        for port in service["spec"]["ports"]:
            assert named_port(container, port["targetPort"])


def test_monitor_budget_and_autoscaler_find_the_gateway(stacks):
    gpu = stacks["gpu"]
    gateway = gpu.get("Deployment", "loraplex")
    monitor = gpu.get("ServiceMonitor", "loraplex")
    services = [
        s
        for s in gpu.of_kind("Service")
        if selects(monitor["spec"]["selector"], s["metadata"].get("labels", {}))
    ]
    assert [s["metadata"]["name"] for s in services] == ["loraplex"]
    port_names = {p["name"] for p in services[0]["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
    assert all(e["path"] == "/metrics" for e in monitor["spec"]["endpoints"])

    budget = gpu.get("PodDisruptionBudget", "loraplex")
    assert [o for o, _ in _pods_selected(gpu, budget["spec"]["selector"])] == [gateway]
    assert selects(gateway["spec"]["selector"], pod_labels(gateway))

    target = gpu.get("ScaledObject", "loraplex")["spec"]["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment"
    assert gpu.get("Deployment", target["name"]) is gateway
    assert "replicas" not in gateway["spec"], "the autoscaler owns replicas"


def test_inference_pool_routes_to_the_gateway_pods(stacks):
    gpu = stacks["gpu"]
    pool = gpu.get("InferencePool", "loraplex")
    gateway = gpu.get("Deployment", "loraplex")
    assert [o for o, _ in _pods_selected(gpu, pool["spec"]["selector"])] == [gateway]
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    assert [p["number"] for p in pool["spec"]["targetPorts"]] == [named_port(container, "http")]
    route = gpu.get("HTTPRoute", "loraplex")
    backends = [b for rule in route["spec"]["rules"] for b in rule["backendRefs"]]
    assert [(b["kind"], b["name"]) for b in backends] == [("InferencePool", "loraplex")]
