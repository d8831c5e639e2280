"""Metric names in a PromQL expression (or a Grafana `label_values(metric, label)` query), for the
deploy and cluster checks. Not a parser: strings, label matchers, ranges, grouping clauses and
Grafana variables are removed, then every identifier not followed by "(" and not a keyword is a
metric name. The real Prometheus evaluates every expression in the cluster test."""
import re

KEYWORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "inf", "nan", "atan2",
}
# Series Prometheus itself makes for every target.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def grafana_label_values(expr):
    """label_values(metric, label) -> (metric, label); None for other queries."""
    m = re.fullmatch(r"\s*label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_]\w*)\s*\)\s*", expr)
    return (m.group(1), m.group(2)) if m else None


def metric_names(expr):
    lv = grafana_label_values(expr)
    if lv:
        return {lv[0]}
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\$\{?\w+\}?", " ", s)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", s):
        tok = m.group(0)
        if m.start() > 0 and (s[m.start() - 1].isdigit() or s[m.start() - 1] == "."):
            continue  # the exponent of a number such as 1e3
        if s[m.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        if tok in KEYWORDS:
            continue
        names.add(tok)
    return names


def substitute_grafana(expr, rate_interval="4s"):
    """A dashboard query as Prometheus can run it: every variable selects everything."""
    expr = expr.replace("$__rate_interval", rate_interval).replace("$__interval", rate_interval)
    return re.sub(r"\$\{?(\w+)\}?", ".*", expr)


def dashboard_queries(dashboard):
    """(where, expr) for every panel target and templating query of a dashboard."""
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                out.append((f"panel {p.get('id')} '{p.get('title')}' {t.get('refId')}", t.get("expr", "")))
            walk(p.get("panels", []))

    walk(dashboard.get("panels", []))
    for v in dashboard.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query", "")
        if v.get("type") == "query":
            out.append((f"variable ${v.get('name')}", q or ""))
    return out


def exported_families(text):
    """name -> type from an exposition text's TYPE lines."""
    return {m.group(1): m.group(2)
            for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M)}


def base_name(name, families):
    """The family a sample name belongs to (x_bucket -> x when x is a histogram)."""
    if name in families:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and families.get(name[: -len(suffix)]) == "histogram":
            return name[: -len(suffix)]
    return name
