"""``sdedit drag / dragbench / inpaint / diffedit``: end to end on the tiny model, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.tiny_diffusers import tiny_sd_path  # noqa: E402

FAST = ["--steps", "3", "--radius", "2", "-q"]


from tests.cli_helpers import one_error_line, run  # noqa: E402


def _image(path: Path, seed: int, size=(64, 64)) -> Path:
    rng = np.random.default_rng(seed)
    arr = (rng.random((size[1], size[0], 3)) * 80 + 60).astype(np.uint8)
    arr[24:40, 4:20] = (230, 40, 30)
    Image.fromarray(arr).save(path)
    return path


def _mask(path: Path, size=(64, 64), cols=44) -> Path:
    m = np.zeros((size[1], size[0]), dtype=np.uint8)
    m[:, :cols] = 255
    Image.fromarray(m, mode="L").save(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("drag")
    _image(d / "img.png", 0)
    _mask(d / "mask.png")
    _mask(d / "small_mask.png", (32, 32))
    (d / "points.json").write_text(json.dumps({"source": [[12, 32]], "target": [[28, 32]], "prompt": "a red box"}))
    return d


def test_drag_end_to_end_keeps_unmasked_pixels(files, tmp_path, capsys):
    out, sheet = tmp_path / "out.png", tmp_path / "sheet.png"
    rc, so, err = run(["drag", files / "img.png", "--points", '[{"source": [12, 32], "target": [28, 32]}]',
                       "--mask", files / "mask.png", "--prompt", "a red box", "--model", tiny_sd_path(),
                       "--guidance", "3", "--step-size", "2", "--t0", "0.6", "--seed", "1", "--save-sheet", sheet,
                       "-o", out, *FAST], capsys)
    assert rc == 0, err
    assert so.split() == [str(out), str(sheet)]
    g, o, m = (np.asarray(Image.open(p)) for p in (files / "img.png", out, files / "mask.png"))
    assert o.shape == g.shape and np.array_equal(o[m == 0], g[m == 0])
    assert np.abs(o[26:38, 22:34].astype(int) - g[26:38, 22:34]).mean() > 5
    assert Image.open(sheet).width > 3 * 64
    # points from a file (DragBench's prompt.json; its prompt is used) give the same result
    out2 = tmp_path / "out2.png"
    rc, _, err = run(["drag", files / "img.png", "--points", files / "points.json", "--mask", files / "mask.png",
                      "--model", tiny_sd_path(), "--seed", "1", "-o", out2, *FAST], capsys)
    assert rc == 0, err
    assert np.array_equal(np.asarray(Image.open(out2)), o)


def test_drag_with_lora_steps(files, tmp_path, capsys):
    out = tmp_path / "lora.png"
    rc, _, err = run(["drag", files / "img.png", "--points", "[[12, 32], [28, 32]]", "--model", tiny_sd_path(),
                      "--lora-steps", "2", "--lora-rank", "2", "--steps", "2", "--radius", "1", "-o", out], capsys)
    assert rc == 0, err
    assert "LoRA loss" in err and out.is_file()


@pytest.mark.parametrize("points, message", [
    ("[[12, 32], [90, 32]]", "outside the 64x64 image"),
    ("[[12, 32], [12, 32]]", "source == target"),
    ("[]", "no point pairs"),
    ("[[12, 32], [20, 3", "not valid JSON"),
    ("nofile.json", "no such file"),
])
def test_drag_bad_points_are_one_line(files, tmp_path, capsys, points, message):
    rc, _, err = run(["drag", files / "img.png", "--points", points, "--model", tiny_sd_path(),
                      "-o", tmp_path / "x.png", *FAST], capsys)
    assert rc == 1 and message in one_error_line(err)


def test_drag_other_errors_are_one_line(files, tmp_path, capsys):
    cases = [
        (["--points", "[[12, 32], [28, 32]]", "--mask", files / "small_mask.png"], "32x32"),
        (["--points", "[[12, 32], [14, 33]]"], "shorter than one latent cell"),
        (["--points", "[[12, 32], [28, 32]]", "--lora-steps", "-1"], "--lora-steps"),
        (["--points", "[[12, 32], [28, 32]]", "--beta", "2"], "--beta"),
    ]
    for extra, message in cases:
        rc, _, err = run(["drag", files / "img.png", *extra, "--model", tiny_sd_path(), "-o", tmp_path / "x.png",
                          *FAST], capsys)
        assert rc in (1, 2) and message in one_error_line(err), (extra, err)


def _sample(root: Path, name: str, seed: int, spec, size=(64, 64), mask_size=None, image=True, mask=True) -> Path:
    d = root / name
    d.mkdir(parents=True)
    if image:
        _image(d / "origin_image.png", seed, size)
    if mask:
        _mask(d / "mask.png", mask_size or size)
    if spec is not None:
        (d / "prompt.json").write_text(spec if isinstance(spec, str) else json.dumps(spec))
    return d


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("DragBench")
    good = {"source": [[12, 32]], "target": [[28, 32]], "prompt": "a red box"}
    _sample(root, "animals/1", 1, good)
    _sample(root, "animals/2", 2, {"source": [[12, 32], [40, 10]], "target": [[28, 40], [40, 30]], "prompt": "a box"})
    _sample(root, "art/3", 3, {**good, "prompt": "a painting"}, size=(48, 40), mask=False)  # no mask, not /64
    _sample(root, "broken/4", 4, "{\"source\": [[1, 2]], ")  # malformed JSON
    _sample(root, "broken/5", 5, good, image=False)  # missing origin_image.png
    return root


def test_dragbench_runs_good_samples_and_reports_broken_ones(bench, tmp_path, capsys):
    out = tmp_path / "results"
    rc, so, err = run(["dragbench", bench, "--model", tiny_sd_path(), "-o", out, *FAST], capsys)
    assert rc == 1 and "Traceback" not in err
    for name in ("animals_1", "animals_2", "art_3"):
        assert (out / f"{name}.png").is_file() and (out / f"{name}_sheet.png").is_file()
        assert str(out / f"{name}.png") in so.split()
    assert (out / "contact_sheet.png").is_file()
    assert Image.open(out / "art_3.png").size == (48, 40)
    summary = json.loads((out / "summary.json").read_text())
    assert {k: v["status"] for k, v in summary.items()} == {
        "animals_1": "ok", "animals_2": "ok", "art_3": "ok", "broken_4": "failed", "broken_5": "failed"}
    assert "not valid JSON" in summary["broken_4"]["error"] and "origin_image.png" in summary["broken_5"]["error"]
    lines = err.strip().splitlines()
    assert any(ln.startswith("sdedit: skipped broken_4: prompt.json is not valid JSON") for ln in lines)
    assert any(ln.startswith("sdedit: skipped broken_5: missing origin_image.png") for ln in lines)
    assert lines[-1].startswith("sdedit: error: 2 of 5 sample(s) failed: broken_4")
    # unmasked pixels kept in a masked sample
    g = np.asarray(Image.open(bench / "animals" / "1" / "origin_image.png"))
    o = np.asarray(Image.open(out / "animals_1.png"))
    m = np.asarray(Image.open(bench / "animals" / "1" / "mask.png"))
    assert np.array_equal(o[m == 0], g[m == 0])
    # --skip-existing: nothing left to run, the broken ones are still reported
    rc, so, err = run(["dragbench", bench, "--model", tiny_sd_path(), "-o", out, "--skip-existing", *FAST], capsys)
    assert rc == 1 and "2 of 5" in err and "Traceback" not in err


def test_dragbench_every_kind_of_broken_sample(tmp_path, capsys):
    root = tmp_path / "bench"
    good = {"source": [[12, 32]], "target": [[28, 32]], "prompt": "x"}
    _sample(root, "off_image", 0, {**good, "target": [[28, 99]]})
    _sample(root, "same_point", 0, {**good, "target": [[12, 32]]})
    _sample(root, "empty", 0, {"source": [], "target": [], "prompt": "x"})
    _sample(root, "size_mismatch", 0, good, mask_size=(32, 32))
    _sample(root, "lengths", 0, {**good, "target": []})
    _sample(root, "not_object", 0, [[1, 2], [3, 4]])
    _sample(root, "bad_prompt", 0, {**good, "prompt": 3})
    _sample(root, "no_prompt_json", 0, None)
    (root / "empty_dir").mkdir()
    rc, so, err = run(["dragbench", root, "--model", "/nonexistent/model", "-o", tmp_path / "o", *FAST], capsys)
    assert rc == 1 and "Traceback" not in err and so == ""  # the model is never loaded: nothing to run
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    expect = {"off_image": "outside the 64x64 image", "same_point": "source == target", "empty": "no point pairs",
              "size_mismatch": "32x32", "lengths": "same length", "not_object": "must be an object",
              "bad_prompt": '"prompt" must be a string', "no_prompt_json": "missing prompt.json",
              "empty_dir": "missing origin_image.png and prompt.json"}
    assert set(summary) == set(expect)
    for name, msg in expect.items():
        assert summary[name]["status"] == "failed" and msg in summary[name]["error"], (name, summary[name])
    assert err.strip().splitlines()[-1].startswith("sdedit: error: 9 of 9 sample(s) failed")


def test_dragbench_missing_folder(tmp_path, capsys):
    rc, _, err = run(["dragbench", tmp_path / "nope", "--model", tiny_sd_path(), "-o", tmp_path / "o"], capsys)
    assert rc == 1 and "DragBench folder not found" in one_error_line(err)
    (tmp_path / "empty").mkdir()
    rc, _, err = run(["dragbench", tmp_path / "empty", "--model", tiny_sd_path(), "-o", tmp_path / "o"], capsys)
    assert rc == 1 and "no sample folders" in one_error_line(err)


@pytest.mark.parametrize("mode", ["sde", "ode"])
def test_inpaint_cli(files, tmp_path, capsys, mode):
    out = tmp_path / "inp.png"
    rc, so, err = run(["inpaint", files / "img.png", "--mask", files / "mask.png", "--mode", mode, "--steps", "3",
                       "--prompt", "a cat", "--model", tiny_sd_path(), "-o", out, "-q"], capsys)
    assert rc == 0, err
    g, o, m = (np.asarray(Image.open(p)) for p in (files / "img.png", out, files / "mask.png"))
    assert np.array_equal(o[m == 0], g[m == 0]) and not np.array_equal(o[m > 0], g[m > 0])
    rc, _, err = run(["inpaint", files / "img.png", "--mask", files / "small_mask.png", "--model", tiny_sd_path(),
                      "-o", out, "-q"], capsys)
    assert rc == 1 and "32x32" in one_error_line(err)


def test_diffedit_cli_with_automatic_mask(files, tmp_path, capsys):
    out, mask_out = tmp_path / "de.png", tmp_path / "de_mask.png"
    rc, so, err = run(["diffedit", files / "img.png", "--source-prompt", "a bowl of fruits", "--target-prompt",
                       "a bowl of bananas", "--steps", "3", "--model", tiny_sd_path(), "--save-mask", mask_out,
                       "-o", out], capsys)
    assert rc == 0, err
    assert so.split() == [str(out), str(mask_out)] and "automatic" in err
    m = np.asarray(Image.open(mask_out))
    g, o = np.asarray(Image.open(files / "img.png")), np.asarray(Image.open(out))
    assert m.shape == (64, 64) and 0 < (m > 0).mean() < 1 and np.array_equal(o[m == 0], g[m == 0])
    rc, _, err = run(["diffedit", files / "img.png", "--source-prompt", "a", "--model", tiny_sd_path(), "-o", out],
                     capsys)
    assert rc == 2 and "--target-prompt" in one_error_line(err)
