"""Read the Dockerfile's instructions per build stage, for tests/deploy.

Enough of the Dockerfile grammar for what loraplex's Dockerfile uses: comment
lines, backslash continuations, `FROM ... AS stage`, and the instructions'
text. Instructions are attributed to the stage they are written in; `env()`
follows `FROM <stage>` to inherit a parent stage's ENV.
"""

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.manifests import REPO

DOCKERFILE = REPO / "Dockerfile"
RUNTIME_STAGES = ("gpu", "cpu")


@dataclass(frozen=True)
class Instruction:
    stage: str
    keyword: str
    value: str
    line: int


def instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    found: list[Instruction] = []
    stage, parts, start = "", [], 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not parts and (not line or line.startswith("#")):
            continue
        if parts and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if not parts:
            start = number
        parts.append(line.removesuffix("\\").strip())
        if line.endswith("\\"):
            continue
        keyword, _, value = " ".join(parts).partition(" ")
        parts = []
        keyword = keyword.upper()
        if keyword == "FROM":
            words = value.split()
            stage = words[2] if len(words) >= 3 and words[1].upper() == "AS" else words[0]
        found.append(Instruction(stage, keyword, value.strip(), start))
    return found


def of_stage(stage: str, keyword: str) -> list[Instruction]:
    return [i for i in instructions() if i.stage == stage and i.keyword == keyword]


def parent(stage: str) -> str:
    (first,) = of_stage(stage, "FROM")
    return first.value.split()[0]


def stages() -> list[str]:
    return [i.stage for i in instructions() if i.keyword == "FROM"]


def env(stage: str) -> dict[str, str]:
    """ENV values as a container of `stage` sees them (parents' first)."""
    values = env(parent(stage)) if parent(stage) in stages() else {}
    for instruction in of_stage(stage, "ENV"):
        for word in shlex.split(instruction.value):
            key, _, value = word.partition("=")
            values[key] = value
    return values


def exec_form(stage: str, keyword: str) -> list[str]:
    (instruction,) = of_stage(stage, keyword)
    return json.loads(instruction.value)


def exposed_ports(stage: str) -> list[int]:
    return [int(p.split("/")[0]) for i in of_stage(stage, "EXPOSE") for p in i.value.split()]
