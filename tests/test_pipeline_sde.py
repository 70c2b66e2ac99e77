"""SDE-Drag, SDE inpainting and DiffEdit-SDE on the diffusers backend (tiny random models, CPU)."""

import json

import pytest
import torch

from sdedit_engine.core.drag import guidance_ramp
from sdedit_engine.core.samplers import SamplingCancelled
from sdedit_engine.pipelines.drag_pipeline import cycle_check
from sdedit_engine.pipelines.lora_tuning import TunedLoRA, lora_scale_ramp
from sdedit_engine.pipelines.pipeline import SDEditPipeline
from sdedit_engine.pipelines.text import make_model_fn
from tests.fixtures.tiny_diffusers import tiny_sd_path

FAST = dict(steps=6, radius=2, progress=False, output_type="pt")


@pytest.fixture(scope="module")
def pipe():
    return SDEditPipeline.from_pretrained(tiny_sd_path("epsilon"))


@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(0)
    img = 0.3 + 0.1 * torch.rand(1, 3, 64, 64, generator=g)
    img[..., 24:40, 4:20] = torch.tensor([0.9, 0.2, 0.1]).reshape(1, 3, 1, 1)  # a red square at the source
    return img


@pytest.fixture(scope="module")
def left_mask():
    m = torch.zeros(1, 1, 64, 64)
    m[..., :, :44] = 1
    return m


def _unet_probe(pipe):
    cond = pipe.encode_prompt("a cat", "", 1, 3.0, 32, 32).as_extra_args()
    den = pipe.make_denoiser(3.0)
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        return den(x, torch.tensor([2.0]), **cond)


def test_drag_moves_content_and_keeps_pixels_outside_the_mask(pipe, image, left_mask):
    pts = [{"source": [12, 32], "target": [28, 32]}]
    out = pipe.drag(image, pts, mask=left_mask, prompt="a red square", seed=1, **FAST)
    res = out.images
    keep = (left_mask == 0).expand_as(res)
    assert res.shape == image.shape and torch.equal(res[keep], image[keep])
    change = (res - image).abs().mean(1)[0]
    near_target = change[26:38, 22:34].mean()
    assert near_target > 0.05, float(near_target)
    assert out.latent_pairs == [((1, 4), (3, 4))] and out.iterations == 1
    assert out.nfe == 2 * 6 and out.lora_losses is None
    # same seed, same result; another seed differs
    again = pipe.drag(image, json.dumps(pts), mask=left_mask, prompt="a red square", seed=1, **FAST).images
    assert torch.equal(again, res)
    other = pipe.drag(image, pts, mask=left_mask, prompt="a red square", seed=2, **FAST).images
    assert not torch.equal(other, res)


def test_long_drag_is_split_and_output_types(pipe, image):
    out = pipe.drag(image, "[[8, 8], [56, 56]]", steps=3, radius=1, step_size=2, progress=False, output_type="latent")
    assert out.iterations == 4 and out.nfe == 2 * 3 * 4  # |(6, 6)| = 8.5 latent px / 2 → 4 moves
    assert out.images.shape == (1, 4, 8, 8)
    pil = pipe.drag(image, "[[8, 8], [24, 8]]", steps=2, radius=1, progress=False).images
    assert pil[0].size == (64, 64)
    np_out = pipe.drag(image, "[[8, 8], [24, 8]]", steps=2, radius=1, progress=False, output_type="np").images
    assert np_out.shape == (1, 64, 64, 3)


def test_guidance_ramp_reaches_the_model_per_step(pipe, image, monkeypatch):
    seen = []
    make = pipe.make_denoiser

    def spy_make(*a, **k):
        den = make(*a, **k)

        class Spy:
            schedule = den.schedule

            def __call__(self, x, sigma, **cond):
                seen.append(cond.get("guidance_scale"))
                return den(x, sigma, **cond)

        return Spy()

    monkeypatch.setattr(pipe, "make_denoiser", spy_make)
    pipe.drag(image, "[[12, 32], [28, 32]]", guidance_scale=4.0, steps=5, radius=1, progress=False, output_type="latent")
    ramp = guidance_ramp(4.0, 5)
    assert ramp[0] == pytest.approx(1 + 3 * 5 / 4) and ramp[-1] == pytest.approx(1 + 3 / 4)  # the paper's g(n)
    assert seen == ramp + ramp  # recording and replay see the same per-step scale


