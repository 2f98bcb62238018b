#!/usr/bin/env python3
"""Turn benches/pgbench.sh's raw results into the JSON report and the tables.

Inputs: a TSV of runs (one line per pgbench run, header first), a TSV of
facts (`dotted.key<TAB>value`, nested into objects) and, after a soak, a TSV
of RSS samples. Prints Markdown tables on stdout (one set per leg: TLS on
both legs, plaintext on both) and writes the JSON file. Standard library
only. `--from-json` re-renders an earlier report, including the single-leg
reports written before HAProxy and the plaintext leg were added.
"""

import argparse
import csv
import datetime
import json
import statistics
import sys

TARGETS = ["direct", "haproxy", "pgbouncer", "rolegate"]
PROXIES = ["rolegate", "pgbouncer", "haproxy"]
LABEL = {"direct": "direct", "haproxy": "HAProxy", "pgbouncer": "PgBouncer", "rolegate": "rolegate"}
LEGS = ["tls", "plain"]
LEG_TITLE = {"tls": "TLS on both legs", "plain": "Plaintext on both legs"}
# Issue 15: memory per idle runtime session.
IDLE_TARGET_KIB = {"tls": 24, "plain": 12}
IDLE_TARGET_WHAT = {"tls": "TLS on both legs", "plain": "plaintext"}
RATIOS = [
    ("rolegate", "haproxy"),
    ("rolegate", "pgbouncer"),
    ("rolegate", "direct"),
    ("haproxy", "direct"),
    ("pgbouncer", "direct"),
]
WORKLOAD_ORDER = [
    "select_simple",
    "select_prepared",
    "tpcb",
    "select_connect",
    "select1_latency",
    "select_literals",
    "select_simple_c64",
    "select_simple_c256",
]
DESCRIPTIONS = {
    "select_simple": "pgbench -S, simple query protocol: one primary-key SELECT per transaction, fresh SQL text each time",
    "select_prepared": "pgbench -S -M prepared: the same SELECT through Parse once, Bind/Execute after",
    "tpcb": "pgbench's default TPC-B-like script: BEGIN, 3 UPDATEs, SELECT, INSERT, END (7 statements)",
    "select_connect": "pgbench -S -C: a new connection (login, and TLS in the TLS leg) for every transaction",
    "select1_latency": "one client, `SELECT 1;` in a loop: per-statement round-trip latency (pinned to one CPU with PIN=1)",
    "select_literals": "select_literals.sql, -M simple: two SELECTs per transaction carrying fresh random string and numeric literals (IN lists, LIKE patterns, decimals): no statement text repeats",
    "select_simple_c64": "pgbench -S -M simple with 64 clients",
    "select_simple_c256": "pgbench -S -M simple with 256 clients",
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
    "initial_connection_ms": float,
    "policy_allowed": int,
    "policy_refused": int,
    "pinned_cpu": int,
}
SOAK_NUMERIC = {"t_s": int, "rss_kb": int, "cpu_ms": int}
# Free-text facts that must stay strings even when they look like numbers.
TEXT_KEYS = ("versions.", "parameters.workloads", "parameters.legs", "machine.cpus_allowed")


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
            node[parts[-1]] = value if key.startswith(TEXT_KEYS) else convert(value)
    return meta


def read_tsv(path, numeric):
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            out = {}
            for key, value in row.items():
                if key in numeric:
                    out[key] = numeric[key](value) if value not in ("", None) else None
                else:
                    out[key] = value or None
            rows.append(out)
    return rows


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


def mib(kb):
    return round(kb / 1024, 1) if isinstance(kb, (int, float)) else None


def us(value):
    return "n/a" if value is None else f"{fmt(value)} µs"


def tps_cell(m):
    if m["tps"] is None:
        return "n/a"
    digits = 0 if m["tps"] >= 100 else 1
    spread = ""
    if m["runs_ok"] > 1:
        spread = f" ({fmt(m['tps_min'], digits)}–{fmt(m['tps_max'], digits)})"
    return fmt(m["tps"], digits) + spread


