"""deploy/prometheus and deploy/grafana stay in step with the code: every alert rule is complete, the scrape config
names both processes, the dashboard's panels have targets on a datasource variable, and every metric an
expression names is one common.metrics defines or a Temporal SDK metric a real worker exports (SDK_METRICS,
checked by tests/integration/test_metrics.py). No promtool here (no binary, none on PyPI), so this is the check."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from common import metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
# What looks like a metric of ours or of the SDK in a PromQL expression
METRIC = re.compile(r"\b(?:fulfill|temporal)_[a-z0-9_]+\b")


def unknown_metrics(expr: str) -> set[str]:
    return set(METRIC.findall(expr)) - metrics.known_names()


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_alert_rule_is_complete_and_names_known_metrics() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} >= {
        "OrdersStuck",
        "OrderFailureRateHigh",
        "NotificationFailuresHigh",
        "WorkflowTaskScheduleToStartHigh",
        "OnTimeDeliveryRateLow",
    }
    for rule in rules:
        assert {"alert", "expr", "for", "labels", "annotations"} <= rule.keys(), rule.get("alert")
        assert re.fullmatch(r"\d+[smhd]", rule["for"]), rule["alert"]
        assert rule["labels"].get("severity") in ("page", "ticket"), rule["alert"]
        assert rule["annotations"].get("summary") and rule["annotations"].get("description"), rule["alert"]
        assert METRIC.search(rule["expr"]), rule["alert"]
        assert not unknown_metrics(rule["expr"]), (rule["alert"], unknown_metrics(rule["expr"]))


def test_the_scrape_config_covers_the_worker_and_the_api() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"fulfillment-worker", "fulfillment-api"}
    assert all(job["static_configs"][0]["targets"] for job in jobs.values())


def test_the_dashboard_has_panels_on_a_datasource_variable_naming_known_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "fulfillment.json").read_text())
    variables = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variables and variables[0]["query"] == "prometheus"
    name = variables[0]["name"]
    assert dashboard["panels"]
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == f"${{{name}}}", panel["title"]
        for target in panel["targets"]:
            assert not unknown_metrics(target["expr"]), (panel["title"], unknown_metrics(target["expr"]))
            used |= set(METRIC.findall(target["expr"]))
    # Every business metric the worker and the API export is on the dashboard
    assert {m.name for m in metrics.ALL_METRICS} <= {re.sub(r"_(total|bucket|count|sum)$", "", u) for u in used}


def test_metric_names_are_unique_and_labels_name_no_customer_data() -> None:
    names = [m.name for m in metrics.ALL_METRICS]
    assert len(names) == len(set(names))
    assert all(n.startswith("fulfill_") for n in names)
    labels = {label for m in metrics.ALL_METRICS for label in m.labels}
    assert labels <= {"reason", "outcome", "channel", "carrier", "provider", "method", "route", "status"}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="no promtool on this machine")
def test_promtool_accepts_the_rules() -> None:
    subprocess.run(["promtool", "check", "rules", str(ALERTS)], check=True)
