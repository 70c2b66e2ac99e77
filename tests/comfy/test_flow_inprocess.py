"""Flow-matching (CONST) models in the nodes, in-process: the tiny SD1.5 checkpoint patched by ComfyUI's
own ModelSamplingSD3 / ModelSamplingFlux / ModelSamplingAuraFlow is a CONST model to ComfyUI, so the
whole flow path (schedule, noise scaling, masks, guider) runs on it; it predicts nonsense velocities,
which is fine for exactness checks."""

from __future__ import annotations

import pytest
import torch

from tests.comfy import harness

PATCHES = ["sd3", "flux", "auraflow"]


@pytest.fixture(scope="module")
def comfy(comfy_inprocess, tiny_models):
    import comfy.sd

    pack = harness.import_pack()
    model, clip, vae = comfy.sd.load_checkpoint_guess_config(str(tiny_models["checkpoint"]), output_vae=True, output_clip=True)[:3]
    pos = clip.encode_from_tokens_scheduled(clip.tokenize("a red house"))
    neg = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    from comfyui_sdedit.nodes import backend, custom_sampling, sde_family, sdedit_nodes

    return {"pack": pack, "model": model, "vae": vae, "pos": pos, "neg": neg, "backend": backend,
            "sdedit": sdedit_nodes.SDEdit, "sigmas_node": custom_sampling.SDEditSigmas, "sde_family": sde_family}


def patched(model, kind: str, shift: float | None = None):
    from comfy_extras import nodes_model_advanced as adv

    if kind == "sd3":
        return adv.ModelSamplingSD3().patch(model, 3.0 if shift is None else shift)[0]
    if kind == "auraflow":
        return adv.ModelSamplingAuraFlow().patch_aura(model, 1.73 if shift is None else shift)[0]
    return adv.ModelSamplingFlux().patch(model, 1.15, 0.5, 512, 512)[0]


def recording(model):
    """A clone whose UNet calls are recorded (σ handed to the model, batch size) through ComfyUI's own
    model_function_wrapper hook."""
    seen = []
    m = model.clone()

    def wrapper(apply_model, args):
        seen.append((args["timestep"].detach().float().cpu().clone(), len(args["cond_or_uncond"])))
        return apply_model(args["input"], args["timestep"], **args["c"])

    m.set_model_unet_function_wrapper(wrapper)
    return m, seen


def _guide(b=1, h=64, w=64):
    return torch.rand((b, h, w, 3), generator=torch.Generator().manual_seed(0))


def _run(c, model, guide, **kw):
    args = dict(t0=0.5, steps=3, cfg=2.0, sampler="dpmpp_2m_sde", repeats=1, seed=0)
    args.update(kw)
    return c["sdedit"].execute(model, c["pos"], c["neg"], c["vae"], guide, **args)


@pytest.mark.parametrize("kind", PATCHES)
def test_flow_schedule_is_the_patched_models_own(comfy, kind):
    m = patched(comfy["model"], kind)
    ms = m.get_model_object("model_sampling")
    schedule = comfy["backend"].model_schedule(m)
    assert schedule.kind == "flow"
    for t0 in (0.1, 0.37, 0.5, 0.9):
        assert schedule.t0_to_flow_sigma(t0) == pytest.approx(ms.percent_to_sigma(1.0 - t0), rel=1e-15, abs=1e-15)
    table = ms.sigmas.double().cpu()
    ours = schedule.flow_sigma(torch.arange(1, table.numel() + 1, dtype=torch.float64) / table.numel())
    assert torch.allclose(ours, table, atol=1e-6)
    sig = comfy["sigmas_node"].execute(m, 0.5, 10, "uniform").args[0]
    assert sig.dtype == torch.float32 and sig.shape == (11,) and float(sig[-1]) == 0.0
    assert float(sig[0]) == float(torch.tensor(ms.percent_to_sigma(0.5), dtype=torch.float32))


