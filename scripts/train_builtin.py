#!/usr/bin/env python
"""Train the built-in landscape diffusion model (``sdedit_engine/builtin``) — seeded and resumable.

    OMP_NUM_THREADS=1 python scripts/train_builtin.py --out runs/builtin --stop-at 3592   # the shipped run
    python scripts/train_builtin.py --out runs/builtin --export sdedit_engine/builtin/weights   # ship EMA as fp16
    python scripts/train_builtin.py --out runs/builtin --realism sdedit_engine/builtin/weights/realism.safetensors

Objective: DDPM's ε-loss ``E‖ε̂(sqrt(ᾱ_t) z0 + sqrt(1−ᾱ_t) ε, t) − ε‖²`` with t uniform on 0..999, on
fresh procedural landscapes every step (no epochs, no overfitting: batch ``k`` is ``render_batch(B,
seed·10⁶ + k)``, so a resumed run sees exactly the batches an uninterrupted one would). AdamW, linear
warm-up then cosine decay to 10 % over ``--steps``; EMA of the weights (decay 0.999 with the usual
``(1+k)/(10+k)`` warm-up) is what gets shipped. Every ``--ckpt-every`` steps: ``ckpt.pt`` (model, EMA,
optimiser, RNG, step) and ``ema/`` (a diffusers folder one can sample from while training runs).
The shipped weights are the EMA at step 3 592 of the default 5 000-step schedule (the run had a
``--minutes 85`` wall-clock limit on the shared 2-core CPU; ``--stop-at 3592`` stops at the same step
anywhere). Loss goes to ``loss.csv`` (step, loss averaged over the logging window, wall seconds and this
process's CPU seconds — on a shared machine the CPU time is the honest cost).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sdedit_engine.builtin import spec  # noqa: E402
from sdedit_engine.builtin.domain import render_batch  # noqa: E402


def build_unet(config: dict):
    from diffusers import UNet2DModel

    return UNet2DModel(**config)


def export(ema, out_dir: Path) -> None:
    """Write the EMA weights as a diffusers folder with fp16 safetensors."""
    out_dir.mkdir(parents=True, exist_ok=True)
    half = copy.deepcopy(ema).to(torch.float16)
    half.save_pretrained(str(out_dir), safe_serialization=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="run folder (checkpoint, loss log, EMA snapshots)")
    ap.add_argument("--steps", type=int, default=5000, help="schedule length (cosine decay horizon)")
    ap.add_argument("--stop-at", type=int, default=None, help="stop (with a checkpoint) at this step, schedule unchanged")
    ap.add_argument("--minutes", type=float, default=None, help="stop (with a checkpoint) after this wall time")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ckpt-every", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--channels", type=str, default=None, help="override block_out_channels, e.g. 32,64,64")
    ap.add_argument("--export", type=Path, default=None, help="only export the run's EMA weights (fp16) to this folder")
    ap.add_argument("--realism", type=Path, default=None,
                    help="instead: train the realism classifier (sdedit_engine/builtin/realism.py) and save it here")
    ap.add_argument("--realism-steps", type=int, default=500)
    ap.add_argument("--bench", type=int, default=0, help="time this many steps and exit (no checkpoint)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    config = dict(spec.UNET_CONFIG)
    if args.channels:
        config["block_out_channels"] = tuple(int(c) for c in args.channels.split(","))
    ckpt_path = args.out / "ckpt.pt"

    if args.realism is not None:
        from sdedit_engine.builtin.realism import save_realism, train_realism

        t = time.time()
        net = train_realism(steps=args.realism_steps, seed=args.seed,
                            log=lambda k, l: print(f"realism step {k}: loss {l:.4f} ({time.time() - t:.0f} s)", flush=True))
        save_realism(net, args.realism)
        print(f"saved {args.realism} ({time.time() - t:.0f} s)")
        return 0

    if args.export is not None:
        from diffusers import UNet2DModel

        ema = UNet2DModel.from_pretrained(str(args.out / "ema"))
        export(ema, args.export)
        print(f"exported {args.out / 'ema'} -> {args.export}")
        return 0

    torch.manual_seed(args.seed)
    model = build_unet(config)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    step, elapsed0, cpu0 = 0, 0.0, 0.0
    gen = torch.Generator().manual_seed(args.seed)
    if ckpt_path.exists() and not args.bench:
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        gen.set_state(ck["gen"])
        step, elapsed0, cpu0 = ck["step"], ck.get("elapsed", 0.0), ck.get("cpu", 0.0)
        print(f"resumed at step {step} ({elapsed0 / 60:.1f} min trained)")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"UNet2DModel {config['block_out_channels']}: {n_params / 1e6:.2f} M parameters")

    acp = spec.schedule().alphas_cumprod.float()
    sqa, sq1a = acp.sqrt(), (1 - acp).sqrt()

    def lr_at(k: int) -> float:
        if k < args.warmup:
            return args.lr * (k + 1) / args.warmup
        p = min(1.0, (k - args.warmup) / max(1, args.steps - args.warmup))
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))

    def train_step(k: int) -> float:
        x, _ = render_batch(args.batch, args.seed * 1_000_000 + k)
        z0 = spec.encode(torch.from_numpy(x))
        t = torch.randint(0, spec.NUM_TIMESTEPS, (args.batch,), generator=gen)
        eps = torch.randn(z0.shape, generator=gen)
        zt = sqa[t].view(-1, 1, 1, 1) * z0 + sq1a[t].view(-1, 1, 1, 1) * eps
        for g in opt.param_groups:
            g["lr"] = lr_at(k)
        loss = torch.nn.functional.mse_loss(model(zt, t).sample, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        d = min(args.ema, (1 + k) / (10 + k))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - d)
        return loss.item()

    if args.bench:
        for k in range(args.bench):
            train_step(k)
            if k == 0:
                t1 = time.time()
        per = (time.time() - t1) / max(1, args.bench - 1)
        print(f"{per:.3f} s/step at batch {args.batch} ({per / args.batch * 1000:.1f} ms/sample)")
        return 0

    from tqdm import tqdm

    args.out.mkdir(parents=True, exist_ok=True)
    log = open(args.out / "loss.csv", "a")
    if step == 0:
        log.write("step,loss,seconds,cpu_seconds\n")
    start, cpu_start = time.time(), time.process_time()
    window: list[float] = []

    def save() -> None:
        torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                    "gen": gen.get_state(), "step": step, "elapsed": elapsed0 + time.time() - start,
                    "cpu": cpu0 + time.process_time() - cpu_start,
                    "config": config, "args": vars(args)}, str(ckpt_path) + ".tmp")
        os.replace(str(ckpt_path) + ".tmp", ckpt_path)
        ema.save_pretrained(str(args.out / "ema"), safe_serialization=True)

    bar = tqdm(total=args.steps, initial=step, desc="train", mininterval=10)
    while step < args.steps:
        window.append(train_step(step))
        step += 1
        bar.update(1)
        if step % 50 == 0:
            log.write(f"{step},{np.mean(window):.5f},{elapsed0 + time.time() - start:.0f},"
                      f"{cpu0 + time.process_time() - cpu_start:.0f}\n")
            log.flush()
            bar.set_postfix(loss=f"{np.mean(window):.4f}")
            window = []
        out_of_time = (args.minutes is not None and (elapsed0 + time.time() - start) / 60 >= args.minutes) or \
            (args.stop_at is not None and step >= args.stop_at)
        if step % args.ckpt_every == 0 or step == args.steps or out_of_time:
            save()
        if out_of_time:
            print(f"stopping at step {step} (--minutes {args.minutes} / --stop-at {args.stop_at})")
            break
    bar.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
