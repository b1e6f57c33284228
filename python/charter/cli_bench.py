"""`charter bench`: the capacity-planning suite (docs/capacity.md).

Runs scenarios (shipped by name or TOML files), prints the report and the
capacity plan, writes the raw results as JSON and, with matplotlib, PNG
plots. Exit codes: 0 done, 1 a `--compare` translation disagreed with
Charter, 2 a bad scenario or option.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_commands"]


def _cmd_bench(args: argparse.Namespace) -> int:
    from charter.capacity import machine, plots, report
    from charter.capacity.progress import Progress
    from charter.capacity.runner import Options, run_scenario
    from charter.capacity.scenario import load, shipped

    if args.list:
        for name in shipped():
            s = load(name)
            print(f"{name:<16} {s.description}")
        return 0
    names = shipped() if args.all else args.scenarios
    if not names:
        print("charter: error: name a scenario (or --all); shipped: " + ", ".join(shipped()), file=sys.stderr)
        return 2
    scenarios = [load(n) for n in names]  # every file is checked before anything runs
    if args.paths:
        wanted = [p.strip() for p in args.paths.split(",") if p.strip()]
        scenarios = [with_paths(s, wanted) for s in scenarios]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress(quiet=args.quiet)
    options = Options(
        quick=args.quick, compare=args.compare, seed=args.seed, compare_seconds=args.compare_seconds
    )
    results: dict[str, Any] = {
        "charter_bench": 1,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["charter", "bench", *sys.argv[2:]]) if sys.argv[1:2] == ["bench"] else None,
        "machine": machine.describe(),
        "scenarios": [],
    }
    progress.note(f"charter bench on {machine.summary(results['machine'])}")
    for scenario in scenarios:
        results["scenarios"].append(run_scenario(scenario, options, progress))
    json_path = Path(args.json) if args.json else out / "results.json"
    json_path.write_text(json.dumps(results, indent=1, allow_nan=False))
    text = report.render(results)
    (out / "report.txt").write_text(text + "\n")
    print(text)
    print(f"results: {json_path}")
    if not args.no_plots:
        if plots.available():
            files = [f for r in results["scenarios"] for f in plots.draw(r, out)]
            print("plots: " + ", ".join(str(f) for f in files))
        else:
            print("plots: matplotlib is not installed (pip install 'charter[plot]')")
    disagreed = [
        name
        for r in results["scenarios"]
        for name, res in r.get("compare", {}).get("results", {}).items()
        if "mismatches" in res
    ]
    return 1 if disagreed else 0


def with_paths(scenario: Any, paths: list[str]) -> Any:
    """The scenario measuring only `paths` (which must be known)."""
    import msgspec

    from charter.capacity.scenario import PATHS, ScenarioError

    unknown = [p for p in paths if p not in PATHS]
    if unknown or not paths:
        raise ScenarioError(f"--paths takes {', '.join(PATHS)}; got {', '.join(unknown) or 'nothing'}")
    return msgspec.structs.replace(scenario, run=msgspec.structs.replace(scenario.run, paths=paths))


def add_commands(sub: Any) -> None:
    """Add `bench` to the `charter` command's subparsers."""
    bench = sub.add_parser(
        "bench",
        help="capacity planning: measure scenarios and plan cores and memory",
        description="Measure capacity scenarios (shipped by name, or TOML files) and print a capacity plan.",
    )
    bench.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="shipped scenario name or TOML file")
    bench.add_argument("--all", action="store_true", help="run every shipped scenario")
    bench.add_argument("--list", action="store_true", help="list the shipped scenarios")
    bench.add_argument(
        "--quick", action="store_true", help="small sizes, for tests and CI (not for planning)"
    )
    bench.add_argument(
        "--compare", action="store_true", help="also run the workload through pycasbin and cedarpy"
    )
    bench.add_argument(
        "--compare-seconds", type=float, default=3.0, metavar="S", help="time box per comparison measurement"
    )
    bench.add_argument("--paths", metavar="LIST", help="override the scenarios' paths: single,batch,socket")
    bench.add_argument("--seed", type=int, help="override the scenarios' seed")
    bench.add_argument(
        "--out",
        default="charter-bench",
        metavar="DIR",
        help="where to write results (default ./charter-bench)",
    )
    bench.add_argument("--json", metavar="FILE", help="write the raw results here (default DIR/results.json)")
    bench.add_argument("--no-plots", action="store_true", help="do not draw PNG plots")
    bench.add_argument("--quiet", action="store_true", help="no progress output")
    bench.set_defaults(run=_cmd_bench)