def from_json(path):
    """Facts, runs and soak samples of an earlier report, to re-render it."""
    with open(path, encoding="utf-8") as f:
        old = json.load(f)
    meta = {k: old.get(k, {}) for k in ("parameters", "machine", "versions", "workloads", "rss")}
    meta["generated_at"] = old.get("generated_at")
    runs = old["runs"]
    if "legs" in old:
        keep = ("sslmode", "config", "client_tls", "upstream_tls", "rss", "idle_sessions", "rolegate_log_lines")
        meta["legs"] = {leg: {k: v for k, v in info.items() if k in keep} for leg, info in old["legs"].items()}
    else:
        # A report from before the legs: one leg, its sslmode in the parameters.
        sslmode = meta["parameters"].get("sslmode", "prefer")
        leg = "plain" if sslmode == "disable" else "tls"
        meta["parameters"]["legs"] = leg
        meta["legs"] = {
            leg: {
                "sslmode": sslmode,
                "upstream_tls": old.get("upstream_tls", {}),
                "rss": old.get("rss", {}),
                "idle_sessions": old.get("idle_sessions", {}),
                "rolegate_log_lines": old.get("rolegate_log_lines"),
            }
        }
        meta["rss"] = {}
        for r in runs:
            r.setdefault("leg", leg)
    soak = old.get("soak")
    samples = None
    if soak:
        samples = soak.get("samples")
        meta["soak"] = {k: v for k, v in soak.items() if k not in ("samples", "summary")}
    return meta, runs, samples


def summarise(runs):
    medians, ratios, policy = {}, {}, {}
    workloads = [w for w in WORKLOAD_ORDER if any(r["workload"] == w for r in runs)]
    for w in workloads:
        medians[w] = {}
        for t in TARGETS:
            mine = [r for r in runs if r["workload"] == w and r["target"] == t]
            ok = [r for r in mine if r["status"] == "ok"]
            cpu = [
                r["cpu_ms"] * 1000 / r["statements"]
                for r in ok
                if r.get("cpu_ms") is not None and r["statements"]
            ]
            medians[w][t] = {
                "runs_ok": len(ok),
                "runs_failed": len(mine) - len(ok),
                "tps": median([r["tps"] for r in ok]),
                "tps_min": min((r["tps"] for r in ok), default=None),
                "tps_max": max((r["tps"] for r in ok), default=None),
                "latency_ms": median([r["latency_ms"] for r in ok]),
                "connection_ms": median([r.get("connection_ms") for r in ok]),
                "initial_connection_ms": median([r.get("initial_connection_ms") for r in ok]),
                "cpu_ms_per_1k_statements": round(median(cpu), 3) if cpu else None,
            }
        m = medians[w]
        ratios[w] = {f"{a}/{b}": ratio(m[a]["tps"], m[b]["tps"]) for a, b in RATIOS}
        rg = [r for r in runs if r["workload"] == w and r["target"] == "rolegate"]
        counted = [r for r in rg if r.get("policy_allowed") is not None]
        policy[w] = {
            "runs": len(rg),
            "runs_failed": sum(1 for r in rg if r["status"] != "ok"),
            "statements_run": sum(r["statements"] or 0 for r in rg),
            "failed_transactions": sum(r["failed"] or 0 for r in rg),
            "allowed": sum(r["policy_allowed"] for r in counted) if counted else None,
            "refused": sum(r["policy_refused"] or 0 for r in counted) if counted else None,
        }
    return workloads, medians, ratios, policy


