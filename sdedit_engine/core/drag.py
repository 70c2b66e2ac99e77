"""SDE-Drag (Nie et al., ICLR 2024): point-based dragging by copy-pasting noisy latent patches, then
denoising with Cycle-SDE.

Per drag iteration (long drags are split into moves of about ``step_size`` latent pixels):
1. forward-noise the current latent to σ(t0) and record the reverse noise (Cycle-SDE);
2. in the noisy latent, for each point pair: copy the 2r×2r patch at the source, replace the source
   by ``β·patch + sqrt(1 − β²)·noise`` (noise at the VP unit scale, i.e. ``sqrt(1 + σ0²)`` in σ-space),
   and write ``α·patch`` at the target;
3. run the reverse SDE with the recorded noise (outside an optional mask the recorded chain is
   restored after every step, so those latents come back exactly; inside it the noise is fresh by
   default).

Defaults follow the paper — t0 = 0.6, patch radius 5 (10×10 latent pixels), β = 0.3, α = 1.1, 2 latent
pixels per iteration, CFG ramping linearly from 1 to 3 over the levels — except the step count: the paper
uses 120 steps (0.6 of a 200-step grid), the default here is ``DEFAULT_DRAG_STEPS`` = 30 (a quarter of the
cost, landing as close to the target on the shipped model, BENCHMARKS.md §7). Points are (x = column,
y = row); pixels map to latent cells by floor division by 8.
"""

from __future__ import annotations

import json
import math
import operator
from dataclasses import dataclass
from typing import Any, Literal, Optional, Sequence

import torch

from .cycle import ExtraArgsFn, cycle_decode, cycle_encode, cycle_sigmas
from .defaults import DEFAULT_DRAG_STEPS
from .noise import NoiseSource, normalize_seeds
from .samplers import Callback, offset_callback
from .schedules import check_steps, check_t0
from .validation import check_finite_tensor, check_mask

Point = tuple[float, float]


@dataclass(frozen=True)
class DragPair:
    source: Point
    target: Point


def _as_point(value: Any, what: str) -> Point:
    if isinstance(value, dict) and "x" in value and "y" in value:
        value = (value["x"], value["y"])
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"points: {what} must be [x, y], got {value!r}")
    try:
        x, y = float(value[0]), float(value[1])
    except (TypeError, ValueError):
        raise ValueError(f"points: {what} must hold two numbers, got {value!r}") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(f"points: {what} must be finite, got {value!r}")
    return x, y


