"""The ``sdedit`` CLI: edit, composite, sweep, strokes, batch, and one-line errors for bad input."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdedit_engine.cli import main  # noqa: E402
from sdedit_engine.io.grids import grid_layout  # noqa: E402
from sdedit_engine.io.imaging import load_image, save_image  # noqa: E402
from sdedit_engine.io.strokes import count_colors  # noqa: E402
from tests.fixtures.tiny_diffusers import pickle_checkpoint, tiny_lora_path, tiny_sd_path, tiny_single_file_path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FAST = ["--steps", "3", "-q"]


from tests.cli_helpers import one_error_line, run  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(d / "guide.png")
    m = np.zeros((64, 64), dtype=np.uint8)
    m[16:40, 8:48] = 255
    Image.fromarray(m).save(d / "mask.png")
    Image.fromarray(m[:32, :32]).save(d / "small_mask.png")
    Image.fromarray((rng.random((16, 24, 3)) * 255).astype(np.uint8)).save(d / "patch.png")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    pickle_checkpoint(d)
    return d


def test_edit_with_mask_keeps_unmasked_pixels(files, tmp_path, capsys):
    out = tmp_path / "out.png"
    rc, so, err = run(["edit", files / "guide.png", "--mask", files / "mask.png", "--model", tiny_sd_path(),
                       "--prompt", "a cat", "--t0", "0.5", "--sampler", "ddpm", "--repeats", "2", "--seed", "3",
                       "-o", out, *FAST], capsys)
    assert rc == 0, err
    assert so.strip() == str(out)
    g, o, m = (np.asarray(Image.open(p)) for p in (files / "guide.png", out, files / "mask.png"))
    assert o.shape == g.shape and np.array_equal(o[m == 0], g[m == 0])
    assert np.abs(o[m == 255].astype(int) - g[m == 255]).mean() > 5
    # same seed -> same file; several images -> numbered outputs
    out2 = tmp_path / "again.png"
    assert run(["edit", files / "guide.png", "--mask", files / "mask.png", "--model", tiny_sd_path(), "--prompt",
                "a cat", "--t0", "0.5", "--sampler", "ddpm", "--repeats", "2", "--seed", "3", "-o", out2, *FAST],
               capsys)[0] == 0
    assert np.array_equal(np.asarray(Image.open(out2)), o)
    rc, so, _ = run(["edit", files / "guide.png", "--model", tiny_sd_path(), "--num-images", "2",
                     "-o", tmp_path / "n.png", *FAST], capsys)
    assert rc == 0 and (tmp_path / "n-0.png").is_file() and (tmp_path / "n-1.png").is_file()


def test_edit_with_lora(files, tmp_path, capsys):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    base = ["edit", files / "guide.png", "--model", tiny_sd_path(), "--prompt", "x", *FAST]
    assert run([*base, "-o", a], capsys)[0] == 0
    assert run([*base, "--lora", tiny_lora_path(), "-o", b], capsys)[0] == 0
    assert np.abs(np.asarray(Image.open(a)).astype(int) - np.asarray(Image.open(b))).max() > 0


def test_edit_single_file_checkpoint(files, tmp_path, capsys):
    a, b = tmp_path / "folder.png", tmp_path / "single.png"
    base = ["edit", files / "guide.png", "--prompt", "x", "--seed", "4", *FAST]
    assert run([*base, "--model", tiny_sd_path(), "-o", a], capsys)[0] == 0
    rc, _, err = run([*base, "--model", tiny_single_file_path(), "--config", tiny_sd_path(), "-o", b], capsys)
    assert rc == 0, err
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def test_composite_builds_guide_and_edits_patch_only(files, tmp_path, capsys):
    out, guide = tmp_path / "c.png", tmp_path / "cg.png"
    rc, _, err = run(["composite", files / "guide.png", files / "patch.png", "--at", "20,30", "--model",
                      tiny_sd_path(), "--save-guide", guide, "-o", out, *FAST], capsys)
    assert rc == 0, err
    g, base, patch, o = (np.asarray(Image.open(p)) for p in (guide, files / "guide.png", files / "patch.png", out))
    assert np.array_equal(g[30:46, 20:44], patch)
    inside = np.zeros(base.shape[:2], bool)
    inside[30:46, 20:44] = True
    assert np.array_equal(g[~inside], base[~inside]) and np.array_equal(o[~inside], base[~inside])
    assert not np.array_equal(o[inside], patch.reshape(-1, 3))


def test_sweep_writes_grid_plot_and_csv(files, tmp_path, capsys):
    outdir = tmp_path / "sweep"
    rc, so, err = run(["sweep", files / "guide.png", "--t0", "0.2,0.5,0.8", "--num-seeds", "2", "--l2-size", "32",
                       "--model", tiny_sd_path(), "-o", outdir, *FAST], capsys)
    assert rc == 0, err
    rows = list(csv.DictReader(open(outdir / "sweep.csv")))
    assert [float(r["t0"]) for r in rows] == [0.2, 0.5, 0.8] * 2 and {r["seed"] for r in rows} == {"0", "1"}
    assert all(float(r["l2"]) > 0 and float(r["l2_32px"]) > 0 and r["nfe"] == "3" for r in rows)
    sig = [float(r["sigma0"]) for r in rows[:3]]
    assert sig[0] < sig[1] < sig[2] and abs(sig[1] - 1.6129) < 1e-3  # SD's σ(t0=0.5)
    grid = Image.open(outdir / "grid.png")
    labels = [lab for seed in (0, 1) for lab in (f"guide (seed {seed})", *(f"t0={t:g} s{seed}" for t in (0.2, 0.5, 0.8)))]
    # guide + 3 t0 columns, one row per seed, laid out by the grid module (cells widen for their labels)
    assert grid.size == grid_layout([(64, 64)] * 8, labels, columns=4).size
    plot = Image.open(outdir / "l2_vs_t0.png")
    assert plot.format == "PNG" and plot.width > 200
    assert len(list(outdir.glob("t0-*_seed-*.png"))) == 6


@pytest.mark.parametrize("sampler", ["ddpm", "euler_maruyama", "dpmpp_2m_sde", "ddim", "dpmpp_2m"])
def test_every_sampler_edits_at_t0_one_over_T_and_at_t0_one(files, tmp_path, capsys, sampler):
    """t0 = 0.001 (the paper's 1/T) is one denoise at σ_min, never a grid of repeated σ (issue 14.1)."""
    g = np.asarray(Image.open(files / "guide.png")).astype(int)
    for t0, steps, nfe in (("0.001", "4", 1), ("1", "4", 4)):
        out = tmp_path / f"{sampler}-{t0}.png"
        rc, so, err = run(["edit", files / "guide.png", "--model", tiny_sd_path(), "--t0", t0, "--steps", steps,
                           "--sampler", sampler, "-o", out], capsys)
        assert rc == 0, err
        assert f"steps={nfe} " in err and f"NFE={nfe}" in err, err
        o = np.asarray(Image.open(out)).astype(int)
        assert o.shape == g.shape
        if t0 == "0.001":
            assert "sigma0=0.0292" in err  # SD's lowest table σ


def test_strokes_command(files, tmp_path, capsys):
    out = tmp_path / "strokes.png"
    rc, _, err = run(["strokes", files / "guide.png", "--colors", "5", "-o", out], capsys)
    assert rc == 0, err
    s = load_image(out)
    assert s.shape == (1, 3, 64, 64) and count_colors(s) <= 5


@pytest.mark.parametrize(
    "case",
    ["missing_model", "bad_t0", "zero_t0", "text_t0", "unreadable", "missing_image", "mask_size", "pickle_model",
     "pickle_lora", "patch_outside", "bad_at", "even_median", "empty_batch", "bad_ext", "control_without_cn",
     "bad_sampler", "pickle_controlnet", "patch_mask_size", "missing_mask_dir"],
)
def test_bad_input_gives_one_error_line(case, files, tmp_path, capsys):
    g, model = files / "guide.png", tiny_sd_path()
    o = tmp_path / "o.png"
    (tmp_path / "empty").mkdir()
    args = {
        "missing_model": ["edit", g, "--model", tmp_path / "no-model", "-o", o],
        "bad_t0": ["edit", g, "--model", model, "--t0", "1.5", "-o", o],
        "zero_t0": ["sweep", g, "--model", model, "--t0", "0.3,0", "-o", tmp_path],
        "text_t0": ["edit", g, "--model", model, "--t0", "half", "-o", o],
        "unreadable": ["edit", files / "broken.png", "--model", model, "-o", o],
        "missing_image": ["edit", tmp_path / "nothere.png", "--model", model, "-o", o],
        "mask_size": ["edit", g, "--mask", files / "small_mask.png", "--model", model, "-o", o],
        "pickle_model": ["edit", g, "--model", files / "model.ckpt", "-o", o],
        "pickle_lora": ["edit", g, "--model", model, "--lora", files / "model.ckpt", "-o", o],
        "patch_outside": ["composite", g, files / "patch.png", "--at", "60,60", "--model", model, "-o", o],
        "bad_at": ["composite", g, files / "patch.png", "--at", "sixty", "--model", model, "-o", o],
        "even_median": ["strokes", g, "--median", "4", "-o", o],
        "empty_batch": ["batch", tmp_path / "empty", "--model", model, "-o", tmp_path / "bo"],
        "bad_ext": ["edit", g, "--model", model, "-o", tmp_path / "o.xyz"],
        "control_without_cn": ["edit", g, "--model", model, "--control-image", g, "-o", o],
        "bad_sampler": ["edit", g, "--model", model, "--sampler", "heun9", "-o", o],
        "pickle_controlnet": ["edit", g, "--model", model, "--controlnet", files / "model.ckpt", "--control-image", g,
                              "-o", o],
        "patch_mask_size": ["composite", g, files / "patch.png", "--at", "0,0", "--patch-mask", files / "mask.png",
                            "--model", model, "-o", o],
        "missing_mask_dir": ["batch", files, "--masks", tmp_path / "nomasks", "--model", model, "-o", tmp_path / "b"],
    }[case]
    rc, _, err = run([*args, "-q"], capsys)
    assert rc != 0
    line = one_error_line(err)
    expect = {"missing_model": "no-model", "bad_t0": "t0", "zero_t0": "t0", "text_t0": "t0",
              "unreadable": "broken.png", "missing_image": "nothere.png", "mask_size": "small_mask.png",
              "pickle_model": "refusing pickle", "pickle_lora": "refusing pickle", "patch_outside": "does not fit",
              "bad_at": "--at", "even_median": "--median", "empty_batch": "no images", "bad_ext": ".xyz",
              "control_without_cn": "--controlnet", "bad_sampler": "sampler", "pickle_controlnet": "refusing pickle",
              "patch_mask_size": "mask.png is 64x64 but the image is 24x16", "missing_mask_dir": "nomasks"}[case]
    assert expect in line
    assert not o.exists()


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def test_subprocess_error_has_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "sdedit_engine.cli", "edit", str(tmp_path / "x.png"), "--model",
                        str(tmp_path / "missing"), "-o", str(tmp_path / "o.png")],
                       capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 1
    assert r.stderr.strip() == f"sdedit: error: image not found: {tmp_path / 'x.png'}"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_batch_under_accelerate_two_processes(tmp_path):
    model = tiny_sd_path()
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    names = [f"img{i:02d}" for i in range(7)]
    for i, n in enumerate(names):
        save_image(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(i)), src / f"{n}.png")
    m = torch.zeros(1, 1, 32, 32)
    m[..., 8:24, 8:24] = 1
    save_image(m, src / "img03_mask.png")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), "-m", "sdedit_engine.cli", "batch", str(src), "--model",
           str(model), "--steps", "2", "--t0", "0.4", "-q", "-o", str(out)]
    env = _env()
    env["OMP_NUM_THREADS"] = "1"
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=480)
    assert r.returncode == 0, r.stderr[-3000:]
    import json

    records = [json.loads(ln) for f in sorted(out.glob("manifest-rank*.jsonl")) for ln in f.read_text().splitlines()]
    assert {rec["rank"] for rec in records} == {0, 1} and {rec["world"] for rec in records} == {2}
    inputs = sorted(rec["input"] for rec in records)
    assert inputs == [f"{n}.png" for n in names]  # every file exactly once: no duplicates, no gaps
    assert sorted(p.name for p in out.glob("*.png")) == [f"{n}.png" for n in names]
    assert [rec["mask"] for rec in records if rec["input"] == "img03.png"] == ["img03_mask.png"]
    # the masked file kept its unmasked pixels exactly
    o, g = np.asarray(Image.open(out / "img03.png")), np.asarray(Image.open(src / "img03.png"))
    keep = (m[0, 0] == 0).numpy()
    assert np.array_equal(o[keep], g[keep])


