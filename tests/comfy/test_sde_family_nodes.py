"""The SDE family nodes (SDE-Drag, SDE inpainting, DiffEdit-SDE) inside a real ComfyUI server
(``POST /prompt``), with the tiny SD1.5 checkpoint, 64x64 images and few steps."""

from __future__ import annotations

import copy
import json
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.comfy import harness, thumbnails
from tests.comfy.conftest import CKPT

REPO = Path(__file__).resolve().parents[2]
H = W = 64
STEPS = 6
BG = 90
# the bright block sits on latent cells x 1..3, y 2..5; the drag moves it 3 latent cells right
BLOCK = np.s_[16:48, 8:32]
SOURCE, TARGET = [20, 32], [44, 32]
TARGET_AREA = np.s_[16:48, 36:56]  # where the block should go (latent cells x 4..6)


def block_image(h=H, w=W) -> np.ndarray:
    img = np.full((h, w, 3), BG, np.uint8)
    img[BLOCK] = (250, 230, 60)
    return img


def box_mask(h=H, w=W, box=(0, 8, 64, 56)) -> np.ndarray:
    return harness.box_mask(h, w, box)


def _common(server, image, prefix) -> dict:
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a yellow block on grey", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "img": {"class_type": "LoadImage", "inputs": {"image": server.upload_image(image)}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["node", 0], "filename_prefix": prefix}},
        "save_in": {"class_type": "SaveImage", "inputs": {"images": ["img", 0], "filename_prefix": prefix + "_in"}},
    }


def add_mask(server, p, mask_rgb) -> dict:
    p["mask"] = {"class_type": "LoadImageMask", "inputs": {"image": server.upload_image(mask_rgb), "channel": "red"}}
    p["node"]["inputs"]["mask"] = ["mask", 0]
    return p


def drag_prompt(server, points=None, image=None, seed=1, prefix="drag", **inputs) -> dict:
    p = _common(server, block_image() if image is None else image, prefix)
    pts = [{"source": SOURCE, "target": TARGET}] if points is None else points
    p["node"] = {"class_type": "SDEditDrag", "inputs": {
        "model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["ckpt", 2], "image": ["img", 0],
        "points": pts if isinstance(pts, str) else json.dumps(pts), "t0": 0.4, "steps": STEPS, "cfg": 2.0,
        "step_size": 4.0, "patch_radius": 2, "beta": 0.3, "alpha": 1.1, "seed": seed, "keep_unmasked_pixels": True}}
    p["node"]["inputs"].update(inputs)
    return p


def inpaint_prompt(server, mode, seed=0, prefix="inpaint", **inputs) -> dict:
    p = _common(server, block_image(), prefix)
    p["node"] = {"class_type": "SDEditCycleInpaint", "inputs": {
        "model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["ckpt", 2], "image": ["img", 0],
        "steps": STEPS, "cfg": 3.0, "mode": mode, "seed": seed, "mask_grow": 0, "mask_feather": 0.0,
        "keep_unmasked_pixels": True}}
    p["node"]["inputs"].update(inputs)
    return add_mask(server, p, box_mask(box=(8, 16, 32, 48)))


