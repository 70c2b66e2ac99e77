"""The UI-format example workflows in ``workflows/`` (what users load, and what ComfyUI's template
browser serves): their format, their nodes and widget values against ``/object_info``, and a run of
each through the real frontend in headless chromium (``app.loadGraphData`` -> the page's own
``graphToPrompt`` -> ``app.queuePrompt``), with the tiny test models, 64x64 test images made here,
and few steps.

Single source: ``workflows/`` is the only copy. ComfyUI serves a custom node's ``workflows/`` folder
in the template browser as well as ``example_workflows/`` (it only logs a debug hint to rename); a
pack with both would list every template twice, so there is no ``example_workflows/``.
"""

from __future__ import annotations

import copy
import json
import math
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.comfy import thumbnails
from tests.comfy.conftest import CKPT, CONTROLNET, LORA, SD3_CKPT

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.json"))
EXPECTED = {
    "sdedit_stroke_painting", "sdedit_masked_stroke_edit", "sdedit_composite",
    "sdedit_lora_controlnet", "sdedit_custom_sampler", "sdedit_t0_sweep",
    # the SDE family; their runs through the frontend are in test_point_editor.py / test_sde_family_nodes.py
    "sdedit_drag", "sde_inpaint", "diffedit_sde",
    # flow-matching models (run below on the tiny SD1.5 patched by ModelSamplingFlux / the tiny MMDiT)
    "flux_sdedit_stroke_painting", "flux_masked_edit", "flow_sde_drag",
}
PACK_DIR_NAME = "comfyui-sdedit"  # the name the harness links this repo under in custom_nodes

# Nodes that exist only in the frontend (not in /object_info, never sent to the server).
FRONTEND_ONLY = {"Note", "MarkdownNote"}
# Widgets whose values are the user's own files: placeholders in the shipped files.
USER_FILES = {
    ("CheckpointLoaderSimple", "ckpt_name"): (".safetensors", ".ckpt"),
    ("LoraLoader", "lora_name"): (".safetensors",),
    ("ControlNetLoader", "control_net_name"): (".safetensors", ".pth"),
    ("LoadImage", "image"): (".png", ".jpg", ".jpeg", ".webp"),
}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
S = 64  # test image size
STEPS = 3


def _load(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{name}.json").read_text())


def _ids(paths):
    return [p.stem for p in paths]


# ---------------------------------------------------------------------------------------------
# Format (no server)
# ---------------------------------------------------------------------------------------------
def test_the_workflows_are_all_there():
    assert {p.stem for p in WORKFLOW_FILES} == EXPECTED, (
        "every file in workflows/ needs a run through the frontend below: add it to EXPECTED with a test")
    assert not (REPO / "example_workflows").exists(), "one source only: ComfyUI serves workflows/ itself"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=_ids(WORKFLOW_FILES))
def test_workflow_is_ui_format_as_the_frontend_saves_it(path):
    wf = json.loads(path.read_text())
    for key in ("last_node_id", "last_link_id", "nodes", "links", "groups", "config", "extra", "version"):
        assert key in wf, key
    assert wf["version"] == 0.4
    assert "ds" in wf["extra"]
    assert not any(isinstance(v, dict) and "class_type" in v for v in wf.values()), "API format, not UI format"
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert len(nodes) == len(wf["nodes"]), "duplicate node ids"
    assert wf["last_node_id"] >= max(nodes)
    assert wf["last_link_id"] >= max(link[0] for link in wf["links"])
    for n in wf["nodes"]:
        for key in ("id", "type", "pos", "size", "flags", "order", "mode", "properties"):
            assert key in n, (n.get("id"), key)
        assert len(n["pos"]) == 2 and len(n["size"]) == 2
        if n["type"] not in FRONTEND_ONLY:
            assert n["properties"].get("Node name for S&R") == n["type"]
    # every link is recorded on both ends, with its type
    link_ids = set()
    for lid, a, aslot, b, bslot, typ in wf["links"]:
        link_ids.add(lid)
        out = nodes[a]["outputs"][aslot]
        # a link into a wildcard ("*") input carries the type "*"
        assert lid in (out.get("links") or []) and typ in (out["type"], "*"), (lid, out)
        assert out.get("slot_index", aslot) == aslot
        inp = nodes[b]["inputs"][bslot]
        assert inp["link"] == lid and inp["type"] == typ, (lid, inp)
    for n in wf["nodes"]:
        for inp in n.get("inputs") or []:
            assert inp.get("link") is None or inp["link"] in link_ids
        for out in n.get("outputs") or []:
            assert set(out.get("links") or []) <= link_ids
    types = [n["type"] for n in wf["nodes"]]
    assert "CheckpointLoaderSimple" in types and "CLIPTextEncode" in types and "LoadImage" in types
    assert "Note" in types, "each workflow explains its knobs in a Note"
    assert {"SaveImage", "PreviewImage"} & set(types)
    # shipped with placeholders users replace, never the test models
    text = path.read_text()
    for tiny in (CKPT, LORA, CONTROLNET):
        assert tiny not in text


