"""Before/after for the fix of BENCHMARKS.md §1b (`unet.dtype` read once per denoiser instead of per model call,
landed in sdedit_engine/text.py as 7aed9e6): `SDEditPipeline` as it is now (A), the same with the old per-call
`unet.dtype` walk put back by a UNet forward pre-hook (A_walk = the code before the fix), and
`StableDiffusionImg2ImgPipeline` (B), interleaved A, A_walk, B / B, A_walk, A; ratios = medians of per-round
ratios.

    .venv/bin/python bench/overhead_diffusers_fix.py [--rounds 5] [--sizes 64,256] [--steps 50]
"""

from __future__ import annotations

import os  # noqa: F401
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))
import argparse  # noqa: E402
import time  # noqa: E402

from bench._common import RESULTS, log, machine, md_table, median, write_csv  # noqa: E402
from bench.overhead_diffusers import image, load, make_runs  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64,256")
    ap.add_argument("--steps", default="20,50")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    sp, ref = load(None)
    unet = sp.unet

    def with_walk(fn):
        def run(*a):
            h = unet.register_forward_pre_hook(lambda m, args: (m.dtype, None)[1])
            try:
                return fn(*a)
            finally:
                h.remove()
        return run

    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        for steps in [int(s) for s in args.steps.split(",")]:
            run_a, run_b = make_runs(sp, ref, steps, 4.0)
            arms = {"A": run_a, "A_walk": with_walk(run_a), "B": run_b}
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
                         "sdedit_now_s": median(t["A"]), "sdedit_per_call_dtype_s": median(t["A_walk"]), "img2img_s": median(t["B"]),
                         "ratio_now": median([a / b for a, b in zip(t["A"], t["B"])]),
                         "ratio_before_fix": median([a / b for a, b in zip(t["A_walk"], t["B"])])})
            log(rows[-1])
    out = _Path(args.out)
    write_csv(out / "overhead_diffusers_fix.csv", rows)
    cmd = ".venv/bin/python bench/overhead_diffusers_fix.py" + (" " + " ".join(argv if argv is not None else _sys.argv[1:])).rstrip()
    (out / "overhead_diffusers_fix.md").write_text(
        f"# SDEditPipeline before/after the unet.dtype fix vs Img2Img\n\nMachine: {machine()}\n\nCommand: `{cmd}`\n\n"
        + md_table(rows) + "\n")
    print(md_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
