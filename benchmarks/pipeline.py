"""Pipeline scaling: per-component wall time of the local pipeline at 1x, 2x and 4x the quick profile's data, and
of a rerun with nothing new (every component cached).

    python benchmarks/pipeline.py                                   # 3,000 / 6,000 / 12,000 records: ~20 minutes
    python benchmarks/pipeline.py --out /tmp/scaling --sizes 1 2 4 8
    python benchmarks/pipeline.py --base-records 100 --train-steps 10 --sizes 1 2 --tasks sentiment  # checks that it runs

Each size runs ``mtnlp run --profile quick --max-records N --train-steps S`` in a subprocess, in its own fresh
workdir under ``--out`` (default: a new temporary folder; kept, with each run's log), with the training steps
fixed so that only the data vary; then the smallest size's run is repeated in the same workdir (the no-change
rerun). Component times are what ML Metadata recorded for each execution (last update - creation), as
``pipelines/summary.py`` reads them into the run's ``run_summary.json``.

``--max-records`` caps records per task *and split*: tasks with fewer records than the cap (the validation
splits, relation's 7,200 training records) stop growing, so the records actually ingested are counted and the
growth is given per doubling of those records: (t_b / t_a) ** (1 / log2(records_b / records_a)). Target: the
Beam stages (JsonlExampleGen, StatisticsGen, Transform, Evaluator) grow <= 2.1x per doubling. Prints the
table component x size, states the machine, and writes benchmarks/pipeline_results.json (``--output``).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, Machine, default_output, table, write_json  # noqa: E402

BEAM_STAGES = ("JsonlExampleGen", "StatisticsGen", "Transform", "Evaluator")
TARGET_GROWTH = 2.1


def run_pipeline(
    workdir: Path, records: int, train_steps: int, data: Path | None, log: Path, tasks: list[str] | None = None
) -> dict:
    """One ``mtnlp run`` in a subprocess; its run_summary.json plus the subprocess's own wall time."""
    command = [
        sys.executable,
        "-m",
        "mtnlp.cli",
        "run",
        "--profile",
        "quick",
        "--max-records",
        str(records),
        "--train-steps",
        str(train_steps),
        "--workdir",
        str(workdir),
    ] + (["--data", str(data)] if data else [])
    command += ["--tasks", *tasks] if tasks else []
    start = time.perf_counter()
    with open(log, "a") as out:
        result = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    summary_path = workdir / "run_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    if result.returncode != 0 or summary.get("status") != "succeeded":
        raise RuntimeError(
            f"`{' '.join(command)}` failed (exit {result.returncode}): "
            f"{summary.get('error', 'no run summary')}; log: {log}"
        )
    ingested = sum(f["records"] - f["rejected"] for files in summary.get("ingest", {}).values() for f in files.values())
    return {
        "max_records": records,
        "records_ingested": ingested,
        "process_seconds": round(seconds, 1),
        "wall_seconds": summary["wall_seconds"],
        "components": {c["component"]: c["seconds"] for c in summary["components"]},
        "states": {c["component"]: c["state"] for c in summary["components"]},
    }


