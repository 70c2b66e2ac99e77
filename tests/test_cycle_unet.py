"""Cycle-SDE on a real (tiny, random) diffusers UNet: exact reconstruction in float32, and a drag."""

import pytest
import torch

from sdedit_engine.core.cycle import cycle_decode, cycle_encode, cycle_reconstruct, cycle_sigmas
from sdedit_engine.core.drag import sde_drag
from sdedit_engine.pipelines.pipeline import SDEditPipeline
from tests.fixtures.tiny_diffusers import tiny_sd_path


@pytest.fixture(scope="module")
def pipe():
    return SDEditPipeline.from_pretrained(tiny_sd_path("epsilon"))


@pytest.mark.parametrize("t0,steps,guidance,tiles", [
    (0.6, 30, 1.0, None), (0.6, 30, 3.0, None), (0.6, 30, 3.0, 64),
    # the nodes' extremes: t0 = 1 (σ_max = 14.6) with CFG 7.5 was 1.7e-4 with a float32 chain, CFG 30 was O(1)
    (1.0, 20, 7.5, None), (1.0, 12, 30.0, None),
])
def test_cycle_sde_reconstructs_a_unet_latent_exactly_in_float32(pipe, t0, steps, guidance, tiles):
    """Also through the tiled UNet (a 16×16 latent in 3×3 tiles): any deterministic denoiser replays.
    The chain is float64 while the UNet runs in float32, so the float32 result is the input to ≤ 1e-6
    (in practice bit for bit: the float64 error, ~1e-14, rounds away)."""
    size = 64 if tiles is None else 128
    pipe.enable_unet_tiling(tiles is not None, tile_size=tiles)
    den = pipe.make_denoiser(guidance_scale=guidance)
    pipe.enable_unet_tiling(False)
    cond = pipe.encode_prompt("a bowl of fruits", "", 1, guidance, size, size).as_extra_args()
    x0 = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        rec = cycle_reconstruct(den, x0, cycle_sigmas(den.schedule, t0, steps), seed=3, extra_args=cond)
    assert rec.dtype == torch.float32
    assert float((rec - x0).norm() / x0.norm()) <= 1e-6


def test_cycle_sde_chain_is_float64_and_exact_to_its_rounding(pipe):
    den = pipe.make_denoiser(guidance_scale=7.5)
    cond = pipe.encode_prompt("a bowl of fruits", "", 1, 7.5, 64, 64).as_extra_args()
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        traj = cycle_encode(den, x0, cycle_sigmas(den.schedule, 1.0, 8), seed=3, extra_args=cond)
        assert {t.dtype for t in traj.states + traj.noises} == {torch.float64}
        rec32 = cycle_decode(den, traj.start, traj, extra_args=cond)  # float64 start → the input's dtype
        assert rec32.dtype == torch.float32 and torch.equal(rec32, x0)
        rec = cycle_reconstruct(den, x0.double(), cycle_sigmas(den.schedule, 1.0, 8), seed=3, extra_args=cond)
    assert rec.dtype == torch.float64
    assert float((rec - x0.double()).norm() / x0.norm()) <= 1e-12


def test_drag_on_a_unet_keeps_everything_outside_the_mask(pipe):
    den = pipe.make_denoiser(guidance_scale=1.0)
    cond = pipe.encode_prompt("a cat", "", 1, 1.0, 64, 64).as_extra_args()
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :, :5] = 1
    with torch.no_grad():
        out = sde_drag(den, x0, [((1, 3), (3, 3))], mask=mask, radius=1, t0=0.6, steps=10, seed=0, extra_args=cond)
    keep = (mask == 0).expand_as(out)
    assert torch.equal(out[keep], x0[keep])
    assert float((out - x0)[~keep].abs().mean()) > 1e-3
