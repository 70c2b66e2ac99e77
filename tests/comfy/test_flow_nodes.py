"""Flow-matching (CONST) models in every node, inside a real ComfyUI server: (a) the tiny SD1.5
checkpoint patched by ComfyUI's core ModelSamplingSD3 / ModelSamplingFlux / ModelSamplingAuraFlow
(each a CONST model to ComfyUI), (b) a tiny real MMDiT checkpoint that ComfyUI detects as SD3
(``tests/comfy/tiny_mmdit.py``: 16-channel latents, CLIP-L conditioning padded to the 4096 context).
The models predict nonsense velocities; exactness, seeds, the schedule, the SDE family, cancel and bad
inputs are what is checked."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest

from tests.comfy import harness
from tests.comfy.conftest import CKPT, SD3_CKPT
from tests.comfy.test_sde_family_nodes import SOURCE, TARGET, block_image
from tests.comfy.test_sdedit_nodes import box_mask, stroke_image

H = W = 64
PATCHES = {
    "sd3": ("ModelSamplingSD3", {"shift": 3.0}),
    "flux": ("ModelSamplingFlux", {"max_shift": 1.15, "base_shift": 0.5, "width": 512, "height": 512}),
    "auraflow": ("ModelSamplingAuraFlow", {"shift": 1.73}),
}
ALL = list(PATCHES) + ["mmdit"]  # mmdit: the real SD3-layout checkpoint, no patch (its own shift 3.0)


def expected_start(kind: str, t0: float) -> float:
    """ComfyUI's percent_to_sigma(1 − t0) of each patch, from its published formula."""
    if kind == "mmdit":
        return 3.0 * t0 / (1 + 2.0 * t0)
    if kind == "flux":
        mu = (512 * 512 / 256) * (1.15 - 0.5) / (4096 - 256) + 0.5 - (1.15 - 0.5) / (4096 - 256) * 256
        return float(np.exp(mu) / (np.exp(mu) + (1 / t0 - 1)))
    a = PATCHES[kind][1]["shift"]
    return a * t0 / (1 + (a - 1) * t0)


