"""Overhead at full size: the real SD1.5 architecture (860 M UNet, 84 M VAE, 123 M CLIP-L; random weights from
the official config, nothing downloaded) at 512², on the CPU.

``--part diffusers``: A = ``SDEditPipeline`` (ddpm, t0 = 0.5, N steps) vs B = diffusers'
``StableDiffusionImg2ImgPipeline`` (DDPMScheduler fixed_small, strength 0.5, 2N inference steps → N UNet calls)
on the same modules (bench/overhead_diffusers.py's setup).
``--part comfy``: in an in-process ComfyUI, A = the pack's ``SDEdit`` node vs B = ``VAEEncode`` →
core ``KSampler`` (ddpm, simple, denoise 0.5) → ``VAEDecode``, on the same checkpoint (written once as an
LDM-format fp16 safetensors file from the random diffusers model and loaded by ComfyUI's own loader).

Each side: VAE encode 512², N UNet calls, VAE decode. Pairs interleaved A B, B A, …; per pair the ratio of wall
times and of process CPU times (one thread: the CPU time is what the code itself costs, the wall time also
counts the other jobs on a shared machine). The ratio reported is the median of the per-pair ratios.

    nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python bench/fullsize_sd15.py --part diffusers --steps 2 --pairs 3
    nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python bench/fullsize_sd15.py --part comfy --steps 2 --pairs 3
"""

from __future__ import annotations

import os  # noqa: F401
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))
import argparse
import gc
import sys
import time
from pathlib import Path

import torch

from bench._common import RESULTS, log, machine, md_table, median, write_csv  # noqa: E402

T0 = 0.5
PROMPT = "a red house in a field"


class NetworkClock:
    """Process CPU seconds spent inside the given network modules (forward pre/post hooks; nested calls
    count once). Both sides of a comparison make the same calls on the same modules, so what is left of a
    run — its CPU time minus this — is the code each side runs *outside* the networks: the overhead."""

    def __init__(self, modules):
        self.seconds, self._depth, self._t = 0.0, 0, 0.0
        self.calls: list[tuple] = []  # (module index, shape, dtype, strides) of each call's first tensor input
        self._hooks = []
        for k, m in enumerate(modules):
            self._hooks.append(m.register_forward_pre_hook(lambda mod, args, kwargs, k=k: self._enter(k, args, kwargs),
                                                           with_kwargs=True))
            self._hooks.append(m.register_forward_hook(self._leave))

    def _enter(self, k, args, kwargs):
        x = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        self.calls.append((k, None if x is None else (tuple(x.shape), str(x.dtype), x.stride())))
        if self._depth == 0:
            self._t = time.process_time()
        self._depth += 1

    def _leave(self, *_):
        self._depth -= 1
        if self._depth == 0:
            self.seconds += time.process_time() - self._t


def timed(fn, *a, clock: NetworkClock | None = None):
    inside = clock.seconds if clock else 0.0
    if clock:
        clock.calls = []
    w, c = time.perf_counter(), time.process_time()
    fn(*a)
    w, c = time.perf_counter() - w, time.process_time() - c
    return w, c, (c - (clock.seconds - inside)) if clock else float("nan"), sorted(clock.calls, key=repr) if clock else None


def submodules(owner, *names) -> list:
    """Those of ``owner``'s attributes ``names`` that exist and are modules."""
    return [m for m in (getattr(owner, n, None) for n in names) if isinstance(m, torch.nn.Module)]


def vae_parts(vae) -> list:
    """The VAE's networks as modules whose forward runs (``encode``/``decode`` are methods, not forward)."""
    return submodules(vae, "encoder", "decoder", "quant_conv", "post_quant_conv")


