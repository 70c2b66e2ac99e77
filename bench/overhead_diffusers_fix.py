"""What-if for the fix proposed in BENCHMARKS.md §1b: `SDEditPipeline` as is (A), the same with `unet.dtype`
answered from a cache (A', simulating the one-line hoist in `sdedit_engine/text.py:make_model_fn` without
editing it: the UNet's class is swapped for a subclass whose `dtype` property returns the value read once),
and `StableDiffusionImg2ImgPipeline` (B), interleaved A, A', B / B, A', A; ratios = medians of per-round ratios.

    .venv/bin/python bench/overhead_diffusers_fix.py [--rounds 5] [--sizes 64,256] [--steps 50]
"""

from __future__ import annotations

import os  # noqa: F401
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))
from bench._common import RESULTS, log, machine, md_table, median, write_csv  # noqa: E402

import argparse  # noqa: E402
import time  # noqa: E402

from bench.overhead_diffusers import image, load, make_runs  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64,256")
    ap.add_argument("--steps", default="50")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    sp, ref = load(None)
    unet = sp.unet
    orig_cls = type(unet)
    cached_cls = type("CachedDtypeUNet", (orig_cls,), {"dtype": property(lambda self, _d=unet.dtype: _d)})

    def with_cache(fn):
        def run(*a):
            unet.__class__ = cached_cls
            try:
                return fn(*a)
            finally:
                unet.__class__ = orig_cls
        return run

    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        for steps in [int(s) for s in args.steps.split(",")]:
            run_a, run_b = make_runs(sp, ref, steps, 4.0)
            arms = {"A": run_a, "A_fix": with_cache(run_a), "B": run_b}
            for fn in arms.values():
                fn(image(size, 0), 0)
            t = {k: [] for k in arms}
            for r in range(args.rounds):
                img = image(size, r + 1)
                order = list(arms) if r % 2 == 0 else list(arms)[::-1]
                for k in order:
                    s = time.perf_counter()
                    arms[k](img, r + 1)
                    t[k].append(time.perf_counter() - s)
            rows.append({"size": size, "steps": steps, "rounds": args.rounds,
                         "sdedit_s": median(t["A"]), "sdedit_cached_dtype_s": median(t["A_fix"]), "img2img_s": median(t["B"]),
                         "ratio_asis": median([a / b for a, b in zip(t["A"], t["B"])]),
                         "ratio_cached_dtype": median([a / b for a, b in zip(t["A_fix"], t["B"])])})
            log(rows[-1])
    out = _Path(args.out)
    write_csv(out / "overhead_diffusers_fix.csv", rows)
    cmd = ".venv/bin/python bench/overhead_diffusers_fix.py" + (" " + " ".join(argv if argv is not None else _sys.argv[1:])).rstrip()
    (out / "overhead_diffusers_fix.md").write_text(
        f"# SDEditPipeline with a cached unet.dtype (what-if) vs Img2Img\n\nMachine: {machine()}\n\nCommand: `{cmd}`\n\n"
        + md_table(rows) + "\n")
    print(md_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