def flow_prompt(server, kind="sd3", node="SDEdit", guide=None, seed=0, prefix="flow", **inputs) -> dict:
    p = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD3_CKPT if kind == "mmdit" else CKPT}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red house in a field", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "guide": {"class_type": "LoadImage", "inputs": {"image": server.upload_image(stroke_image() if guide is None else guide)}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["node", 0], "filename_prefix": prefix}},
        "save_guide": {"class_type": "SaveImage", "inputs": {"images": ["guide", 0], "filename_prefix": prefix + "_guide"}},
    }
    if kind == "mmdit":  # the checkpoint is CONST itself; "ms" is a no-op patch to its own shift
        p["ms"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["ckpt", 0], "shift": 3.0}}
    else:
        cls, ms_inputs = PATCHES[kind]
        p["ms"] = {"class_type": cls, "inputs": {"model": ["ckpt", 0], **ms_inputs}}
    common = {"model": ["ms", 0], "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["ckpt", 2]}
    if node == "SDEdit":
        p["node"] = {"class_type": "SDEdit", "inputs": {**common, "guide": ["guide", 0], "t0": 0.5, "steps": 4, "cfg": 1.0,
                     "sampler": "dpmpp_2m_sde", "repeats": 1, "seed": seed, "mask_grow": 0, "mask_feather": 0.0,
                     "keep_unmasked_pixels": True, "crop_to_mask": False, "crop_padding": 16, "crop_resolution": 64}}
    elif node == "SDEditDrag":
        p["node"] = {"class_type": "SDEditDrag", "inputs": {**common, "image": ["guide", 0],
                     "points": json.dumps([{"source": SOURCE, "target": TARGET}]), "t0": 0.4, "steps": 6, "cfg": 2.0,
                     "step_size": 4.0, "patch_radius": 2, "beta": 0.3, "alpha": 1.1, "seed": seed, "keep_unmasked_pixels": True}}
    elif node == "SDEditImageToImage":
        p["node"] = {"class_type": "SDEditImageToImage", "inputs": {
                     "model": ["ms", 0], "source": ["pos", 0], "target": ["pos", 0], "negative": ["neg", 0],
                     "vae": ["ckpt", 2], "image": ["guide", 0], "t0": 0.6, "steps": 8, "cfg": 1.0, "mode": "sde",
                     "mask_threshold": 0.5, "seed": seed, "keep_unmasked_pixels": True}}
    elif node == "SDEditCycleInpaint":
        p["node"] = {"class_type": "SDEditCycleInpaint", "inputs": {**common, "image": ["guide", 0], "steps": 4, "cfg": 1.0,
                     "mode": "sde", "seed": seed, "mask_grow": 0, "mask_feather": 0.0, "keep_unmasked_pixels": True}}
    elif node == "SDEditT0Sweep":
        p["node"] = {"class_type": "SDEditT0Sweep", "inputs": {**common, "guide": ["guide", 0], "t0_values": "0.2, 0.5, 0.8",
                     "steps": 3, "cfg": 1.0, "sampler": "ddpm", "repeats": 1, "seed": seed, "mask_grow": 0,
                     "mask_feather": 0.0, "keep_unmasked_pixels": True, "crop_to_mask": False, "crop_padding": 16,
                     "crop_resolution": 64}}
    p["node"]["inputs"].update(inputs)
    return p


def add_mask(server, p, mask_rgb=None) -> dict:
    p["mask"] = {"class_type": "LoadImageMask", "inputs": {"image": server.upload_image(box_mask() if mask_rgb is None else mask_rgb), "channel": "red"}}
    p["node"]["inputs"]["mask"] = ["mask", 0]
    return p


def image_of(out, node="save") -> np.ndarray:
    return out[node]["images"][0]


@pytest.mark.parametrize("kind", ALL)
def test_masked_sdedit_keeps_unmasked_pixels_bit_identical(comfy_server, kind):
    out = comfy_server.run(add_mask(comfy_server, flow_prompt(comfy_server, kind, seed=1, prefix=f"flow_mask_{kind}")))
    result, guide = image_of(out), image_of(out, "save_guide")
    inside = box_mask()[..., 0] > 0
    assert np.array_equal(result[~inside], guide[~inside])
    assert np.abs(result[inside].astype(int) - guide[inside]).mean() > 3
    text = out["node"]["text"][0]
    start = float(re.search(r"flow sigma ([0-9.]+)", text).group(1))
    assert start == pytest.approx(expected_start(kind, 0.5), abs=1e-4)  # percent_to_sigma(1 − t0), shown to the user
    assert "log-SNR" in text


@pytest.mark.parametrize("kind", ALL)
def test_seeds_and_batches_equal_single_runs(comfy_server, kind):
    one = image_of(comfy_server.run(flow_prompt(comfy_server, kind, seed=10, prefix=f"flow_one_{kind}")))
    again = image_of(comfy_server.run(flow_prompt(comfy_server, kind, seed=10, prefix=f"flow_again_{kind}")))
    other = image_of(comfy_server.run(flow_prompt(comfy_server, kind, seed=11, prefix=f"flow_other_{kind}")))
    assert np.array_equal(one, again) and not np.array_equal(one, other)
    p = flow_prompt(comfy_server, kind, seed=10, prefix=f"flow_batch_{kind}")
    p["rep"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["guide", 0], "amount": 2}}
    p["node"]["inputs"]["guide"] = ["rep", 0]
    images = comfy_server.run(p)["save"]["images"]
    # item i uses seed + i; a batched UNet call rounds differently from a single one (≤ 1e-4 in the latent,
    # test_flow_inprocess), which can flip a pixel across an 8-bit step: allow one grey level
    for got, want in ((images[0], one), (images[1], other)):
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


@pytest.mark.parametrize("kind", ALL)
def test_t0_is_monotone_on_both_t0_scales(comfy_server, kind):
    guide = stroke_image()
    for scale in ("model", "sd15_snr"):
        dist = []
        for t0 in (0.1, 0.5, 0.9):
            img = image_of(comfy_server.run(flow_prompt(comfy_server, kind, seed=2, prefix=f"flow_t0_{kind}_{scale}_{t0}",
                                                        t0=t0, t0_scale=scale)))
            dist.append(float(np.abs(img.astype(float) - guide).mean()))
        assert dist[0] < dist[1] < dist[2], (scale, dist)


def test_t0_sweep_reports_each_start_sigma(comfy_server):
    out = comfy_server.run(flow_prompt(comfy_server, "sd3", node="SDEditT0Sweep", seed=3, prefix="flow_sweep"))
    assert len(out["save"]["images"]) == 3
    starts = [float(v) for v in re.findall(r"flow sigma ([0-9.]+)", out["node"]["text"][0])]
    assert starts == pytest.approx([expected_start("sd3", t) for t in (0.2, 0.5, 0.8)], abs=1e-4)


