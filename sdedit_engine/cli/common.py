"""What every ``sdedit`` subcommand shares: the error type, argument types, the model and guidance
arguments, and loading the diffusers pipeline.

Nothing heavy is imported at module level (no torch, diffusers or PIL): ``sdedit --help`` and argument
errors stay fast, and each command imports what it needs when it runs. Argument types only parse
text; checks that need the engine (e.g. the step bound of :func:`~sdedit_engine.core.schedules.check_steps`)
import it when a value is parsed, which only happens on the way to running a command.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from pathlib import Path

EXIT_ERROR, EXIT_USAGE = 1, 2
T0_HELP = "noise level in (0, 1]: larger = more realism, less faithfulness (paper: 0.3-0.6; default 0.5)"
DTYPES = ("auto", "float32", "float16", "bfloat16")


class CLIError(ValueError):
    """A user error detected by the CLI itself."""


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one ``sdedit: error:`` line (no usage dump)."""

    def error(self, message):  # noqa: D401 - argparse API
        sys.stderr.write(f"sdedit: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(EXIT_USAGE)


# --------------------------------------------------------------------------- argument types
def t0_arg(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"t0 must be a number in (0, 1], got {text!r}") from None
    if not (0.0 < v <= 1.0) or not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"t0 must be in (0, 1] (0 = keep the guide, 1 = pure noise), got {text}")
    return v