def parse_points(spec: Any, width: int, height: int) -> list[DragPair]:
    """Drag pairs in image pixels from JSON text or Python data, checked against the image size.

    Accepted: ``[{"source": [x, y], "target": [x, y]}, …]``; DragBench's ``{"source": [[x, y], …],
    "target": [[x, y], …]}``; or a flat point list ``[{"x": …, "y": …}, …]`` / ``[[x, y], …]`` (e.g.
    KJNodes' PointsEditor) read as consecutive (source, target) pairs.
    """
    if isinstance(spec, str):
        try:
            spec = json.loads(spec) if spec.strip() else []
        except json.JSONDecodeError as e:
            raise ValueError(f"points: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if isinstance(spec, dict):
        if "source" not in spec or "target" not in spec:
            raise ValueError('points: a JSON object needs "source" and "target" lists')
        src, tgt = spec["source"], spec["target"]
        if not isinstance(src, list) or not isinstance(tgt, list) or len(src) != len(tgt):
            raise ValueError('points: "source" and "target" must be lists of the same length')
        pairs = [(s, t) for s, t in zip(src, tgt)]
    elif isinstance(spec, list):
        if spec and all(isinstance(p, dict) and "source" in p for p in spec):
            pairs = [(p["source"], p.get("target")) for p in spec]
        else:
            if len(spec) % 2:
                raise ValueError(f"points: a flat point list needs an even number of points (source, target, …), got {len(spec)}")
            pairs = [(spec[i], spec[i + 1]) for i in range(0, len(spec), 2)]
    else:
        raise ValueError(f"points: expected a JSON list of pairs, got {type(spec).__name__}")
    if not pairs:
        raise ValueError("points: no point pairs given; add at least one source → target pair")
    out = []
    for k, (s, t) in enumerate(pairs):
        src, tgt = _as_point(s, f"pair {k} source"), _as_point(t, f"pair {k} target")
        for name, (x, y) in (("source", src), ("target", tgt)):
            if not (0 <= x < width and 0 <= y < height):
                raise ValueError(f"points: pair {k} {name} ({x:g}, {y:g}) lies outside the {width}x{height} image")
        if src == tgt:
            raise ValueError(f"points: pair {k} has source == target ({src[0]:g}, {src[1]:g}); nothing to drag")
        out.append(DragPair(src, tgt))
    return out


def as_pairs(points, width: int, height: int) -> list[DragPair]:
    """``points`` as pixel :class:`DragPair`s: JSON text / Python data (:func:`parse_points`) or DragPairs."""
    if isinstance(points, (list, tuple)) and points and all(isinstance(p, DragPair) for p in points):
        points = [{"source": list(p.source), "target": list(p.target)} for p in points]
    return parse_points(points, width, height)


def to_latent_points(pairs: Sequence[DragPair], factor: int = 8) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Pixel pairs → integer latent cells (floor division by the VAE factor)."""
    cell = lambda p: (int(p[0] // factor), int(p[1] // factor))  # noqa: E731
    return [(cell(p.source), cell(p.target)) for p in pairs]


def drag_iterations(max_distance: float, step_size: float) -> int:
    """Number of drag iterations: about ``max_distance / step_size``, rounded to the nearer count."""
    if max_distance <= step_size:
        return 1
    m = int(max_distance // step_size)
    return m + 1 if abs(max_distance / (m + 1) - step_size) < abs(max_distance / m - step_size) else m


def guidance_ramp(scale: float, steps: int, guidance_distilled: bool = False) -> list[float]:
    """The paper's CFG schedule per reverse step: ≈ ``scale`` at t0 falling linearly to ≈ 1 near t = 0.

    On a guidance-distilled model (Flux-dev/schnell: no true CFG, guidance is a model input) the ramp
    is a no-op: every step runs at CFG 1 (one model call), and the guidance input keeps the value the
    user set (ComfyUI ``FluxGuidance``, diffusers ``guidance_scale``) at every level. It is not mapped
    onto the guidance input: that input is a distilled conditioning, not an extrapolation weight, and
    low values of it (the ramp's end near 1) give washed-out images on Flux-dev. Recording and replay
    see the same constant input, as Cycle-SDE's exactness requires.
    """
    n = check_steps(steps)
    if guidance_distilled:
        return [1.0] * n
    if n == 1:
        return [float(scale)]
    return [1.0 + (scale - 1.0) * (n - i) / (n - 1) for i in range(n)]


@dataclass(frozen=True)
class DragPlan:
    """Everything of one SDE-Drag run that follows from the points and the knobs, decided once for
    every front end (:func:`plan_drag`): pixel pairs, their latent cells, the Cycle-SDE levels, the
    number of drag iterations (about longest move / ``step_size``), the paper's CFG ramp per reverse
    step and the run's total step count (2 passes × steps × iterations), which progress bars need
    before the run starts. :meth:`run` executes it on a denoiser."""

    pairs: tuple[DragPair, ...]
    cells: tuple[tuple[tuple[int, int], tuple[int, int]], ...]
    sigmas: torch.Tensor
    steps: int
    iterations: int
    ramp: tuple[float, ...]
    step_size: float
    factor: int

    @property
    def total_steps(self) -> int:
        return 2 * self.steps * self.iterations

    def run(self, denoiser, latent: torch.Tensor, *, mask: Optional[torch.Tensor] = None, radius: int = 5,
            beta: float = 0.3, alpha: float = 1.1, seed: int | Sequence[int] = 0, cfg_arg: Optional[str] = "guidance_scale",
            extra_args: Optional[dict] = None, step_args: Optional[ExtraArgsFn] = None,
            callback: Optional[Callback] = None) -> torch.Tensor:
        """:func:`sde_drag` with this plan; the denoiser receives the ramp's scale as ``cfg_arg=`` at
        every call (plus ``step_args(i)``, e.g. a LoRA weight ramp); ``cfg_arg=None`` passes no scale
        (guidance-distilled models, whose ramp is constant 1)."""
        def per_step(i: int) -> dict:
            args = {cfg_arg: self.ramp[i]} if cfg_arg is not None else {}
            if step_args is not None:
                args.update(step_args(i))
            return args

        return sde_drag(denoiser, latent, list(self.cells), mask=mask, sigmas=self.sigmas, step_size=self.step_size,
                        radius=radius, beta=beta, alpha=alpha, seed=seed, extra_args=extra_args, extra_args_fn=per_step,
                        callback=callback)


def plan_drag(points, width: int, height: int, *, factor: int, schedule, t0: float = 0.6, steps: int = DEFAULT_DRAG_STEPS,
              guidance_scale: float = 3.0, step_size: float = 2.0, guidance_distilled: bool = False) -> DragPlan:
    """Plan SDE-Drag on a ``width`` × ``height`` image whose latent is ``factor`` times smaller.

    ``points``: JSON text, Python data (:func:`parse_points`) or :class:`DragPair`s, in image pixels.
    Raises when every drag is shorter than one latent cell (nothing would move). The CFG ramp is
    :func:`guidance_ramp` (constant 1 on a ``guidance_distilled`` model).
    """
    t0, steps = check_t0(t0), check_steps(steps)
    if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not math.isfinite(step_size) or step_size <= 0:
        raise ValueError(f"step_size must be a finite number > 0 (latent cells per iteration), got {step_size!r}")
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale):
        raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
    pairs = as_pairs(points, width, height)
    cells = to_latent_points(pairs, factor=factor)
    if all(s == t for s, t in cells):
        raise ValueError(f"points: every drag is shorter than one latent cell ({factor} pixels); drag further")
    longest = max(math.hypot(t[0] - s[0], t[1] - s[1]) for s, t in cells)
    return DragPlan(tuple(pairs), tuple(cells), cycle_sigmas(schedule, t0, steps), steps,
                    drag_iterations(longest, float(step_size)),
                    tuple(guidance_ramp(float(guidance_scale), steps, guidance_distilled)),
                    float(step_size), int(factor))


def _patch_bounds(src, tgt, radius, width, height):
    """Jointly clipped half-open patch extents around source and target (the last row/column stay)."""
    (sx, sy), (tx, ty) = src, tgt
    xm, xp = min(radius, sx, tx), min(radius, width - 1 - sx, width - 1 - tx)
    ym, yp = min(radius, sy, ty), min(radius, height - 1 - sy, height - 1 - ty)
    return (sx - xm, sx + xp, sy - ym, sy + yp), (tx - xm, tx + xp, ty - ym, ty + yp)


def copy_paste(z: torch.Tensor, pairs, *, radius: int, beta: float, alpha: float, noise: torch.Tensor, noise_scale: float) -> torch.Tensor:
    """Move noisy latent patches from sources to targets (in order; targets written last)."""
    z = z.clone()
    height, width = z.shape[-2:]
    for src, tgt in pairs:
        (sx0, sx1, sy0, sy1), (tx0, tx1, ty0, ty1) = _patch_bounds(src, tgt, radius, width, height)
        patch = z[..., sy0:sy1, sx0:sx1].clone()
        z[..., sy0:sy1, sx0:sx1] = beta * patch + math.sqrt(1 - beta * beta) * noise_scale * noise[..., sy0:sy1, sx0:sx1]
        z[..., ty0:ty1, tx0:tx1] = alpha * patch
    return z


def _check_cells(k: int, pair) -> tuple[tuple[int, int], tuple[int, int]]:
    """Pair ``k`` as ((x, y), (x, y)) integer latent cells, or a ValueError naming it."""
    try:
        (sx, sy), (tx, ty) = pair
        return (operator.index(sx), operator.index(sy)), (operator.index(tx), operator.index(ty))
    except (TypeError, ValueError):
        raise ValueError(f"pairs: pair {k} must be ((x, y), (x, y)) in integer latent cells (see to_latent_points), "
                         f"got {pair!r}") from None


def sde_drag(
    denoiser,
    latent: torch.Tensor,
    pairs: Sequence[tuple[tuple[int, int], tuple[int, int]]],
    *,
    mask: Optional[torch.Tensor] = None,
    t0: float = 0.6,
    steps: int = DEFAULT_DRAG_STEPS,
    step_size: float = 2.0,
    radius: int = 5,
    beta: float = 0.3,
    alpha: float = 1.1,
    seed: int | Sequence[int] = 0,
    mask_noise: Literal["fresh", "recorded"] = "fresh",
    extra_args: Optional[dict] = None,
    extra_args_fn: Optional[ExtraArgsFn] = None,
    sigmas=None,
    callback: Optional[Callback] = None,
) -> torch.Tensor:
    """Drag latent content from each source cell to its target cell; returns the edited latent.

    ``pairs`` are integer latent cells (see :func:`to_latent_points`). ``mask`` (latent resolution,
    1 = editable) confines the change: outside it the result equals ``latent`` exactly. Cost per
    iteration: 2·steps denoiser calls (recording + replay). ``callback`` sees steps counted over all
    iterations (two passes each).
    """
    latent = check_finite_tensor("latent", latent, min_ndim=3)
    mask = check_mask(mask, latent)
    if not pairs:
        raise ValueError("pairs: no point pairs given")
    height, width = latent.shape[-2:]
    pairs = [_check_cells(k, pair) for k, pair in enumerate(pairs)]
    for k, (s, t) in enumerate(pairs):
        for name, (x, y) in (("source", s), ("target", t)):
            if not (0 <= x < width and 0 <= y < height):
                raise ValueError(f"pairs: pair {k} {name} cell ({x}, {y}) lies outside the {width}x{height} latent")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta!r}")
    if int(radius) < 1:
        raise ValueError(f"radius must be >= 1 latent pixel, got {radius!r}")
    if step_size <= 0:
        raise ValueError(f"step_size must be > 0, got {step_size!r}")
    if mask_noise not in ("fresh", "recorded"):
        raise ValueError(f"mask_noise must be 'fresh' or 'recorded', got {mask_noise!r}")
    if sigmas is None:
        schedule = getattr(denoiser, "schedule", None)
        if schedule is None:
            raise ValueError("the denoiser has no schedule to turn t0 into sigma; pass `sigmas=` explicitly")
        sigmas = cycle_sigmas(schedule, check_t0(t0), steps)
    levels = torch.as_tensor(sigmas, dtype=torch.float64)
    n_steps = levels.numel() - 1
    seeds = normalize_seeds(seed, latent.shape[0])
    moves = [(torch.tensor(t) - torch.tensor(s)) for s, t in pairs]
    iters = drag_iterations(max(float(d.double().norm()) for d in moves), step_size)
    noise_scale = math.sqrt(1.0 + float(levels[0]) ** 2)  # VP unit noise in σ-space

    x = latent
    for it in range(iters):
        step_pairs = []
        for (s, _), d in zip(pairs, moves):
            a = torch.trunc(d.double() * it / iters).long()
            b = torch.trunc(d.double() * (it + 1) / iters).long()
            step_pairs.append(((s[0] + int(a[0]), s[1] + int(a[1])), (s[0] + int(b[0]), s[1] + int(b[1]))))
        stream = f"drag/{it}"
        traj = cycle_encode(denoiser, x, levels, seed=seeds, extra_args=extra_args, extra_args_fn=extra_args_fn,
                            callback=offset_callback(callback, 2 * it * n_steps, 2 * iters * n_steps, it), stream=f"{stream}/forward")
        paste_noise = NoiseSource.like(x, seeds, stream=f"{stream}/paste")()
        z = copy_paste(traj.start, step_pairs, radius=int(radius), beta=beta, alpha=alpha,
                       noise=paste_noise, noise_scale=noise_scale)
        fresh = NoiseSource.like(x, seeds, stream=f"{stream}/fresh") if (mask is not None and mask_noise == "fresh") else None
        x = cycle_decode(denoiser, z, traj, mask=mask, extra_args=extra_args, extra_args_fn=extra_args_fn,
                         callback=offset_callback(callback, (2 * it + 1) * n_steps, 2 * iters * n_steps, it), fresh_noise_in_mask=fresh)
    if mask is not None:
        x = torch.where(mask == 0, latent, x)
    return x
