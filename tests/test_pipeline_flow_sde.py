"""The SDE editing family (SDE-Drag with and without LoRA tuning, SDE inpainting, DiffEdit-SDE) on the tiny
SD3 and FLUX.1 pipelines: kept pixels exact, seeds reproducible, Cycle-SDE exact under the drag's guidance."""

import math

import pytest
import torch

from sdedit_engine.pipelines.drag_pipeline import cycle_check
from sdedit_engine.pipelines.pipeline import SDEditPipeline
from tests.fixtures.tiny_flow import tiny_flux_path, tiny_sd3_path


@pytest.fixture(scope="module", params=["sd3", "flux"])
def pipe(request):
    return SDEditPipeline.from_pretrained(tiny_sd3_path() if request.param == "sd3" else tiny_flux_path())


def _image(size=64):
    img = torch.full((1, 3, size, size), 0.3)
    img[..., 16:32, 8:24] = torch.tensor([0.9, 0.1, 0.1]).reshape(1, 3, 1, 1)
    return img


def _left_mask(size=64):
    m = torch.zeros(1, 1, size, size)
    m[..., :, : size // 2 + 8] = 1
    return m


def test_drag_keeps_pixels_outside_the_mask_and_is_seeded(pipe):
    img, m = _image(), _left_mask()
    kw = dict(mask=m, prompt="a red square", steps=4, radius=1, step_size=1, output_type="pt", progress=False)
    a = pipe.drag(img, "[[16, 24], [32, 24]]", seed=1, **kw)
    b = pipe.drag(img, "[[16, 24], [32, 24]]", seed=1, **kw)
    keep = (m == 0).expand_as(img)
    assert torch.equal(a.images[keep], img[keep])
    assert torch.equal(a.images, b.images)
    assert a.iterations == 2 and a.latent_pairs == [((2, 3), (4, 3))]
    assert a.nfe == 2 * 4 * 2  # record + replay per iteration, one call per step (no CFG on Flux; ramp calls on SD3)
    assert torch.isfinite(a.images).all()


def test_drag_with_lora_tuning_removes_the_adapter(pipe):
    img = _image()
    den = pipe.make_denoiser(2.0)
    cond = pipe.encode_prompt("a cat", None, 1, 2.0, 64, 64).as_extra_args()
    x = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([1.5])
    with torch.no_grad():
        before = den(x, sigma, **cond)
    out = pipe.drag(img, "[[16, 24], [32, 24]]", steps=3, radius=1, step_size=16, output_type="latent",
                    progress=False, lora_tuning={"steps": 3, "rank": 2, "learning_rate": 1e-2})
    assert len(out.lora_losses) == 3 and all(math.isfinite(v) for v in out.lora_losses)
    with torch.no_grad():
        after = den(x, sigma, **cond)
    assert torch.equal(before, after)


def test_cycle_check_is_exact_under_the_drag_guidance(pipe):
    assert cycle_check(pipe, _image(), "a cat", t0=0.6, steps=8) <= 1e-4


@pytest.mark.parametrize("mode", ["sde", "ode"])
def test_inpaint_keeps_pixels_outside(pipe, mode):
    img = _image()
    m = torch.zeros(1, 1, 64, 64)
    m[..., 12:36, 4:28] = 1
    out = pipe.inpaint(img, m, "a park bench", steps=4, mode=mode, guidance_scale=2.0, output_type="pt", progress=False)
    keep = (m == 0).expand_as(img)
    assert torch.equal(out.images[keep], img[keep])
    assert float((out.images - img)[~keep].abs().max()) > 1e-3


def test_diffedit_with_and_without_a_mask(pipe):
    img = _image()
    m = _left_mask()
    out = pipe.diffedit(img, "a red square", "a blue circle", mask=m, t0=0.6, steps=4, guidance_scale=2.0,
                        output_type="pt", progress=False)
    keep = (m == 0).expand_as(img)
    assert torch.equal(out.images[keep], img[keep])
    auto = pipe.diffedit(img, "a red square", "a blue circle", t0=0.6, steps=4, guidance_scale=2.0,
                         output_type="pt", progress=False)
    assert auto.mask is not None and auto.images.shape == img.shape
