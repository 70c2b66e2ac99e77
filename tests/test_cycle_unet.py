"""Cycle-SDE on a real (tiny, random) diffusers UNet: exact reconstruction in float32, and a drag."""

import pytest
import torch

from sdedit_engine.core.cycle import cycle_reconstruct, cycle_sigmas
from sdedit_engine.core.drag import sde_drag
from sdedit_engine.pipelines.pipeline import SDEditPipeline
from tests.fixtures.tiny_diffusers import tiny_sd_path


@pytest.fixture(scope="module")
def pipe():
    return SDEditPipeline.from_pretrained(tiny_sd_path("epsilon"))


@pytest.mark.parametrize("guidance,tiles", [(1.0, None), (3.0, None), (3.0, 64)])
def test_cycle_sde_reconstructs_a_unet_latent_within_1e_4(pipe, guidance, tiles):
    """Also through the tiled UNet (a 16×16 latent in 3×3 tiles): any deterministic denoiser replays."""
    size = 64 if tiles is None else 128
    pipe.enable_unet_tiling(tiles is not None, tile_size=tiles)
    den = pipe.make_denoiser(guidance_scale=guidance)
    pipe.enable_unet_tiling(False)
    cond = pipe.encode_prompt("a bowl of fruits", "", 1, guidance, size, size).as_extra_args()
    x0 = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        rec = cycle_reconstruct(den, x0, cycle_sigmas(den.schedule, 0.6, 30), seed=3, extra_args=cond)
    assert rec.dtype == torch.float32
    assert float((rec - x0).norm() / x0.norm()) <= 1e-4


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
