"""PNG plots of a run (matplotlib, the optional extra `plot`): throughput vs agents, latency CDF,
cores needed vs fleet size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from charter.capacity.plan import PlanInputs, plan

__all__ = ["available", "draw"]


def available() -> bool:
    """Whether matplotlib can be imported (`pip install 'charter[plot]'`)."""
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return True


def draw(result: dict[str, Any], directory: Path) -> list[Path]:
    """Draw one scenario's plots into `directory`; the files written."""
    import matplotlib  # type: ignore[import-not-found, unused-ignore]

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

    name = result["scenario"]
    written: list[Path] = []

    curve = result["throughput_vs_agents"]
    if curve:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([c["agents"] for c in curve], [c["decisions_per_s"] for c in curve], marker="o")
        ax.set_xscale("log")
        ax.set_xlabel("live agents")
        ax.set_ylabel("single-call decisions/s")
        ax.set_title(f"{name}: throughput vs agents")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        written.append(_save(fig, directory / f"{name}-throughput.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for path, p in result["paths"].items():
        if p["latency_cdf"]:
            xs, ys = zip(*p["latency_cdf"], strict=True)
            ax.plot([x / 1e3 for x in xs], ys, label=f"{path} ({p['latency_of']})")
            drawn = True
    if drawn:
        ax.set_xscale("log")
        ax.set_xlabel("latency (us)")
        ax.set_ylabel("share of requests")
        ax.set_title(f"{name}: latency CDF")
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
        written.append(_save(fig, directory / f"{name}-latency.png"))
    else:
        plt.close(fig)

    if result["plan"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        fleet = result["spec"]["agents"]["count"]
        sizes = [max(1, int(fleet * f)) for f in (0.01, 0.1, 0.25, 0.5, 1, 2, 5, 10)]
        for path, p in result["plan"].items():
            base = PlanInputs(**p["inputs"])
            scale = base.churn_per_second / base.agents if base.agents else 0.0
            cores = [
                plan(PlanInputs(**{**p["inputs"], "agents": n, "churn_per_second": scale * n})).cores
                for n in sizes
            ]
            ax.plot(sizes, cores, marker=".", label=path)
        ax.axvline(fleet, color="grey", linestyle="--", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("agents in the fleet")
        ax.set_ylabel(
            f"cores needed at {result['plan'][next(iter(result['plan']))]['headroom']:.0%} headroom"
        )
        ax.set_title(f"{name}: cores vs fleet size (same per-agent rate)")
        ax.legend(fontsize=8)
        ax.grid(True, alpha=0.3, which="both")
        written.append(_save(fig, directory / f"{name}-cores.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

    plt.close(fig)
    return path