def interleave(run_a, run_b, pairs: int, make_input, label: str, networks=None) -> dict:
    """Warm up both, then ``pairs`` interleaved pairs; medians and per-pair ratios (wall and CPU).

    With ``networks`` (the modules both sides call), also the CPU time outside them per run and
    ``ratio_equal_net`` = (N + outside_A) / (N + outside_B), N = the median network time of all runs: the
    ratio with the network's run-to-run noise (±15 % next to a memory-heavy job on a shared 2-core machine)
    taken out. ``same_network_calls`` checks the premise: per run, both sides call the same modules on inputs
    of the same shapes, dtypes and strides; ``calls_A``/``calls_B`` count the first network's calls in a run."""
    clock = NetworkClock(networks) if networks else None
    run_a(make_input(10_000), 10_000), run_b(make_input(10_000), 10_000)
    wa, wb, ca, cb, rw, rc, oa, ob, net, same = [], [], [], [], [], [], [], [], [], []
    for i in range(pairs):
        x = make_input(i + 1)
        got = {}
        for name, fn in ((("A", run_a), ("B", run_b)) if i % 2 == 0 else (("B", run_b), ("A", run_a))):
            got[name] = timed(fn, x, i + 1, clock=clock)
        wa.append(got["A"][0]), wb.append(got["B"][0]), ca.append(got["A"][1]), cb.append(got["B"][1])
        oa.append(got["A"][2]), ob.append(got["B"][2])
        net += [got["A"][1] - got["A"][2], got["B"][1] - got["B"][2]]
        same.append(got["A"][3] == got["B"][3])
        rw.append(got["A"][0] / got["B"][0]), rc.append(got["A"][1] / got["B"][1])
        log(f"{label} pair {i}: A {got['A'][0]:.1f} s wall / {got['A'][1]:.1f} s cpu / {got['A'][2]:.2f} s outside, "
            f"B {got['B'][0]:.1f} / {got['B'][1]:.1f} / {got['B'][2]:.2f}")
    row = {"pairs": pairs, "A_wall_s": median(wa), "B_wall_s": median(wb), "A_cpu_s": median(ca), "B_cpu_s": median(cb),
           "ratio_wall": median(rw), "ratio_cpu": median(rc), "ratio_cpu_min": min(rc), "ratio_cpu_max": max(rc)}
    if clock:
        n = median(net)
        row.update(network_cpu_s=round(n, 2), A_network_s=round(median(x - y for x, y in zip(ca, oa)), 2),
                   B_network_s=round(median(x - y for x, y in zip(cb, ob)), 2), A_outside_s=round(median(oa), 3), B_outside_s=round(median(ob), 3),
                   ratio_equal_net=round((n + median(oa)) / (n + median(ob)), 4),
                   same_network_calls=all(same),  # the same modules called on the same shapes, dtypes and strides
                   calls_A=sum(1 for k, _ in got["A"][3] if k == 0), calls_B=sum(1 for k, _ in got["B"][3] if k == 0))
    return row


def guide(seed: int, size: int = 512) -> torch.Tensor:
    from bench.overhead_diffusers import image

    return image(size, seed)


def latent_runs(sp, ref, steps: int, cfg: float):
    """The loop without the VAE on both sides: prompt encoding + N UNet calls from a given latent.
    A: the pipeline's own pieces (encode_prompt, make_denoiser, the engine's sdedit, ddpm);
    B: StableDiffusionImg2ImgPipeline with a 4-channel latent as ``image`` (used as is) and output_type latent."""
    from sdedit_engine.core.sdedit import sdedit

    prompt, negative = "a red house in a field", "blurry"

    @torch.no_grad()
    def run_a(lat, seed):
        cond = sp.encode_prompt(prompt, negative, 1, cfg, 8 * lat.shape[-2], 8 * lat.shape[-1])
        return sdedit(sp.make_denoiser(cfg), lat, t0=T0, steps=steps, sampler="ddpm", seed=seed,
                      extra_args=cond.as_extra_args())

    @torch.no_grad()
    def run_b(lat, seed):
        return ref(prompt, image=lat, strength=T0, num_inference_steps=2 * steps, guidance_scale=cfg,
                   negative_prompt=negative, generator=torch.Generator().manual_seed(seed), output_type="latent").images

    return run_a, run_b


def part_diffusers(steps: int, pairs: int, cfg: float, size: int, latent: bool = False) -> dict:
    from bench.fullsize_models import build
    from bench.overhead_diffusers import img2img_reference, make_runs
    from sdedit_engine.pipelines.pipeline import SDEditPipeline

    sp = SDEditPipeline(build("sd15"))
    ref = img2img_reference(sp)
    if latent:
        run_a, run_b = latent_runs(sp, ref, steps, cfg)
        make = lambda k: torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(k))  # noqa: E731
    else:
        run_a, run_b = make_runs(sp, ref, steps, cfg)
        make = lambda k: guide(k, size)  # noqa: E731
    row = interleave(run_a, run_b, pairs, make, "diffusers", networks=[sp.unet, *vae_parts(sp.vae), sp.pipe.text_encoder])
    what = "loop (no VAE): SDEdit engine + pipeline denoiser / StableDiffusionImg2ImgPipeline(latent in, latent out)" \
        if latent else "SDEditPipeline / StableDiffusionImg2ImgPipeline"
    return {"compare": what, "size": size, "steps": steps, "unet_calls": steps, "cfg": cfg, **row}


