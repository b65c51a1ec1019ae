"""What the benchmark scripts share: the machine they ran on, percentiles, a compact table, JSON output.

Each script states the machine (CPU model, cores, load) in its printed output and in its JSON, so that a
figure is never read without the conditions it was measured under. Import it from a script as

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.common import ...
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
sys.path.insert(0, str(REPO))

from mtnlp.machine import cpu_model  # noqa: E402


def quiet_tensorflow() -> None:
    """Before TensorFlow is imported: no C++ info logs, no gRPC chatter."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def default_output(name: str) -> Path:
    """Where a benchmark writes its JSON by default: ``benchmarks/<name>_results.json``."""
    return BENCHMARKS / f"{name}_results.json"


class Machine:
    """The machine and its load, measured when the benchmark starts and again when it ends."""

    def __init__(self) -> None:
        self.load_before = os.getloadavg()[0]

    def facts(self) -> dict[str, Any]:
        facts = {
            "cpu_model": cpu_model(),
            "logical_cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_1min_before_after": [round(self.load_before, 2), round(os.getloadavg()[0], 2)],
        }
        if "tensorflow" in sys.modules:
            facts["tensorflow"] = sys.modules["tensorflow"].__version__
        return facts

    def line(self) -> str:
        f = self.facts()
        before, after = f["load_average_1min_before_after"]
        tf_version = f", TF {f['tensorflow']}" if "tensorflow" in f else ""
        return (
            f"Machine: {f['cpu_model']}, {f['logical_cores']} logical cores, Python {f['python']}{tf_version}; "
            f"load average {before} before, {after} after (other work on the machine skews the figures)"
        )


def percentile(xs: Sequence[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A compact text table: the first column left-aligned, the others right-aligned; floats with 3
    significant decimals unless already formatted as strings."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    cells = [[cell(v) for v in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in cells
    )


def write_json(path: Path, machine: Machine, payload: dict[str, Any]) -> None:
    """``payload`` with the machine and the command line, as indented JSON."""
    document = {"machine": machine.facts(), **payload, "command": " ".join([Path(sys.executable).name] + sys.argv)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {path}")