def test_batch_single_process_masks_folder_and_skip_existing(tmp_path, capsys):
    src, masks, out = tmp_path / "in", tmp_path / "masks", tmp_path / "out"
    src.mkdir()
    masks.mkdir()
    for i in range(3):
        save_image(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(i)), src / f"p{i}.png")
    m = torch.zeros(1, 1, 32, 32)
    m[..., :16, :] = 1
    save_image(m, masks / "p1.png")
    base = ["batch", src, "--masks", masks, "--model", tiny_sd_path(), "--steps", "2", "-q", "-o", out]
    rc, _, err = run(base, capsys)
    assert rc == 0, err
    assert sorted(p.name for p in out.glob("*.png")) == ["p0.png", "p1.png", "p2.png"]
    o, g = np.asarray(Image.open(out / "p1.png")), np.asarray(Image.open(src / "p1.png"))
    assert np.array_equal(o[16:], g[16:]) and not np.array_equal(o[:16], g[:16])
    (out / "p2.png").unlink()
    before = (out / "p0.png").stat().st_mtime_ns
    assert run([*base, "--skip-existing"], capsys)[0] == 0
    assert (out / "p2.png").is_file() and (out / "p0.png").stat().st_mtime_ns == before
    manifest = (out / "manifest-rank0.jsonl").read_text().splitlines()
    assert len(manifest) == 1 and '"p2.png"' in manifest[0]


