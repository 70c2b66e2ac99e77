"""``sdedit info --model PATH``: the model's family, prediction type, schedule and shift, and where SDEdit starts
for a few t0 under each t0 scale — read from the configs only (no weights are loaded).

    sdedit info --model path/to/FLUX.1-dev --width 1024 --height 1024
    sdedit info --model flux1-dev.safetensors --config path/to/FLUX.1-dev
"""

from __future__ import annotations


def add_commands(sub) -> None:
    from .common import positive_int, t0_list_arg

    p = sub.add_parser("info", help="model family, prediction, schedule/shift and sigma(t0) for a few t0",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="diffusers folder or single-file .safetensors")
    p.add_argument("--config", help="diffusers folder describing a single-file checkpoint")
    p.add_argument("--t0", type=t0_list_arg, default=[0.2, 0.4, 0.5, 0.6, 0.8, 1.0], help="t0 values (comma list)")
    p.add_argument("--width", type=positive_int, default=1024, help="image width in pixels (Flux's shift depends on it)")
    p.add_argument("--height", type=positive_int, default=1024, help="image height in pixels")
    p.set_defaults(func=cmd_info)


def cmd_info(args) -> int:
    from ..pipelines.model_info import describe_model, format_info

    print(format_info(describe_model(args.model, config=args.config, height=args.height, width=args.width, t0s=args.t0)))
    return 0
