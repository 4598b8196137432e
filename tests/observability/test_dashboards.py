"""deploy/observability: the Grafana dashboard and the alert rules name only metrics that
exist: the gateway's as defined and as a real scrape shows them, Envoy's as a real Envoy's
/stats/prometheus shows them. promtool is not installed here, so PromQL is read with
``metric_names`` below, which drops what is not a metric name before it looks."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.registry import CollectorRegistry

from datamorph_gateway.observability import definitions, metrics_server

from ..fixtures.envoy import Rest, Sidecar
from ..fixtures.observability import scrape, touch_every_metric

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "observability"
DASHBOARD = DEPLOY / "grafana-dashboard.json"
ALERTS = DEPLOY / "alerts.yml"

_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_NAME = re.compile(r"(?<![\w:$.])[A-Za-z_:][\w:]*")
_DURATION = re.compile(r"^\d+[smhdwy]$")


def metric_names(expr: str) -> set[str]:
    """The ``datamorph_*`` and ``envoy_*`` metric names a PromQL expression selects.

    Label names only appear inside ``{...}`` and in grouping clauses, and both go first
    (with strings and ranges), so no label such as ``envoy_cluster_name`` is taken for one.
    """
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {n for n in _NAME.findall(text) if n.startswith(("datamorph_", "envoy_"))}


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('rate(datamorph_a_total{code=~"A|B",envoy_x="datamorph_b"}[5m])', {"datamorph_a_total"}),
        (
            "histogram_quantile(0.99, sum by (method, le) "
            "(rate(datamorph_d_bucket[$__rate_interval])))",
            {"datamorph_d_bucket"},
        ),
        (
            "sum by (envoy_response_code_class) (envoy_c{envoy_cluster_name='g'}) "
            "/ on (instance) group_left(envoy_label) envoy_t",
            {"envoy_c", "envoy_t"},
        ),
        ("up{job=\"datamorph-gateway\"} == 0 or absent(up{job='datamorph_x'})", set()),
        ("datamorph_g > bool 2 unless datamorph_h offset 5m", {"datamorph_g", "datamorph_h"}),
    ],
)
def test_metric_names_reads_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def alert_rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def every_name() -> set[str]:
    exprs = dashboard_exprs() + [rule["expr"] for rule in alert_rules()]
    return set().union(*(metric_names(expr) for expr in exprs))


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    board = dashboard()
    assert board["uid"] == "datamorph-gateway"
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "job", "envoy_job"}
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0
        assert grid["x"] + grid["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs
        assert len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert metric_names(target["expr"]), target["expr"]


def test_the_alert_rules_are_prometheus_rules() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} >= {
        "DataMorphGatewayDown",
        "DataMorphGatewayErrorRatioHigh",
        "DataMorphGatewayLatencyP99High",
        "DataMorphGatewayPoolWaits",
        "DataMorphGatewayAbandonedRuns",
    }
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["alert"].startswith("DataMorphGateway")
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]
        assert _DURATION.match(str(rule.get("for", "0s")))
        assert rule["expr"].count("(") == rule["expr"].count(")")


@pytest.fixture
def scraped(prometheus: CollectorRegistry) -> Iterator[set[str]]:
    """Sample names of a real scrape with every metric recorded once."""
    touch_every_metric()
    server = metrics_server.start_metrics_server("127.0.0.1", 0, None)
    try:
        yield {name for name, _ in scrape(server.port)}
    finally:
        server.close()


def test_every_gateway_metric_they_name_is_defined_and_exported(scraped: set[str]) -> None:
    named = {n for n in every_name() if n.startswith("datamorph_")}
    defined = {sample for d in definitions.DEFINITIONS for sample in d.samples()}
    assert named - defined == set()
    assert named - scraped == set()
    # And the dashboard shows every metric there is.
    shown = set().union(*(metric_names(e) for e in dashboard_exprs()))
    for definition in definitions.DEFINITIONS:
        assert shown & set(definition.samples()), definition.name


def test_every_envoy_metric_they_name_is_one_envoy_exports(envoy: Sidecar, rest: Rest) -> None:
    assert rest.get("/health").status == 200  # an upstream answer: the response-class stats
    exported = {
        match.group(1)
        for line in envoy.process.admin("/stats/prometheus").splitlines()
        if (match := re.match(r"^([A-Za-z_:][\w:]*)[{ ]", line))
    }
    named = {n for n in every_name() if n.startswith("envoy_")}
    assert named
    assert named - exported == set()
    cluster = 'envoy_cluster_name="datamorph_gateway"'
    assert cluster in envoy.process.admin("/stats/prometheus")
