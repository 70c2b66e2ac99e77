"""Overhead in a real ComfyUI server: the pack's `SDEdit` node vs the core KSampler path at equal model calls.

A: LoadImage → SDEdit(sampler=ddpm, t0=0.5, steps=N, cfg) → SaveImage   (encode + N calls + decode inside)
B: LoadImage → VAEEncode → KSampler(sampler_name=ddpm, scheduler=simple, steps=N, denoise=0.5, cfg)
   → VAEDecode → SaveImage                                              (N calls: ⌊N/0.5⌋-step schedule, last N)

Both run N CFG model calls (cond+uncond batched) from the same noise level (σ ≈ 1.61 on SD1.5), with the
same previews and the same save. Each pair (A, B) gets a freshly uploaded guide (new name, new pixels) and a
new seed, so ComfyUI's cache re-runs every node except the checkpoint loader and the text encoders (shared,
cached in both). Runs are interleaved A, B, B, A, … and timed by the server's own history timestamps
(execution_start → execution_success, ms); the ratio is the median of the per-pair ratios.

    .venv/bin/python bench/overhead_comfy.py            # tiny SD1.5 checkpoint, 64² and 256², 20 and 50 steps
    .venv/bin/python bench/overhead_comfy.py --quick
    .venv/bin/python bench/overhead_comfy.py --ckpt /path/model.safetensors --comfy-dir ~/ComfyUI
    .venv/bin/python bench/overhead_comfy.py --profile  # also cProfile both paths in-process
    .venv/bin/python bench/overhead_comfy.py --flow flux  # the same on a flow-matching (CONST) model

``--flow sd3|flux|auraflow`` puts ComfyUI's ModelSamplingSD3 / ModelSamplingFlux / ModelSamplingAuraFlow in
front of both paths (the tiny SD1.5 checkpoint becomes a CONST model; ``--flow mmdit`` uses the tiny real
SD3-layout MMDiT checkpoint of tests/comfy/tiny_mmdit.py instead); B then samples with ComfyUI's
flow-aware ``euler_ancestral`` (one model call per step, like A's ddpm). Both start at s = shift(0.5):
SDEdit's t0 0.5 is ``percent_to_sigma(0.5)`` and KSampler's ``simple`` at denoise 0.5 starts there too.
"""

from __future__ import annotations

import os  # noqa: F401
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))
import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._common import RESULTS, log, machine, md_table, median, write_csv  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.comfy import harness  # noqa: E402

T0 = 0.5


def guide_image(size: int, k: int) -> np.ndarray:
    rng = np.random.default_rng(k)
    img = np.zeros((size, size, 3), np.uint8)
    img[: size // 2] = (90, 140, 230)
    img[size // 2:] = (60, 160, 60)
    img[size // 4: size // 2 + size // 8, size // 3: size // 3 + size // 4] = (200, 40, 40)
    return np.clip(img.astype(int) + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)


FLOW = {"sd3": ("ModelSamplingSD3", {"shift": 3.0}), "auraflow": ("ModelSamplingAuraFlow", {"shift": 1.73}),
        "flux": ("ModelSamplingFlux", {"max_shift": 1.15, "base_shift": 0.5, "width": 1024, "height": 1024})}
FLOW_MODE = {"patch": None, "ksampler": "ddpm"}  # set by main() from --flow


def _model(p: dict) -> list:
    """The MODEL both paths sample: the checkpoint's, or behind the --flow ModelSampling patch."""
    if FLOW_MODE["patch"] is None:
        return ["ckpt", 0]
    cls, inputs = FLOW[FLOW_MODE["patch"]]
    p["ms"] = {"class_type": cls, "inputs": {"model": ["ckpt", 0], **inputs}}
    return ["ms", 0]


def common(ckpt: str, image: str) -> dict:
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red house in a field", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["ckpt", 1]}},
        "guide": {"class_type": "LoadImage", "inputs": {"image": image}},
    }


def sdedit_prompt(ckpt, image, steps, cfg, seed) -> dict:
    p = common(ckpt, image)
    p["sdedit"] = {"class_type": "SDEdit", "inputs": {
        "model": _model(p), "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["ckpt", 2],
        "guide": ["guide", 0], "t0": T0, "steps": steps, "cfg": cfg, "sampler": "ddpm", "repeats": 1,
        "seed": seed, "mask_grow": 0, "mask_feather": 0.0, "keep_unmasked_pixels": True,
        "crop_to_mask": False, "crop_padding": 64, "crop_resolution": 512}}
    p["save"] = {"class_type": "SaveImage", "inputs": {"images": ["sdedit", 0], "filename_prefix": "bench_sdedit"}}
    return p


def ksampler_prompt(ckpt, image, steps, cfg, seed) -> dict:
    p = common(ckpt, image)
    p["enc"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["guide", 0], "vae": ["ckpt", 2]}}
    p["sampler"] = {"class_type": "KSampler", "inputs": {
        "model": _model(p), "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["enc", 0],
        "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": FLOW_MODE["ksampler"], "scheduler": "simple", "denoise": T0}}
    p["dec"] = {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["ckpt", 2]}}
    p["save"] = {"class_type": "SaveImage", "inputs": {"images": ["dec", 0], "filename_prefix": "bench_ksampler"}}
    return p


