"""The Grafana dashboard: its variables, its layout, the metrics it shows, and
PromQL that Prometheus accepts (checked with promtool, variables filled in)."""

import re

import yaml

from tests.observability.conftest import run_promtool
from tests.observability.promql import (
    as_promql,
    dashboard,
    dashboard_expressions,
    dashboard_panels,
    metric_names,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# What an operator must find on the dashboard, by the metric that shows it.
SHOWN = {
    "loraplex_request_duration_seconds_count": "request and error rate",
    "loraplex_request_duration_seconds_bucket": "request latency quantiles",
    "loraplex_time_to_first_token_seconds_bucket": "time to first token",
    "loraplex_completion_tokens_total": "output tokens/s",
    "loraplex_requests_in_flight": "in flight by adapter",
    "vllm:num_requests_running": "engine running requests",
    "vllm:num_requests_waiting": "engine waiting requests",
    "vllm:kv_cache_usage_perc": "KV cache usage",
    "loraplex_device_memory_used_bytes": "device memory used",
    "loraplex_device_memory_total_bytes": "device memory total",
    "loraplex_adapters": "adapters by state",
    "loraplex_adapter_fetch_seconds_bucket": "adapter fetch latency",
    "loraplex_adapter_load_seconds_bucket": "adapter load latency",
    "loraplex_adapter_cache_hits_total": "cache hit rate",
    "loraplex_adapter_cache_misses_total": "cache hit rate",
    "loraplex_alias_moves_total": "alias moves",
    "loraplex_adapter_load_failures_total": "load failures by reason",
    "loraplex_build_info": "build info",
}


def variables() -> dict[str, dict]:
    return {v["name"]: v for v in dashboard()["templating"]["list"]}


def test_datasource_is_a_prometheus_variable_used_by_every_panel_and_query():
    board = dashboard()
    assert board["schemaVersion"] >= 39
    source = variables()["datasource"]
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    for panel in dashboard_panels(board):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_adapter_variable_lists_the_adapter_label_and_panels_filter_on_it():
    adapter = variables()["adapter"]
    query = adapter["query"]["query"]
    selector = r"loraplex_request_duration_seconds_count(\{[^}]*\})?"
    assert re.fullmatch(rf"label_values\({selector}, adapter\)", query)
    assert adapter["multi"] and adapter["includeAll"] and adapter["allValue"] == ".*"
    for where, expr in dashboard_expressions().items():
        if where.startswith("panel") and re.search(r"by \([^)]*adapter", expr):
            assert 'adapter=~"$adapter"' in expr, where


def test_panels_have_unique_ids_and_do_not_overlap():
    board = dashboard()
    nested = [p for row in board["panels"] if row["type"] == "row" for p in row["panels"]]
    ids = [panel["id"] for panel in board["panels"] + nested]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_dashboard_shows_what_operators_need():
    shown = set().union(*(metric_names(e) for e in dashboard_expressions().values()))
    missing = {name: why for name, why in SHOWN.items() if name not in shown}
    assert not missing


def test_quantiles_aggregate_buckets_by_le():
    for where, expr in dashboard_expressions().items():
        if "histogram_quantile" in expr:
            assert re.search(r"sum by \(le\b[^)]*\) \(rate\(\w+_bucket\{", expr), where


def test_every_dashboard_query_is_valid_promql(promtool, tmp_path):
    exprs = dashboard_expressions()
    rules = [
        {"record": f"dashboard:query_{i}", "expr": as_promql(expr)}
        for i, expr in enumerate(exprs.values())
        if not expr.startswith("label_values(")  # Grafana's function, not PromQL
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_promtool(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
