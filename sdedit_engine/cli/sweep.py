"""t0 sweeps: the realism/faithfulness trade-off of SDEdit (Meng et al., ICLR 2022, Sec. 3).

:func:`t0_sweep` edits one guide at several t0 (and seeds) with any callable that behaves like
:class:`~sdedit_engine.pipelines.pipeline.SDEditPipeline`, and writes

* ``grid.png`` — guide + one column per t0, one row per seed, each labelled;
* ``l2_vs_t0.png`` — faithfulness (L2 to the guide, [0,1] pixels) against t0, one line per seed;
* ``sweep.csv`` — one row per (seed, t0): σ0, timestep, NFE, L2, RMSE (and L2 at a reduced size);
* ``t0-<t0>_seed-<seed>.png`` — every result.

Only faithfulness is measured here: realism metrics (KID) need Inception network weights, which this
package never downloads.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from ..io.imaging import faithfulness_l2, labelled_grid, save_image


def write_csv(rows: list[dict], path) -> Path:
    p = Path(path)
    with open(p, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    return p


def plot_l2(rows: list[dict], path, title: str = "SDEdit faithfulness vs t0", ylabel: str = "L2 to guide") -> Path:
    """One line per seed of L2 against t0 (matplotlib, headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    for seed in sorted({r["seed"] for r in rows}):
        pts = sorted((r["t0"], r["l2"]) for r in rows if r["seed"] == seed)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"seed {seed}")
    ax.set_xlabel("t0")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def t0_sweep(pipe: Callable, guide: torch.Tensor, t0s: Sequence[float], outdir, *, mask: Optional[torch.Tensor] = None,
             seeds: Sequence[int] = (0,), l2_size: int = 0, **call_kwargs) -> list[dict]:
    """Run ``pipe(guide, mask=mask, t0=t0, seed=seed, output_type="pt", **call_kwargs)`` over the grid; write the report.

    Returns the CSV rows. ``call_kwargs`` go to every call (prompt, steps, sampler, guidance …).
    """
    out_dir = Path(outdir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, images, labels = [], [], []
    num_timesteps = getattr(getattr(pipe, "schedule", None), "num_timesteps", 1000)
    for seed in seeds:
        images.append(guide)  # every row starts with the guide, so columns line up by t0
        labels.append(f"guide (seed {seed})")
        for t0 in t0s:
            out = pipe(guide, mask=mask, t0=t0, seed=seed, output_type="pt", **call_kwargs)
            img = out.images[:1]
            save_image(img, out_dir / f"t0-{t0:.3f}_seed-{seed}.png")
            l2 = float(faithfulness_l2(img, guide)[0])
            row = {"t0": t0, "sigma0": round(out.sigma0, 6), "timestep": round(t0 * num_timesteps) - 1, "seed": seed,
                   "sampler": call_kwargs.get("sampler", ""), "steps": out.steps,
                   "repeats": call_kwargs.get("repeats", 1), "nfe": out.nfe,
                   "cfg": call_kwargs.get("guidance_scale", ""), "l2": round(l2, 6),
                   "rmse": round(l2 / math.sqrt(img[0].numel()), 6)}
            if l2_size:
                row[f"l2_{l2_size}px"] = round(float(faithfulness_l2(img, guide, l2_size)[0]), 6)
            rows.append(row)
            images.append(img)
            labels.append(f"t0={t0:g} s{seed}")
    write_csv(rows, out_dir / "sweep.csv")
    labelled_grid(images, labels, columns=len(t0s) + 1).save(out_dir / "grid.png")
    h, w = guide.shape[-2:]
    plot_l2(rows, out_dir / "l2_vs_t0.png",
            title=f"SDEdit faithfulness vs t0 ({call_kwargs.get('sampler', '')}, {rows[0]['steps']} steps)",
            ylabel=f"L2 to guide ({w}x{h}, [0,1] pixels)")
    return rows
