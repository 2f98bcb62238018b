#!/usr/bin/env python3
"""Turn benches/pgbench.sh's raw results into the JSON report and the tables.

Inputs: a TSV of runs (one line per pgbench run, header first) and a TSV of
facts (`dotted.key<TAB>value`, nested into objects). Prints Markdown tables on
stdout and writes the JSON file. Standard library only.
"""

import argparse
import csv
import datetime
import json
import statistics
import sys

TARGETS = ["direct", "pgbouncer", "rolegate"]
WORKLOAD_ORDER = [
    "select_simple",
    "select_prepared",
    "tpcb",
    "select_connect",
    "select1_latency",
]
DESCRIPTIONS = {
    "select_simple": "pgbench -S, simple query protocol: one primary-key SELECT per transaction, fresh SQL text each time",
    "select_prepared": "pgbench -S -M prepared: the same SELECT through Parse once, Bind/Execute after",
    "tpcb": "pgbench's default TPC-B-like script: BEGIN, 3 UPDATEs, SELECT, INSERT, END (7 statements)",
    "select_connect": "pgbench -S -C: a new connection (TLS + SCRAM login) for every transaction",
    "select1_latency": "one client, `SELECT 1;` in a loop: per-statement round-trip latency",
}
NUMERIC = {
    "round": int,
    "position": int,
    "tps": float,
    "latency_ms": float,
    "transactions": int,
    "failed": int,
    "statements": int,
    "cpu_ms": int,
    "rss_before_kb": int,
    "rss_after_kb": int,
    "connection_ms": float,
}


def convert(value):
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def read_meta(path):
    meta = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            key, _, value = line.partition("\t")
            node = meta
            parts = key.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            # Free text keeps its type; numbers become numbers.
            node[parts[-1]] = value if key.startswith(("versions.", "parameters.workloads")) else convert(value)
    return meta


def read_runs(path):
    runs = []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            run = {}
            for key, value in row.items():
                if key in NUMERIC:
                    run[key] = NUMERIC[key](value) if value not in ("", None) else None
                else:
                    run[key] = value or None
            runs.append(run)
    return runs


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def fmt(value, digits=1):
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def tps_cell(m):
    if m["tps"] is None:
        return "n/a"
    digits = 0 if m["tps"] >= 100 else 1
    spread = ""
    if m["runs_ok"] > 1:
        spread = f" ({fmt(m['tps_min'], digits)}–{fmt(m['tps_max'], digits)})"
    return fmt(m["tps"], digits) + spread


def from_json(path):
    """Runs and facts of an earlier report, to re-render it."""
    with open(path, encoding="utf-8") as f:
        old = json.load(f)
    meta = {
        k: old.get(k, {})
        for k in ("parameters", "machine", "versions", "upstream_tls", "rss", "idle_sessions", "workloads")
    }
    meta["rolegate_log_lines"] = old.get("rolegate_log_lines")
    meta["generated_at"] = old.get("generated_at")
    return meta, old["runs"]


def summarise(runs):
    medians, ratios = {}, {}
    workloads = [w for w in WORKLOAD_ORDER if any(r["workload"] == w for r in runs)]
    for w in workloads:
        medians[w] = {}
        for t in TARGETS:
            ok = [r for r in runs if r["workload"] == w and r["target"] == t and r["status"] == "ok"]
            cpu = [
                r["cpu_ms"] * 1000 / r["statements"]
                for r in ok
                if r["cpu_ms"] is not None and r["statements"]
            ]
            medians[w][t] = {
                "runs_ok": len(ok),
                "runs_failed": sum(
                    1 for r in runs if r["workload"] == w and r["target"] == t and r["status"] != "ok"
                ),
                "tps": median([r["tps"] for r in ok]),
                "tps_min": min((r["tps"] for r in ok), default=None),
                "tps_max": max((r["tps"] for r in ok), default=None),
                "latency_ms": median([r["latency_ms"] for r in ok]),
                "connection_ms": median([r["connection_ms"] for r in ok]),
                "cpu_ms_per_1k_statements": round(median(cpu), 3) if cpu else None,
            }
        m = medians[w]
        ratios[w] = {
            "rolegate/direct": ratio(m["rolegate"]["tps"], m["direct"]["tps"]),
            "rolegate/pgbouncer": ratio(m["rolegate"]["tps"], m["pgbouncer"]["tps"]),
            "pgbouncer/direct": ratio(m["pgbouncer"]["tps"], m["direct"]["tps"]),
        }
    return workloads, medians, ratios


