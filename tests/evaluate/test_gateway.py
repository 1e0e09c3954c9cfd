"""`loraplex eval` and `loraplex adapters promote` against the real session gateway
(vLLM on the tiny model, float32): the served loss is the trainer's, the judge's
position swap, gated alias moves, and failures reported, not hidden."""

import json

import pytest

from loraplex.adapters.evaluations import list_evaluations
from loraplex.cli import app
from loraplex.evaluate.judge import JudgeSettings
from loraplex.evaluate.run import EvalSettings, evaluate
from tests.evaluate.conftest import CHAT
from tests.fixtures.models import make_random_lora

pytestmark = [pytest.mark.engine]


def settings(gateway, models, metrics, **kwargs) -> EvalSettings:
    return EvalSettings(
        endpoint=gateway.base_url,
        models=models,
        data=CHAT,
        metrics=metrics,
        progress=False,
        max_tokens=16,
        **kwargs,
    )


def test_loss_through_the_gateway_is_the_trainers_eval_loss(gateway, trained, eval_tokenizer):
    report = evaluate(settings(gateway, ["evalbot@1", "tiny"], ("loss",)), eval_tokenizer)
    served = report.model("evalbot@1").metrics["loss"]
    trainer = trained.record.final_eval_loss
    assert served.n == 6 and served.failed == 0
    assert served.value == pytest.approx(trainer, rel=0.01), (served.value, trainer)
    assert served.low <= served.value <= served.high
    base = report.model("tiny").metrics["loss"]
    assert served.value < base.value - 2  # the adapter learned the answers; the base did not


def test_judge_that_always_prefers_the_first_answer_gives_all_ties(gateway, eval_tokenizer):
    # The base model as judge, forced by vLLM's structured outputs to say "A" every time.
    judge = JudgeSettings(
        gateway.base_url, "tiny", extra_body={"structured_outputs": {"choice": ["A"]}}
    )
    report = evaluate(settings(gateway, ["tiny", "alpha"], ("judge",), judge=judge), eval_tokenizer)
    figure = report.model("alpha").judge
    assert (figure.win, figure.tie, figure.loss, figure.invalid, figure.failed) == (0, 6, 0, 0, 0)
    assert figure.value == figure.low == figure.high == 0.5
    assert report.judge["constrained"] is True


def test_verdicts_not_in_the_asked_format_are_counted_invalid(gateway, eval_tokenizer):
    # Unconstrained, the random tiny model never says exactly A, B or tie.
    judge = JudgeSettings(gateway.base_url, "tiny", constrain=False)
    report = evaluate(settings(gateway, ["tiny", "alpha"], ("judge",), judge=judge), eval_tokenizer)
    figure = report.model("alpha").judge
    assert figure.invalid == 6 and figure.win + figure.tie + figure.loss == 0
    assert figure.value is None and figure.invalid_samples


def test_eval_cli_writes_the_report_plot_and_records_stored_versions(
    cli, gateway, served_store, trained, tmp_path, capsys
):
    out = tmp_path / "report.json"
    args = [
        "eval", "--endpoint", gateway.base_url, "--model", "tiny", "--model", "evalbot",
        "--data", str(CHAT), "--store", served_store.url, "--json", str(out),
        "--max-tokens", "16", "--no-progress", "--base-model", str(gateway.base_model),
    ]  # fmt: skip
    result = cli.invoke(app, args)
    assert result.exit_code == 0, result.output
    with capsys.disabled():  # shown with -s: the README quotes it
        print("\n" + result.stdout)
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["model", "n", "loss", "exact", "rouge-l", "bleu-4", "answers/s"]
    assert rows[0].startswith("tiny ") and rows[1].startswith("evalbot@1 ")
    report = json.loads(out.read_text())
    assert [m["served_as"] for m in report["models"]] == ["tiny", "evalbot@1"]
    assert report["data"]["sha256"] and report["quantization"] == "none"
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    stored = list_evaluations(served_store.store, "evalbot@1")[-1]
    assert stored.data_sha256 == report["data"]["sha256"] and stored.base_model == "tiny"
    assert stored.metrics["loss"].value == report["models"][1]["metrics"]["loss"]["value"]
    shown = cli.invoke(app, ["adapters", "show", "evalbot@1", "--store", served_store.url])
    assert "evaluation" in shown.stdout and stored.data_sha256[:12] in shown.stdout


def test_promote_moves_for_a_better_version_and_refuses_a_worse_one(
    cli, gateway, served_store, tiny_model_dir, tmp_path
):
    store = served_store.store
    loud = [make_random_lora(tiny_model_dir, tmp_path / f"loud{i}", seed=10 + i) for i in (1, 2)]
    store.pull("evalbot@1", tmp_path / "trained")  # trained: a far lower loss than loud ones
    store.publish(loud[0], "gated", aliases=["prod"], base_model=tiny_model_dir)  # gated@1
    store.publish(tmp_path / "trained", "gated", base_model=tiny_model_dir)  # gated@2
    store.publish(loud[1], "gated", base_model=tiny_model_dir)  # gated@3
    common = ["--alias", "prod", "--eval", str(CHAT), "--metric", "loss", "--margin", "0.01",
              "--endpoint", gateway.base_url, "--store", served_store.url, "--no-progress",
              "--base-model", str(tiny_model_dir), "--json", str(tmp_path / "p.json")]  # fmt: skip
    moved = cli.invoke(app, ["adapters", "promote", "gated@2", *common])
    assert moved.exit_code == 0, moved.output
    assert store.aliases("gated")["prod"] == 2
    refused = cli.invoke(app, ["adapters", "promote", "gated@3", *common])
    print(moved.stdout, refused.stderr)
    assert refused.exit_code == 1
    assert store.aliases("gated")["prod"] == 2
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith("error: gated:prod stays at gated@2: loss ") and " vs " in line
    decision = list_evaluations(store, "gated@3")[-1].decision
    assert decision.moved is False and decision.current == "gated@2"
    assert decision.candidate_value > decision.current_value
    assert list_evaluations(store, "gated@2")[0].decision.moved is True


def test_a_judge_that_times_out_is_counted_and_the_report_still_written(
    cli, gateway, tmp_path, tiny_model_dir
):
    out = tmp_path / "r.json"
    result = cli.invoke(app, [
        "eval", "--endpoint", gateway.base_url, "--model", "tiny", "--model", "alpha",
        "--data", str(CHAT), "--metrics", "exact,judge", "--judge-model", "tiny",
        "--judge-timeout", "0.001", "--no-progress", "--max-tokens", "8",
        "--base-model", str(tiny_model_dir), "--json", str(out), "--no-record",
    ])  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == "error: 6 requests failed (see the report)"
    judge = json.loads(out.read_text())["models"][1]["judge"]
    assert judge["failed"] == 6 and judge["errors"] == ["timed out"]
    assert json.loads(out.read_text())["models"][1]["metrics"]["exact"]["n"] == 6


def test_a_model_the_gateway_does_not_serve_is_one_line(cli, gateway, tiny_model_dir):
    result = cli.invoke(app, [
        "eval", "--endpoint", gateway.base_url, "--model", "nope@9", "--data", str(CHAT),
        "--base-model", str(tiny_model_dir),
    ])  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert result.stderr.startswith(f"error: {gateway.base_url} does not serve model 'nope@9'")
