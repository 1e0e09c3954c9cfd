"""Against a running gateway: its `loraplex_*` metrics pass `promtool check
metrics`, every metric the dashboard and the alerts use is exported, and
docs/metrics.md documents exactly the `loraplex_*` metrics exported, with
their types and labels."""

import re

import pytest

from tests.observability.conftest import run_promtool
from tests.observability.promql import (
    REPO,
    dashboard_expressions,
    exported_names,
    loraplex_part,
    metric_names,
    rule_expressions,
)

pytestmark = pytest.mark.engine

DOC = REPO / "docs" / "metrics.md"
# Made by Prometheus itself for every target, never by the target.
PROMETHEUS_INTERNAL = {"up"}
_DOC_ROW = re.compile(r"^\|\s*`(loraplex_\w+)`\s*\|\s*(\w+)\s*\|([^|]*)\|", re.MULTILINE)
_TYPE = re.compile(r"^# TYPE (loraplex_\w+) (\w+)$", re.MULTILINE)
_SAMPLE_LABELS = re.compile(r"^(loraplex_\w+)(?:\{([^}]*)\})? ", re.MULTILINE)
_LABEL_NAME = re.compile(r'(\w+)="')
_HISTOGRAM_SAMPLE = re.compile(r"_(bucket|count|sum)$")


def test_promtool_check_metrics_finds_no_problem_in_loraplex_metrics(promtool, live_metrics):
    part = loraplex_part(live_metrics)
    assert "loraplex_request_duration_seconds_bucket{" in part  # the requests were recorded
    result = run_promtool(promtool, "check", "metrics", stdin=part)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout + result.stderr).strip() == ""


def test_every_metric_in_the_dashboard_and_the_alerts_is_exported(live_metrics):
    exported = exported_names(live_metrics) | PROMETHEUS_INTERNAL
    expressions = dashboard_expressions() | rule_expressions()
    missing = {
        where: sorted(metric_names(expr) - exported)
        for where, expr in expressions.items()
        if metric_names(expr) - exported
    }
    assert not missing


def documented() -> dict[str, tuple[str, set[str]]]:
    rows = _DOC_ROW.findall(DOC.read_text())
    return {name: (kind, set(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows}


def exported_families(text: str) -> dict[str, str]:
    # prometheus_client also writes each counter's and histogram's creation
    # time as a `_created` gauge; Prometheus ignores those by default.
    return {name: kind for name, kind in _TYPE.findall(text) if not name.endswith("_created")}


def family_of(sample: str, families: dict[str, str]) -> str:
    if sample in families:
        return sample
    return _HISTOGRAM_SAMPLE.sub("", sample)


def test_docs_list_every_loraplex_metric_with_its_type_and_labels(live_metrics):
    docs = documented()
    families = exported_families(live_metrics)
    assert {name: kind for name, (kind, _) in docs.items()} == families
    for sample, labels in _SAMPLE_LABELS.findall(live_metrics):
        family = family_of(sample, families)
        if family not in families:  # a `_created` sample
            continue
        names = set(_LABEL_NAME.findall(labels)) - {"le"}
        assert names == docs[family][1], f"{family} has labels {names} in /metrics"
