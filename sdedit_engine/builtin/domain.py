"""A procedural landscape domain with exactly known objects (numpy only).

Each image is a lake landscape rendered at ``size``² (default 64) in ``[0, 1]``:

- **sky**: vertical gradient ``c(y) = top + (horizon − top)·(y/y_h)^γ`` in one of three palettes
  (day, sunset, night) with per-image colour jitter;
- **sun / moon**: an anti-aliased disc, centre ``(cx, cy)`` and radius ``r`` known exactly, a soft
  glow ``∝ exp(−(d − r)/(1.5 r))`` around it; it is always fully above every ridge, so a detector can
  find it;
- **ridges**: 2–3 layers, each a silhouette ``h(x) = max_m (a_m − s_m·|x − x_m|) + roughness``
  (a "max of cones" with sharp peaks), shaded by slope (the side facing the sun is lighter), hazier
  further back, optional snow caps by day;
- **water**: below the horizon line ``y_h``, the mirror image ``I(x + δ(y), 2 y_h − y)`` with ripple
  displacement ``δ`` growing with distance, mixed with the water colour and ripple bands;
- **shore** (half the images): a textured foreground band at the bottom.

:func:`render_landscape` returns the image and a :class:`LandscapeInfo` (sun centre/radius/colour,
horizon, the front ridge's peak, the highest ridge point). Seeded: ``render_batch(n, seed)`` is the same on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PALETTES = {
    # name: sky top, sky at horizon, sun, far ridge, near ridge, water, weight
    "day": ((0.20, 0.42, 0.85), (0.68, 0.82, 0.96), (1.00, 0.98, 0.82), (0.50, 0.58, 0.74), (0.16, 0.32, 0.20), (0.12, 0.34, 0.55), 0.45),
    "sunset": ((0.26, 0.14, 0.42), (0.98, 0.58, 0.28), (1.00, 0.93, 0.55), (0.42, 0.24, 0.40), (0.12, 0.07, 0.15), (0.24, 0.12, 0.26), 0.35),
    "night": ((0.02, 0.03, 0.10), (0.12, 0.17, 0.33), (0.93, 0.93, 0.86), (0.13, 0.15, 0.25), (0.03, 0.04, 0.07), (0.03, 0.05, 0.13), 0.20),
}
PALETTE_NAMES = tuple(PALETTES)


@dataclass(frozen=True)
class LandscapeInfo:
    """Exact object metadata of one rendered landscape (pixel units, x right, y down, pixel centres at +0.5)."""

    palette: str
    sun_center: tuple[float, float]
    sun_radius: float
    sun_color: tuple[float, float, float]
    horizon: float
    peak: tuple[float, float]
    ridge_top: float  # y of the highest ridge point (anything above it is sky)


def _jitter(rng: np.random.Generator, color, amount: float) -> np.ndarray:
    return np.clip(np.asarray(color, np.float64) + rng.uniform(-amount, amount, 3), 0.0, 1.0)


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in [-1, 1]: a ``cells``² random grid, bilinearly upsampled to ``size``²."""
    grid = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1))
    u = np.linspace(0, cells, size, endpoint=False) + 0.5 * cells / size
    i = np.minimum(u.astype(int), cells - 1)
    f = u - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def _ridge_profile(rng: np.random.Generator, xs: np.ndarray, size: int, height: float, n_peaks: int) -> np.ndarray:
    """Silhouette height above the horizon: max of ``n_peaks`` cones plus low-amplitude roughness."""
    centers = rng.uniform(-0.1, 1.1, n_peaks) * size
    tops = height * rng.uniform(0.55, 1.0, n_peaks)
    slopes = rng.uniform(0.35, 1.1, n_peaks)
    h = np.max(tops[:, None] - slopes[:, None] * np.abs(xs[None, :] - centers[:, None]), axis=0)
    for k, amp in ((3, 0.06), (7, 0.03), (13, 0.015)):
        h = h + amp * height * np.sin(2 * np.pi * k * xs / size + rng.uniform(0, 2 * np.pi))
    return np.maximum(h, 0.04 * height)


