"""The ``sdedit`` command line: SDEdit with diffusers models, for scripts, batch jobs and research.

    sdedit edit GUIDE [--mask M] --prompt … --t0 0.5 --steps 20 --sampler ddpm --model PATH -o OUT
    sdedit composite BASE PATCH --at X,Y [--patch-mask M] --model PATH -o OUT
    sdedit sweep GUIDE --t0 0.2,0.3,0.4 --model PATH -o OUTDIR     (grid.png, l2_vs_t0.png, sweep.csv)
    sdedit strokes PHOTO -o GUIDE                                    (the paper's stroke simulation)
    sdedit batch DIR --model PATH -o OUTDIR
    sdedit drag IMAGE --points '[{"source":[x,y],"target":[x,y]}]' [--mask M] --model PATH -o OUT
    sdedit dragbench DIR --model PATH -o OUTDIR                      (DragBench layout; contact sheets)
    sdedit inpaint IMAGE --mask M --mode sde --model PATH -o OUT      (SDE inpainting; --mode ode: DDIM)
    sdedit diffedit IMAGE --source-prompt … --target-prompt … --model PATH -o OUT   (DiffEdit-SDE)
    sdedit info --model PATH                                         (family, shift, where each t0 starts)
    accelerate launch --num_processes N [--multi_gpu] -m sdedit_engine.cli batch DIR --model PATH -o OUTDIR
        (N processes split the folder: no duplicates, no gaps; on a CPU-only machine pass --multi_gpu
         so accelerate starts N processes, which then use the CPU)

Bad input (missing model, unreadable image, mismatched sizes, bad t0, pickle checkpoint) prints one
``sdedit: error: …`` line on stderr and exits non-zero; set ``SDEDIT_DEBUG=1`` for a traceback.

The package: :mod:`.common` (error type, argument types, the model and guidance arguments, pipeline
loading), one module per command group — :mod:`.edit` (edit, composite, sweep, strokes, batch),
:mod:`.drag` (drag, dragbench, inpaint, diffedit), :mod:`.demo` — plus :mod:`.sweep` and
:mod:`.dragbench` (their file formats). Building the parser imports none of torch, PIL or diffusers.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import demo, drag, edit, info
from .common import EXIT_ERROR, EXIT_USAGE, CLIError, Parser, load_pipeline  # noqa: F401  (public API)

#: command modules in help order; each has ``add_commands(subparsers)``
COMMAND_MODULES = (edit, drag, info, demo)


def build_parser() -> Parser:
    examples = __doc__.split("\n\n")[1]
    p = Parser(prog="sdedit", formatter_class=argparse.RawDescriptionHelpFormatter,
               description="SDEdit (Meng et al., ICLR 2022) image editing with diffusers models (SD 1.x/2.x, SDXL, SD3/3.5, FLUX.1).",
               epilog="examples:\n" + examples + "\n\nt0 is the paper's noise level: sigma of timestep round(t0*1000)-1.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in COMMAND_MODULES:
        module.add_commands(sub)
    return p


def _known_error(e: BaseException) -> bool:
    """Errors that are the user's input, printed without the "internal error" prefix."""
    if isinstance(e, (CLIError, ValueError, FileNotFoundError, PermissionError)):
        return True
    from ..io.imaging import ImageError
    from ..pipelines.loading import ModelLoadError

    return isinstance(e, (ImageError, ModelLoadError))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    debug = os.environ.get("SDEDIT_DEBUG", "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("sdedit: interrupted\n")
        return 130
    except Exception as e:  # every failure is one line; tracebacks only with SDEDIT_DEBUG=1
        if debug:
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        prefix = "" if _known_error(e) else f"internal error ({type(e).__name__}, SDEDIT_DEBUG=1 for details): "
        sys.stderr.write(f"sdedit: error: {prefix}{msg}\n")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
