"""Evaluations kept beside stored versions, on both backends: listed, shown, never in the
manifest, gone with their version; and the alias compare-and-swap gated moves rely on."""

import json

import pytest
from typer.testing import CliRunner

from loraplex.adapters import AdapterNotFound, AliasConflict
from loraplex.adapters.cli import app
from loraplex.adapters.evaluations import (
    AliasDecision,
    Evaluation,
    MetricFigure,
    list_evaluations,
    save_evaluation,
)


def evaluation(adapter: str, loss: float, decision=None) -> Evaluation:
    return Evaluation(
        adapter=adapter,
        data_sha256="ab" * 32,
        data_path="held-out.jsonl",
        examples=20,
        endpoint="http://127.0.0.1:8000",
        base_model="smollm2",
        quantization="bitsandbytes",
        metrics={"loss": MetricFigure(value=loss, low=loss - 0.1, high=loss + 0.1, n=20)},
        decision=decision,
    )


def test_evaluations_are_kept_beside_the_version_and_shown(store, store_url, adapter_dir):
    store.publish(adapter_dir, "chat")
    manifest_before = store.backend.read("chat/v1/manifest.json")
    save_evaluation(store, evaluation("chat@1", 1.5))
    decision = AliasDecision(
        alias="prod", metric="loss", margin=0.01, candidate="chat@1", current=None,
        candidate_value=1.25, current_value=None, moved=True, reason="the alias did not exist",
    )  # fmt: skip
    save_evaluation(store, evaluation("chat@1", 1.25, decision))
    found = list_evaluations(store, "chat")
    assert [e.metrics["loss"].value for e in found] == [1.5, 1.25]
    assert found[1].decision.moved is True
    assert store.backend.read("chat/v1/manifest.json") == manifest_before  # immutable

    result = CliRunner().invoke(app, ["show", "chat@1", "--store", store_url])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if "evaluation" in line]
    assert len(lines) == 2 and "loss 1.25 [1.15, 1.35]" in lines[1]
    assert "smollm2 (bitsandbytes)" in lines[1] and "prod: moved" in result.stdout
    shown = json.loads(
        CliRunner().invoke(app, ["show", "chat@1", "--store", store_url, "--json"]).stdout
    )
    assert [e["metrics"]["loss"]["value"] for e in shown["evaluations"]] == [1.5, 1.25]
    assert store.verify("chat@1").version == 1  # still verifies: not an adapter file

    store.delete("chat@1", force=True)
    assert store.backend.walk("chat/v1/evaluations") == []
    with pytest.raises(AdapterNotFound):
        save_evaluation(store, evaluation("chat@1", 1.0))


def test_alias_moves_only_from_the_expected_version(store, adapter_dir):
    for _ in range(3):
        store.publish(adapter_dir, "chat")
    store.set_alias("chat", "prod", 1, expect=None)  # did not exist: created
    store.set_alias("chat", "prod", 2, expect=1)
    with pytest.raises(AliasConflict, match="chat:prod was moved to 2 meanwhile"):
        store.set_alias("chat", "prod", 3, expect=1)
    assert store.aliases("chat")["prod"] == 2
