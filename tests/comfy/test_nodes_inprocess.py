"""Node internals with ComfyUI importable in-process (no server): float-level exactness, the σ table,
RGBA handling and the engine/ComfyUI equivalence."""

from __future__ import annotations

import pytest
import torch

from tests.comfy import harness


@pytest.fixture(scope="module")
def comfy(comfy_inprocess, tiny_models):
    import comfy.sd

    pack = harness.import_pack()
    model, clip, vae = comfy.sd.load_checkpoint_guess_config(str(tiny_models["checkpoint"]), output_vae=True, output_clip=True)[:3]
    pos = clip.encode_from_tokens_scheduled(clip.tokenize("a red house"))
    neg = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    from comfyui_sdedit.nodes import backend, custom_sampling, guides, sdedit_nodes

    return {"pack": pack, "model": model, "vae": vae, "pos": pos, "neg": neg, "sdedit": sdedit_nodes.SDEdit,
            "backend": backend, "sigmas_node": custom_sampling.SDEditSigmas, "guides": guides}


def test_every_t0_input_starts_at_0_01(comfy):
    """The engine refuses t0 = 0, so no node offers it (issue 10: t0 inputs get min = 0.01)."""
    from comfyui_sdedit.nodes import NODES
    from comfyui_sdedit.nodes.inputs import float_bounds

    with_t0 = {n.__name__: float_bounds(n)["t0"] for n in NODES if "t0" in float_bounds(n)}
    assert len(with_t0) >= 4 and all(lo == 0.01 and hi == 1.0 for lo, hi in with_t0.values()), with_t0


def _guide(b=1, h=64, w=64, channels=3):
    g = torch.Generator().manual_seed(0)
    img = torch.rand((b, h, w, channels), generator=g)
    if channels == 4:
        img[..., 3] = torch.rand((b, h, w), generator=g)
    return img


def _run(c, guide, **kw):
    args = dict(t0=0.5, steps=3, cfg=2.0, sampler="dpmpp_2m_sde", repeats=1, seed=0)
    args.update(kw)
    return c["sdedit"].execute(c["model"], c["pos"], c["neg"], c["vae"], guide, **args).args


def test_the_engine_schedule_is_comfyuis_own_sigma_table(comfy):
    ms = comfy["model"].get_model_object("model_sampling")
    schedule = comfy["backend"].model_schedule(comfy["model"])
    assert torch.allclose(schedule.sigmas.float(), ms.sigmas.float().cpu(), rtol=1e-6)
    for t0 in (0.2, 0.5, 0.9):
        ours = schedule.t0_to_sigma(t0)
        assert ours == pytest.approx(float(ms.sigmas[round(t0 * 1000) - 1]), rel=1e-6)
        # ComfyUI's percent_to_sigma(1 - t0) interpolates at timestep t0*999: within one timestep of ours
        theirs = float(ms.percent_to_sigma(1.0 - t0))
        lo, hi = float(ms.sigmas[round(t0 * 1000) - 1]), float(ms.sigmas[round(t0 * 1000)])
        assert lo <= theirs <= hi
    sig = comfy["sigmas_node"].execute(comfy["model"], 0.5, 10, "uniform").args[0]
    assert sig.shape == (11,) and sig.dtype == torch.float32 and float(sig[-1]) == 0.0


def test_unmasked_pixels_are_bit_identical_in_float(comfy):
    guide = _guide()
    mask = torch.zeros(1, 64, 64)
    mask[:, 10:30, 20:50] = 1.0
    image, latent = _run(comfy, guide, mask=mask, mask_grow=4, mask_feather=4.0)
    grown = torch.zeros(64, 64, dtype=torch.bool)
    grown[6:34, 16:54] = True  # grow 4 + feather band (σ = 2 px, cut at 1e-4 ≈ 4.3σ)
    far = ~torch.nn.functional.max_pool2d(grown[None, None].float(), 19, 1, 9)[0, 0].bool()
    assert torch.equal(image[0][far], guide[0][far])
    assert latent["samples"].shape == (1, 4, 8, 8)
    assert float((image[0][~far] - guide[0][~far]).abs().mean()) > 0.01


def test_rgba_guides_ignore_alpha(comfy):
    rgba = _guide(channels=4)
    a = _run(comfy, rgba, seed=3)[0]
    b = _run(comfy, rgba[..., :3].contiguous(), seed=3)[0]
    assert torch.equal(a, b) and a.shape == (1, 64, 64, 3)


