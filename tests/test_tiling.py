"""Tiled processing (sdedit_engine.core.tiling): coverage, exact blending, and a tiled denoiser under SDEdit."""

import pytest
import torch
import torch.nn.functional as F

from sdedit_engine import TiledDenoiser, blend_tiles, sdedit
from sdedit_engine.core.schedules import DiscreteSchedule
from sdedit_engine.core.tiling import check_tiling, ramp, tile_regions, tile_starts


@pytest.mark.parametrize("length,tile,overlap", [(512, 64, 16), (130, 64, 16), (64, 64, 8), (40, 64, 16), (97, 10, 3), (11, 2, 1)])
def test_tile_starts_cover_with_at_least_the_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and min(starts[-1] + tile, length) == length
    ends = [min(s + tile, length) for s in starts]
    for a_end, b_start in zip(ends, starts[1:]):
        assert a_end - b_start >= overlap  # neighbours share at least `overlap` cells, no gaps
    if len(starts) > 1:  # no needless tile: one fewer could not cover with that overlap
        assert (len(starts) - 2) * (tile - overlap) + tile < length


def test_ramp_is_positive_symmetric_and_flat_in_the_middle():
    w = ramp(64, 16)
    assert (w > 0).all() and torch.equal(w, w.flip(0)) and (w[16:48] == 1).all()
    assert float(w[0]) == pytest.approx(1 / 17) and torch.equal(ramp(5, 0), torch.ones(5))
    one_sided = ramp(20, 0, 4)
    assert (one_sided[:16] == 1).all() and float(one_sided[-1]) == pytest.approx(1 / 5)


def test_blend_tiles_of_a_pointwise_function_equals_the_whole():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 70, 45, generator=g)
    calls = []

    def fn(t, region):
        calls.append(region)
        return torch.tanh(t) * 3

    out = blend_tiles(fn, x, 16, 4)
    assert len(calls) == len(tile_regions(70, 45, 16, 4)) > 1
    torch.testing.assert_close(out, torch.tanh(x) * 3, rtol=0, atol=1e-5)
    # where one tile is alone (weight 1, sum 1) the result is bit-identical
    ay, ax = tile_starts(70, 16, 4)[1], tile_starts(45, 16, 4)[1]
    assert torch.equal(out[..., :ay, :ax], (torch.tanh(x) * 3)[..., :ay, :ax])


def test_blend_tiles_changes_resolution_like_a_vae():
    g = torch.Generator().manual_seed(1)
    lat = torch.randn(1, 4, 24, 40, generator=g)

    def up(t, region):  # a "decoder": nearest ×8, 3 channels
        return F.interpolate(t[:, :3], scale_factor=8, mode="nearest")

    img = blend_tiles(up, lat, 8, 2, out_scale=8)
    torch.testing.assert_close(img, up(lat, None), rtol=0, atol=1e-5)

    def down(t, region):  # an "encoder": 8×8 mean pooling
        return F.avg_pool2d(t, 8)

    back = blend_tiles(down, img, 8, 2, in_scale=8)
    torch.testing.assert_close(back, lat[:, :3], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="not a multiple of 8"):
        blend_tiles(down, img[..., :-1], 8, 2, in_scale=8)


def test_blend_tiles_single_tile_is_one_call_and_errors_name_the_setting():
    x = torch.randn(1, 4, 8, 8)
    seen = []
    out = blend_tiles(lambda t, r: seen.append(r) or t * 2, x, 64, 16)
    assert seen == [(0, 8, 0, 8)] and torch.equal(out, x * 2)
    for bad in [(1, 0), (8, 8), (8, -1), (8.0, 2)]:
        with pytest.raises(ValueError, match="tile_size"):
            check_tiling(*bad)


def test_tiled_denoiser_matches_a_local_denoiser_away_from_seams_and_passes_regions():
    """A 3×3-blur denoiser is local: tiles agree with the whole image except within 1 cell of a tile
    border; a pointwise one agrees everywhere. The tiled denoiser keeps the schedule for SDEdit."""
    sched = DiscreteSchedule.scaled_linear()

    class Blur:
        schedule = sched

        def __call__(self, x, sigma, **cond):
            k = torch.full((x.shape[1], 1, 3, 3), 1 / 9)
            return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=x.shape[1]) / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)

    x = torch.randn(1, 4, 40, 40, generator=torch.Generator().manual_seed(2))
    sigma = torch.tensor([1.5])
    regions = []
    tiled = TiledDenoiser(lambda t, s, region: regions.append(region) or Blur()(t, s), 16, 6, region_arg="region")
    d_full, d_tiled = Blur()(x, sigma), tiled(x, sigma)
    assert regions == tile_regions(40, 40, 16, 6) and len(regions) == 16
    inner = (slice(None), slice(None), slice(0, 8), slice(0, 8))  # tile 0 alone, its border (image edge) padded alike
    assert torch.equal(d_tiled[inner], d_full[inner])
    assert float((d_tiled - d_full).abs().max()) < 0.5 * float(d_full.abs().max())

    # under SDEdit (pointwise prior): tiled and whole runs agree to float rounding
    class Shrink:
        schedule = sched

        def __call__(self, x, sigma, **cond):
            return x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)

    guide = torch.randn(1, 4, 40, 40, generator=torch.Generator().manual_seed(3))
    a = sdedit(Shrink(), guide, t0=0.5, steps=6, seed=0)
    b = sdedit(TiledDenoiser(Shrink(), 16, 6), guide, t0=0.5, steps=6, seed=0)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