# ---------------------------------------------------------------------------------------------
# Nodes and widget values against /object_info
# ---------------------------------------------------------------------------------------------
def _widgets_of(info: dict) -> list[tuple[str, str, dict]]:
    """The widgets the frontend builds for a node, in order: (name, kind, options)."""
    order = info.get("input_order") or {g: list(v) for g, v in info["input"].items()}
    out = []
    for group in ("required", "optional"):
        for name in order.get(group, []):
            spec = info["input"][group][name]
            typ, opts = spec[0], dict(spec[1]) if len(spec) > 1 else {}
            if isinstance(typ, list):
                kind, opts["options"] = "COMBO", typ
            elif typ in ("COMBO", "INT", "FLOAT", "STRING", "BOOLEAN"):
                kind = typ
            else:
                continue  # a socket
            if opts.get("forceInput"):
                continue
            out.append((name, kind, opts))
            if kind == "INT" and opts.get("control_after_generate"):
                out.append(("control_after_generate", "CONTROL", {}))
            if opts.get("image_upload"):
                out.append(("upload", "UPLOAD", {}))
    return out


def _check_value(node_type: str, name: str, kind: str, opts: dict, value) -> str | None:
    where = f"{node_type}.{name} = {value!r}"
    if (node_type, name) in USER_FILES:
        ok = isinstance(value, str) and value.lower().endswith(USER_FILES[(node_type, name)])
        return None if ok else f"{where}: expected a file name"
    if kind == "CONTROL":
        return None if value in CONTROL_VALUES else f"{where}: not one of {sorted(CONTROL_VALUES)}"
    if kind == "UPLOAD":
        return None if value == "image" else f"{where}: expected 'image'"
    if kind == "COMBO":
        options = opts.get("options") or []
        return None if value in options else f"{where}: not one of {options}"
    if kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"{where}: not a boolean"
    if kind == "STRING":
        return None if isinstance(value, str) else f"{where}: not a string"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"{where}: not a number"
    if kind == "INT" and value != int(value):
        return f"{where}: not an integer"
    if "min" in opts and value < opts["min"] or "max" in opts and value > opts["max"]:
        return f"{where}: outside [{opts.get('min')}, {opts.get('max')}]"
    return None


def _input_type(info: dict, name: str):
    for group in ("required", "optional"):
        if name in info["input"].get(group, {}):
            t = info["input"][group][name][0]
            return "COMBO" if isinstance(t, list) else t
    return None