@pytest.mark.parametrize("kind", PATCHES)
def test_the_model_sees_percent_to_sigma_first_and_one_call_per_step_at_cfg_1(comfy, kind):
    m, seen = recording(patched(comfy["model"], kind))
    ms = m.get_model_object("model_sampling")
    out = _run(comfy, m, _guide(), t0=0.37, steps=4, cfg=1.0)
    assert len(seen) == 4 and all(n == 1 for _, n in seen)  # cfg 1: one (unbatched) call per step
    assert float(seen[0][0][0]) == float(torch.tensor(ms.percent_to_sigma(1.0 - 0.37), dtype=torch.float32))
    grid = comfy["backend"].native_sigma_grid(comfy["backend"].model_schedule(m), 0.37, 4).float()
    assert torch.equal(torch.stack([t[0] for t, _ in seen]), grid[:-1])  # exactly the SIGMAS values
    assert "flow sigma" in out.ui.as_dict()["text"][0] and "log-SNR" in out.ui.as_dict()["text"][0]
    seen.clear()
    _run(comfy, m, _guide(), t0=0.37, steps=4, cfg=2.0)
    assert sum(n for _, n in seen) == 8  # cfg > 1: cond + uncond per step


@pytest.mark.parametrize("kind", PATCHES)
@torch.no_grad()
def test_node_equals_the_engine_over_the_flow_bridge(comfy, kind):
    """The node is the engine: FlowDenoiser over ComfyUI's CFG guider; its first model input is ComfyUI's
    own noise_scaling(s0, noise, latent) = s0·noise + (1 − s0)·latent."""
    import comfy.samplers as comfy_samplers
    from comfyui_sdedit.sdedit_engine import NoiseSource, sdedit
    from comfyui_sdedit.sdedit_engine.core.flow import FlowDenoiser

    m, seen_inputs = comfy["model"], []
    m = patched(m, kind).clone()
    m.set_model_unet_function_wrapper(
        lambda apply, a: (seen_inputs.append(a["input"].detach().clone()), apply(a["input"], a["timestep"], **a["c"]))[1])
    backend = comfy["backend"]
    latent = comfy["vae"].encode(_guide())
    node = backend.sdedit_latent(m, comfy["pos"], comfy["neg"], latent, cfg=2.0, t0=0.6, steps=5,
                                 sampler_name="ddpm", repeats=1, seed=7)
    ms = m.get_model_object("model_sampling")
    native = backend.native_sigma_grid(backend.model_schedule(m), 0.6, 5).float()
    noise = NoiseSource([7], latent.shape, stream="init/0").draw()
    expected_input = ms.noise_scaling(native[:1], noise, m.model.process_latent_in(latent))  # the guider scales latents
    assert torch.allclose(seen_inputs[0][:1].cpu(), expected_input, atol=1e-5, rtol=1e-5)
    captured = {}

    class Capture(comfy_samplers.KSAMPLER):
        def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None, disable_pbar=False):
            den = FlowDenoiser(model_wrap, levels=sigmas)
            s = sigmas.double().cpu()
            captured["x"] = sdedit(den, latent_image, sigmas=s / (1 - s), sampler="ddpm", seed=7,
                                   extra_args={k: v for k, v in extra_args.items() if k != "denoise_mask"})
            return captured["x"]

    guider = backend._guider(m, comfy["pos"], comfy["neg"], 2.0)
    engine = guider.sample(torch.zeros_like(latent), latent, Capture(None), native, seed=7)
    assert torch.equal(node, engine.to(node.device))