def soak_summary(samples, soak):
    """Does RSS level off? The same rule as benches/soak.sh: the last sample
    under load within max(10 %, 4 MiB) of the sample at the end of the
    warm-up (the first fifth), plus the least-squares trend after it."""
    load = [s for s in samples if s["phase"] == "load" and s["rss_kb"] is not None]
    after = [s for s in samples if s["phase"] == "after" and s["rss_kb"] is not None]
    if len(load) < 2:
        return {"verdict": "too few samples"}
    duration = (soak.get("minutes") or 0) * 60 or load[-1]["t_s"]
    warm = next((s for s in load if s["t_s"] >= duration / 5), load[-1])
    last = load[-1]
    bound = max(warm["rss_kb"] * 0.10, 4096)
    tail = [s for s in load if s["t_s"] >= warm["t_s"]]
    slope = None
    if len(tail) >= 2:
        ts = [s["t_s"] / 60 for s in tail]
        ys = [s["rss_kb"] for s in tail]
        mt, my = statistics.fmean(ts), statistics.fmean(ys)
        den = sum((t - mt) ** 2 for t in ts)
        if den:
            slope = round(sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / den, 1)
    flat = abs(last["rss_kb"] - warm["rss_kb"]) <= bound
    return {
        "rss_first_kb": load[0]["rss_kb"],
        "rss_warmup_end_kb": warm["rss_kb"],
        "warmup_end_s": warm["t_s"],
        "rss_last_kb": last["rss_kb"],
        "rss_peak_kb": max(s["rss_kb"] for s in load),
        "rss_after_kb": after[-1]["rss_kb"] if after else None,
        "bound_kb": round(bound),
        "trend_kib_per_min": slope,
        "flat": flat,
        "verdict": "flat" if flat else "grew beyond the bound",
    }


