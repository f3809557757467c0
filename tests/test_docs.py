"""The documentation in docs/ says what the code does: config keys, metric names, links."""
from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest

from fastinfer._core.ref.shm import Segment
from fastinfer.config import parse_config
from fastinfer.config.reference import key_rows
from fastinfer.metrics import Metrics, MetricsLayout
from fastinfer.process.hostwide import plan

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
_CELL = re.compile(r"(?<!\\)\|")


def documented_keys() -> dict[str, tuple[str, str, str]]:
    """{key path: (type, default, range)} from every key table of docs/configuration.md."""
    rows = {}
    for line in (DOCS / "configuration.md").read_text().splitlines():
        cells = [c.strip() for c in _CELL.split(line)[1:-1]]
        if len(cells) == 5 and re.fullmatch(r"`[a-z_][a-z0-9_]*(\[\])?(\.[a-z_][a-z0-9_]*(\[\])?)*`", cells[0]):
            path = cells[0].strip("`")
            assert path not in rows, f"{path} is documented twice"
            rows[path] = tuple(cells[1:4])
    return rows


def test_every_config_key_is_documented_and_nothing_else():
    schema = {row.path: (row.type, row.default, row.range) for row in key_rows()}
    documented = documented_keys()
    assert sorted(set(schema) - set(documented)) == [], "in the schema, missing from docs/configuration.md"
    assert sorted(set(documented) - set(schema)) == [], "in docs/configuration.md, not in the schema"
    for path, expected in schema.items():
        assert documented[path] == expected, f"{path}: type, default or range differs from the schema"


def test_the_documented_example_config_is_valid():
    text = (DOCS / "configuration.md").read_text()
    (example,) = re.findall(r"## A complete example\n\n```toml\n(.*?)```", text, re.S)
    import tomllib
    cfg = parse_config(tomllib.loads(example), environ={"FASTINFER_ADMIN_KEY": "x"})
    assert [d.name for d in cfg.deployments] == ["gpt-4o", "llama"]
    assert cfg.deployments[1].replicas[0].base_url == "http://10.0.0.5:8000/v1"


def rendered_metric_names() -> set[str]:
    """Every series family /metrics renders for a config with two deployments and a fallback,
    a gateway key, a rate limit and a cluster."""
    cfg = parse_config({"keys": [{"name": "k", "key": "sk-k", "rpm": 5}],
                        "cluster": {"redis_url": "redis://127.0.0.1:6379/0"}, "deployments": [
        {"name": "a", "provider": "mock", "fallbacks": ["b"], "rate_limit": {"tpm": 1000}},
        {"name": "b", "provider": "mock"}]})
    layout = MetricsLayout(cfg)
    shape, index = plan(cfg, 1, layout)
    segment = Segment.create(f"docs-{uuid.uuid4().hex}", shape)
    try:
        metrics = Metrics(layout, segment,
                          admissions={d.name: segment.admission(i) for i, d in enumerate(cfg.deployments)},
                          breakers={d.name: [segment.breaker(i, 0)] for i, d in enumerate(cfg.deployments)},
                          buckets={name: segment.bucket(i) for name, i in index.buckets.items()})
        text = metrics.render().decode()
    finally:
        segment.unlink()
        segment.close()
    series = set(re.findall(r"^(fastinfer_\w+)[{ ]", text, re.M))
    assert "fastinfer_requests_total" in series and "fastinfer_ttft_seconds_bucket" in series
    return series | {family(name) for name in series}


def family(series: str) -> str:
    """fastinfer_ttft_seconds_bucket -> fastinfer_ttft_seconds"""
    return re.sub(r"_(bucket|sum|count)$", "", series)


def metric_names_in(text: str) -> set[str]:
    return set(re.findall(r"\bfastinfer_[a-z_]+[a-z]", text))


@pytest.fixture(scope="module")
def real_metrics() -> set[str]:
    return rendered_metric_names()


@pytest.mark.parametrize("doc", ["operations.md", "http-api.md", "architecture.md", "configuration.md",
                                 "grafana-dashboard.json"])
def test_docs_name_only_metrics_that_exist(doc, real_metrics):
    named = metric_names_in((DOCS / doc).read_text())
    assert named - real_metrics == set()


def test_grafana_dashboard_is_importable_and_covers_the_families(real_metrics):
    board = json.loads((DOCS / "grafana-dashboard.json").read_text())
    assert board["title"] and board["uid"] and board["schemaVersion"] >= 30
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert exprs and all(e.strip() for e in exprs)
    for p in board["panels"]:
        assert {"x", "y", "w", "h"} <= set(p["gridPos"])
    families = {family(n) for n in real_metrics}
    shown = {family(n) for e in exprs for n in metric_names_in(e)}
    assert families - shown == set(), "metric families no panel shows"


def test_alert_examples_are_prometheus_rules_on_real_metrics(real_metrics):
    import yaml
    text = (DOCS / "operations.md").read_text()
    (rules,) = re.findall(r"```yaml\n(groups:.*?)```", text, re.S)
    groups = yaml.safe_load(rules)["groups"]
    alerts = [r for g in groups for r in g["rules"]]
    assert len(alerts) >= 4
    for rule in alerts:
        assert rule["alert"] and rule["expr"] and rule["annotations"]["summary"]
        assert metric_names_in(rule["expr"]) <= real_metrics


def test_readme_links_to_the_docs_and_nothing_outside_the_repository():
    readme = (ROOT / "README.md").read_text()
    assert "../shared" not in readme and "../shared" not in (ROOT / "CHANGELOG.md").read_text()
    for doc in ("configuration.md", "http-api.md", "operations.md", "architecture.md", "dashboard.png"):
        assert f"docs/{doc}" in readme, doc
    for target in re.findall(r"\]\(([^)#]+)", readme + "".join(p.read_text() for p in DOCS.glob("*.md"))):
        if not target.startswith("http"):
            where = ROOT / target if (ROOT / target).exists() else DOCS / target
            assert where.exists(), f"broken link {target}"
    png = (DOCS / "dashboard.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