def test_model_fn_per_call_guidance_override():
    calls = []

    class FakeUNet:
        dtype = torch.float32

        def __call__(self, x, t, encoder_hidden_states, **kw):
            calls.append(x.shape[0])
            return (encoder_hidden_states.mean(dim=(1, 2)).reshape(-1, 1, 1, 1) * torch.ones_like(x),)

    fn = make_model_fn(FakeUNet(), guidance_scale=7.5)
    x, t = torch.zeros(1, 4, 2, 2), torch.tensor([10.0])
    c, u = torch.full((1, 3, 2), 2.0), torch.full((1, 3, 2), 1.0)
    assert torch.allclose(fn(x, t, encoder_hidden_states=c, uncond=u), torch.full_like(x, 1 + 7.5))
    assert torch.allclose(fn(x, t, encoder_hidden_states=c, uncond=u, guidance_scale=2.0), torch.full_like(x, 3.0))
    assert torch.allclose(fn(x, t, encoder_hidden_states=c, uncond=u, guidance_scale=1.0), torch.full_like(x, 2.0))
    assert calls == [2, 2, 1]  # g == 1 runs the conditional branch alone


def test_drag_with_lora_tuning_ramps_the_lora_scale_and_removes_it(pipe, image, monkeypatch):
    before = _unet_probe(pipe)
    scales, lora_steps = [], []
    orig = TunedLoRA.set_scale
    monkeypatch.setattr(TunedLoRA, "set_scale", lambda self, s: (scales.append(s), orig(self, s))[1])
    out = pipe.drag(image, "[[12, 32], [28, 32]]", prompt="a red square", lora_tuning={"steps": 3, "rank": 4},
                    lora_callback=lambda i, n, loss: lora_steps.append((i, n)), **FAST)
    assert len(out.lora_losses) == 3 and lora_steps == [(1, 3), (2, 3), (3, 3)]
    ramp = lora_scale_ramp(6, 0.5)
    assert scales == pytest.approx(ramp + ramp)  # recording and replay: the same weight per step
    assert ramp[1] == pytest.approx(0.5) and ramp[-1] == pytest.approx(1, abs=0.1)
    assert all(a < b for a, b in zip(ramp[1:], ramp[2:]))  # cosine from ~scale_min at t0 up to ~1 near t = 0
    assert not (getattr(pipe.unet, "peft_config", None) or {})
    assert torch.equal(_unet_probe(pipe), before)  # the adapter is gone: the UNet is exactly the original


def test_cancel_drag(pipe, image):
    with pytest.raises(SamplingCancelled):
        pipe.drag(image, "[[12, 32], [28, 32]]", callback=lambda info: info.step >= 2, **FAST)
    before = _unet_probe(pipe)
    with pytest.raises(SamplingCancelled):
        pipe.drag(image, "[[12, 32], [28, 32]]", lora_tuning={"steps": 5, "rank": 2},
                  lora_callback=lambda i, n, loss: i == 2, **FAST)
    assert torch.equal(_unet_probe(pipe), before)


def test_cycle_check_is_exact_in_float32(pipe, image):
    assert cycle_check(pipe, image, "a cat", steps=8, guidance_scale=3.0) < 1e-4


@pytest.mark.parametrize("points, message", [
    ("[[12, 32], [80, 32]]", "outside the 64x64 image"),
    ("[[-1, 32], [20, 32]]", "outside the 64x64 image"),
    ("[[12, 32], [12, 32]]", "source == target"),
    ("[]", "no point pairs"),
    ("", "no point pairs"),
    ("[[12, 32], [13, 33]]", "shorter than one latent cell"),
    ("[[12, 32], [20, 32", "not valid JSON"),
    ('{"source": [[1, 2]], "target": []}', "same length"),
    ("[[12, 32]]", "even number"),
    ('[{"source": [1, "a"], "target": [3, 4]}]', "two numbers"),
])
def test_bad_points_give_clear_errors(pipe, image, points, message):
    with pytest.raises(ValueError, match=message):
        pipe.drag(image, points, **FAST)


def test_bad_drag_arguments(pipe, image):
    with pytest.raises(ValueError, match="one image at a time"):
        pipe.drag(torch.cat([image, image]), "[[12, 32], [28, 32]]", **FAST)
    with pytest.raises(ValueError, match="mask .*32x32"):
        pipe.drag(image, "[[12, 32], [28, 32]]", mask=torch.ones(1, 1, 32, 32), **FAST)
    with pytest.raises(ValueError, match="nothing to drag"):  # was "smaller than one latent cell": see framing
        pipe.drag(image, "[[12, 32], [28, 32]]", mask=torch.zeros(1, 1, 64, 64), **FAST)
    with pytest.raises(ValueError, match="unknown option"):
        pipe.drag(image, "[[12, 32], [28, 32]]", lora_tuning={"stepz": 3}, **FAST)
    with pytest.raises(ValueError, match="t0"):
        pipe.drag(image, "[[12, 32], [28, 32]]", t0=1.5, **FAST)