@pytest.fixture(scope="module")
def object_info(comfy_server) -> dict:
    return comfy_server.object_info()


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=_ids(WORKFLOW_FILES))
def test_workflow_nodes_exist_and_widget_values_are_valid(object_info, path):
    wf = json.loads(path.read_text())
    nodes = {n["id"]: n for n in wf["nodes"]}
    problems = []
    for n in wf["nodes"]:
        t = n["type"]
        if t in FRONTEND_ONLY:
            assert isinstance((n.get("widgets_values") or [None])[0], str) and n["widgets_values"][0].strip()
            continue
        if t not in object_info:
            problems.append(f"node {n['id']}: {t} is not in /object_info")
            continue
        info = object_info[t]
        widgets = _widgets_of(info)
        values = n.get("widgets_values") or []
        if len(values) != len(widgets):
            problems.append(f"node {n['id']} {t}: {len(values)} widget values for widgets {[w[0] for w in widgets]}")
            continue
        for (name, kind, opts), v in zip(widgets, values):
            err = _check_value(t, name, kind, opts, v)
            if err:
                problems.append(f"node {n['id']}: {err}")
        # sockets: types match the node's definition; required ones are connected unless bypassed
        for inp in n.get("inputs") or []:
            want = _input_type(info, inp["name"])
            if want is None:
                problems.append(f"node {n['id']} {t}: no input {inp['name']!r}")
            elif want != "*" and inp["type"] != want:
                problems.append(f"node {n['id']} {t}.{inp['name']}: type {inp['type']} but the node takes {want}")
        required_sockets = [k for k in info["input"].get("required", {})
                            if k not in {w[0] for w in widgets}]
        linked = {i["name"] for i in n.get("inputs") or [] if i.get("link") is not None}
        missing = [k for k in required_sockets if k not in linked]
        if missing and n["mode"] == 0:
            problems.append(f"node {n['id']} {t}: required inputs not connected: {missing}")
        for slot, out in enumerate(n.get("outputs") or []):
            if slot >= len(info["output"]) or out["type"] != info["output"][slot]:
                problems.append(f"node {n['id']} {t}: output {slot} {out['type']} but the node gives {info['output']}")
    for lid, a, aslot, _b, _bslot, typ in wf["links"]:
        if nodes[a]["type"] in object_info and typ not in (object_info[nodes[a]["type"]]["output"][aslot], "*"):
            problems.append(f"link {lid}: type {typ}")
    assert not problems, "\n".join(problems)


def _links_of(node: dict) -> tuple:
    return ([(i["name"], i.get("link")) for i in node.get("inputs") or []],
            [(o["name"], sorted(o.get("links") or [])) for o in node.get("outputs") or []])


def test_workflows_load_unchanged_and_convert_in_the_frontend(ui_page, object_info):
    """Load each file as shipped in the page, save it again (``graphToPrompt().workflow``, what
    Workflow > Export writes) and convert it (``graphToPrompt().output``): the frontend keeps every
    widget value in its place and sends it to the server under the right input name."""
    fe = ui_page
    seen = len(fe.page.console_errors())
    for path in WORKFLOW_FILES:
        wf = json.loads(path.read_text())
        fe.load(copy.deepcopy(wf))
        res = fe.page.evaluate("window.app.graphToPrompt().then(p => ({workflow: p.workflow, output: p.output}))")
        saved = {n["id"]: n for n in res["workflow"]["nodes"]}
        assert set(saved) == {n["id"] for n in wf["nodes"]}, path.name
        for n in wf["nodes"]:
            s = saved[n["id"]]
            where = f"{path.name} node {n['id']} {n['type']}"
            assert (s["type"], s["mode"], s.get("title")) == (n["type"], n["mode"], n.get("title")), where
            assert (s.get("widgets_values") or []) == (n.get("widgets_values") or []), where
            assert _links_of(s) == _links_of(n), where
        assert sorted(map(tuple, res["workflow"]["links"])) == sorted(map(tuple, wf["links"])), path.name
        for n in wf["nodes"]:
            if n["type"] in FRONTEND_ONLY or n["mode"] != 0:
                continue
            inputs = res["output"][str(n["id"])]["inputs"]
            for (name, kind, _), v in zip(_widgets_of(object_info[n["type"]]), n.get("widgets_values") or []):
                if kind not in ("CONTROL", "UPLOAD"):
                    where = f"{path.name} node {n['id']} {n['type']}.{name}"
                    assert inputs.get(name) == v, f"{where}: {inputs.get(name)!r} != {v!r}"
    errors = fe.page.console_errors()[seen:]
    assert not errors, errors