def server_seconds(entry: dict) -> float:
    ts = {kind: data.get("timestamp") for kind, data in (entry.get("status") or {}).get("messages") or []}
    return (ts["execution_success"] - ts["execution_start"]) / 1000.0


def timed(server, prompt, timeout) -> tuple[float, float]:
    start = time.perf_counter()
    entry = server.wait(server.queue_prompt(prompt), timeout=timeout)
    return server_seconds(entry), time.perf_counter() - start


def profile_inprocess(ckpt_path: str, comfy_dir, size: int, steps: int, cfg: float, top: int = 25) -> str:
    """cProfile of both paths called as node functions in this process (no server)."""
    import torch

    harness.add_comfyui_to_sys_path(comfy_dir)
    harness.import_pack()
    import comfy.sd
    from comfyui_sdedit.nodes import sdedit_nodes

    import nodes as comfy_nodes

    model, clip, vae = comfy.sd.load_checkpoint_guess_config(ckpt_path, output_vae=True, output_clip=True)[:3]
    pos = clip.encode_from_tokens_scheduled(clip.tokenize("a red house in a field"))
    neg = clip.encode_from_tokens_scheduled(clip.tokenize("blurry"))
    img = torch.from_numpy(guide_image(size, 0).astype(np.float32) / 255.0)[None]

    def run_a(seed):
        return sdedit_nodes.SDEdit.execute(model, pos, neg, vae, img, t0=T0, steps=steps, cfg=cfg, sampler="ddpm",
                                           repeats=1, seed=seed, mask_grow=0, mask_feather=0.0)

    def run_b(seed):
        lat = comfy_nodes.VAEEncode().encode(vae, img)[0]
        out = comfy_nodes.common_ksampler(model, seed, steps, cfg, "ddpm", "simple", pos, neg, lat, denoise=T0)[0]
        return comfy_nodes.VAEDecode().decode(vae, out)[0]

    run_a(0), run_b(0)  # warm up
    report = []
    times = {"A": [], "B": []}
    for i in range(3):
        for name, fn in (("A", run_a), ("B", run_b)) if i % 2 == 0 else (("B", run_b), ("A", run_a)):
            t = time.perf_counter()
            fn(i + 1)
            times[name].append(time.perf_counter() - t)
    report.append(f"in-process wall (median of 3, interleaved): SDEdit {median(times['A']):.3f} s, "
                  f"KSampler path {median(times['B']):.3f} s, ratio {median(times['A']) / median(times['B']):.3f}")
    for name, fn in (("SDEdit.execute", run_a), ("VAEEncode+common_ksampler+VAEDecode", run_b)):
        pr = cProfile.Profile()
        pr.enable()
        fn(99)
        pr.disable()
        s = io.StringIO()
        st = pstats.Stats(pr, stream=s)
        st.sort_stats("cumulative").print_stats(top)
        s2 = io.StringIO()
        pstats.Stats(pr, stream=s2).sort_stats("tottime").print_stats(top)
        report.append(f"### {name} ({size}², {steps} steps, cfg {cfg})\n\ncumulative:\n```\n{_trim(s.getvalue())}\n```\n"
                      f"tottime:\n```\n{_trim(s2.getvalue())}\n```")
    return "\n\n".join(report)


