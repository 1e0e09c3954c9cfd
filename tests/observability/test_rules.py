"""The alert rules: promtool accepts them, their unit tests pass and cover each
alert firing and staying silent, the PrometheusRule and the plain rule file
hold the same groups, and the kustomization ships the rule with the dashboard."""

import yaml

from tests.observability.conftest import run_promtool
from tests.observability.promql import PROMETHEUS_RULE, RULES, RULES_TEST, rule_groups

ALERTS = {
    "LoraplexEngineDown",
    "LoraplexHighErrorRate",
    "LoraplexLatencySLO",
    "LoraplexKVCacheSaturated",
    "LoraplexAdapterLoadFailures",
}


def alerts() -> list[dict]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules_accepts_the_rule_file(promtool):
    result = run_promtool(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_promtool_rule_unit_tests_pass(promtool):
    result = run_promtool(promtool, "test", "rules", RULES_TEST.name, cwd=RULES_TEST.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_prometheus_rule_spec_holds_the_same_groups_as_the_rule_file():
    resource = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert resource["apiVersion"] == "monitoring.coreos.com/v1"
    assert resource["kind"] == "PrometheusRule"
    assert resource["metadata"]["name"] == "loraplex"
    assert resource["spec"] == yaml.safe_load(RULES.read_text()), (
        f"{PROMETHEUS_RULE.name}'s spec and {RULES.name} differ: change both together"
    )


def test_the_expected_alerts_exist_with_severity_and_annotations():
    rules = alerts()
    assert {rule["alert"] for rule in rules} == ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not():
    fired: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else silent).add(check["alertname"])
    assert fired == ALERTS
    assert silent == ALERTS


def test_kustomization_ships_the_rule_and_the_dashboard():
    kustomization = yaml.safe_load((PROMETHEUS_RULE.parent / "kustomization.yaml").read_text())
    assert kustomization["resources"] == [PROMETHEUS_RULE.name]
    (generator,) = kustomization["configMapGenerator"]
    assert generator["files"] == ["grafana-dashboard.json"]
    assert generator["options"]["labels"] == {"grafana_dashboard": "1"}
    for name in kustomization["resources"] + generator["files"]:
        assert (PROMETHEUS_RULE.parent / name).is_file(), name