def i2i_prompt(server, mode, seed=0, prefix="i2i", with_mask=True, **inputs) -> dict:
    p = _common(server, block_image(), prefix)
    p["src"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a yellow block", "clip": ["ckpt", 1]}}
    p["tgt"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a red ball", "clip": ["ckpt", 1]}}
    p["node"] = {"class_type": "SDEditImageToImage", "inputs": {
        "model": ["ckpt", 0], "source": ["src", 0], "target": ["tgt", 0], "negative": ["neg", 0], "vae": ["ckpt", 2],
        "image": ["img", 0], "t0": 0.7, "steps": STEPS, "cfg": 5.0, "mode": mode, "mask_threshold": 0.5, "seed": seed,
        "keep_unmasked_pixels": True}}
    p["node"]["inputs"].update(inputs)
    p["mask_img"] = {"class_type": "MaskToImage", "inputs": {"mask": ["node", 1]}}
    p["save_mask"] = {"class_type": "SaveImage", "inputs": {"images": ["mask_img", 0], "filename_prefix": prefix + "_mask"}}
    if with_mask:
        add_mask(server, p, box_mask(box=(8, 16, 32, 48)))
    return p


def image_of(out, node="save") -> np.ndarray:
    return out[node]["images"][0]


def _mean(img, area) -> np.ndarray:
    return img[area].reshape(-1, 3).astype(float).mean(0)


# -- registration --------------------------------------------------------------------------------------
def test_sde_family_nodes_are_registered_and_documented(comfy_server):
    comfy_server.assert_pack_loaded()
    info = comfy_server.object_info()
    for node in ("SDEditDrag", "SDEditCycleInpaint", "SDEditImageToImage"):
        spec = info[node]
        assert spec["description"] and spec["category"].startswith("SDEdit"), node
        for group in ("required", "optional"):
            for name, (_kind, *opts) in spec["input"].get(group, {}).items():
                assert opts and opts[0].get("tooltip"), f"{node}.{name} has no tooltip"
    from sdedit_engine.core.defaults import DEFAULT_DRAG_STEPS

    steps = {**info["SDEditDrag"]["input"]["required"], **info["SDEditDrag"]["input"].get("optional", {})}["steps"]
    assert steps[1]["default"] == DEFAULT_DRAG_STEPS == 30  # BENCHMARKS.md §7: a quarter of the paper's 120
    points = info["SDEditDrag"]["input"]["required"]["points"]
    assert points[0] == "STRING" and points[1].get("multiline") is True
    assert info["SDEditImageToImage"]["output"] == ["IMAGE", "MASK"]


# -- SDE-Drag ------------------------------------------------------------------------------------------
def test_drag_moves_the_block_toward_the_target(comfy_server):
    pid = comfy_server.queue_prompt(drag_prompt(comfy_server, seed=1, prefix="drag_move"))
    images = comfy_server.output_images(comfy_server.wait(pid))
    assert comfy_server.preview_frames(pid), "no latent previews were sent while dragging"
    result, original = images["save"][0].astype(float), images["save_in"][0].astype(float)
    assert result.shape == (H, W, 3)
    block = np.array((250, 230, 60), float)
    before = np.linalg.norm(_mean(original, TARGET_AREA) - block)
    after = np.linalg.norm(_mean(result, TARGET_AREA) - block)
    # the target area now looks much more like the block than the grey it was
    assert after < 0.7 * before, (before, after)
    # the source (its trailing part) lost some of the block
    assert np.linalg.norm(_mean(result, np.s_[16:48, 8:20]) - block) > 10


def test_flat_point_lists_of_kjnodes_give_the_same_drag(comfy_server):
    pairs = image_of(comfy_server.run(drag_prompt(comfy_server, seed=2, prefix="drag_pairs")))
    flat = [{"x": SOURCE[0], "y": SOURCE[1]}, {"x": TARGET[0], "y": TARGET[1]}]
    kj = image_of(comfy_server.run(drag_prompt(comfy_server, points=flat, seed=2, prefix="drag_kj")))
    assert np.array_equal(pairs, kj)


def test_drag_mask_confines_the_change_and_keeps_other_pixels_bit_identical(comfy_server):
    rng = np.random.default_rng(0)
    image = block_image()
    image[:16] = rng.integers(0, 256, (16, W, 3), dtype=np.uint8)  # textured: the VAE round trip would show
    p = add_mask(comfy_server, drag_prompt(comfy_server, image=image, seed=3, prefix="drag_mask"),
                 box_mask(box=(0, 16, 64, 48)))
    out = comfy_server.run(p)
    result, original = image_of(out), image_of(out, "save_in")
    inside = box_mask(box=(0, 16, 64, 48))[..., 0] > 0
    assert np.array_equal(result[~inside], original[~inside])
    assert np.abs(result[inside].astype(int) - original[inside]).mean() > 3


def test_drag_reports_progress_and_interrupt_stops_it_then_the_next_prompt_runs(comfy_server):
    # 13 latent cells at 1 cell per iteration: 13 iterations of 2 x 300 model calls, all counted
    total = 2 * 300 * 13
    p = drag_prompt(comfy_server, image=block_image(128, 128), seed=5, prefix="drag_long", steps=300, t0=0.9,
                    step_size=1.0, points=[{"source": [20, 32], "target": [120, 32]}])
    pid = comfy_server.queue_prompt(p)
    comfy_server.ws.wait_for(lambda e: e.type == "progress" and e.data.get("prompt_id") == pid
                             and e.data.get("node") == "node" and e.data.get("value", 0) >= 3, timeout=180)
    started = time.monotonic()
    comfy_server.interrupt()
    with pytest.raises(harness.ComfyInterrupted):
        comfy_server.wait(pid, timeout=60)
    assert time.monotonic() - started < 30
    events = [e for e in comfy_server.progress_events(pid) if e.data.get("node") == "node"]
    assert {e.data["max"] for e in events} == {total}
    values = [e.data["value"] for e in events]
    assert values == sorted(values) and 3 <= values[-1] < total
    out = comfy_server.run(drag_prompt(comfy_server, seed=6, prefix="drag_after_interrupt"))
    assert image_of(out).shape == (H, W, 3)


BAD_POINTS = [
    ("malformed json", '[{"source": [20, 32], "target": [44, 32]', "points: not valid JSON"),
    ("empty list", "[]", "points: no point pairs given"),
    ("off the image", [{"source": [20, 32], "target": [70, 32]}], "points: pair 0 target (70, 32) lies outside the 64x64 image"),
    ("source == target", [{"source": [20, 32], "target": [20, 32]}], "points: pair 0 has source == target"),
    ("odd flat list", [{"x": 1, "y": 2}], "points: a flat point list needs an even number"),
    ("shorter than a cell", [{"source": [17, 32], "target": [20, 33]}], "points: every drag is shorter than one latent cell"),
]


@pytest.mark.parametrize("label, points, message", BAD_POINTS, ids=[b[0] for b in BAD_POINTS])
def test_bad_points_are_an_execution_error_naming_points_and_the_server_keeps_serving(comfy_server, label, points, message):
    p = drag_prompt(comfy_server, points=points, seed=7, prefix="drag_bad_" + label.replace(" ", "_"))
    with pytest.raises(harness.ComfyExecutionError) as err:
        comfy_server.run(p)
    assert message in str(err.value)
    assert comfy_server.alive


def test_after_bad_points_the_server_still_drags(comfy_server):
    out = comfy_server.run(drag_prompt(comfy_server, seed=8, prefix="drag_ok_after_bad"))
    assert image_of(out).shape == (H, W, 3)


# -- SDE inpainting ---------------------------------------------------------------------------------------
def test_cycle_inpaint_sde_and_ode_fill_the_mask_keep_the_rest_and_ode_is_reproducible(comfy_server):
    inside = box_mask(box=(8, 16, 32, 48))[..., 0] > 0
    results = {}
    for mode, tag in (("sde", "a"), ("ode", "a"), ("ode", "b")):  # each run uploads its own files: no cache hit
        out = comfy_server.run(inpaint_prompt(comfy_server, mode, seed=1, prefix=f"inpaint_{mode}_{tag}"))
        result, original = image_of(out), image_of(out, "save_in")
        assert result.shape == (H, W, 3)
        assert np.array_equal(result[~inside], original[~inside]), mode
        assert np.abs(result[inside].astype(int) - original[inside]).mean() > 3, mode
        results[mode, tag] = result
    assert not np.array_equal(results["sde", "a"], results["ode", "a"])
    assert np.array_equal(results["ode", "a"], results["ode", "b"])  # DDIM: no noise after the start


def test_cycle_inpaint_sde_is_seeded(comfy_server):
    def run(seed, tag):
        return image_of(comfy_server.run(inpaint_prompt(comfy_server, "sde", seed=seed, prefix=f"inpaint_sde_{seed}_{tag}")))

    first = run(3, "a")
    assert np.array_equal(first, run(3, "b"))
    assert not np.array_equal(first, run(4, "a"))


# -- DiffEdit-SDE image-to-image --------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["sde", "ode"])
def test_image_to_image_with_a_given_mask_keeps_the_rest(comfy_server, mode):
    out = comfy_server.run(i2i_prompt(comfy_server, mode, seed=1, prefix=f"i2i_given_{mode}"))
    result, original = image_of(out), image_of(out, "save_in")
    inside = box_mask(box=(8, 16, 32, 48))[..., 0] > 0
    assert np.array_equal(result[~inside], original[~inside])
    assert np.abs(result[inside].astype(int) - original[inside]).mean() > 3
    mask = image_of(out, "save_mask")[..., 0] > 127
    assert np.array_equal(mask, inside)  # the MASK output is the mask that was used


@pytest.mark.parametrize("mode", ["sde", "ode"])
def test_image_to_image_with_the_automatic_mask(comfy_server, mode):
    out = comfy_server.run(i2i_prompt(comfy_server, mode, seed=2, prefix=f"i2i_auto_{mode}", with_mask=False))
    result, original = image_of(out), image_of(out, "save_in")
    mask = image_of(out, "save_mask")[..., 0] > 127
    assert mask.shape == (H, W) and mask.any(), "the automatic mask is empty"
    assert np.array_equal(result[~mask], original[~mask])
    if mask.all():
        return
    assert np.abs(result[mask].astype(int) - original[mask]).mean() > 1


def test_image_to_image_automatic_mask_knobs_set_the_draws_and_the_progress_counts_them(comfy_server):
    """mask_repeats / mask_t0 (hard-coded 10 / 0.5 before): the run is numbered over the mask draws and
    both passes (core.sde_edits.auto_diffedit), so the bar ends at 2 x steps + draws."""
    p = i2i_prompt(comfy_server, "sde", seed=6, prefix="i2i_knobs", with_mask=False, mask_repeats=2, mask_t0=0.3)
    pid = comfy_server.queue_prompt(p)
    comfy_server.wait(pid)
    events = [e.data for e in comfy_server.progress_events(pid) if e.data.get("node") == "node"]
    assert {e["max"] for e in events} == {2 * STEPS + 2} and max(e["value"] for e in events) == 2 * STEPS + 2
    spec = comfy_server.object_info("SDEditImageToImage")["input"]["optional"]
    assert spec["mask_repeats"][1]["default"] == 10 and spec["mask_t0"][1]["default"] == 0.5
    assert spec["mask_t0"][1]["min"] > 0 and spec["mask_repeats"][1]["tooltip"]


# -- the shipped workflows, through the real frontend (test_workflows.py checks their format) ---------------
def _workflow(name: str) -> dict:
    return json.loads((REPO / "workflows" / f"{name}.json").read_text())


def _ids(wf: dict, node_type: str) -> list[str]:
    return [str(n["id"]) for n in wf["nodes"] if n["type"] == node_type]


def _ui_replacements(wf: dict, image_name: str, tag: str, **per_type) -> dict:
    repl = {"CheckpointLoaderSimple": {"ckpt_name": CKPT}, _ids(wf, "LoadImage")[0]: {"image": image_name}}
    for nid in _ids(wf, "SaveImage"):
        repl[nid] = {"filename_prefix": f"test_wf/{tag}_{uuid.uuid4().hex[:8]}"}
    repl.update(per_type)
    return repl


def test_sde_inpaint_workflow_runs_both_modes_and_keeps_the_rest(ui_server, run_ui):
    wf = _workflow("sde_inpaint")
    assert sorted(n["widgets_values"][2] for n in wf["nodes"] if n["type"] == "SDEditCycleInpaint") == ["ode", "sde"]
    rgba = np.concatenate([block_image(), np.full((H, W, 1), 255, np.uint8)], -1)
    rgba[16:40, 8:32, 3] = 0  # what the Mask Editor saves: transparent = the area to fill (MASK = 1)
    name = ui_server.upload_image(rgba, "wf_inpaint_rgba.png")
    entry = run_ui(copy.deepcopy(wf), _ui_replacements(wf, name, "sde_inpaint", SDEditCycleInpaint={"steps": 3}))
    prompt = entry["prompt"][2]
    assert sorted(v["class_type"] for v in prompt.values()) == sorted(
        n["type"] for n in wf["nodes"] if n["type"] != "Note")
    images = ui_server.output_images(entry)
    sde, ode = (images[nid][0] for nid in _ids(wf, "SaveImage"))
    far = np.ones((H, W), bool)
    far[16 - 12:40 + 12, 0:32 + 12] = False  # mask_grow 4 + feather 4 (3 sigma = 6 px) and some slack
    for out in (sde, ode):
        assert out.shape == (H, W, 3)
        changed = np.abs(out.astype(int) - block_image()).max(-1) > 0
        assert not (changed & far).any(), np.argwhere(changed & far)[[0, -1]]
        assert np.abs(out[16:40, 8:32].astype(int) - block_image()[16:40, 8:32]).mean() > 3
    assert not np.array_equal(sde, ode)
    thumbnails.record("sde_inpaint", sde, np.where(rgba[..., 3:] == 0, 255, rgba[..., :3]).astype(np.uint8))


def test_diffedit_sde_workflow_runs_with_the_automatic_mask(ui_server, run_ui):
    wf = _workflow("diffedit_sde")
    edit = next(n for n in wf["nodes"] if n["type"] == "SDEditImageToImage")
    assert next(i for i in edit["inputs"] if i["name"] == "mask")["link"] is None  # shipped: automatic mask
    name = ui_server.upload_image(block_image(), "wf_diffedit.png")
    entry = run_ui(copy.deepcopy(wf), _ui_replacements(wf, name, "diffedit", SDEditImageToImage={"steps": 3}))
    prompt = entry["prompt"][2]
    assert prompt[str(edit["id"])]["inputs"]["mode"] == "sde" and "mask" not in prompt[str(edit["id"])]["inputs"]
    images = ui_server.output_images(entry)
    result = images[_ids(wf, "SaveImage")[0]][0]
    mask = images[_ids(wf, "PreviewImage")[0]][0][..., 0] > 127
    assert result.shape == (H, W, 3) and mask.shape == (H, W)
    assert mask.any(), "the automatic mask is empty"
    assert np.array_equal(result[~mask], block_image()[~mask])
    thumbnails.record("diffedit_sde", result, block_image())