def growth_per_doubling(t_a: float, t_b: float, records_a: int, records_b: int) -> float | None:
    """How much a time grows per doubling of the records, from two runs; None when it cannot be told."""
    if t_a <= 0 or t_b <= 0 or records_b <= records_a:
        return None
    return (t_b / t_a) ** (1 / math.log2(records_b / records_a))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-records", type=int, default=3000, help="records per task and split at 1x (--max-records)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4], help="multiples of --base-records")
    ap.add_argument("--train-steps", type=int, default=200, help="the same at every size")
    ap.add_argument("--data", type=Path, help="data folder (default: the bundled data)")
    ap.add_argument("--tasks", nargs="+", help="tasks of every run (default: every registered task)")
    ap.add_argument("--out", type=Path, help="where the workdirs and logs go (default: a new temporary folder)")
    ap.add_argument("--output", type=Path, default=default_output("pipeline"))
    ns = ap.parse_args()
    sizes = sorted(set(ns.sizes))
    out = ns.out or Path(tempfile.mkdtemp(prefix="mtnlp-pipeline-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    workdirs = {k: out / f"records-{ns.base_records * k}" for k in sizes}
    taken = [str(w) for w in workdirs.values() if w.exists()]
    if taken:
        ap.error(f"workdir(s) {', '.join(taken)} exist: every size needs a fresh one (another --out)")

    machine = Machine()
    runs: dict[str, dict] = {}
    try:
        for k in sizes:
            records = ns.base_records * k
            print(f"running the pipeline on {records} records per task and split ({k}x) ...", flush=True)
            runs[f"{k}x"] = run_pipeline(
                workdirs[k], records, ns.train_steps, ns.data, out / f"records-{records}.log", ns.tasks
            )
        k = sizes[0]
        print(f"rerunning {k}x with nothing new ...", flush=True)
        runs["rerun"] = run_pipeline(
            workdirs[k],
            ns.base_records * k,
            ns.train_steps,
            ns.data,
            out / f"records-{ns.base_records * k}.log",
            ns.tasks,
        )
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    sized = [f"{k}x" for k in sizes]
    pairs = list(zip(sized, sized[1:]))
    components = list(runs[sized[0]]["components"])

    def seconds(run: str, name: str) -> float:
        return runs[run]["wall_seconds"] if name == "wall" else runs[run]["components"].get(name, 0.0)

    growth = {
        name: [
            growth_per_doubling(
                seconds(a, name), seconds(b, name), runs[a]["records_ingested"], runs[b]["records_ingested"]
            )
            for a, b in pairs
        ]
        for name in components + ["wall"]
    }
    beam = {name: max((g for g in growth.get(name, []) if g is not None), default=None) for name in BEAM_STAGES}
    summary = {
        "beam_stage_max_growth_per_doubling": beam,
        "target": f"<= {TARGET_GROWTH} per doubling of records",
        "meets_target": all(g is not None and g <= TARGET_GROWTH for g in beam.values()),
        "rerun_all_cached": all(
            s == "CACHED" for name, s in runs["rerun"]["states"].items() if not name.endswith("_resolver")
        ),
    }

    def fmt(x: float | None, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    header = ["component"] + [f"{k}x s" for k in sizes] + ["rerun s"] + [f"x/dbl {b}:{a}" for a, b in pairs]
    rows = [
        [name]
        + [fmt(runs[s]["components"].get(name), ".1f") for s in sized + ["rerun"]]
        + [fmt(g, ".2f") for g in growth[name]]
        for name in components
    ]
    rows.append(
        ["wall (run)"]
        + [fmt(runs[s]["wall_seconds"], ".1f") for s in sized + ["rerun"]]
        + [fmt(g, ".2f") for g in growth["wall"]]
    )
    rows.append(
        ["records ingested"]
        + [str(runs[s]["records_ingested"]) for s in sized + ["rerun"]]
        + [fmt(runs[b]["records_ingested"] / runs[a]["records_ingested"], ".2f") + "x" for a, b in pairs]
    )
    print(machine.line())
    print(
        f"mtnlp run --profile quick --train-steps {ns.train_steps}, --max-records {ns.base_records} x {sizes}; "
        f"workdirs and logs in {out}; x/dbl: time growth per doubling of the records ingested"
    )
    print(table(header, rows))
    for name, g in beam.items():
        verdict = "-" if g is None else ("meets" if g <= TARGET_GROWTH else "MISSES")
        print(f"  {name:<16} max growth per doubling {fmt(g, '.2f')} (target <= {TARGET_GROWTH}: {verdict})")
    print(
        f"  rerun: {'every component cached' if summary['rerun_all_cached'] else 'NOT all cached'}, "
        f"{runs['rerun']['wall_seconds']:.1f} s wall"
    )
    write_json(
        ns.output,
        machine,
        {
            "settings": {
                "base_records": ns.base_records,
                "sizes": sizes,
                "train_steps": ns.train_steps,
                "data": str(ns.data or REPO / "data"),
                "tasks": ns.tasks or "all",
                "out": str(out),
            },
            "runs": runs,
            "growth_per_doubling": growth,
            "summary": summary,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