def test_batch_records_bad_files_and_continues(tmp_path, files, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    save_image(torch.rand(1, 3, 32, 32), src / "a.png")
    (src / "b.png").write_bytes((files / "broken.png").read_bytes())
    save_image(torch.rand(1, 3, 32, 32), src / "c.png")
    rc, _, err = run(["batch", src, "--model", tiny_sd_path(), "--steps", "2", "-q", "-o", out], capsys)
    assert rc == 1
    assert "1 file(s) failed on rank 0 (b.png)" in one_error_line(err)
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "c.png"]
    import json

    recs = {r["input"]: r for r in map(json.loads, (out / "manifest-rank0.jsonl").read_text().splitlines())}
    assert "cannot read image" in recs["b.png"]["error"] and recs["c.png"]["output"] == "c.png"


def test_analytic_demo_runs_without_a_model(capsys):
    assert main(["demo", "--analytic", "--samples", "50"]) == 0
    out = capsys.readouterr().out
    assert "Realism vs faithfulness" in out and "dpmpp_2m_sde" in out


def test_crop_resolution_resizes_the_crop_and_equals_the_pipeline(files, tmp_path, capsys):
    """--crop-to-mask PAD --crop-resolution PX = SDEditPipeline(crop_padding=PAD, crop_resolution=PX): the mask's
    box is worked at PX on its long side and stitched back; outside the mask the guide stays exact."""
    from sdedit_engine.io.imaging import load_mask
    from sdedit_engine.pipelines.pipeline import SDEditPipeline

    common = ["edit", files / "guide.png", "--mask", files / "mask.png", "--model", tiny_sd_path(), "--prompt", "x",
              "--t0", "0.6", "--seed", "2", "--crop-to-mask", "8", *FAST]
    out, native = tmp_path / "crop128.png", tmp_path / "native.png"
    assert run([*common, "--crop-resolution", "128", "-o", out], capsys)[0] == 0
    assert run([*common, "-o", native], capsys)[0] == 0
    g, o, n, m = (np.asarray(Image.open(p)) for p in (files / "guide.png", out, native, files / "mask.png"))
    assert np.array_equal(o[m == 0], g[m == 0]) and not np.array_equal(o[m == 255], n[m == 255])
    guide = load_image(files / "guide.png")
    pipe = SDEditPipeline.from_pretrained(str(tiny_sd_path()))
    ref = pipe(guide, mask=load_mask(files / "mask.png", size=(64, 64)), prompt="x", t0=0.6, seed=2, steps=3,
               crop_padding=8, crop_resolution=128, progress=False, output_type="pt").images
    save_image(ref, tmp_path / "ref.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "ref.png")), o)
    no_crop = [a for a in common if a not in ("--crop-to-mask", "8")]
    code, _, err = run([*no_crop, "--crop-resolution", "64", "-o", out], capsys)
    assert code == 1 and "--crop-resolution" in one_error_line(err) and "--crop-to-mask" in one_error_line(err)
    code, _, err = run([*common, "--crop-resolution", "4", "-o", out], capsys)
    assert code == 2 and "--crop-resolution" in err and ">= 8" in err


def test_help_of_every_subcommand_imports_neither_torch_nor_diffusers():
    """`sdedit X --help` answers at once: the parser, its choices (samplers, spacings) and defaults come from
    plain constants; torch, diffusers and PIL load only when a command runs."""
    code = (
        "import sys, contextlib, io\n"
        "from sdedit_engine.cli import build_parser, main\n"
        "names = [a for a in build_parser()._subparsers._group_actions[0].choices]\n"
        "for n in names:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try: main([n, '--help'])\n"
        "        except SystemExit: pass\n"
        "print(len(names), sorted(m for m in ('torch', 'diffusers', 'PIL') if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    count, loaded = r.stdout.split(" ", 1)
    assert int(count) >= 11 and loaded.strip() == "[]", r.stdout
