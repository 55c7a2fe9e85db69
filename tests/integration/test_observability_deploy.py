"""deploy/: the Prometheus alert rules and the Grafana dashboard are valid for
promtool, the alerts fire on the series they are written for
(``promtool test rules``), and every series they query is one the gateway
exports (issue 21)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from iogate.config import parse_config
from iogate.gateway import Gateway
from iogate.observability._prometheus import render
from tests.upstream_app import UpstreamServer

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
_SERIES = re.compile(r"\b((?:iogate|process|python)_[a-z0-9_]+)")


def _promtool(*args: str, cwd: Path) -> None:
    done = subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "iogate.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_alert_rules_are_valid_and_fire_on_their_series() -> None:
    _promtool("check", "rules", "alerts.yml", cwd=DEPLOY / "prometheus")
    _promtool("test", "rules", "alerts_test.yml", cwd=DEPLOY / "prometheus")


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    exprs = _dashboard_exprs()
    assert len(exprs) >= 15
    grafana_vars = {"$__rate_interval": "1m", "$resource": ".*", "$job": ".*"}
    rules = []
    for i, expr in enumerate(exprs):
        for var, value in grafana_vars.items():
            expr = expr.replace(var, value)
        rules.append({"record": f"iogate:dashboard_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    # JSON is YAML: promtool reads it as a rules file
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    _promtool("check", "rules", str(path), cwd=tmp_path)


async def test_every_series_deploy_queries_is_exported(
    sqlite_path: str, upstream: UpstreamServer
) -> None:
    config = parse_config(
        {
            "databases": {"main": {"url": f"sqlite:///{sqlite_path}"}},
            "upstreams": {
                "example": {
                    "base_url": upstream.base_url,
                    "policies": {"retry": {"max_attempts": 2, "initial": 0.001}},
                }
            },
        },
        environ={},
    )
    async with Gateway(config) as gw:
        await gw.database("main").fetch_val("SELECT 1")
        await gw.upstream("example").get("/echo")
        await gw.cache.get("k")
        text = render(gw.metrics).decode()
    families = list(text_string_to_metric_families(text))
    # a family is exported even with no series yet (no breaker transition so far)
    exported = {s.name for fam in families for s in fam.samples} | {
        fam.name + ("_total" if fam.type == "counter" else "") for fam in families
    }
    alerts = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    queried = {name for expr in [alerts, *_dashboard_exprs()] for name in _SERIES.findall(expr)}
    assert "iogate_pool_max_connections" in queried
    assert queried - exported == set()