def render_landscape(rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, LandscapeInfo]:
    """One landscape: ``(size, size, 3)`` float32 in [0, 1] and its :class:`LandscapeInfo`."""
    S = int(size)
    if S < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    names = PALETTE_NAMES
    weights = np.array([PALETTES[n][-1] for n in names])
    name = names[rng.choice(len(names), p=weights / weights.sum())]
    top, hor, sun_c, far_c, near_c, water_c, _ = PALETTES[name]
    top, hor = _jitter(rng, top, 0.06), _jitter(rng, hor, 0.06)
    sun_c, far_c, near_c, water_c = (_jitter(rng, c, 0.04) for c in (sun_c, far_c, near_c, water_c))

    ys = np.arange(S) + 0.5
    xs = np.arange(S) + 0.5
    yh = S * rng.uniform(0.56, 0.72)  # horizon line

    # sky
    gamma = rng.uniform(0.7, 1.6)
    s = np.clip(ys / yh, 0, 1) ** gamma
    img = (top[None, :] * (1 - s[:, None]) + hor[None, :] * s[:, None])[:, None, :].repeat(S, 1)

    # ridges (back to front); the sun must clear every one of them
    n_layers = int(rng.integers(2, 4))
    max_h = yh - 0.30 * S
    profiles = []
    for i in range(n_layers):
        frac = i / max(n_layers - 1, 1)
        height = max_h * rng.uniform(0.75, 1.0) * (1.0 - 0.45 * frac)
        profiles.append(_ridge_profile(rng, xs, S, height, int(rng.integers(2, 5))))
    sky_floor = yh - np.max(profiles, axis=0)  # highest ridge top per column

    # sun / moon, fully above the ridges
    for _ in range(50):
        r = S * rng.uniform(0.065, 0.11)
        cx = rng.uniform(r + 2, S - r - 2)
        cols = (xs > cx - r - 1.5) & (xs < cx + r + 1.5)
        lim = sky_floor[cols].min() - r - 1.5
        if lim > r + 2:
            cy = rng.uniform(r + 2, lim)
            break
    else:  # cannot happen with the bounds above (≥ 0.30 S of sky), kept as a guard
        r, cx, cy = 0.06 * S, S / 2, 0.08 * S + 2
    X, Y = np.meshgrid(xs, ys)
    d = np.hypot(X - cx, Y - cy)
    glow = np.exp(-np.maximum(d - r, 0) / (1.5 * r))[..., None] * rng.uniform(0.12, 0.3)
    img = img + (sun_c[None, None, :] - img) * glow * (Y < yh)[..., None]
    disc = np.clip(r - d + 0.5, 0, 1)[..., None]
    img = img * (1 - disc) + sun_c[None, None, :] * disc

    # ridges: anti-aliased fill, slope shading toward the sun, haze at the back, snow by day
    peak = (S / 2, yh)
    for i, h in enumerate(profiles):
        frac = i / max(n_layers - 1, 1)
        base = far_c * (1 - frac) + near_c * frac
        top_y = yh - h
        cover = np.clip(Y + 0.5 - top_y[None, :], 0, 1) * (Y < yh + 0.5)
        slope = np.convolve(np.gradient(h), np.ones(7) / 7, mode="same")  # smoothed: no streaks
        toward = np.sign(cx - xs)
        shade = 1.0 + 0.22 * np.tanh(1.5 * slope * toward)
        depth = np.clip((Y - top_y[None, :]) / np.maximum(h[None, :], 1), 0, 1)
        col = base[None, None, :] * shade[None, :, None] * (1.0 - 0.25 * depth[..., None])
        col = col * (1 - 0.25 * (1 - frac)) + hor[None, None, :] * 0.25 * (1 - frac)
        if name == "day" and i == 0 and rng.random() < 0.5:
            snow = ((Y - top_y[None, :]) < 0.18 * h.max()) & (h[None, :] > 0.7 * h.max())
            col = np.where(snow[..., None], np.array([0.93, 0.94, 0.97]) * shade[None, :, None], col)
        img = img * (1 - cover[..., None]) + col * cover[..., None]
        if i == n_layers - 1:
            j = int(np.argmax(h))
            peak = (float(xs[j]), float(top_y[j]))

    # water: rippled mirror image below the horizon
    below = Y >= yh
    dist = np.clip(Y - yh, 0, None)
    amp = rng.uniform(0.3, 1.2) * (0.2 + dist / S * 4)
    dx = amp * np.sin(Y * rng.uniform(0.8, 1.6) + rng.uniform(0, 2 * np.pi))
    sx = np.clip((X + dx).astype(int), 0, S - 1)
    sy = np.clip((2 * yh - Y).astype(int), 0, S - 1)
    refl = img[sy, sx]
    mix = rng.uniform(0.35, 0.55)
    bands = 1.0 + 0.06 * np.sin(Y * rng.uniform(1.5, 2.5))[..., None]
    water = (refl * (1 - mix) + water_c[None, None, :] * mix) * 0.9 * bands
    edge = np.clip(Y - yh + 0.5, 0, 1)[..., None] * below[..., None]
    img = img * (1 - edge) + water * edge

    # shore in the foreground (half the images)
    if rng.random() < 0.5:
        ground = _jitter(rng, (0.22, 0.36, 0.14) if name == "day" else (0.16, 0.12, 0.10), 0.05)
        if name == "night":
            ground = ground * 0.35
        gy = S * rng.uniform(0.86, 0.95) + S * 0.03 * np.sin(2 * np.pi * xs / S * rng.uniform(0.5, 2) + rng.uniform(0, 6.3))
        gcover = np.clip(Y + 0.5 - gy[None, :], 0, 1)[..., None]
        tex = 1.0 + 0.12 * _value_noise(rng, S, 8)[..., None]
        img = img * (1 - gcover) + np.clip(ground[None, None, :] * tex, 0, 1) * gcover

    img = np.clip(img, 0.0, 1.0).astype(np.float32)
    info = LandscapeInfo(
        palette=name,
        sun_center=(float(cx), float(cy)),
        sun_radius=float(r),
        sun_color=tuple(float(c) for c in sun_c),
        horizon=float(yh),
        peak=peak,
        ridge_top=float(sky_floor.min()),
    )
    return img, info


def render_batch(n: int, seed: int, size: int = 64) -> tuple[np.ndarray, list[LandscapeInfo]]:
    """``n`` landscapes from one seeded stream: ``(n, 3, size, size)`` float32 in [0, 1] and their infos."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    imgs, infos = [], []
    for _ in range(n):
        im, info = render_landscape(rng, size)
        imgs.append(im.transpose(2, 0, 1))
        infos.append(info)
    return np.stack(imgs), infos
