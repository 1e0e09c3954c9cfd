"""Every pod meets the "restricted" Pod Security Standard (the overlays'
namespace enforces it), runs on a read-only root filesystem with the writable
places it needs mounted, and has bounded memory and scratch space; gateway
and trainer pods get one GPU each on GPUs and none on CPU."""

import pytest

from tests.deploy.manifests import (
    Stack,
    containers,
    loraplex_containers,
    read_only_mounts,
    workloads,
)

# Where the gateway and the trainer write at runtime (caches, temp files, shm).
LORAPLEX_WRITABLE = {"/cache", "/home/loraplex", "/tmp", "/dev/shm"}


def test_namespace_enforces_the_restricted_profile(stack: Stack):
    (namespace,) = stack.of_kind("Namespace")
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_pods_meet_the_restricted_profile(stack: Stack):
    for obj, spec in workloads(stack.objects):
        where = f"{stack.name}: {obj['kind']}/{obj['metadata']['name']}"
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True, where
        assert pod.get("runAsUser", 0) != 0, where
        assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(key), where
        for volume in spec.get("volumes", []):
            assert "hostPath" not in volume, where
        for container in spec.get("initContainers", []) + spec["containers"]:
            context = container.get("securityContext", {})
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("privileged") is not True, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not context.get("capabilities", {}).get("add"), where
            assert context.get("readOnlyRootFilesystem") is True, where


def test_loraplex_containers_can_write_where_they_must(stack: Stack):
    for obj, spec, container in loraplex_containers(stack.objects):
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert mounts >= LORAPLEX_WRITABLE, obj["metadata"]["name"]
        assert not LORAPLEX_WRITABLE & read_only_mounts(container)
        env = {v["name"]: v.get("value") for v in container.get("env", [])}
        assert env.get("HOME") == "/home/loraplex" and env.get("TMPDIR") == "/tmp"
        volumes = {v["name"]: v for v in spec["volumes"]}
        shm = next(m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm")
        assert volumes[shm["name"]]["emptyDir"]["medium"] == "Memory"
        if "/models" in mounts:
            assert "/models" in read_only_mounts(container)


def test_scratch_space_and_memory_are_bounded(stack: Stack):
    for obj, spec, container in containers(stack.objects):
        where = f"{stack.name}: {obj['metadata']['name']}/{container['name']}"
        resources = container.get("resources", {})
        assert "memory" in resources.get("requests", {}), where
        assert "memory" in resources.get("limits", {}), where
        for volume in spec.get("volumes", []):
            if "emptyDir" in volume:
                assert "sizeLimit" in volume["emptyDir"], f"{where}: {volume['name']}"


@pytest.mark.parametrize("stack_name, gpus", [("gpu", 1), ("cpu", None)])
def test_gpu_requests(stacks, stack_name, gpus):
    for obj, spec, container in loraplex_containers(stacks[stack_name].objects):
        limits = container["resources"]["limits"]
        assert limits.get("nvidia.com/gpu") == gpus, obj["metadata"]["name"]
        tolerated = {t["key"] for t in spec.get("tolerations") or []}
        assert ("nvidia.com/gpu" in tolerated) == bool(gpus)
