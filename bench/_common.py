"""Shared helpers for the benchmarks: repo on sys.path, machine description, interleaved timing, tables."""

from __future__ import annotations

import os
import platform
import statistics
import sys
from pathlib import Path

# One torch/OpenMP thread by default: on a shared, oversubscribed CPU (other jobs running) OpenMP's worker
# threads spin against each other and a 2-thread run was measured 30x slower than a 1-thread run (tiny UNet
# call: 1.8 s vs 0.06 s). Set OMP_NUM_THREADS yourself to benchmark with more threads. Set before torch is
# imported (every bench script imports this module first); the ComfyUI server inherits it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}, {dev}")


def median(xs):
    return statistics.median(xs)


def write_csv(path: Path, rows: list[dict]):
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)


def md_table(rows: list[dict], cols: list[str] | None = None) -> str:
    cols = cols or list(rows[0].keys())
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    return "\n".join(out)


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_md(path: Path, title: str, body: str, command: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {title}\n\nMachine: {machine()}\n\nCommand: `{command}`\n\n{body}\n")


def log(*a):
    print(*a, file=sys.stderr, flush=True)
