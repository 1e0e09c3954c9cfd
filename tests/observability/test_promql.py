"""The test helpers that read PromQL and the exposition find what they must,
so the live checks built on them can fail."""

import pytest

from tests.observability.promql import exported_names, loraplex_part, metric_names


@pytest.mark.parametrize(("expr", "names"), [
    ("up", {"up"}),
    ('up{job="loraplex"} == 0 or absent(up{job="loraplex"})', {"up"}),
    (
        "histogram_quantile(0.95, sum by (le, adapter) "
        '(rate(loraplex_request_duration_seconds_bucket{route=~"/v1/(a|b)", status=~"2.."}[5m])))',
        {"loraplex_request_duration_seconds_bucket"},
    ),
    (
        'sum(rate(a_total{job=~"$job"}[$__rate_interval])) / '
        "(sum(rate(a_total[5m])) + sum(rate(b_total[5m]))) * 60",
        {"a_total", "b_total"},
    ),
    ('max by (namespace, job, instance) (vllm:kv_cache_usage_perc{job="x"}) > 0.9',
     {"vllm:kv_cache_usage_perc"}),
    ("x unless x offset 10m > 1e9", {"x"}),
    ('sum without (le) (rate(h_bucket{a="by (x)"}[1m]))', {"h_bucket"}),
    ("a * on (instance) group_left (version) b_info", {"a", "b_info"}),
    ('label_values(loraplex_request_duration_seconds_count{job=~"$job"}, adapter)',
     {"loraplex_request_duration_seconds_count"}),
    ("label_values(loraplex_build_info, job)", {"loraplex_build_info"}),
])  # fmt: skip
def test_metric_names_finds_selected_metrics_only(expr, names):
    assert metric_names(expr) == names


EXPOSITION = """\
# HELP loraplex_t_seconds A histogram with samples.
# TYPE loraplex_t_seconds histogram
loraplex_t_seconds_bucket{adapter="alpha",le="+Inf"} 1.0
loraplex_t_seconds_count{adapter="alpha"} 1.0
loraplex_t_seconds_sum{adapter="alpha"} 0.5
# HELP loraplex_failures_total A labelled counter with no samples yet.
# TYPE loraplex_failures_total counter
# HELP loraplex_empty_seconds A labelled histogram with no samples yet.
# TYPE loraplex_empty_seconds histogram
# HELP vllm:num_requests_running Running.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0"} 0.0
"""


def test_exported_names_include_samples_and_declared_families():
    assert exported_names(EXPOSITION) == {
        "loraplex_t_seconds_bucket",
        "loraplex_t_seconds_count",
        "loraplex_t_seconds_sum",
        "loraplex_failures_total",
        "loraplex_empty_seconds_bucket",
        "loraplex_empty_seconds_count",
        "loraplex_empty_seconds_sum",
        "vllm:num_requests_running",
    }


def test_loraplex_part_keeps_only_loraplex_lines():
    part = loraplex_part(EXPOSITION)
    assert "vllm:" not in part
    assert part.count("\n") == 9