def leg_tables(leg, info, workloads, medians, ratios, policy, meta, out):
    params = meta.get("parameters", {})
    sslmode = info.get("sslmode", "?")
    out.append(f"### {LEG_TITLE[leg]} (`sslmode={sslmode}`)")
    out.append("")
    if leg == "tls" and any(medians[w]["haproxy"]["runs_ok"] + medians[w]["haproxy"]["runs_failed"] for w in workloads):
        out.append(
            "HAProxy runs in TCP mode and does not terminate TLS: the client's TLS session goes through it "
            "to PostgreSQL, so the HAProxy column has one TLS session per connection where PgBouncer and "
            "rolegate terminate the client's and open their own to the server (two), and HAProxy does no "
            "TLS work itself."
        )
        out.append("")
    tls_seen = []
    for t in TARGETS:
        c, u = info.get("client_tls", {}).get(t), info.get("upstream_tls", {}).get(t)
        if c is not None or u is not None:
            tls_seen.append(f"{LABEL[t]} {c or '?'}/{u or '?'}")
    if tls_seen:
        out.append("TLS seen (client leg / server leg, from `\\conninfo` and `pg_stat_ssl`): " + ", ".join(tls_seen) + ".")
        out.append("")

    out.append("Throughput (median TPS over rounds, min–max in brackets; ratios of the medians):")
    out.append("")
    head = " | ".join(f"{LABEL[a]}/{LABEL[b]}" for a, b in RATIOS)
    out.append(f"| workload | direct | HAProxy | PgBouncer | rolegate | {head} |")
    out.append("|---|" + "---:|" * (len(TARGETS) + len(RATIOS)))
    for w in workloads:
        m, r = medians[w], ratios[w]
        cells = " | ".join(tps_cell(m[t]) for t in TARGETS)
        rcells = " | ".join(fmt(r[f"{a}/{b}"], 2) for a, b in RATIOS)
        out.append(f"| {w} | {cells} | {rcells} |")
    out.append("")
    out.append("Latency (median of pgbench's average per transaction, ms) and proxy CPU (ms per 1,000 statements):")
    out.append("")
    out.append("| workload | direct | HAProxy | PgBouncer | rolegate | rolegate CPU | PgBouncer CPU | HAProxy CPU |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for w in workloads:
        m = medians[w]
        lat = " | ".join(fmt(m[t]["latency_ms"], 3) for t in TARGETS)
        cpu = " | ".join(fmt(m[t]["cpu_ms_per_1k_statements"], 1) for t in ("rolegate", "pgbouncer", "haproxy"))
        out.append(f"| {w} | {lat} | {cpu} |")
    added = {}
    if "select1_latency" in medians:
        m = medians["select1_latency"]
        d = m["direct"]["latency_ms"]
        for t in PROXIES:
            v = m[t]["latency_ms"]
            added[t] = round((v - d) * 1000, 1) if v is not None and d is not None else None
        h, rg = m["haproxy"]["latency_ms"], m["rolegate"]["latency_ms"]
        added["rolegate_over_haproxy"] = round((rg - h) * 1000, 1) if rg is not None and h is not None else None
        pinned = (
            f"everything pinned to CPU {params.get('pin_cpu')}"
            if params.get("pin") == 1
            else "not pinned"
        )
        out.append("")
        out.append(
            f"Added latency over direct, one client `SELECT 1` ({pinned}): rolegate {us(added['rolegate'])}, "
            f"PgBouncer {us(added['pgbouncer'])}, HAProxy {us(added['haproxy'])} (direct {fmt(d, 3)} ms); "
            f"rolegate over HAProxy: {us(added['rolegate_over_haproxy'])}."
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

    if any(p["allowed"] is not None for p in policy.values()):
        out.append("")
        out.append(
            "rolegate's policy over the runs (all rounds; statements counted by pgbench, and by rolegate's "
            "`/metrics`, which counts a prepared statement once, at Parse, and also statements of "
            "transactions cut off at the end of a run):"
        )
        out.append("")
        out.append("| workload | statements run | allowed by the policy | refused | failed transactions | failed runs |")
        out.append("|---|---:|---:|---:|---:|---:|")
        for w in workloads:
            p = policy[w]
            out.append(
                f"| {w} | {fmt(p['statements_run'])} | {fmt(p['allowed'])} | {fmt(p['refused'])} "
                f"| {fmt(p['failed_transactions'])} | {fmt(p['runs_failed'])} |"
            )

    rss = dict(info.get("rss", {}))
    if "haproxy" in meta.get("rss", {}):
        rss["haproxy"] = meta["rss"]["haproxy"]
    idle = info.get("idle_sessions", {})
    out.append("")
    out.append("Memory (VmRSS, MiB; HAProxy is one instance for both legs, not measured with idle sessions):")
    out.append("")
    out.append(
        "| proxy | at start | before runs | after runs | peak (VmHWM) | idle: 0 sessions | idle: N sessions "
        "| added per 1,000 idle sessions | KiB per idle session |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in PROXIES:
        r, i = rss.get(t, {}), idle.get(t, {})
        if not r and not i:
            continue
        added_mib = None
        if isinstance(i.get("rss_with_sessions_kb"), int) and isinstance(i.get("rss_0_sessions_kb"), int):
            delta = i["rss_with_sessions_kb"] - i["rss_0_sessions_kb"]
            n = i.get("sessions") or 1
            added_mib = round(delta / 1024 * 1000 / n, 1)
            i["added_mib"] = round(delta / 1024, 1)
            i["added_kib_per_session"] = round(delta / n, 1)
        with_n = "n/a"
        if i:
            with_n = f"{fmt(mib(i.get('rss_with_sessions_kb')))} (N={fmt(i.get('sessions'))})"
        out.append(
            f"| {t} | {fmt(mib(r.get('start_kb')))} | {fmt(mib(r.get('before_runs_kb')))} "
            f"| {fmt(mib(r.get('after_runs_kb')))} | {fmt(mib(r.get('peak_kb')))} "
            f"| {fmt(mib(i.get('rss_0_sessions_kb')))} | {with_n} | {fmt(added_mib)} "
            f"| {fmt(i.get('added_kib_per_session'))} |"
        )
    idle_target = None
    rg_idle = idle.get("rolegate", {}).get("added_kib_per_session")
    if rg_idle is not None:
        limit = IDLE_TARGET_KIB[leg]
        both = all(info.get(k, {}).get("rolegate") == ("t" if leg == "tls" else "f") for k in ("client_tls", "upstream_tls"))
        verdict = ("met" if rg_idle <= limit else "missed") if both or "client_tls" not in info else "n/a: not TLS on both legs"
        idle_target = {"kib_per_session": rg_idle, "target_kib": limit, "verdict": verdict}
        out.append("")
        out.append(
            f"Idle runtime sessions through rolegate: {fmt(rg_idle)} KiB each; issue 15's target for "
            f"{IDLE_TARGET_WHAT[leg]}: ≤ {limit} KiB — {verdict}."
        )
    out.append("")
    return added, idle_target


def soak_tables(soak, samples, summary, out):
    out.append(
        f"### Soak: select_literals against rolegate alone ({soak.get('leg', '?')} leg), "
        f"{fmt(soak.get('minutes'))} min"
    )
    out.append("")
    out.append(
        f"`pgbench {soak.get('pgbench_args', '')}`: {fmt(soak.get('transactions'))} transactions "
        f"({fmt(soak.get('tps'))} TPS), {fmt(soak.get('failed'))} failed, status {soak.get('status', '?')}; "
        f"the policy allowed {fmt(soak.get('policy_allowed'))} and refused {fmt(soak.get('policy_refused'))} "
        f"statements. RSS sampled every {fmt(soak.get('sample_every_s'))} s (all samples in the JSON):"
    )
    out.append("")
    out.append("| | RSS (MiB) |")
    out.append("|---|---:|")
    if "rss_first_kb" in summary:
        out.append(f"| first sample (load starting) | {fmt(mib(summary['rss_first_kb']))} |")
        out.append(f"| end of the warm-up ({summary['warmup_end_s']} s, first fifth) | {fmt(mib(summary['rss_warmup_end_kb']))} |")
        out.append(f"| last sample under load | {fmt(mib(summary['rss_last_kb']))} |")
        out.append(f"| peak sample | {fmt(mib(summary['rss_peak_kb']))} |")
        out.append(f"| after pgbench ended | {fmt(mib(summary['rss_after_kb']))} |")
        out.append("")
        out.append(
            f"Trend after the warm-up: {fmt(summary['trend_kib_per_min'])} KiB/min; last vs warm-up end within "
            f"max(10 %, 4 MiB) = {fmt(mib(summary['bound_kb']))} MiB: **{summary['verdict']}**."
        )
    else:
        out.append(f"| | {summary['verdict']} |")
    out.append("")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", help="runs TSV from benches/pgbench.sh")
    ap.add_argument("--meta", help="facts TSV from benches/pgbench.sh")
    ap.add_argument("--soak", help="soak samples TSV from benches/pgbench.sh (SOAK_MINUTES > 0)")
    ap.add_argument("--from-json", help="re-render an earlier report instead (e.g. after changing this script)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    samples = None
    if args.from_json:
        meta, runs, samples = from_json(args.from_json)
    elif args.results and args.meta:
        meta = read_meta(args.meta)
        runs = read_tsv(args.results, NUMERIC)
        if args.soak:
            samples = read_tsv(args.soak, SOAK_NUMERIC)
    else:
        ap.error("give --results and --meta, or --from-json")
    if not runs:
        sys.exit("report.py: no runs recorded")

    out = []
    params = meta.get("parameters", {})
    if params.get("pool_mode") == "transaction":
        size = params.get("pool_size")
        out.append(
            f"Pool mode: **transaction** (rolegate `[pool] mode = \"transaction\"`, `size = {size}`; "
            f"PgBouncer `pool_mode = transaction`, `default_pool_size = {size}`).\n"
        )
    legs = {}
    all_workloads = []
    for leg in LEGS:
        leg_runs = [r for r in runs if r.get("leg") == leg]
        if not leg_runs:
            continue
        info = meta.get("legs", {}).get(leg, {})
        workloads, medians, ratios, policy = summarise(leg_runs)
        added, idle_target = leg_tables(leg, info, workloads, medians, ratios, policy, meta, out)
        all_workloads += [w for w in workloads if w not in all_workloads]
        legs[leg] = {
            **info,
            "medians": medians,
            "ratios": ratios,
            "added_latency_us": added,
            "policy": policy,
            "idle_target": idle_target,
        }
    soak = None
    if samples:
        soak = dict(meta.get("soak", {}))
        summary = soak_summary(samples, soak)
        soak_tables(soak, samples, summary, out)
        soak["summary"] = summary
        soak["samples"] = samples
    table = "\n".join(out).rstrip() + "\n"

    workload_info = {w: dict(meta.get("workloads", {}).get(w, {})) for w in all_workloads}
    for w, info in workload_info.items():
        info["description"] = DESCRIPTIONS.get(w, "")
    report = {
        "generated_at": meta.get("generated_at")
        or datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "parameters": meta.get("parameters", {}),
        "machine": meta.get("machine", {}),
        "versions": meta.get("versions", {}),
        "workloads": workload_info,
        "legs": legs,
        "rss": meta.get("rss", {}),
        "soak": soak,
        "runs": runs,
        "table_markdown": table,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print(table, end="")


if __name__ == "__main__":
    main()