def t0_list_arg(text: str) -> list[float]:
    vals = [t0_arg(p.strip()) for p in text.split(",") if p.strip()]
    if not vals:
        raise argparse.ArgumentTypeError("--t0 needs at least one value, e.g. 0.3,0.4,0.5")
    return vals


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def steps_arg(text: str) -> int:
    """A step count, bounded like every other entry point (``core.schedules.check_steps``)."""
    from ..core.schedules import check_steps

    try:
        return check_steps(positive_int(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def crop_resolution_arg(text: str) -> int:
    """``--crop-resolution``, checked by the one crop rule every front end uses (``core.framing.Crop``)."""
    from ..core.framing import Crop

    try:
        value = int(text)
    except ValueError:
        value = text  # Crop's message names what is allowed
    try:
        return Crop(0, value).resolution
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def number(lo: float | None = None, hi: float | None = None, what: str = "value", open_lo: bool = False):
    """A finite float in [lo, hi] (or (lo, hi] with ``open_lo``)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        if not math.isfinite(v) or (lo is not None and (v <= lo if open_lo else v < lo)) or (hi is not None and v > hi):
            rng = f"{'(' if open_lo else '['}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
            raise argparse.ArgumentTypeError(f"{what} must be in {rng}, got {text}")
        return v

    return parse


def xy_arg(text: str) -> tuple[int, int]:
    try:
        x, y = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--at must be X,Y in pixels, e.g. 32,48; got {text!r}") from None
    return x, y


# --------------------------------------------------------------------------- shared argument groups
FAMILY_GUIDANCE = "the model family's: 7.5 SD/SDXL CFG, 7.0 SD3 CFG, 3.5 FLUX.1-dev guidance embedding, schnell none"


def add_guidance_arg(g, default: float | None,
                     help: str = "guidance: classifier-free guidance scale (1 = off) on SD/SDXL/SD3, the guidance "
                                 "embedding on FLUX.1-dev, ignored by schnell") -> None:
    """``--guidance-scale`` (aliases ``--cfg``, ``--guidance``), checked once: a finite number >= 0. ``default``
    None = the loaded model family's default (filled in by :func:`load_pipeline`)."""
    shown = FAMILY_GUIDANCE if default is None else default
    g.add_argument("--guidance-scale", "--cfg", "--guidance", dest="guidance_scale", default=default,
                   type=number(0, what="--guidance-scale"), help=f"{help} (default {shown})")


def add_tiling_args(g) -> None:
    """--vae-tiling and --unet-tiling (read by :func:`load_pipeline`)."""
    g.add_argument("--vae-tiling", action="store_true", help="tile the VAE (large images, bounded memory)")
    g.add_argument("--unet-tiling", type=int, nargs="?", const=0, default=None, metavar="PX",
                   help="denoise in overlapping tiles of PX pixels (default: the model's native size) for images "
                        "far above it; memory follows the tile")


def add_model_args(p: argparse.ArgumentParser, *, controlnet: bool = True) -> argparse._ArgumentGroup:
    """The one "model" argument group every model-backed command has (read by :func:`load_pipeline`):
    --model, --config, --allow-download, --device, --dtype, [--controlnet, --control-image,
    --control-scale], --lora, --lora-scale, --vae-tiling, --unet-tiling. Returns the group."""
    g = p.add_argument_group("model")
    g.add_argument("--model", default="builtin",
                   help="diffusers folder, cached hub id, single-file .safetensors, or 'builtin' (default: the shipped "
                        "64x64 landscape model, unconditional)")
    g.add_argument("--config", help="diffusers folder/id describing a single-file checkpoint (needed offline)")
    g.add_argument("--allow-download", action="store_true", help="allow fetching models from the Hugging Face hub")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps … (auto: the first available)")
    g.add_argument("--dtype", default="auto", choices=DTYPES, help="auto: float16 on CUDA, float32 elsewhere")
    if controlnet:
        g.add_argument("--controlnet", help="ControlNet folder (needs --control-image)")
        g.add_argument("--control-image", help="control image for the ControlNet (resized to the guide)")
        g.add_argument("--control-scale", type=number(what="--control-scale"), default=1.0)
    else:
        p.set_defaults(controlnet=None, control_image=None)
    g.add_argument("--t0-scale", default="model", choices=("model", "sd15_snr"),
                   help="flow models (SD3, Flux): t0 as the model's own time (model, = ComfyUI denoise) or as the "
                        "noise level SD1.5 has at that t0 (sd15_snr: same t0, same destruction on every family)")
    g.add_argument("--lora", help="LoRA .safetensors file or folder")
    g.add_argument("--lora-scale", type=number(what="--lora-scale"), default=1.0)
    add_tiling_args(g)
    return g


# --------------------------------------------------------------------------- running
def quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore")
    try:
        import diffusers.utils.logging as dl
        import transformers.utils.logging as tl

        dl.set_verbosity_error()
        dl.disable_progress_bar()
        tl.set_verbosity_error()
        tl.disable_progress_bar()
    except Exception:  # pragma: no cover - logging tweaks are best effort
        pass


def resolve_device(name: str, default: str | None = None):
    """``--device`` as a ``torch.device``, or a :class:`CLIError` naming the argument when the name is
    not a device or the machine does not have it."""
    import torch

    if name == "auto":
        name = default or ("cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available()
                           else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise CLIError(f"--device: {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CLIError(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__}); "
                           "use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise CLIError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                           f"(cuda:0 … cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise CLIError(f"--device {name}: MPS is not available on this machine; use --device cpu or auto")
    elif dev.type not in ("cpu", "cuda", "mps"):
        avail = getattr(getattr(torch, dev.type, None), "is_available", None)
        if avail is None or not avail():
            raise CLIError(f"--device {name}: {dev.type} is not available on this machine; use --device cpu or auto")
    return dev


def device_dtype(args, device: str | None = None):
    import torch

    dev = resolve_device(args.device, device)
    dt = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(args.dtype)
    if dt is None:
        dt = torch.float16 if dev.type == "cuda" else torch.float32
    return dev, dt


def load_pipeline(args, device: str | None = None):
    """The :class:`~sdedit_engine.pipelines.pipeline.SDEditPipeline` the model arguments describe."""
    if args.control_image and not args.controlnet:
        raise CLIError("--control-image needs --controlnet")
    if args.controlnet and not args.control_image:
        raise CLIError("--controlnet needs --control-image")
    dev, dt = device_dtype(args, device)
    quiet_libraries()
    from ..pipelines.pipeline import SDEditPipeline

    if args.model == "builtin":
        from ..builtin.model import load_builtin

        if args.controlnet:
            raise CLIError("--controlnet: the built-in model takes no ControlNet")
        pipe = load_builtin(device=dev)
    else:
        pipe = SDEditPipeline.load(args.model, config=args.config, controlnet=args.controlnet,
                                   allow_download=args.allow_download, torch_dtype=dt, device=dev)
    pipe.t0_scale = getattr(args, "t0_scale", "model")
    if getattr(args, "guidance_scale", 0) is None:  # the family's default (CFG, or Flux's guidance embedding)
        args.guidance_scale = pipe.default_guidance_scale
    if args.lora:
        pipe.load_lora_weights(args.lora, scale=args.lora_scale)
    if args.vae_tiling:
        pipe.enable_vae_tiling()
    if args.unet_tiling is not None:
        try:
            pipe.enable_unet_tiling(tile_size=args.unet_tiling or None)
        except ValueError as e:
            raise CLIError(f"--unet-tiling: {e}") from None
    return pipe


def check_writable_image(path: str) -> None:
    from PIL import Image

    ext = Path(path).suffix.lower()
    if ext not in Image.registered_extensions():
        raise CLIError(f"cannot write {path}: unknown image extension {ext or '(none)'!r}; use .png or .jpg")


def info(args, msg: str) -> None:
    if not getattr(args, "quiet", False):
        print(msg, file=sys.stderr)
