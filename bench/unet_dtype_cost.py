"""Per-call overhead found in the diffusers backend: `make_model_fn` (sdedit_engine/text.py) reads `unet.dtype`
inside every model call; diffusers' `ModelMixin.dtype` → `get_parameter_dtype` walks every submodule in Python
(looking for layerwise-casting hooks) before returning the first parameter's dtype. This measures that walk on
the tiny test UNet and on an SD1.5-size UNet (built on the meta device: no weights, no memory), against a
cached dtype, and the share of one tiny-UNet call (CFG batch 2, 64² image) it takes.

    .venv/bin/python bench/unet_dtype_cost.py
"""

from __future__ import annotations

import os  # noqa: F401
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))
import sys  # noqa: E402
import timeit  # noqa: E402

import torch  # noqa: E402

from bench._common import RESULTS, machine, md_table, median, write_csv  # noqa: E402


def per_access_ms(fn, number):
    return median([timeit.timeit(fn, number=number) / number * 1e3 for _ in range(5)])


def main() -> int:
    from diffusers import UNet2DConditionModel

    from sdedit_engine.pipelines.pipeline import SDEditPipeline
    from tests.fixtures.tiny_diffusers import tiny_sd_path

    sp = SDEditPipeline.from_pretrained(tiny_sd_path())
    with torch.device("meta"):
        sd15 = UNet2DConditionModel(cross_attention_dim=768)  # diffusers' defaults = SD1.5's UNet layout
    den = sp.make_denoiser(4.0)
    cond = sp.encode_prompt("a cat", "", 1, 4.0, 64, 64).as_extra_args()
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        den(x, torch.tensor([1.0]), **cond)
        call_ms = per_access_ms(lambda: den(x, torch.tensor([1.0]), **cond), 5)
    rows = []
    for name, u in (("tiny test UNet (32/64 ch)", sp.unet), ("SD1.5-size UNet (meta)", sd15)):
        rows.append({"unet": name, "modules": sum(1 for _ in u.modules()),
                     "unet.dtype_ms": per_access_ms(lambda u=u: u.dtype, 20),
                     "next(parameters()).dtype_ms": per_access_ms(lambda u=u: next(u.parameters()).dtype, 200)})
    rows[0]["share_of_one_model_call"] = rows[0]["unet.dtype_ms"] / call_ms
    rows[1]["share_of_one_model_call"] = "(see text)"
    out = RESULTS
    write_csv(out / "unet_dtype_cost.csv", rows)
    body = (f"One tiny-UNet denoiser call (CFG, 64² image): {call_ms:.1f} ms.\n\n" + md_table(rows) + "\n")
    (out / "unet_dtype_cost.md").write_text(f"# `unet.dtype` per model call\n\nMachine: {machine()}\n\n"
                                            f"Command: `.venv/bin/python bench/unet_dtype_cost.py`\n\n{body}")
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