def ldm_checkpoint(path: Path) -> Path:
    """The random full-size SD1.5 as one LDM-format fp16 .safetensors file (built once)."""
    if path.is_file():
        return path
    from safetensors.torch import save_file

    from bench.fullsize_models import build
    from tests.fixtures.tiny_diffusers import _unet_to_ldm, _vae_to_ldm

    pipe = build("sd15")
    sd = _unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config)
    sd.update(_vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config))
    te = {k if k.startswith("text_model.") else "text_model." + k: v for k, v in pipe.text_encoder.state_dict().items()}
    sd.update({"cond_stage_model.transformer." + k: v for k, v in te.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().to(torch.float16).contiguous() for k, v in sd.items()}, str(tmp))
    os.replace(tmp, path)
    del pipe, sd
    gc.collect()
    return path


def part_comfy(steps: int, pairs: int, cfg: float, size: int, ckpt: Path, comfy_dir=None) -> dict:
    from tests.comfy import harness

    harness.add_comfyui_to_sys_path(comfy_dir)
    harness.import_pack()
    import comfy.sd
    from comfyui_sdedit.nodes import sdedit_nodes

    import nodes as comfy_nodes

    model, clip, vae = comfy.sd.load_checkpoint_guess_config(str(ckpt), output_vae=True, output_clip=True)[:3]
    pos = clip.encode_from_tokens_scheduled(clip.tokenize(PROMPT))
    neg = clip.encode_from_tokens_scheduled(clip.tokenize("blurry"))

    def run_a(img, seed):
        return sdedit_nodes.SDEdit.execute(model, pos, neg, vae, img, t0=T0, steps=steps, cfg=cfg, sampler="ddpm",
                                           repeats=1, seed=seed, mask_grow=0, mask_feather=0.0)

    def run_b(img, seed):
        lat = comfy_nodes.VAEEncode().encode(vae, img)[0]
        out = comfy_nodes.common_ksampler(model, seed, steps, cfg, "ddpm", "simple", pos, neg, lat, denoise=T0)[0]
        return comfy_nodes.VAEDecode().decode(vae, out)[0]

    nets = [model.model.diffusion_model, *vae_parts(vae.first_stage_model)]
    row = interleave(run_a, run_b, pairs, lambda k: guide(k, size).permute(0, 2, 3, 1).contiguous(), "comfy", networks=nets)
    return {"compare": "SDEdit node / VAEEncode+KSampler+VAEDecode", "size": size, "steps": steps,
            "unet_calls": steps, "cfg": cfg, **row}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("diffusers", "comfy"), required=True)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--cfg", type=float, default=1.0, help="1 = no CFG (one UNet batch of 1 per call)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--ckpt", default=None, help="LDM checkpoint for --part comfy (default: built and cached)")
    ap.add_argument("--comfy-dir", default=None)
    ap.add_argument("--latent", action="store_true", help="diffusers part without the VAE on both sides")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    log(machine())
    if args.part == "diffusers":
        row = part_diffusers(args.steps, args.pairs, args.cfg, args.size, args.latent)
    else:
        from tests.fixtures.tiny_diffusers import cache_root

        ckpt = Path(args.ckpt) if args.ckpt else ldm_checkpoint(cache_root().parent / "fullsize" / "sd15-random-fp16.safetensors")
        row = part_comfy(args.steps, args.pairs, args.cfg, args.size, ckpt, args.comfy_dir)
    name = f"fullsize_sd15_{args.part}{'_latent' if args.latent else ''}"
    out = Path(args.out)
    write_csv(out / f"{name}.csv", [row])
    cmd = "nice -n 10 .venv/bin/python bench/fullsize_sd15.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / f"{name}.md").write_text(
        f"# Full-size SD1.5 (random weights), {row['compare']}\n\nMachine: {machine()}\n\nCommand: `{cmd}`\n\n"
        f"512² guide, ddpm, t0 = denoise = strength = {T0}, {args.steps} UNet calls each side, cfg {args.cfg}; "
        "A = ours, B = the reference; ratios are medians of per-pair A/B ratios (wall, and process CPU time with "
        "one thread).\n\n" + md_table([row]) + "\n")
    print(md_table([row]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