def _trim(text: str) -> str:
    lines = text.strip().splitlines()
    start = next((i for i, l in enumerate(lines) if "ncalls" in l), 0)
    return "\n".join(lines[start:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", help="a real checkpoint file (default: the tiny SD1.5 fixture)")
    ap.add_argument("--comfy-dir", help="ComfyUI folder (default: the test copy)")
    ap.add_argument("--sizes", default="64,256")
    ap.add_argument("--steps", default="20,50")
    ap.add_argument("--cfg", type=float, default=4.0)
    ap.add_argument("--pairs", type=int, default=5, help="interleaved A/B pairs per configuration")
    ap.add_argument("--quick", action="store_true", help="64² only, 20 steps")
    ap.add_argument("--profile", action="store_true", help="also cProfile both paths in-process")
    ap.add_argument("--preview", default="none", help="server --preview-method (same for both paths)")
    ap.add_argument("--flow", choices=["sd3", "flux", "auraflow", "mmdit"], help="run on a flow-matching (CONST) model")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.flow:
        FLOW_MODE.update(patch=None if args.flow == "mmdit" else args.flow, ksampler="euler_ancestral")
    if args.quick:
        args.sizes, args.steps = "64", "20"
    sizes = [int(s) for s in args.sizes.split(",")]
    steps_list = [int(s) for s in args.steps.split(",")]

    comfy_dir = Path(args.comfy_dir) if args.comfy_dir else harness.comfyui_dir()
    if comfy_dir is None:
        sys.exit("ComfyUI not found: pass --comfy-dir (or run bash scripts/test.sh once)")
    if args.ckpt:
        ckpt_path = Path(args.ckpt)
    elif args.flow == "mmdit":
        from tests.comfy import tiny_mmdit

        ckpt_path = tiny_mmdit.ensure(comfy_dir)
    else:
        from tests.fixtures import tiny_sd15

        ckpt_path = tiny_sd15.checkpoint_path()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-comfy-") as base:
        server = harness.ComfyServer(comfy_dir, base, models={"checkpoints": [ckpt_path]}, preview_method=args.preview)
        server.start()
        try:
            server.assert_pack_loaded()
            k = 0
            # warm up: load the checkpoint, encode the prompts, run each path once per size
            for size in sizes:
                name = server.upload_image(guide_image(size, 10_000 + size))
                for make in (sdedit_prompt, ksampler_prompt):
                    timed(server, make(ckpt_path.name, name, 2, args.cfg, 10_000 + size), 600)
            for size in sizes:
                for steps in steps_list:
                    ta, tb, wa, wb, ratios = [], [], [], [], []
                    for i in range(args.pairs):
                        k += 1
                        name = server.upload_image(guide_image(size, k))
                        order = (("A", sdedit_prompt), ("B", ksampler_prompt))
                        if i % 2:
                            order = order[::-1]
                        got = {}
                        for label, make in order:
                            got[label] = timed(server, make(ckpt_path.name, name, steps, args.cfg, k), 1800)
                        ta.append(got["A"][0]), tb.append(got["B"][0])
                        wa.append(got["A"][1]), wb.append(got["B"][1])
                        ratios.append(got["A"][0] / got["B"][0])
                        log(f"{size}² {steps} steps pair {i}: SDEdit {got['A'][0]:.3f} s, KSampler {got['B'][0]:.3f} s")
                    rows.append({
                        "size": size, "steps": steps, "model_calls": steps, "cfg": args.cfg, "pairs": args.pairs,
                        "sdedit_s": median(ta), "ksampler_s": median(tb),
                        "ratio_median_of_pairs": median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                        "wall_ratio": median(wa) / median(wb),
                    })
                    log(rows[-1])
        finally:
            server.stop()

    out = Path(args.out)
    stem = "overhead_comfy" + (f"_flow_{args.flow}" if args.flow else "")
    write_csv(out / f"{stem}.csv", rows)
    flow = (f" behind {FLOW[args.flow][0]}" if args.flow in FLOW else "") + (
        f" (flow-matching: KSampler uses {FLOW_MODE['ksampler']})" if args.flow else "")
    body = [f"Checkpoint: `{ckpt_path.name}`{flow}; sampler ddpm, t0 = denoise = {T0}, previews `{args.preview}`; "
            "times from the server's history (execution_start → execution_success), median over interleaved pairs.",
            "", md_table(rows)]
    if args.profile:
        body += ["", "## Profile (in-process)", "",
                 profile_inprocess(str(ckpt_path), comfy_dir, max(sizes), max(steps_list), args.cfg)]
    (out / f"{stem}.md").write_text(
        "# SDEdit node vs core KSampler (real ComfyUI server)\n\nMachine: " + machine()
        + "\n\nCommand: `.venv/bin/python bench/overhead_comfy.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
        + "`\n\n" + "\n".join(body) + "\n")
    print(md_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