def test_node_equals_the_engine_with_the_guider_as_denoiser(comfy):
    """The node is the engine: same seed → the same latent as sdedit() over ComfyUI's CFG guider."""
    import comfy.samplers as comfy_samplers
    from comfyui_sdedit.sdedit_engine import sdedit

    guide = _guide()
    _, latent = _run(comfy, guide, seed=9, cfg=1.0, sampler="ddpm")
    model = comfy["model"]
    guider = comfy_samplers.CFGGuider(model)
    guider.set_conds(comfy["pos"], comfy["neg"])
    guider.set_cfg(1.0)
    schedule = comfy["backend"].model_schedule(model)
    pixels = guide
    enc = comfy["vae"].encode(pixels)
    captured = {}

    class Capture(comfy["backend"].SDEditKSampler):
        def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None, disable_pbar=False):
            captured["x"] = sdedit(model_wrap, latent_image, sigmas=sigmas, sampler="ddpm", seed=9, extra_args=extra_args)
            return captured["x"]

    guider.sample(torch.zeros_like(enc), enc, Capture("ddpm"), schedule.sigma_grid(0.5, 3).float(), seed=9)
    expected = model.model.process_latent_out(captured["x"])
    assert torch.allclose(latent["samples"], expected, atol=1e-5)


def test_stroke_guide_from_alpha_layer(comfy):
    base = torch.full((1, 32, 32, 3), 0.5)
    strokes = torch.zeros(1, 32, 32, 4)
    strokes[:, 8:12, 4:28, :3] = torch.tensor([1.0, 0.0, 0.0])
    strokes[:, 8:12, 4:28, 3] = 1.0
    guide, mask = comfy["guides"].SDEditStrokeGuide.execute(base, strokes, grow=1, threshold=0.02).args
    assert torch.equal(guide[0, 10, 10], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(guide[0, 20, 20], torch.tensor([0.5, 0.5, 0.5]))
    assert mask.shape == (1, 32, 32) and bool(mask[0, 7:13, 3:29].all()) and not bool(mask[0, 14:].any())


def test_composite_guide_clips_patches_at_the_border(comfy):
    base = torch.zeros(1, 32, 32, 3)
    patch = torch.ones(1, 16, 16, 3)
    guide, mask = comfy["guides"].SDEditCompositeGuide.execute(base, patch, x=24, y=-8, grow=0).args
    assert float(guide[0, 0:8, 24:32].min()) == 1.0 and float(guide[0, 8:, :].max()) == 0.0
    assert int(mask.sum()) == 8 * 8
    with pytest.raises(ValueError, match="entirely outside"):
        comfy["guides"].SDEditCompositeGuide.execute(base, patch, x=40, y=0, grow=0)


def test_stroke_guide_treats_an_all_zero_mask_as_no_mask(comfy):
    base = torch.full((1, 32, 32, 3), 0.5)
    strokes = base.clone()
    strokes[:, 4:8, 4:8] = 1.0
    guide, mask = comfy["guides"].SDEditStrokeGuide.execute(base, strokes, grow=0, threshold=0.02, stroke_mask=torch.zeros(1, 64, 64)).args
    assert int(mask.sum()) == 16 and torch.equal(guide, strokes)


def test_windowed_mask_grow_and_feather_matches_the_whole_image(comfy):
    from comfyui_sdedit.sdedit_engine.core.masks import grow_and_feather as _grow_and_feather
    from comfyui_sdedit.sdedit_engine.io import imaging

    m = torch.zeros(1, 1, 300, 400)
    m[..., 100:140, 250:330] = 1.0
    m[..., 120:125, 200:210] = 0.4
    for grow, feather in ((0, 0.0), (8, 8.0), (20, 3.0)):
        full = imaging.feather_mask(imaging.grow_mask(m, grow), feather)
        win = _grow_and_feather(m, grow, feather)
        assert torch.equal(win == 0, full == 0) and torch.equal(win == 1, full == 1)
        assert float((win - full).abs().max()) < 1e-6


@pytest.mark.parametrize("t0, steps, cfg", [(1.0, 20, 7.5), (1.0, 10, 30.0)])
def test_cycle_sde_through_comfyuis_guider_reconstructs_exactly(comfy, t0, steps, cfg):
    """Cycle-SDE on the node path (ComfyUI's CFG guider as the denoiser, as SDE-Drag/DiffEdit run it):
    the float64 chain replays the recorded noise exactly at the nodes' extremes (issue 14.6; the float32
    chain was off by 1e-4-1e-3 at t0 = 1, CFG 7.5)."""
    from comfyui_sdedit.sdedit_engine.core.cycle import cycle_reconstruct, cycle_sigmas

    backend = comfy["backend"]
    latent = comfy["vae"].encode(_guide())
    levels = cycle_sigmas(backend.model_schedule(comfy["model"]), t0, steps)
    seen = {}

    def algorithm(denoiser, lat, report):
        seen["in"] = lat.clone()
        out = cycle_reconstruct(denoiser, lat, levels, seed=3, extra_args_fn=lambda i: {"cfg": cfg})
        seen["out"] = out
        return out

    backend.run_engine_loop(comfy["model"], comfy["pos"], comfy["neg"], latent, cfg=cfg, sigmas=levels,
                            algorithm=algorithm, total_steps=2 * steps, seed=3)
    assert seen["out"].dtype == seen["in"].dtype == torch.float32
    assert float((seen["out"] - seen["in"]).norm() / seen["in"].norm()) <= 1e-6