def tables(workloads, medians, ratios, meta):
    out = []
    out.append("Throughput (median TPS over rounds, min–max in brackets; ratios of the medians):")
    out.append("")
    out.append("| workload | direct | PgBouncer | rolegate | rolegate/direct | rolegate/PgBouncer | PgBouncer/direct |")
    out.append("|---|---:|---:|---:|---:|---:|---:|")
    for w in workloads:
        m, r = medians[w], ratios[w]
        out.append(
            f"| {w} | {tps_cell(m['direct'])} | {tps_cell(m['pgbouncer'])} | {tps_cell(m['rolegate'])} "
            f"| {fmt(r['rolegate/direct'], 2)} | {fmt(r['rolegate/pgbouncer'], 2)} | {fmt(r['pgbouncer/direct'], 2)} |"
        )
    out.append("")
    out.append("Latency (median of pgbench's average per transaction, ms) and proxy CPU:")
    out.append("")
    out.append(
        "| workload | direct | PgBouncer | rolegate | rolegate CPU ms / 1k stmts | PgBouncer CPU ms / 1k stmts |"
    )
    out.append("|---|---:|---:|---:|---:|---:|")
    for w in workloads:
        m = medians[w]
        out.append(
            f"| {w} | {fmt(m['direct']['latency_ms'], 3)} | {fmt(m['pgbouncer']['latency_ms'], 3)} "
            f"| {fmt(m['rolegate']['latency_ms'], 3)} | {fmt(m['rolegate']['cpu_ms_per_1k_statements'], 1)} "
            f"| {fmt(m['pgbouncer']['cpu_ms_per_1k_statements'], 1)} |"
        )
    added = {}
    if "select1_latency" in medians:
        m = medians["select1_latency"]
        d = m["direct"]["latency_ms"]
        for t in ("pgbouncer", "rolegate"):
            v = m[t]["latency_ms"]
            added[t] = round((v - d) * 1000, 1) if v is not None and d is not None else None
        out.append("")
        out.append(
            f"Added latency over direct, one client `SELECT 1`: rolegate {fmt(added['rolegate'])} µs, "
            f"PgBouncer {fmt(added['pgbouncer'])} µs (direct {fmt(d, 3)} ms)."
        )
    failures = [
        f"{w}/{t}: {medians[w][t]['runs_failed']}"
        for w in workloads
        for t in TARGETS
        if medians[w][t]["runs_failed"]
    ]
    if failures:
        out.append("")
        out.append("FAILED runs (excluded from the medians): " + ", ".join(failures))
    rss = meta.get("rss", {})
    idle = meta.get("idle_sessions", {})
    out.append("")
    out.append("Memory (VmRSS, MiB):")
    out.append("")
    out.append("| proxy | at start | before runs | after runs | peak (VmHWM) | idle: 0 sessions | idle: N sessions | added per 1,000 idle sessions |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for t in ("rolegate", "pgbouncer"):
        r, i = rss.get(t, {}), idle.get(t, {})
        mib = lambda kb: round(kb / 1024, 1) if isinstance(kb, (int, float)) else None  # noqa: E731
        added_mib = None
        if isinstance(i.get("rss_with_sessions_kb"), int) and isinstance(i.get("rss_0_sessions_kb"), int):
            delta = i["rss_with_sessions_kb"] - i["rss_0_sessions_kb"]
            n = i.get("sessions") or 1
            added_mib = round(delta / 1024 * 1000 / n, 1)
            i["added_mib"] = round(delta / 1024, 1)
            i["added_kib_per_session"] = round(delta / n, 1)
        out.append(
            f"| {t} | {fmt(mib(r.get('start_kb')))} | {fmt(mib(r.get('before_runs_kb')))} | {fmt(mib(r.get('after_runs_kb')))} "
            f"| {fmt(mib(r.get('peak_kb')))} | {fmt(mib(i.get('rss_0_sessions_kb')))} "
            f"| {fmt(mib(i.get('rss_with_sessions_kb')))} (N={fmt(i.get('sessions'))}) | {fmt(added_mib)} |"
        )
    return "\n".join(out), added


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", help="runs TSV from benches/pgbench.sh")
    ap.add_argument("--meta", help="facts TSV from benches/pgbench.sh")
    ap.add_argument("--from-json", help="re-render an earlier report instead (e.g. after changing this script)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    if args.from_json:
        meta, runs = from_json(args.from_json)
    elif args.results and args.meta:
        meta = read_meta(args.meta)
        runs = read_runs(args.results)
    else:
        ap.error("give --results and --meta, or --from-json")
    if not runs:
        sys.exit("report.py: no runs recorded")
    workloads, medians, ratios = summarise(runs)
    table, added = tables(workloads, medians, ratios, meta)
    for w, info in meta.get("workloads", {}).items():
        info["description"] = DESCRIPTIONS.get(w, "")
    report = {
        "generated_at": meta.get("generated_at")
        or datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "parameters": meta.get("parameters", {}),
        "machine": meta.get("machine", {}),
        "versions": meta.get("versions", {}),
        "upstream_tls": meta.get("upstream_tls", {}),
        "workloads": {w: meta.get("workloads", {}).get(w, {}) for w in workloads},
        "runs": runs,
        "medians": medians,
        "ratios": ratios,
        "added_latency_us": added,
        "rss": meta.get("rss", {}),
        "idle_sessions": meta.get("idle_sessions", {}),
        "rolegate_log_lines": meta.get("rolegate_log_lines"),
        "table_markdown": table,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print(table)


if __name__ == "__main__":
    main()