@pytest.mark.parametrize("sampler", ["SDEditSampler", "euler"])
def test_sdedit_sigmas_drive_sampler_custom_advanced(comfy_server, sampler):
    """SDEditSigmas gives the flow σ grid; SamplerCustomAdvanced runs it with SDEditSampler (mask rule:
    kept latents exact) and with a core sampler (ComfyUI's own CONST handling)."""
    t0 = 0.6 if sampler == "SDEditSampler" else 0.61  # distinct, so ComfyUI's cache re-runs SDEditSigmas (its text)
    p = flow_prompt(comfy_server, "flux", prefix=f"flow_custom_{sampler}")
    del p["node"]
    p.update({
        "mask": {"class_type": "LoadImageMask", "inputs": {"image": comfy_server.upload_image(box_mask()), "channel": "red"}},
        "enc": {"class_type": "VAEEncode", "inputs": {"pixels": ["guide", 0], "vae": ["ckpt", 2]}},
        "setmask": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["enc", 0], "mask": ["mask", 0]}},
        "guider": {"class_type": "CFGGuider", "inputs": {"model": ["ms", 0], "positive": ["pos", 0], "negative": ["neg", 0], "cfg": 2.0}},
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": 3}},
        "sigmas": {"class_type": "SDEditSigmas", "inputs": {"model": ["ms", 0], "t0": t0, "steps": 4, "spacing": "uniform"}},
        "run": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["sampler", 0],
                                                                  "sigmas": ["sigmas", 0], "latent_image": ["setmask", 0]}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["run", 0], "vae": ["ckpt", 2]}},
        "dec_in": {"class_type": "VAEDecode", "inputs": {"samples": ["enc", 0], "vae": ["ckpt", 2]}},
        "save_in": {"class_type": "SaveImage", "inputs": {"images": ["dec_in", 0], "filename_prefix": "flow_custom_in"}},
    })
    p["save"]["inputs"]["images"] = ["dec", 0]
    if sampler == "SDEditSampler":
        p["sampler"] = {"class_type": "SDEditSampler", "inputs": {"sampler": "ddpm", "repeats": 1, "known_noise": "fresh"}}
    else:
        p["sampler"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler}}
    out = comfy_server.run(p)
    assert float(re.search(r"flow sigma ([0-9.]+)", out["sigmas"]["text"][0]).group(1)) == pytest.approx(expected_start("flux", t0), abs=1e-4)
    result, recon = image_of(out).astype(int), image_of(out, "save_in").astype(int)
    inside = box_mask()[..., 0] > 0
    far = ~np.pad(inside, 0)
    ys, xs = np.nonzero(inside)
    far[max(ys.min() - 8, 0): ys.max() + 9, max(xs.min() - 8, 0): xs.max() + 9] = False
    assert np.abs(result[inside] - recon[inside]).mean() > 3
    if sampler == "SDEditSampler":
        assert np.array_equal(result[far], recon[far])  # kept latents exact (one latent cell of mask blur aside)
    else:
        assert np.abs(result[far] - recon[far]).mean() < 3


@pytest.mark.parametrize("kind", ALL)
def test_sde_drag_runs_and_keeps_the_unmasked_area(comfy_server, kind):
    p = add_mask(comfy_server, flow_prompt(comfy_server, kind, node="SDEditDrag", guide=block_image(), seed=1,
                                           prefix=f"flow_drag_{kind}"), box_mask(box=(0, 8, 64, 56)))
    out = comfy_server.run(p)
    result, image = image_of(out).astype(int), image_of(out, "save_guide").astype(int)
    keep = harness.box_mask(H, W, (0, 8, 64, 56))[..., 0] == 0
    assert np.array_equal(result[keep], image[keep])
    assert np.abs(result[~keep] - image[~keep]).mean() > 1


@pytest.mark.parametrize("kind", ALL)
def test_cycle_sde_with_one_prompt_reconstructs_the_image(comfy_server, kind):
    """DiffEdit-SDE with source = target is Cycle-SDE's encode + decode: the masked area comes back as the
    image's own VAE round trip (the tiny VAE is lossless on this flat-block image) up to float rounding."""
    p = add_mask(comfy_server, flow_prompt(comfy_server, kind, node="SDEditImageToImage", guide=block_image(), seed=4,
                                           prefix=f"flow_cycle_{kind}"), box_mask(box=(8, 16, 32, 48)))
    out = comfy_server.run(p)
    result, image = image_of(out).astype(int), image_of(out, "save_guide").astype(int)
    assert np.abs(result - image).max() <= 1


def test_sde_inpaint_fills_from_pure_noise(comfy_server):
    p = add_mask(comfy_server, flow_prompt(comfy_server, "sd3", node="SDEditCycleInpaint", guide=block_image(), seed=2,
                                           prefix="flow_inpaint"), box_mask(box=(8, 16, 32, 48)))
    out = comfy_server.run(p)
    result, image = image_of(out).astype(int), image_of(out, "save_guide").astype(int)
    inside = harness.box_mask(H, W, (8, 16, 32, 48))[..., 0] > 0
    assert np.array_equal(result[~inside], image[~inside])
    assert np.abs(result[inside] - image[inside]).mean() > 3


