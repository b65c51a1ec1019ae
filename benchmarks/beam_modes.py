"""Beam's DirectRunner in memory (one worker) against multi-processing (two workers): the data pipeline's Beam
components (JsonlExampleGen, StatisticsGen, Transform) on the full bundled data.

    python benchmarks/beam_modes.py                 # full data, each mode twice, alternating (tens of minutes)
    python benchmarks/beam_modes.py --repeats 1 --max-records 300 --tasks sentiment   # checks that it runs

Each run is the project's data pipeline (``create_data_pipeline``: ingest, statistics, schema, validation,
Transform) in a subprocess with a fresh workdir, so nothing is cached; the modes alternate so that a change of
the machine's load hits both. Component times are what ML Metadata recorded for each execution (last update -
creation), as ``pipelines/summary.py`` reads them. The local runner's Beam arguments (``LOCAL_BEAM_ARGS`` in
``pipelines/local_runner.py``) were chosen by this measurement. Prints a table with the load before and after,
and writes benchmarks/beam_modes_results.json (``--output``). The committed results come from one repeat on a
busy machine that a time limit stopped during the multi-processing Transform; they were read from the two
runs' ML Metadata, as this script reads them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, Machine, default_output, table, write_json  # noqa: E402
from mtnlp.pipelines.local_runner import LOCAL_BEAM_ARGS  # noqa: E402

MODES = {
    "in_memory": list(LOCAL_BEAM_ARGS),
    "multi_processing x2": ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
}
BEAM_STAGES = ("JsonlExampleGen", "StatisticsGen", "Transform")

_RUN = """
import json, os, sys
from mtnlp import logs
logs.quiet_environment(False)
from tfx import v1 as tfx
from mtnlp.pipelines.config import get_config
from mtnlp.pipelines.pipeline import create_data_pipeline
from mtnlp.pipelines.summary import summarize_latest_run
import dataclasses
workdir, data, beam_args, max_records, tasks = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4], sys.argv[5]
config = dataclasses.replace(get_config("full"), max_records_per_split=int(max_records) if max_records != "all" else None,
                             tasks=tuple(tasks.split(",")) if tasks else None)
metadata = os.path.join(workdir, "metadata.sqlite")
tfx.orchestration.LocalDagRunner().run(create_data_pipeline(
    "mtnlp-beam-modes", os.path.join(workdir, "pipeline_root"), data, config,
    tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata), beam_pipeline_args=beam_args))
print("SUMMARY " + json.dumps({c["component"]: c["seconds"] for c in summarize_latest_run(metadata)["components"]}))
"""


def run_once(mode: str, out: Path, data: Path, max_records: str, tasks: str) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=out))
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", _RUN, str(workdir), str(data), json.dumps(MODES[mode]), max_records, tasks],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    lines = [line for line in result.stdout.splitlines() if line.startswith("SUMMARY ")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{mode} run failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return {"process_seconds": round(seconds, 1), "components": json.loads(lines[-1].removeprefix("SUMMARY "))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO / "data")
    parser.add_argument("--max-records", default="all", help="records per task and split (default: all)")
    parser.add_argument("--tasks", default="", help="comma-separated tasks (default: all)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each mode, alternating (default 2)")
    parser.add_argument("--out", type=Path, default=None, help="workdirs (default: a new temporary folder)")
    parser.add_argument(
        "--output",
        type=Path,
        default=default_output("beam_modes"),
        help="the JSON results (default benchmarks/beam_modes_results.json)",
    )
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="beam-modes-"))
    out.mkdir(parents=True, exist_ok=True)
    machine = Machine()
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    for repeat in range(args.repeats):
        for mode in MODES:
            runs[mode].append(run_once(mode, out, args.data.resolve(), args.max_records, args.tasks))
            print(f"repeat {repeat + 1} {mode}: {runs[mode][-1]['components']}", flush=True)
    medians = {
        mode: {stage: statistics.median(r["components"][stage] for r in mode_runs) for stage in BEAM_STAGES}
        for mode, mode_runs in runs.items()
    }
    rows = [[stage, *(f"{medians[mode][stage]:.1f}" for mode in MODES)] for stage in BEAM_STAGES]
    print(machine.line())
    print(table(["component (median s)", *MODES], rows))
    write_json(
        args.output,
        machine,
        {"settings": {k: str(v) for k, v in vars(args).items()}, "runs": runs, "median_seconds": medians},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