@pytest.mark.parametrize("mode", ["sde", "ode"])
def test_inpaint_fills_only_the_mask(pipe, image, mode):
    m = torch.zeros(1, 1, 64, 64)
    m[..., 16:48, 16:48] = 1
    out = pipe.inpaint(image, m, "a cat", steps=4, mode=mode, seed=3, output_type="pt", progress=False)
    keep = (m == 0).expand_as(out.images)
    assert torch.equal(out.images[keep], image[keep])
    assert (out.images - image)[~keep].abs().mean() > 0.02
    assert out.nfe == 4


def test_inpaint_sde_and_ode_differ_and_errors(pipe, image):
    m = torch.zeros(1, 1, 64, 64)
    m[..., 16:48, 16:48] = 1
    sde = pipe.inpaint(image, m, "a cat", steps=4, mode="sde", output_type="pt", progress=False).images
    ode = pipe.inpaint(image, m, "a cat", steps=4, mode="ode", output_type="pt", progress=False).images
    assert not torch.equal(sde, ode)
    with pytest.raises(ValueError, match="mode"):
        pipe.inpaint(image, m, mode="euler", progress=False)
    with pytest.raises(ValueError, match="all black"):
        pipe.inpaint(image, torch.zeros(1, 1, 64, 64), progress=False)


@pytest.mark.parametrize("mode", ["sde", "ode"])
def test_diffedit_with_a_given_mask(pipe, image, left_mask, mode):
    out = pipe.diffedit(image, "a bowl of fruits", "a bowl of bananas", left_mask, steps=4, mode=mode, seed=0,
                        output_type="pt", progress=False)
    keep = (left_mask == 0).expand_as(out.images)
    assert torch.equal(out.images[keep], image[keep])
    assert (out.images - image)[~keep].abs().mean() > 1e-3
    assert out.nfe == 8 and torch.equal(out.mask, left_mask)


@pytest.mark.parametrize("mode", ["sde", "ode"])
def test_diffedit_with_the_automatic_mask(pipe, image, mode):
    out = pipe.diffedit(image, "a bowl of fruits", "a bowl of bananas", steps=4, mode=mode, mask_repeats=3,
                        output_type="pt", progress=False)
    m = out.mask
    assert m.shape == (1, 1, 64, 64) and set(m.unique().tolist()) <= {0.0, 1.0} and 0 < float(m.mean()) < 1
    assert out.nfe == 2 * 4 + 2 * 3
    keep = (m == 0).expand_as(out.images)
    assert torch.equal(out.images[keep], image[keep])


def test_diffedit_sde_reconstructs_with_equal_prompts(pipe, image, left_mask):
    """Recorded under the source prompt and replayed under the same prompt: the latent comes back."""
    out = pipe.diffedit(image, "a cat", "a cat", left_mask, steps=6, mode="sde", output_type="latent", progress=False)
    lat = pipe.encode(image)
    assert float((out.latents - lat).norm() / lat.norm()) < 1e-3  # float32, CFG 7.5


def test_a_mask_thinner_than_a_latent_cell_is_edited_not_refused(pipe, image):
    """One latent-mask rule for every path (core.framing, max): DiffEdit and drag used 'area > 0.5' and
    refused this mask ("smaller than one latent cell"); now its cells are edited."""
    m = torch.zeros(1, 1, 64, 64)
    m[..., 20:22, :] = 1  # 2 of the 8 rows of latent row 2
    out = pipe.diffedit(image, "a bowl of fruits", "a bowl of bananas", m, steps=4, seed=0, output_type="pt",
                        progress=False)
    keep = (m == 0).expand_as(out.images)
    assert torch.equal(out.images[keep], image[keep])
    change = (out.latents - pipe.encode(image)).abs().amax(dim=(0, 1, 3))
    assert float(change[2]) > 1e-3 and float(change[torch.arange(8) != 2].max()) == 0.0


def test_diffedit_callback_numbers_the_whole_run(pipe, image):
    """The automatic mask's draws and both passes are one run (core.sde_edits.auto_diffedit, as in the
    node): before, the pipeline's callback saw the step numbers restart after the mask."""
    infos = []
    pipe.diffedit(image, "a bowl of fruits", "a bowl of bananas", steps=3, mask_repeats=2, output_type="latent",
                  progress=False, callback=infos.append)
    assert [i.step for i in infos] == list(range(2 * 3 + 2)) and {i.total for i in infos} == {2 * 3 + 2}
