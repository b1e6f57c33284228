"""The text report of a `charter bench` run: machine, figures per path, the plan, the comparison."""

from __future__ import annotations

from typing import Any

from charter.capacity.machine import summary

__all__ = ["fmt_ns", "render"]


def fmt_ns(ns: float | None) -> str:
    """A latency in the unit that reads best: `412 ns`, `3.1 us`, `2.40 ms`."""
    if ns is None:
        return "-"
    if ns < 1e3:
        return f"{ns:.0f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.1f} us"
    if ns < 1e9:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.2f} s"


def _rate(x: float) -> str:
    for scale, unit in ((1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:.2f} {unit}/s"
    return f"{x:.0f} /s"


def _scenario(r: dict[str, Any]) -> list[str]:
    pol, fleet, mem = r["policy"], r["fleet"], r["memory"]
    lines = [
        f"== {r['scenario']}{' (quick run: reduced sizes, not for planning)' if r['quick'] else ''}",
        f"   {r['description']}" if r["description"] else "",
        f"   policy {pol['version']}: {pol['actions']} actions, {pol['roles']} roles, "
        f"{pol['allow_entries']} allows, {pol['deny_entries']} denies, {pol['scoped_entries']} scoped, "
        f"{pol['conditions']} conditions, {pol['hooks']} hooks, {pol['guards']} guards, {pol['quotas']} quotas",
        f"   fleet {fleet['agents']:,} agents, {fleet['demand_per_s']:,.1f} decisions/s demanded, "
        f"churn {fleet['churn_per_second']:,.2f}/s; seed {r['seed']}",
        f"   memory: engine {mem['engine_base_bytes'] / 2**20:.1f} MiB before agents, "
        f"{mem['bytes_per_agent_used']:.0f} B per agent (RSS {mem['rss_bytes_per_agent']:.0f} B, registry "
        f"{mem['registry_bytes_per_agent']:.0f} B, over {mem['probe_agents']:,} agents, fresh interpreter)",
        "",
        f"   {'path':<8}{'decisions/s':>14}{'p50':>10}{'p99':>10}{'p99.9':>10}{'CPU s/M':>10}  latency of",
    ]
    for name, p in r["paths"].items():
        lat = p["latency_ns"]
        lines.append(
            f"   {name:<8}{_rate(p['decisions_per_s']):>14}{fmt_ns(lat.get('p50')):>10}"
            f"{fmt_ns(lat.get('p99')):>10}{fmt_ns(lat.get('p99.9')):>10}"
            f"{p['cpu_s_per_million_decisions']:>10.2f}  {p['latency_of']}"
        )
        if p.get("timer_floor_ns") is not None:
            lines.append(f"   {'':<8}(latencies include the timer's own {fmt_ns(p['timer_floor_ns'])})")
        if "client_cpu_s_per_million_decisions" in p:
            lines.append(
                f"   {'':<8}(server CPU; the clients spent {p['client_cpu_s_per_million_decisions']:.2f} CPU s/M)"
            )
    churn = r["churn"]
    lines.append(
        f"   churn: {churn['pairs_per_s']:,.0f} provision+retire pairs/s in-process, "
        f"{churn['cpu_us_per_pair']:.1f} CPU us each"
        + (
            f"; over the admin socket {r['socket']['churn_cpu_s_per_pair'] * 1e6:.0f} server CPU us each"
            if r["socket"].get("churn_cpu_s_per_pair") is not None
            else ""
        )
    )
    if r["socket"].get("note"):
        lines.append(f"   socket: {r['socket']['note']}")
    a = r["audit"]
    if a.get("bytes_per_decision") is not None:
        lines.append(f"   audit: {a['bytes_per_decision']:.1f} bytes per decision ({a['bytes']:,} bytes)")
    elif a.get("note"):
        lines.append(f"   audit: {a['note']}")
    if r["throughput_vs_agents"]:
        curve = ", ".join(
            f"{c['agents']:,}: {_rate(c['decisions_per_s'])}" for c in r["throughput_vs_agents"]
        )
        lines.append(f"   single-call throughput as the fleet grew: {curve}")
    lines.append("")
    lines.append(
        "   plan (model: cores = (D*c + C*k)/(1-h); memory = (M0 + N*m)/(1-h); see docs/capacity.md)"
    )
    for name, p in r["plan"].items():
        lines.append(f"   {name:<8}{p['sentence']}")
    lines += _compare(r.get("compare"))
    lines += [f"   note: {n}" for n in r["notes"]]
    return [line for line in lines if line != ""] + [""]


def _compare(c: dict[str, Any] | None) -> list[str]:
    if not c:
        return []
    lines = [
        "",
        f"   compare ({c['workload']}; {c['agents']:,} agents, {c['time_box_s']:.0f} s per measurement):",
    ]
    lines.append(
        f"   {'engine':<10}{'single/s':>14}{'CPU s/M':>10}{'batch/s':>14}{'CPU s/M':>10}{'x single':>10}{'x batch':>10}"
    )
    ratios = c["ratios"]
    for name, res in c["results"].items():
        if "error" in res:
            lines.append(f"   {name:<10}{res['error']}")
            continue
        s, b = res["single"], res["batch"]
        ratio = ratios.get(name, {})
        xs = f"{ratio['single']['throughput_ratio']:.0f}x" if "single" in ratio else ""
        xb = f"{ratio['batch']['throughput_ratio']:.0f}x" if "batch" in ratio else ""
        lines.append(
            f"   {name:<10}{_rate(s['decisions_per_s']):>14}{s['cpu_s_per_million_decisions']:>10.1f}"
            f"{_rate(b['decisions_per_s']):>14}{b['cpu_s_per_million_decisions']:>10.1f}{xs:>10}{xb:>10}"
        )
    lines.append("   (x = Charter's decisions/s over the peer's on the same requests, same run)")
    return lines


def render(results: dict[str, Any]) -> str:
    """The whole report."""
    lines = [f"charter bench on {summary(results['machine'])}", ""]
    for r in results["scenarios"]:
        lines += _scenario(r)
    return "\n".join(lines)
