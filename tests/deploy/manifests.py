"""Build the kustomizations under k8s/ and look things up in what they produce.

A `Stack` is what one deployment puts in the cluster: the GPU overlay plus the
examples applied beside it (with the documented Secret, secret.example.yaml),
or the self-contained CPU overlay. Checks that follow a reference (a
ConfigMap a container reads, the Service a ServiceMonitor selects) look it up
in the stack, so a name changed on one side only fails a test.
"""

import base64
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
CRDS = K8S / "crds"
SECRET_EXAMPLE = K8S / "base" / "secret.example.yaml"
TARGETS = ("base", "overlays/gpu", "overlays/cpu", "examples")
NAMESPACE = "loraplex"
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def kustomize_command() -> list[str]:
    """`kubectl kustomize` (kubectl ships kustomize), else a standalone `kustomize build`."""
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize"]
    if kustomize := shutil.which("kustomize"):
        return [kustomize, "build"]
    pytest.fail("neither kubectl nor kustomize is on PATH: the manifests cannot be built")


def build(target: str) -> list[dict]:
    """The objects `kubectl apply -k k8s/<target>` would send."""
    result = subprocess.run(
        [*kustomize_command(), str(K8S / target)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"kustomize build k8s/{target} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def load_yaml_file(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@dataclass
class Stack:
    name: str
    objects: list[dict]

    def of_kind(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]

    def find(self, kind: str, name: str) -> dict | None:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) <= 1, f"{self.name}: {len(found)} {kind}s named {name}"
        return found[0] if found else None

    def get(self, kind: str, name: str) -> dict:
        found = self.find(kind, name)
        assert found is not None, f"{self.name}: no {kind} named {name!r}"
        return found


def in_namespace(objects: list[dict]) -> list[dict]:
    """As `kubectl apply -n loraplex` sends objects that name no namespace."""
    return [{**o, "metadata": {"namespace": NAMESPACE, **o["metadata"]}} for o in objects]


def make_stacks(builds: dict[str, list[dict]]) -> dict[str, Stack]:
    applied_beside = in_namespace(builds["examples"] + load_yaml_file(SECRET_EXAMPLE))
    return {
        "gpu": Stack("gpu", builds["overlays/gpu"] + applied_beside),
        "cpu": Stack("cpu", builds["overlays/cpu"]),
    }


# --- pods and containers -------------------------------------------------------


def pod_spec(obj: dict) -> dict | None:
    if obj["kind"] not in POD_TEMPLATE_KINDS:
        return None
    return obj["spec"]["template"]["spec"]


def pod_labels(obj: dict) -> dict:
    return obj["spec"]["template"]["metadata"].get("labels", {})


def workloads(objects: list[dict]) -> Iterator[tuple[dict, dict]]:
    for obj in objects:
        if (spec := pod_spec(obj)) is not None:
            yield obj, spec


def containers(objects: list[dict]) -> Iterator[tuple[dict, dict, dict]]:
    for obj, spec in workloads(objects):
        for container in spec.get("initContainers", []) + spec["containers"]:
            yield obj, spec, container


def loraplex_containers(objects: list[dict], command: str | None = None):
    """(workload, pod spec, container) for each container that runs `loraplex ...`."""
    for obj, spec, container in containers(objects):
        cmd = container.get("command", [])
        if cmd[:1] == ["loraplex"] and (command is None or cmd[1:2] == [command]):
            yield obj, spec, container


def selects(selector: dict, labels: dict) -> bool:
    assert "matchExpressions" not in selector, "extend selects() for matchExpressions"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", selector).items())


def secret_data(secret: dict) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    return {**data, **secret.get("stringData", {})}


def container_env(container: dict, stack: Stack) -> dict[str, str | None]:
    """The container's environment as Kubernetes builds it: envFrom, then env.
    A value taken from a Secret key or a field reference is None (unknown here)."""
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        if ref := source.get("configMapRef"):
            env.update(stack.get("ConfigMap", ref["name"]).get("data", {}))
        if ref := source.get("secretRef"):
            env.update(secret_data(stack.get("Secret", ref["name"])))
    for var in container.get("env", []):
        env[var["name"]] = var.get("value") if "valueFrom" not in var else None
    return env


_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def references(value: str) -> list[str]:
    """The `$(VAR)` names Kubernetes expands in a command or an argument."""
    return _VAR.findall(value)


def expand(value: str, env: dict[str, str | None]) -> str:
    return _VAR.sub(lambda m: env.get(m.group(1)) or m.group(0), value)


def split_args(args: list[str]) -> list[tuple[str, str | None]]:
    """`--name=value` → (--name, value); a bare `--flag` → (--flag, None).
    The manifests always join a flag and its value with `=`, so every
    argument is one flag and nothing is ambiguous."""
    parsed = []
    for arg in args:
        assert arg.startswith("--"), f"argument {arg!r} is not a --flag (write --name=value)"
        name, eq, value = arg.partition("=")
        parsed.append((name, value if eq else None))
    return parsed


def named_port(container: dict, port: int | str) -> int:
    """A probe's or a Service's port (a name or a number) as a number."""
    if isinstance(port, int):
        return port
    matches = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert matches, f"container {container['name']} has no port named {port!r}"
    return matches[0]


def read_only_mounts(container: dict) -> set[str]:
    return {m["mountPath"] for m in container.get("volumeMounts", []) if m.get("readOnly")}


def mounted_configmap_file(path: str, container: dict, spec: dict, stack: Stack) -> str | None:
    """The text of `path` when a ConfigMap volume mounted in the container provides it."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        volume = volumes[mount["name"]]
        if path.startswith(prefix) and "configMap" in volume:
            data = stack.get("ConfigMap", volume["configMap"]["name"]).get("data", {})
            return data.get(path.removeprefix(prefix))
    return None