@pytest.mark.parametrize("kind", PATCHES)
def test_kept_area_exact_seeds_and_batch_equals_singles(comfy, kind):
    m = patched(comfy["model"], kind)
    guide = _guide(2)
    mask = torch.zeros(1, 64, 64)
    mask[:, 8:40, 16:48] = 1.0
    image, latent = _run(comfy, m, guide, mask=mask, mask_grow=0, mask_feather=0.0, seed=4).args
    assert torch.equal(image[:, mask[0] == 0], guide[:, mask[0] == 0])
    assert float((image[:, mask[0] > 0] - guide[:, mask[0] > 0]).abs().mean()) > 0.01
    again = _run(comfy, m, guide, mask=mask, mask_grow=0, mask_feather=0.0, seed=4).args[1]
    assert torch.equal(latent["samples"], again["samples"])
    singles = [_run(comfy, m, guide[i:i + 1], mask=mask, mask_grow=0, mask_feather=0.0, seed=4 + i).args[1]["samples"]
               for i in range(2)]
    # equal up to the UNet's batched-convolution rounding (the server test compares the 8-bit images exactly)
    assert torch.allclose(latent["samples"], torch.cat(singles), atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", PATCHES)
def test_t0_is_monotone_on_both_scales(comfy, kind):
    m = patched(comfy["model"], kind)
    guide = _guide()
    for scale in ("model", "sd15_snr"):
        dist = []
        for t0 in (0.1, 0.4, 0.8):
            img = _run(comfy, m, guide, t0=t0, steps=4, cfg=1.0, seed=2, t0_scale=scale).args[0]
            dist.append(float((img - guide).abs().mean()))
        assert dist[0] < dist[1] < dist[2], (scale, dist)
    b = comfy["backend"]
    assert b.model_schedule(m, "sd15_snr").t0_to_sigma(0.5) < b.model_schedule(m).t0_to_sigma(0.5)


@pytest.mark.parametrize("kind", PATCHES)
@torch.no_grad()
def test_cycle_sde_reconstructs_through_the_guider(comfy, kind):
    """Cycle-SDE over the real guider on a flow model (float32): encode + decode returns the latent."""
    from comfyui_sdedit.sdedit_engine.core.cycle import cycle_reconstruct, cycle_sigmas

    m = patched(comfy["model"], kind)
    b = comfy["backend"]
    latent = comfy["vae"].encode(_guide())
    levels = cycle_sigmas(b.model_schedule(m), 0.6, 20)
    result = {}

    def algorithm(den, lat, report):
        result["rec"] = cycle_reconstruct(den, lat, levels, seed=3)
        return result["rec"]

    b.run_engine_loop(m, comfy["pos"], comfy["neg"], latent, cfg=2.0, sigmas=levels, algorithm=algorithm, total_steps=40, seed=3)
    inner = m.model.process_latent_in(latent)  # what the sampler works on
    rel = float((result["rec"].cpu() - inner).norm() / inner.norm())
    assert rel < 1e-4, rel


def test_bad_flow_inputs_name_the_input(comfy):
    b = comfy["backend"]
    with pytest.raises(ValueError, match="shift"):
        b.model_schedule(patched(comfy["model"], "sd3", shift=0.0))
    with pytest.raises(ValueError, match="t0_scale"):
        b.model_schedule(patched(comfy["model"], "sd3"), "snr")
    m = patched(comfy["model"], "flux")
    latent = comfy["vae"].encode(_guide())
    half = b.native_sigma_grid(b.model_schedule(m), 0.6, 6)[:4]  # the high half of SplitSigmas
    guider = b._guider(m, comfy["pos"], comfy["neg"], 1.0)
    with pytest.raises(ValueError, match="sigmas.*end at 0"):
        guider.sample(torch.zeros_like(latent), latent, b.SDEditKSampler("ddpm"), half.float(), seed=0)


def test_pure_noise_sigmas_start_just_below_one(comfy):
    """A SIGMAS list from 1.0 (BasicScheduler at denoise 1) starts at percent_to_sigma(1e-4)."""
    import comfy.samplers as comfy_samplers

    m, seen = recording(patched(comfy["model"], "sd3"))
    ms = m.get_model_object("model_sampling")
    sigmas = comfy_samplers.calculate_sigmas(ms, "simple", 4)
    assert float(sigmas[0]) == 1.0
    b = comfy["backend"]
    latent = comfy["vae"].encode(_guide())
    out = b._sample(b._guider(m, comfy["pos"], comfy["neg"], 1.0), m, torch.randn_like(latent), latent,
                    b.SDEditKSampler("dpmpp_2m_sde"), sigmas, 4, 0)
    assert bool(torch.isfinite(out).all())
    assert float(seen[0][0][0]) == float(torch.tensor(ms.percent_to_sigma(1e-4), dtype=torch.float32))
    assert [float(t[0]) for t, _ in seen[1:]] == sigmas[1:-1].tolist()


def test_guidance_distilled_models_get_a_cfg_note_and_a_flat_drag_ramp(comfy):
    """Flux-dev's detection reads ComfyUI's unet_config 'guidance_embed' (set here on the tiny model's
    config, restored after): cfg > 1 is explained, not refused."""
    b = comfy["backend"]
    m = patched(comfy["model"], "flux")
    config = m.model.model_config.unet_config
    assert not b.guidance_distilled(m) and b.cfg_note(m, 3.0) == ""
    config["guidance_embed"] = True
    try:
        assert b.guidance_distilled(m)
        assert "guidance-distilled" in b.cfg_note(m, 3.0) and b.cfg_note(m, 1.0) == ""
        out = _run(comfy, m, _guide(), cfg=3.0, steps=2)
        assert "FluxGuidance" in out.ui.as_dict()["text"][0]
    finally:
        del config["guidance_embed"]


@pytest.fixture(scope="module")
def sd3(comfy_inprocess, tiny_sd3):
    import comfy.sd

    model, clip, vae = comfy.sd.load_checkpoint_guess_config(str(tiny_sd3), output_vae=True, output_clip=True)[:3]
    pos = clip.encode_from_tokens_scheduled(clip.tokenize("a red house"))
    neg = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    return {"model": model, "vae": vae, "pos": pos, "neg": neg}


@torch.no_grad()
def test_the_tiny_mmdit_is_a_comfyui_sd3_flow_model_and_the_nodes_run_on_it(comfy, sd3):
    import comfy.model_sampling as ms_mod

    m = sd3["model"]
    assert type(m.model.model_config).__name__ == "SD3"
    ms = m.get_model_object("model_sampling")
    assert isinstance(ms, ms_mod.CONST) and ms.shift == 3.0
    assert sd3["pos"][0][0].shape[-1] == 4096 and sd3["pos"][0][1]["pooled_output"].shape[-1] == 2048
    b = comfy["backend"]
    schedule = b.model_schedule(m)
    assert schedule.t0_to_flow_sigma(0.5) == ms.percent_to_sigma(0.5) == 0.75
    guide = _guide()
    mask = torch.zeros(1, 64, 64)
    mask[:, 8:40, 16:48] = 1.0
    out = comfy["sdedit"].execute(m, sd3["pos"], sd3["neg"], sd3["vae"], guide, t0=0.5, steps=3, cfg=2.0,
                                  sampler="dpmpp_2m_sde", repeats=1, seed=0, mask=mask, mask_grow=0, mask_feather=0.0)
    image, latent = out.args
    assert latent["samples"].shape == (1, 16, 8, 8)
    assert torch.equal(image[:, mask[0] == 0], guide[:, mask[0] == 0])
    assert float((image[:, mask[0] > 0] - guide[:, mask[0] > 0]).abs().mean()) > 0.01
    # Cycle-SDE through the MMDiT guider reconstructs its latent
    from comfyui_sdedit.sdedit_engine.core.cycle import cycle_reconstruct, cycle_sigmas

    lat = sd3["vae"].encode(guide)
    levels = cycle_sigmas(schedule, 0.6, 12)
    res = {}

    def algorithm(den, x, report):
        res["rec"] = cycle_reconstruct(den, x, levels, seed=1)
        return res["rec"]

    b.run_engine_loop(m, sd3["pos"], sd3["neg"], lat, cfg=2.0, sigmas=levels, algorithm=algorithm, total_steps=24, seed=1)
    inner = m.model.process_latent_in(lat)
    assert float((res["rec"].cpu() - inner).norm() / inner.norm()) < 1e-4