def test_workflows_are_served_in_the_template_browser(comfy_server):
    listed = comfy_server.get_json("/workflow_templates")
    assert sorted(listed.get(PACK_DIR_NAME, [])) == sorted(EXPECTED), listed
    for path in WORKFLOW_FILES:
        served = json.loads(comfy_server.get_bytes(f"/api/workflow_templates/{PACK_DIR_NAME}/{path.name}"))
        assert served == json.loads(path.read_text())
        # the template browser asks for <name>.jpg as the tile's picture
        thumb = comfy_server.get_bytes(f"/api/workflow_templates/{PACK_DIR_NAME}/{path.stem}.jpg")
        assert thumb == path.with_suffix(".jpg").read_bytes()


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=_ids(WORKFLOW_FILES))
def test_every_workflow_has_a_small_jpeg_thumbnail_of_its_output(path):
    from PIL import Image

    thumb = path.with_suffix(".jpg")
    assert thumb.is_file(), (f"{thumb.name} missing: the template browser shows it on the tile. Record it from the "
                             "workflow's run test with tests/comfy/thumbnails.record (see that module)")
    data = thumb.read_bytes()
    assert data[:3] == b"\xff\xd8\xff" and len(data) <= thumbnails.MAX_BYTES, (thumb.name, len(data))
    with Image.open(thumb) as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (thumbnails.SIZE, thumbnails.SIZE)
        im.load()
        px = np.asarray(im).astype(float)
    assert px.std() > 10, f"{thumb.name} is nearly flat: not a picture of an output"
    assert not set(WORKFLOWS.glob("*.jpg")) - {p.with_suffix(".jpg") for p in WORKFLOW_FILES}, "a thumbnail without its workflow"


