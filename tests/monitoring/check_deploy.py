#!/usr/bin/env python3
"""Checks the deploy files (CTest monitoring.deploy):
  - promtool check config on deploy/prometheus/prometheus.yml, check rules on every rule file,
    check metrics on what both kinds of endpoint export (monitoring_sample);
  - the Grafana dashboards' structure: every panel has a datasource (the provisioned one, by uid)
    and at least one query, every query its datasource and a non-empty expression; ids unique,
    grid positions inside the 24-column grid; template variables on the same datasource;
  - every metric a dashboard query, a recording rule or an alert names is listed in
    docs/metrics.md and exported by an endpoint (recording rules: defined in the rules, and
    their own expressions checked the same way); `up` is Prometheus's own;
  - the provisioning files and the compose file agree (datasource uid, mounted paths, ports).
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import promql  # noqa: E402

try:
    import yaml
except ImportError:  # Debian: python3-yaml
    print("FAIL: the deploy check needs PyYAML (Debian package python3-yaml)")
    sys.exit(1)

problems = []


def problem(msg):
    problems.append(msg)


def run(cmd, stdin=None):
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30)
    return r.returncode, (r.stdout + r.stderr).strip()


def documented_metrics(source_dir):
    text = open(os.path.join(source_dir, "docs", "metrics.md")).read()
    rows = re.findall(r"^\|\s*`([a-z0-9_:]+)`\s*\|\s*(counter|gauge|histogram|summary)\s*\|", text, re.M)
    return {name: kind for name, kind in rows}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--source-dir", required=True)
    p.add_argument("--promtool", required=True)
    p.add_argument("--sample-tool", required=True)
    p.add_argument("--workdir", required=True)
    args = p.parse_args()
    src = args.source_dir
    deploy = os.path.join(src, "deploy")
    os.makedirs(args.workdir, exist_ok=True)

    # ----- promtool -------------------------------------------------------------------------------
    prom_yml = os.path.join(deploy, "prometheus", "prometheus.yml")
    rc, out = run([args.promtool, "check", "config", prom_yml])
    if rc != 0:
        problem(f"promtool check config {prom_yml}: {out}")
    config = yaml.safe_load(open(prom_yml))
    rule_files = [os.path.join(deploy, "prometheus", f) for f in config.get("rule_files", [])]
    if not rule_files:
        problem("prometheus.yml lists no rule files")
    for f in rule_files:
        rc, out = run([args.promtool, "check", "rules", f])
        if rc != 0:
            problem(f"promtool check rules {f}: {out}")
    jobs = {c["job_name"]: c for c in config.get("scrape_configs", [])}
    for job in ("shardserve-coordinator", "shardserve-worker"):
        if job not in jobs:
            problem(f"prometheus.yml has no job {job}")
            continue
        sd = jobs[job].get("file_sd_configs")
        if not sd:
            problem(f"job {job} does not use file-based service discovery")
            continue
        for pattern in sd[0]["files"]:
            files = glob.glob(os.path.join(deploy, "prometheus", pattern))
            if not files:
                problem(f"job {job}: no target file matches {pattern}")
            for f in files:
                groups = yaml.safe_load(open(f))
                if not isinstance(groups, list) or not all("targets" in g for g in groups):
                    problem(f"{f}: not a list of {{targets: [...], labels: {{...}}}}")

    rc, out = run([args.sample_tool, args.workdir])
    if rc != 0:
        problem(f"{args.sample_tool} failed: {out}")
    exported = {}
    for kind in ("coordinator", "worker"):
        text = open(os.path.join(args.workdir, f"{kind}.prom")).read()
        rc, out = run([args.promtool, "check", "metrics"], stdin=text)
        if rc != 0 or out:
            problem(f"promtool check metrics on the {kind} endpoint: {out}")
        exported.update(promql.exported_families(text))

    # ----- metric names ---------------------------------------------------------------------------
    documented = documented_metrics(src)
    for name, kind in exported.items():
        if documented.get(name) != kind:
            problem(f"exported {kind} {name} is not in docs/metrics.md as a {kind}")
    recorded = {}
    alerts = []
    for f in rule_files:
        for g in yaml.safe_load(open(f))["groups"]:
            for r in g["rules"]:
                if "record" in r:
                    recorded[r["record"]] = r["expr"]
                else:
                    alerts.append((r["alert"], r["expr"]))

    def check_names(where, expr, seen=()):
        names = promql.metric_names(expr)
        if not names:
            problem(f"{where}: names no metric: {expr!r}")
        for n in names:
            if ":" in n:
                if n not in recorded:
                    problem(f"{where}: {n} is not a recording rule of {', '.join(map(os.path.basename, rule_files))}")
                elif n not in seen:
                    check_names(f"{where} -> rule {n}", recorded[n], seen + (n,))
                continue
            if n in promql.SYNTHETIC:
                continue
            base = promql.base_name(n, exported)
            if base not in documented:
                problem(f"{where}: {n} is not listed in docs/metrics.md")
            if base not in exported:
                problem(f"{where}: {n} is not exported by any endpoint")

    for name, expr in recorded.items():
        check_names(f"recording rule {name}", expr)
    for name, expr in alerts:
        check_names(f"alert {name}", expr)

    # ----- provisioning ----------------------------------------------------------------------------
    ds_files = glob.glob(os.path.join(deploy, "grafana", "provisioning", "datasources", "*.yml"))
    datasources = [d for f in ds_files for d in yaml.safe_load(open(f)).get("datasources", [])]
    prom_ds = [d for d in datasources if d.get("type") == "prometheus"]
    if len(prom_ds) != 1:
        problem(f"want one provisioned Prometheus datasource, found {len(prom_ds)}")
        ds_uid = None
    else:
        ds_uid = prom_ds[0].get("uid")
    db_files = glob.glob(os.path.join(deploy, "grafana", "provisioning", "dashboards", "*.yml"))
    providers = [pr for f in db_files for pr in yaml.safe_load(open(f)).get("providers", [])]
    if not providers:
        problem("no dashboard provider in deploy/grafana/provisioning/dashboards")

    # ----- dashboards ------------------------------------------------------------------------------
    dashboards = sorted(glob.glob(os.path.join(deploy, "grafana", "dashboards", "*.json")))
    if len(dashboards) < 2:
        problem(f"want the overview and per-rank dashboards, found {dashboards}")
    uids = set()
    total_queries = 0
    for path in dashboards:
        name = os.path.basename(path)
        d = json.load(open(path))
        for key in ("uid", "title", "panels", "schemaVersion"):
            if key not in d:
                problem(f"{name}: no '{key}'")
        if d.get("uid") in uids:
            problem(f"{name}: uid {d.get('uid')} used twice")
        uids.add(d.get("uid"))
        ids = set()

        def walk(panels):
            for pnl in panels:
                where = f"{name} panel {pnl.get('id')} '{pnl.get('title')}'"
                if pnl.get("id") in ids:
                    problem(f"{where}: id used twice")
                ids.add(pnl.get("id"))
                if not pnl.get("title"):
                    problem(f"{where}: no title")
                gp = pnl.get("gridPos", {})
                if not all(k in gp for k in "xywh") or gp.get("x", 0) + gp.get("w", 0) > 24:
                    problem(f"{where}: gridPos {gp} is not inside the 24-column grid")
                if pnl.get("type") == "row":
                    walk(pnl.get("panels", []))
                    continue
                ds = pnl.get("datasource")
                if not isinstance(ds, dict) or ds.get("type") != "prometheus" or ds.get("uid") != ds_uid:
                    problem(f"{where}: datasource {ds} is not the provisioned Prometheus (uid {ds_uid})")
                targets = pnl.get("targets") or []
                if not targets:
                    problem(f"{where}: no query")
                for t in targets:
                    if not t.get("refId"):
                        problem(f"{where}: a query without refId")
                    if not (t.get("expr") or "").strip():
                        problem(f"{where} {t.get('refId')}: empty expression")
                    tds = t.get("datasource")
                    if not isinstance(tds, dict) or tds.get("uid") != ds_uid:
                        problem(f"{where} {t.get('refId')}: query datasource {tds} is not uid {ds_uid}")

        walk(d.get("panels", []))
        for v in d.get("templating", {}).get("list", []):
            if v.get("type") == "query":
                vds = v.get("datasource")
                if not isinstance(vds, dict) or vds.get("uid") != ds_uid:
                    problem(f"{name} variable ${v.get('name')}: datasource {vds} is not uid {ds_uid}")
        for where, expr in promql.dashboard_queries(d):
            total_queries += 1
            check_names(f"{name} {where}", expr)

    # ----- compose ---------------------------------------------------------------------------------
    compose_files = glob.glob(os.path.join(deploy, "compose", "*.yml"))
    if len(compose_files) != 1:
        problem(f"want one compose file in deploy/compose, found {compose_files}")
    else:
        cpath = compose_files[0]
        cdir = os.path.dirname(cpath)
        c = yaml.safe_load(open(cpath))
        services = c.get("services", {})
        for s in ("prometheus", "grafana"):
            if s not in services:
                problem(f"{cpath}: no service {s}")
        mounts = {}
        for s, spec in services.items():
            for v in spec.get("volumes", []):
                parts = v.split(":")
                if parts[0].startswith("."):
                    host = os.path.normpath(os.path.join(cdir, parts[0]))
                    if not os.path.exists(host):
                        problem(f"{cpath}: service {s} mounts {parts[0]}, which does not exist")
                    mounts[(s, parts[1])] = host
        prom = services.get("prometheus", {})
        conf_arg = [a for a in prom.get("command", []) if a.startswith("--config.file=")]
        if not conf_arg:
            problem(f"{cpath}: prometheus has no --config.file")
        else:
            conf = conf_arg[0].split("=", 1)[1]
            if not any(s == "prometheus" and conf.startswith(m + "/") and
                       os.path.exists(os.path.join(h, os.path.relpath(conf, m)))
                       for (s, m), h in mounts.items()):
                problem(f"{cpath}: {conf} is not a mounted deploy file")
        listen = [a for a in prom.get("command", []) if a.startswith("--web.listen-address=")]
        port = listen[0].rsplit(":", 1)[1] if listen else "9090"
        url = services.get("grafana", {}).get("environment", {}).get("PROMETHEUS_URL", "")
        if not url.endswith(":" + port):
            problem(f"{cpath}: Grafana's PROMETHEUS_URL {url} is not Prometheus's port {port}")
        for pr in providers:
            path = pr.get("options", {}).get("path", "")
            if ("grafana", path) not in mounts:
                problem(f"{cpath}: the dashboard provider's path {path} is not mounted into grafana")
        if ("grafana", "/etc/grafana/provisioning") not in mounts:
            problem(f"{cpath}: the provisioning folder is not mounted at /etc/grafana/provisioning")

    if problems:
        for m in problems:
            print("FAIL:", m)
        sys.exit(1)
    print(f"ok: prometheus.yml and {len(rule_files)} rule files pass promtool; {len(dashboards)} "
          f"dashboards, {total_queries} queries, {len(recorded)} recording rules and {len(alerts)} "
          f"alerts name only documented, exported metrics; provisioning and compose agree")


if __name__ == "__main__":
    main()
