"""The multi-node training example: a Kubeflow Trainer v2 TrainJob.

It validates against the upstream TrainJob CRD (k8s/crds, with the other
custom resources, in test_schemas.py); here: its container runs the command
that works under torchrun, with flags `loraplex train` accepts and a config
that trains for the gateway's base and rank; its settings and volumes come
from objects the stack has; it asks for 2 nodes × 8 GPUs, and the CPU
overlay's variant for 2 nodes × 1 process and no GPU.
"""

import copy

from loraplex.trainer.cli import FLAG_SETTINGS
from loraplex.trainer.config import load_config
from tests.deploy.cli_contract import command, flag_values, options
from tests.deploy.manifests import Stack, expand, mounted_configmap_file, secret_data, split_args
from tests.deploy.test_schemas import crd_errors

TORCHRUN = ["torchrun", "--no-python", "loraplex", "train"]
RUNTIME = {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime"}


def train_job(stack: Stack) -> dict:
    (job,) = stack.of_kind("TrainJob")
    return job


def pod_patch(job: dict) -> tuple[dict, dict]:
    """(pod spec, the `node` container) as the job's runtime patch sets them."""
    (patch,) = job["spec"]["runtimePatches"]
    (replicated,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert replicated["name"] == "node"  # the torch-distributed runtime's job
    spec = replicated["template"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["name"] == "node"
    return spec, container


def trainer_env(job: dict, stack: Stack) -> dict[str, str]:
    """The trainer's environment, the keys of ConfigMaps and Secrets looked up."""
    env = {}
    for var in job["spec"]["trainer"]["env"]:
        source = var.get("valueFrom", {})
        if ref := source.get("configMapKeyRef"):
            data = stack.get("ConfigMap", ref["name"]).get("data", {})
            assert ref["key"] in data, f"{stack.name}: {ref}"
            env[var["name"]] = data[ref["key"]]
        elif ref := source.get("secretKeyRef"):
            assert ref["key"] in secret_data(stack.get("Secret", ref["name"])), ref
            env[var["name"]] = "(secret)"
        else:
            env[var["name"]] = var["value"]
    return env


def test_train_job_runs_loraplex_train_under_torchrun_on_the_torch_runtime(stack: Stack):
    job = train_job(stack)
    assert job["spec"]["runtimeRef"] == {**RUNTIME, "name": "torch-distributed"}
    trainer = job["spec"]["trainer"]
    assert trainer["command"] == TORCHRUN
    assert trainer["image"].startswith("ghcr.io/loraplex/loraplex:")
    known = options(command("train"))
    for flag, _ in split_args(trainer["args"]):
        assert flag in known, f"`loraplex train` has no {flag}"
    assert "--nproc-per-node" not in dict(split_args(trainer["args"]))  # torchrun's job here


def test_train_job_config_trains_for_the_gateway_and_publishes(stack: Stack, tmp_path):
    job = train_job(stack)
    spec, container = pod_patch(job)
    env = trainer_env(job, stack)
    args = [expand(arg, env) for arg in job["spec"]["trainer"]["args"]]
    flags = flag_values(command("train"), args)
    config_text = mounted_configmap_file(flags.pop("config"), container, spec, stack)
    assert config_text, "--config names no file of a mounted ConfigMap"
    (tmp_path / "train.yaml").write_text(config_text)
    overrides = {FLAG_SETTINGS[k]: v for k, v in flags.items() if k in FLAG_SETTINGS}
    config = load_config(tmp_path / "train.yaml", overrides)  # QLoRA + DDP is accepted
    settings = stack.get("ConfigMap", "loraplex-settings")["data"]
    assert config.base_model == settings["LORAPLEX_BASE_MODEL"]
    assert config.output.store == settings["LORAPLEX_STORE"]
    assert str(config.output.max_rank) == env["LORAPLEX_MAX_LORA_RANK"]
    assert config.output.publish and config.training.distributed == "ddp"
    for path in config.data.train:
        assert mounted_configmap_file(str(path), container, spec, stack), path
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "LORAPLEX_S3_ENDPOINT_URL"} <= set(env)


def test_train_job_mounts_volumes_the_stack_has(stack: Stack):
    spec, container = pod_patch(train_job(stack))
    volumes = {v["name"]: v for v in spec["volumes"]}
    for mount in container["volumeMounts"]:
        assert mount["name"] in volumes, mount
    for volume in volumes.values():
        if claim := volume.get("persistentVolumeClaim"):
            assert stack.find("PersistentVolumeClaim", claim["claimName"]), volume
        if config := volume.get("configMap"):
            assert stack.find("ConfigMap", config["name"]), volume
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True


def test_gpu_job_is_2_nodes_of_8_gpus_and_the_cpu_variant_2_nodes_of_1_process(stacks):
    gpu = train_job(stacks["gpu"])["spec"]["trainer"]
    assert (gpu["numNodes"], gpu["numProcPerNode"]) == (2, 8)
    assert gpu["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    cpu = train_job(stacks["cpu"])
    trainer = cpu["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 1)
    assert "--device=cpu" in trainer["args"]  # gloo follows from the device
    assert "nvidia.com/gpu" not in str(cpu)
    assert trainer["image"].endswith("-cpu")


def test_trainjob_schema_refuses_mistakes(stacks):
    job = train_job(stacks["gpu"])
    assert not crd_errors(job)
    typo = copy.deepcopy(job)
    typo["spec"]["trainer"]["numNode"] = typo["spec"]["trainer"].pop("numNodes")
    assert any("numNode" in e for e in crd_errors(typo))
    auto = copy.deepcopy(job)
    auto["spec"]["trainer"]["numProcPerNode"] = "auto"  # an integer in v2.3
    assert crd_errors(auto)
    no_runtime = copy.deepcopy(job)
    del no_runtime["spec"]["runtimeRef"]
    assert any("runtimeRef" in e for e in crd_errors(no_runtime))
    env_from = copy.deepcopy(job)
    _, container = pod_patch(env_from)
    container["envFrom"] = [{"configMapRef": {"name": "loraplex-settings"}}]
    assert crd_errors(env_from), "runtime patches take env, not envFrom"