# ---------------------------------------------------------------------------------------------
# Running them in the real frontend
# ---------------------------------------------------------------------------------------------
def _photo() -> np.ndarray:
    """A 64x64 'photo': smooth gradients and a checker texture (every pixel distinct enough)."""
    y, x = np.mgrid[0:S, 0:S]
    img = np.stack([40 + 3 * x, 30 + 3 * y, 120 + 40 * (((x // 4) + (y // 4)) % 2)], -1)
    return img.astype(np.uint8)


def _stroke_painting() -> np.ndarray:
    """Flat-colour rectangles: sky, mountain, lake, sun."""
    img = np.zeros((S, S, 3), np.uint8)
    img[:] = (110, 160, 230)
    img[24:44] = (90, 90, 100)
    img[44:] = (40, 80, 160)
    img[6:16, 44:56] = (250, 210, 60)
    return img


def _node(wf: dict, node_type: str, title: str | None = None) -> dict:
    found = [n for n in wf["nodes"] if n["type"] == node_type and (title is None or title in n.get("title", ""))]
    assert len(found) == 1, (node_type, title, [n.get("title") for n in found])
    return found[0]


def _api_prompt(entry: dict) -> dict:
    """The API prompt the page converted and queued (from the history entry)."""
    return entry["prompt"][2]


def _api_node(prompt: dict, node: dict) -> dict:
    return prompt[str(node["id"])]


def _base_replacements(wf: dict, tag: str) -> dict:
    """Tiny models, few steps, and unique filename prefixes (ComfyUI caches identical prompts)."""
    repl: dict = {"CheckpointLoaderSimple": {"ckpt_name": CKPT}}
    types = {n["type"] for n in wf["nodes"]}
    if "LoraLoader" in types:
        repl["LoraLoader"] = {"lora_name": LORA}
    if "ControlNetLoader" in types:
        repl["ControlNetLoader"] = {"control_net_name": CONTROLNET}
    for t, w in (("SDEdit", "steps"), ("SDEditT0Sweep", "steps"), ("SDEditSigmas", "steps")):
        if t in types:
            repl[t] = {w: STEPS}
    for n in wf["nodes"]:
        if n["type"] == "SaveImage":
            repl[str(n["id"])] = {"filename_prefix": f"test_wf/{tag}_{uuid.uuid4().hex[:8]}"}
    return repl


def _one_image(images: dict, node: dict) -> np.ndarray:
    imgs = images[str(node["id"])]
    assert len(imgs) == 1
    return imgs[0]


def _check_api_prompt(wf: dict, prompt: dict):
    """Every non-note, non-bypassed node reached the server, with the class it has in the file."""
    want = {str(n["id"]): n["type"] for n in wf["nodes"] if n["type"] not in FRONTEND_ONLY and n["mode"] == 0}
    assert {k: v["class_type"] for k, v in prompt.items()} == want


def test_stroke_painting_workflow_runs(ui_server, run_ui):
    wf = _load("sdedit_stroke_painting")
    guide = _stroke_painting()
    repl = _base_replacements(wf, "stroke_painting")
    repl[str(_node(wf, "LoadImage")["id"])] = {"image": ui_server.upload_image(guide, "wf_strokes.png")}
    entry = run_ui(copy.deepcopy(wf), repl)
    prompt = _api_prompt(entry)
    _check_api_prompt(wf, prompt)
    sd = _api_node(prompt, _node(wf, "SDEdit"))["inputs"]
    assert sd["steps"] == STEPS and sd["t0"] == _node(wf, "SDEdit")["widgets_values"][0]
    assert "mask" not in sd
    out = _one_image(ui_server.output_images(entry), _node(wf, "SaveImage"))
    assert out.shape == (S, S, 3)
    assert np.abs(out.astype(float) - guide).mean() > 1.0  # it was edited
    thumbnails.record("sdedit_stroke_painting", out, guide)


def _far_from(box: tuple[int, int, int, int], margin: int) -> np.ndarray:
    """Boolean (S, S): pixels more than ``margin`` away from the box (y0, y1, x0, x1)."""
    y0, y1, x0, x1 = box
    yy, xx = np.mgrid[0:S, 0:S]
    dy = np.maximum(np.maximum(y0 - yy, yy - (y1 - 1)), 0)
    dx = np.maximum(np.maximum(x0 - xx, xx - (x1 - 1)), 0)
    return np.maximum(dy, dx) > margin


def test_masked_stroke_edit_workflow_keeps_the_photo_outside_the_mask(ui_server, run_ui):
    wf = _load("sdedit_masked_stroke_edit")
    photo = _photo()
    layer = np.zeros((S, S, 4), np.uint8)  # RGBA stroke layer: transparent but for two strokes
    layer[8:20, 10:26] = (220, 30, 30, 255)
    layer[14:18, 26:30] = (250, 250, 250, 255)
    strokes = layer[..., 3] > 0
    repl = _base_replacements(wf, "masked_strokes")
    repl[str(_node(wf, "LoadImage", "Photo")["id"])] = {"image": ui_server.upload_image(photo, "wf_photo.png")}
    repl[str(_node(wf, "LoadImage", "Stroke layer")["id"])] = {
        "image": ui_server.upload_image(layer, "wf_stroke_layer.png")}
    repl["SDEditStrokeGuide"] = {"grow": 3}
    repl["SDEdit"].update(mask_grow=2, mask_feather=2.0)
    entry = run_ui(copy.deepcopy(wf), repl)
    _check_api_prompt(wf, _api_prompt(entry))
    images = ui_server.output_images(entry)
    guide = _one_image(images, _node(wf, "PreviewImage"))
    expected_guide = np.where(strokes[..., None], layer[..., :3], photo)
    np.testing.assert_array_equal(guide, expected_guide)
    out = _one_image(images, _node(wf, "SaveImage"))
    assert out.shape == (S, S, 3)
    far = _far_from((8, 20, 10, 30), margin=3 + 2 + 2 * 3 + 4)  # grow + mask_grow + feather reach + slack
    assert far.sum() > S * S // 3
    np.testing.assert_array_equal(out[far], photo[far])  # bit-identical outside the mask
    assert np.abs(out[strokes].astype(float) - expected_guide[strokes]).mean() > 1.0  # the strokes were edited
    thumbnails.record("sdedit_masked_stroke_edit", out, expected_guide)


def test_composite_workflow_keeps_the_background_outside_the_patch(ui_server, run_ui):
    wf = _load("sdedit_composite")
    base = _photo()
    patch = np.zeros((16, 16, 3), np.uint8)
    patch[:, :] = (240, 240, 240)
    patch[::4] = (200, 20, 20)
    x, y = 6, 10
    repl = _base_replacements(wf, "composite")
    repl[str(_node(wf, "LoadImage", "Background")["id"])] = {"image": ui_server.upload_image(base, "wf_bg.png")}
    repl[str(_node(wf, "LoadImage", "Patch")["id"])] = {"image": ui_server.upload_image(patch, "wf_patch.png")}
    repl["SDEditCompositeGuide"] = {"x": x, "y": y, "grow": 3}
    repl["SDEdit"].update(mask_grow=2, mask_feather=2.0)
    entry = run_ui(copy.deepcopy(wf), repl)
    _check_api_prompt(wf, _api_prompt(entry))
    images = ui_server.output_images(entry)
    expected_guide = base.copy()
    expected_guide[y:y + 16, x:x + 16] = patch
    np.testing.assert_array_equal(_one_image(images, _node(wf, "PreviewImage")), expected_guide)
    out = _one_image(images, _node(wf, "SaveImage"))
    assert out.shape == (S, S, 3)
    far = _far_from((y, y + 16, x, x + 16), margin=3 + 2 + 2 * 3 + 4)
    assert far.sum() > S * S // 3
    np.testing.assert_array_equal(out[far], base[far])
    inside = np.s_[y:y + 16, x:x + 16]
    assert np.abs(out[inside].astype(float) - patch).mean() > 1.0
    thumbnails.record("sdedit_composite", out, expected_guide)


def test_lora_controlnet_workflow_runs_with_both_applied(ui_server, run_ui):
    wf = _load("sdedit_lora_controlnet")
    guide = _stroke_painting()
    repl = _base_replacements(wf, "lora_cn")
    repl[str(_node(wf, "LoadImage")["id"])] = {"image": ui_server.upload_image(guide, "wf_lora_cn_guide.png")}
    entry = run_ui(copy.deepcopy(wf), repl)
    prompt = _api_prompt(entry)
    _check_api_prompt(wf, prompt)
    lora, apply_cn = _node(wf, "LoraLoader"), _node(wf, "ControlNetApplyAdvanced")
    sd = _api_node(prompt, _node(wf, "SDEdit"))["inputs"]
    assert sd["model"] == [str(lora["id"]), 0]
    assert sd["positive"] == [str(apply_cn["id"]), 0] and sd["negative"] == [str(apply_cn["id"]), 1]
    assert _api_node(prompt, lora)["inputs"]["strength_model"] > 0
    assert _api_node(prompt, apply_cn)["inputs"]["strength"] > 0
    images = ui_server.output_images(entry)
    assert _one_image(images, _node(wf, "SaveImage")).shape == (S, S, 3)
    assert _one_image(images, _node(wf, "PreviewImage")).shape[:2] == (S, S)  # the Canny hint
    thumbnails.record("sdedit_lora_controlnet", _one_image(images, _node(wf, "SaveImage")), guide)
    log = ui_server.log()
    assert "lora key not loaded" not in log and "missing controlnet keys" not in log


def test_custom_sampler_workflow_runs_as_shipped_and_with_the_mask(ui_server, run_ui):
    import torch

    from tests.fixtures import tiny_sd15

    wf = _load("sdedit_custom_sampler")
    setmask, encode = _node(wf, "SetLatentNoiseMask"), _node(wf, "VAEEncode")
    sca, save, guide_node = _node(wf, "SamplerCustomAdvanced"), _node(wf, "SaveImage"), _node(wf, "LoadImage")
    assert setmask["mode"] == 4, "shipped bypassed (whole-image edit)"
    photo = _photo()
    rgba = np.concatenate([photo, np.full((S, S, 1), 255, np.uint8)], -1)
    rgba[8:24, 8:24, 3] = 0  # what the mask editor saves: transparent = the area to edit (MASK = 1)
    name = ui_server.upload_image(rgba, "wf_custom_guide.png")

    # as shipped: the bypassed SetLatentNoiseMask is skipped by the page's graphToPrompt
    repl = _base_replacements(wf, "custom")
    repl[str(guide_node["id"])] = {"image": name}
    entry = run_ui(copy.deepcopy(wf), repl)
    prompt = _api_prompt(entry)
    _check_api_prompt(wf, prompt)
    assert str(setmask["id"]) not in prompt
    assert _api_node(prompt, sca)["inputs"]["latent_image"] == [str(encode["id"]), 0]
    assert _api_node(prompt, _node(wf, "SDEditSigmas"))["inputs"]["steps"] == STEPS
    whole = _one_image(ui_server.output_images(entry), save)
    assert whole.shape == (S, S, 3)

    # un-bypassed (Ctrl+B): only the masked area changes; the kept latent is returned exactly
    masked_wf = copy.deepcopy(wf)
    _node(masked_wf, "SetLatentNoiseMask")["mode"] = 0
    repl = _base_replacements(masked_wf, "custom_masked")
    repl[str(guide_node["id"])] = {"image": name}
    entry = run_ui(masked_wf, repl)
    prompt = _api_prompt(entry)
    _check_api_prompt(masked_wf, prompt)
    assert _api_node(prompt, sca)["inputs"]["latent_image"] == [str(setmask["id"]), 0]
    out = _one_image(ui_server.output_images(entry), save).astype(float)
    roundtrip = tiny_sd15.reference_decode(tiny_sd15.reference_encode(torch.from_numpy(photo / 255.0)[None]))
    roundtrip = roundtrip[0].numpy() * 255.0
    far = _far_from((8, 24, 8, 24), margin=16)  # latent blocks the resized mask cannot reach
    assert far.sum() > S * S // 3
    assert np.abs(out[far] - roundtrip[far]).max() <= 2.0
    assert np.abs(out[8:24, 8:24] - roundtrip[8:24, 8:24]).mean() > 1.0
    assert np.abs(whole[far].astype(float) - roundtrip[far]).mean() > 1.0  # unmasked: everything changed
    thumbnails.record("sdedit_custom_sampler", whole, photo)


def _find(big: np.ndarray, small: np.ndarray, tol: int = 1) -> bool:
    """Whether ``small`` occurs in ``big``, up to ``tol`` per channel (the grid rounds to uint8,
    SaveImage/PreviewImage truncate)."""
    h, w = small.shape[:2]
    win = np.lib.stride_tricks.sliding_window_view(big[..., :3].astype(np.int16), (h, w, 3))[:, :, 0]
    diff = np.abs(win - small[..., :3].astype(np.int16))
    return bool((diff <= tol).all(axis=(2, 3, 4)).any())


def test_t0_sweep_workflow_saves_the_grid(ui_server, run_ui):
    wf = _load("sdedit_t0_sweep")
    guide = _stroke_painting()
    repl = _base_replacements(wf, "sweep")
    repl[str(_node(wf, "LoadImage")["id"])] = {"image": ui_server.upload_image(guide, "wf_sweep_guide.png")}
    repl["SDEditT0Sweep"]["t0_values"] = "0.3, 0.6"
    entry = run_ui(copy.deepcopy(wf), repl)
    _check_api_prompt(wf, _api_prompt(entry))
    images = ui_server.output_images(entry)
    grid = _one_image(images, _node(wf, "SaveImage"))
    results = images[str(_node(wf, "PreviewImage")["id"])]
    assert [r.shape for r in results] == [(S, S, 3)] * 2
    # the saved grid shows both results (labelled: larger than the two images side by side)
    assert grid.ndim == 3 and grid.shape[0] > S and grid.shape[1] >= 2 * S
    for r in results:
        assert _find(grid, r), "a result is missing from the grid"
    thumbnails.record("sdedit_t0_sweep", grid)
    assert np.abs(results[0].astype(float) - results[1]).mean() > 0.5  # different t0, different image
    text = entry["outputs"][str(_node(wf, "PreviewAny")["id"])]["text"]
    rows = "".join(text).strip().splitlines()
    assert rows[0] == "t0,l2" and [r.split(",")[0] for r in rows[1:]] == ["0.3", "0.6"]
    l2 = [float(r.split(",")[1]) for r in rows[1:]]
    assert all(v >= 0 for v in l2)


# ---------------------------------------------------------------------------------------------
# flow-matching workflows
# ---------------------------------------------------------------------------------------------
def _flux_checks(wf: dict, prompt: dict) -> dict:
    """ModelSamplingFlux feeds SDEdit, FluxGuidance the positive, cfg 1, t0 on the SD1.5 log-SNR scale."""
    sd_node = _node(wf, "SDEdit")
    sd = _api_node(prompt, sd_node)["inputs"]
    assert sd["model"] == [str(_node(wf, "ModelSamplingFlux")["id"]), 0]
    assert sd["positive"] == [str(_node(wf, "FluxGuidance")["id"]), 0]
    assert sd["cfg"] == 1.0 and sd["t0_scale"] == "sd15_snr" and sd["steps"] == STEPS
    return sd


def test_flux_stroke_painting_workflow_runs(ui_server, run_ui):
    wf = _load("flux_sdedit_stroke_painting")
    guide = _stroke_painting()
    repl = _base_replacements(wf, "flux_strokes")
    repl[str(_node(wf, "LoadImage")["id"])] = {"image": ui_server.upload_image(guide, "wf_flux_strokes.png")}
    entry = run_ui(copy.deepcopy(wf), repl)
    prompt = _api_prompt(entry)
    _check_api_prompt(wf, prompt)
    assert "mask" not in _flux_checks(wf, prompt)
    out = _one_image(ui_server.output_images(entry), _node(wf, "SaveImage"))
    assert out.shape == (S, S, 3) and np.abs(out.astype(float) - guide).mean() > 1.0
    thumbnails.record("flux_sdedit_stroke_painting", out, guide)


def test_flux_masked_edit_workflow_keeps_the_photo_outside_the_mask(ui_server, run_ui):
    wf = _load("flux_masked_edit")
    photo = _photo()
    rgba = np.concatenate([photo, np.full((S, S, 1), 255, np.uint8)], -1)
    rgba[20:40, 20:44, 3] = 0  # what the mask editor saves: transparent = the area to edit
    repl = _base_replacements(wf, "flux_masked")
    repl[str(_node(wf, "SDEdit")["id"])] = {"steps": STEPS, "mask_grow": 2, "mask_feather": 2.0}  # 64 px test image
    load = _node(wf, "LoadImage")
    repl[str(load["id"])] = {"image": ui_server.upload_image(rgba, "wf_flux_masked.png")}
    entry = run_ui(copy.deepcopy(wf), repl)
    prompt = _api_prompt(entry)
    _check_api_prompt(wf, prompt)
    sd = _flux_checks(wf, prompt)
    assert sd["mask"] == [str(load["id"]), 1]
    out = _one_image(ui_server.output_images(entry), _node(wf, "SaveImage"))
    grow, feather = sd["mask_grow"], sd["mask_feather"]
    far = _far_from((20, 40, 20, 44), margin=grow + math.ceil(3 * feather) + 2)
    assert far.sum() > S * S // 4
    np.testing.assert_array_equal(out[far], photo[far])
    assert np.abs(out[20:40, 20:44].astype(float) - photo[20:40, 20:44]).mean() > 1.0
    thumbnails.record("flux_masked_edit", out, photo)


def test_flow_sde_drag_workflow_runs_on_the_tiny_mmdit(ui_server, run_ui, tiny_sd3):
    wf = _load("flow_sde_drag")
    img = np.full((S, S, 3), 90, np.uint8)
    img[16:48, 8:32] = (250, 230, 60)
    repl = _base_replacements(wf, "flow_drag")
    repl["CheckpointLoaderSimple"] = {"ckpt_name": SD3_CKPT}
    repl[str(_node(wf, "LoadImage")["id"])] = {"image": ui_server.upload_image(img, "wf_flow_drag.png")}
    repl["SDEditDrag"] = {"points": json.dumps([{"source": [20, 32], "target": [44, 32]}]), "t0": 0.4, "steps": STEPS,
                          "step_size": 4.0, "patch_radius": 2}
    entry = run_ui(copy.deepcopy(wf), repl)
    prompt = _api_prompt(entry)
    _check_api_prompt(wf, prompt)
    drag = _api_node(prompt, _node(wf, "SDEditDrag"))["inputs"]
    assert drag["model"] == [str(_node(wf, "CheckpointLoaderSimple")["id"]), 0] and drag["cfg"] > 1
    out = _one_image(ui_server.output_images(entry), _node(wf, "SaveImage"))
    assert out.shape == (S, S, 3) and np.abs(out.astype(float) - img).mean() > 0.5
    thumbnails.record("flow_sde_drag", out, img)

