"""The paper's measurements on the landscape domain: guides, realism/faithfulness, drag landing.

Shared by ``sdedit demo``, ``bench/quality.py`` and the tests; ``pipe`` is any
:class:`~sdedit_engine.pipelines.pipeline.SDEditPipeline` of a 64² landscape model (normally
:func:`~sdedit_engine.builtin.model.load_builtin`).

- **Guides** (held-out landscapes, seeds disjoint from training): *strokes* = the paper's stroke
  simulation of the whole image; *stroke edit* = strokes of another landscape painted into a blob
  (mask = the blob); *composite* = a patch of another landscape pasted into a blob (mask = the blob).
- **Faithfulness** ``L2 = ‖x − guide‖₂`` over the 3·64·64 values in [0, 1] (the paper's stroke L2;
  lower = more faithful). **Realism** = mean ``P(domain)`` of :mod:`~sdedit_engine.builtin.realism`.
- **Drag landing**: drag the sun from its known centre by a known offset; the detector finds it in
  the result; landing error = distance to the target, progress = displacement along the offset /
  offset length, and "elsewhere" = mean |Δ| over pixels farther than r + 4 px from both discs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.defaults import DEFAULT_DRAG_STEPS
from ..io.imaging import faithfulness_l2 as l2
from .detect import detect_sun
from .domain import LandscapeInfo, render_batch
from .realism import _blob_mask, realism

HELDOUT_SEED = 900_000_000  # training batches use seeds < 10⁶·(seed+1); the classifier 7·10⁶ … 9·10⁶


def heldout(n: int, seed: int = 0) -> tuple[torch.Tensor, list[LandscapeInfo]]:
    """``n`` held-out landscapes ``(n, 3, 64, 64)`` and their metadata."""
    x, infos = render_batch(n, HELDOUT_SEED + seed)
    return torch.from_numpy(x), infos


def stroke_guides(x: torch.Tensor) -> torch.Tensor:
    """The paper's stroke simulation (median filter scaled from 23 px @ 256², 6 flat colours)."""
    from ..io.strokes import simulate_strokes

    return simulate_strokes(x)


def masked_guides(x: torch.Tensor, kind: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``kind`` = ``"stroke_edit"`` or ``"composite"``: guides and their blob masks ``(n, 1, 64, 64)``."""
    if kind not in ("stroke_edit", "composite"):
        raise ValueError(f"kind must be 'stroke_edit' or 'composite', got {kind!r}")
    rng = np.random.default_rng(HELDOUT_SEED + 77 + seed)
    other = torch.from_numpy(render_batch(x.shape[0], HELDOUT_SEED + 55 + seed)[0])
    paint = stroke_guides(other) if kind == "stroke_edit" else other
    m = torch.stack([_blob_mask(rng, x.shape[-1]) for _ in range(x.shape[0])])[:, None]
    return x * (1 - m) + paint * m, m


@dataclass
class TradeOffRow:
    t0: float
    realism: float
    realism_sd: float
    l2: float
    l2_sd: float
    nfe: int


def run_sdedit(pipe, guides: torch.Tensor, mask=None, *, t0: float, steps: int, sampler: str = "ddpm",
               repeats: int = 1, seed: int = 0, spacing: str = "uniform") -> tuple[torch.Tensor, int]:
    """SDEdit on ``guides``; the paper's grid (uniform in timestep) unless ``spacing`` says otherwise, as measured
    in BENCHMARKS §7."""
    out = pipe(guides, mask=mask, t0=t0, steps=steps, sampler=sampler, spacing=spacing, repeats=repeats, seed=seed,
               output_type="pt", progress=False)
    return out.images, out.nfe


def trade_off(pipe, guides: torch.Tensor, t0s, *, mask=None, steps: int = 50, sampler: str = "ddpm",
              repeats: int = 1, seed: int = 0, scale_steps: bool = True) -> list[TradeOffRow]:
    """Realism and L2-to-guide of SDEdit outputs at each t0 (``scale_steps``: steps·t0 solver steps, ≥ 5)."""
    rows = []
    for t0 in t0s:
        n = max(5, int(round(steps * t0))) if scale_steps else steps
        out, nfe = run_sdedit(pipe, guides, mask, t0=t0, steps=n, sampler=sampler, repeats=repeats, seed=seed)
        r, d = realism(out), l2(out, guides)
        rows.append(TradeOffRow(float(t0), float(r.mean()), float(r.std()), float(d.mean()), float(d.std()), nfe))
    return rows


@dataclass
class DragResult:
    landing_error: float  # px, detected centre to target
    progress: float  # displacement along the offset / offset length (1 = exactly there)
    elsewhere: float  # mean |Δpixel| away from both discs
    detected: tuple[float, float]
    score: float
    iterations: int = 0
    nfe: int = 0


def drag_sun(pipe, image: torch.Tensor, info: LandscapeInfo, offset: tuple[float, float], *, steps: int = DEFAULT_DRAG_STEPS,
             t0: float = 0.6, seed: int = 0, **kwargs) -> tuple[torch.Tensor, DragResult]:
    """SDE-Drag the sun of ``image`` ``(3, 64, 64)`` by ``offset`` px; the result and its measurements."""
    cx, cy = info.sun_center
    tx, ty = cx + offset[0], cy + offset[1]
    points = [{"source": [cx, cy], "target": [tx, ty]}]
    out = pipe.drag(image[None], points, steps=steps, t0=t0, seed=seed, output_type="pt", progress=False, **kwargs)
    res = out.images[0]
    m = measure_drag(image, res, info, (tx, ty))
    m.iterations, m.nfe = out.iterations, out.nfe
    return res, m


def measure_drag(before: torch.Tensor, after: torch.Tensor, info: LandscapeInfo, target) -> DragResult:
    cx, cy = info.sun_center
    tx, ty = target
    det = detect_sun(after, info.sun_color, info.sun_radius, info.horizon)
    dx, dy = det.center[0] - cx, det.center[1] - cy
    ox, oy = tx - cx, ty - cy
    length = float(np.hypot(ox, oy))
    S = before.shape[-1]
    yy, xx = torch.meshgrid(torch.arange(S) + 0.5, torch.arange(S) + 0.5, indexing="ij")
    far = (torch.hypot(xx - cx, yy - cy) > info.sun_radius + 4) & (torch.hypot(xx - tx, yy - ty) > info.sun_radius + 4)
    diff = (after - before).abs().mean(0)
    return DragResult(float(np.hypot(det.center[0] - tx, det.center[1] - ty)), float((dx * ox + dy * oy) / length ** 2),
                      float(diff[far].mean()), det.center, det.score)


def drag_cases(n: int, seed: int = 0, offsets=((10, 0), (-10, 0), (8, -4), (-12, -3), (6, 4))):
    """Held-out images with an offset each whose target disc stays inside the image and above the ridges."""
    x, infos = heldout(4 * n, seed + 1000)
    cases = []
    for i in range(x.shape[0]):
        info = infos[i]
        cx, cy = info.sun_center
        r = info.sun_radius
        for k in range(len(offsets)):
            ox, oy = offsets[(i + k) % len(offsets)]
            tx, ty = cx + ox, cy + oy
            if r + 1 < tx < 63 - r and r + 1 < ty and ty + r + 1 < info.ridge_top:
                cases.append((x[i], info, (float(ox), float(oy))))
                break
        if len(cases) == n:
            break
    return cases