def test_interrupt_stops_a_flow_run_and_the_next_prompt_runs(comfy_server):
    p = flow_prompt(comfy_server, "flux", guide=stroke_image(256, 256), seed=21, prefix="flow_long", steps=400, t0=0.9)
    pid = comfy_server.queue_prompt(p)
    comfy_server.ws.wait_for(lambda e: e.type == "progress" and e.data.get("prompt_id") == pid
                             and e.data.get("node") == "node" and e.data.get("value", 0) >= 2, timeout=180)
    started = time.monotonic()
    comfy_server.interrupt()
    with pytest.raises(harness.ComfyInterrupted):
        comfy_server.wait(pid, timeout=60)
    assert time.monotonic() - started < 30
    assert comfy_server.preview_frames(pid), "no latent previews were sent"
    assert image_of(comfy_server.run(flow_prompt(comfy_server, "flux", seed=22, prefix="flow_after_interrupt"))).shape == (H, W, 3)


BAD = [
    ("shift zero", lambda p: p["ms"]["inputs"].update(shift=0.0), "shift is 0"),
    ("sigmas not ending at 0", "split", "sigmas: on a flow-matching model the SDEdit sampler needs sigmas that end at 0"),
]


@pytest.mark.parametrize("label, change, message", BAD, ids=[b[0] for b in BAD])
def test_bad_flow_inputs_name_the_input_and_the_server_keeps_serving(comfy_server, label, change, message):
    p = flow_prompt(comfy_server, "sd3", seed=30, prefix="flow_bad_" + label.replace(" ", "_"))
    if change == "split":
        del p["node"]
        p.update({
            "enc": {"class_type": "VAEEncode", "inputs": {"pixels": ["guide", 0], "vae": ["ckpt", 2]}},
            "guider": {"class_type": "BasicGuider", "inputs": {"model": ["ms", 0], "conditioning": ["pos", 0]}},
            "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": 3}},
            "sigmas": {"class_type": "SDEditSigmas", "inputs": {"model": ["ms", 0], "t0": 0.6, "steps": 6, "spacing": "uniform"}},
            "split": {"class_type": "SplitSigmas", "inputs": {"sigmas": ["sigmas", 0], "step": 3}},
            "sampler": {"class_type": "SDEditSampler", "inputs": {"sampler": "ddpm", "repeats": 1, "known_noise": "fresh"}},
            "run": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["sampler", 0],
                                                                      "sigmas": ["split", 0], "latent_image": ["enc", 0]}},
            "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["run", 0], "vae": ["ckpt", 2]}},
        })
        p["save"]["inputs"]["images"] = ["dec", 0]
    else:
        change(p)
    with pytest.raises(harness.ComfyExecutionError) as err:
        comfy_server.run(p)
    assert message in str(err.value)
    assert comfy_server.alive
    assert image_of(comfy_server.run(flow_prompt(comfy_server, "sd3", seed=31, prefix="flow_ok_" + label.replace(" ", "_")))).shape == (H, W, 3)


def test_a_bad_t0_scale_is_an_error_naming_the_input(comfy_server):
    """ComfyUI does not validate optional combos in API prompts; the node's own check names the input."""
    p = flow_prompt(comfy_server, "sd3", seed=32, prefix="flow_bad_scale", t0_scale="snr")
    with pytest.raises((harness.ComfyPromptError, harness.ComfyExecutionError)) as err:
        comfy_server.run(p)
    assert "t0_scale" in str(err.value)
    assert image_of(comfy_server.run(flow_prompt(comfy_server, "sd3", seed=33, prefix="flow_ok_scale"))).shape == (H, W, 3)


def test_the_mmdit_checkpoint_is_comfyuis_sd3_and_runs_unpatched(comfy_server):
    """No ModelSamplingSD3 in front: the SD3 checkpoint's own schedule (shift 3.0) is read."""
    p = add_mask(comfy_server, flow_prompt(comfy_server, "mmdit", seed=7, prefix="mmdit_native"))
    p["node"]["inputs"]["model"] = ["ckpt", 0]
    del p["ms"]
    out = comfy_server.run(p)
    assert float(re.search(r"flow sigma ([0-9.]+)", out["node"]["text"][0]).group(1)) == pytest.approx(0.75, abs=1e-4)
    patched = comfy_server.run(add_mask(comfy_server, flow_prompt(comfy_server, "mmdit", seed=7, prefix="mmdit_patched")))
    assert np.array_equal(image_of(out), image_of(patched))  # the same schedule either way
    assert "model_type FLOW" in comfy_server.log()  # ComfyUI detected a flow (SD3) model
