"""Every built object validates: built-in kinds against the Kubernetes API
schemas (kubernetes-validate, strict: unknown fields are errors), custom
resources against the CRD schemas kept in k8s/crds (jsonschema, with unknown
fields refused the way `kubectl apply --validate=strict` refuses them)."""

import copy
import re
from functools import cache

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.manifests import CRDS, REPO, SECRET_EXAMPLE, TARGETS, load_yaml_file

# The oldest Kubernetes the manifests support (the preStop `sleep` action is
# on by default from 1.30) and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30", "1.37")


@cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) → the strict JSON schema of that custom resource."""
    schemas = {}
    for path in sorted(CRDS.glob("*.yaml")):
        (crd,) = load_yaml_file(path)
        for version in crd["spec"]["versions"]:
            api_version = f"{crd['spec']['group']}/{version['name']}"
            schema = strict(version["schema"]["openAPIV3Schema"])
            schemas[(api_version, crd["spec"]["names"]["kind"])] = schema
    return schemas


def strict(schema: dict) -> dict:
    """An OpenAPI v3 structural schema with unknown fields refused: what the API
    server's strict field validation does (it would otherwise prune them)."""
    schema = copy.deepcopy(schema)

    def walk(node: dict) -> None:
        if "properties" in node:
            for child in node["properties"].values():
                walk(child)
            if not node.get("x-kubernetes-preserve-unknown-fields"):
                node.setdefault("additionalProperties", False)
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key])
        for option in node.get("anyOf", []) + node.get("allOf", []):
            walk(option)

    walk(schema)
    return schema


def crd_errors(obj: dict) -> list[str]:
    schema = crd_schemas().get((obj["apiVersion"], obj["kind"]))
    assert schema is not None, f"no CRD in k8s/crds for {obj['apiVersion']} {obj['kind']}"
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(obj)]


def is_custom(obj: dict) -> bool:
    return (obj["apiVersion"], obj["kind"]) in crd_schemas()


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("target", TARGETS)
def test_built_in_objects_validate_against_kubernetes(builds, target, version):
    for obj in builds[target]:
        if is_custom(obj):
            continue
        name = f"k8s/{target}: {obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} (Kubernetes {version}): {'.'.join(map(str, exc.path))}: {exc}")
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"{name}: not a Kubernetes {version} kind and no CRD in k8s/crds")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_secret_example_validates(version):
    for obj in load_yaml_file(SECRET_EXAMPLE):
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("target", TARGETS)
def test_custom_resources_validate_against_the_repo_crds(builds, target):
    for obj in builds[target]:
        if is_custom(obj):
            errors = crd_errors(obj)
            assert not errors, f"k8s/{target}: {obj['kind']}/{obj['metadata']['name']}: {errors}"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_repo_crds_are_valid_custom_resource_definitions(version):
    paths = sorted(CRDS.glob("*.yaml"))
    assert len(paths) == 6
    for path in paths:
        (crd,) = load_yaml_file(path)
        kubernetes_validate.validate(crd, version, strict=True)
        names = crd["spec"]["names"]
        assert crd["metadata"]["name"] == f"{names['plural']}.{crd['spec']['group']}"
        assert path.name == f"{crd['metadata']['name']}.yaml"


def test_every_repo_crd_is_used(builds):
    used = {(o["apiVersion"], o["kind"]) for objects in builds.values() for o in objects}
    assert set(crd_schemas()) <= used, "a CRD in k8s/crds that no manifest uses"


def test_crd_validation_refuses_mistakes(builds):
    """The checks above can fail: a typo, a missing field, a bad value each do."""
    (scaled,) = [
        o
        for o in builds["overlays/gpu"]
        if o["kind"] == "ScaledObject" and o["metadata"]["name"] == "loraplex"
    ]
    typo = copy.deepcopy(scaled)
    typo["spec"]["minReplicas"] = typo["spec"].pop("minReplicaCount")
    assert any("minReplicas" in e for e in crd_errors(typo))
    no_triggers = copy.deepcopy(scaled)
    del no_triggers["spec"]["triggers"]
    assert any("triggers" in e for e in crd_errors(no_triggers))
    numeric = copy.deepcopy(scaled)
    numeric["spec"]["triggers"][0]["metadata"]["threshold"] = 4
    assert crd_errors(numeric), "trigger metadata values are strings"

    (monitor,) = [o for o in builds["overlays/gpu"] if o["kind"] == "ServiceMonitor"]
    bad_interval = copy.deepcopy(monitor)
    bad_interval["spec"]["endpoints"][0]["interval"] = "15 seconds"
    assert crd_errors(bad_interval)

    (pool,) = [o for o in builds["examples"] if o["kind"] == "InferencePool"]
    old_api = copy.deepcopy(pool)
    old_api["spec"]["targetPortNumber"] = old_api["spec"].pop("targetPorts")[0]["number"]
    assert crd_errors(old_api), "v1alpha2's targetPortNumber is not v1"


def test_kubernetes_validation_refuses_mistakes(builds):
    (deployment,) = [
        o
        for o in builds["overlays/gpu"]
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "loraplex"
    ]
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES_VERSIONS[0], strict=True)


def _docs_manifests() -> list[dict]:
    text = (REPO / "docs" / "deploy.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    return [doc for block in blocks for doc in yaml.safe_load_all(block) if doc]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_in_the_deployment_guide_validate(version):
    manifests = _docs_manifests()
    assert manifests, "docs/deploy.md shows the model-download Job"
    for obj in manifests:
        kubernetes_validate.validate(obj, version, strict=True)
