"""Every float input of every node is checked in one place (nodes/inputs.SDEditNode): NaN, which passes
ComfyUI's min/max validation (``NaN < min`` is false), and linked values outside the bounds (which
ComfyUI does not range-check) are an error naming the input, in a real server that keeps serving.

The harness sends prompts with Python's ``json.dumps``, which writes ``NaN``; ComfyUI's
``request.json()`` (Python's ``json.loads``) reads it back as ``float('nan')``, as a hand-edited or
scripted API prompt would."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.comfy import harness
from tests.comfy import test_sde_family_nodes as family
from tests.comfy import test_sdedit_nodes as sdedit

NAN = float("nan")


def _sdedit(server, prefix, **inputs):
    p = sdedit.base_prompt(server, seed=50, prefix=prefix, **inputs)
    return sdedit.add_mask(server, p) if "mask_feather" in inputs else p


def _stroke_guide(server, prefix, threshold):
    base = np.full((family.H, family.W, 3), 128, np.uint8)
    strokes = base.copy()
    strokes[20:30, 10:50] = (250, 250, 0)
    p = sdedit.base_prompt(server, guide=base, seed=51, prefix=prefix)
    p["base"] = {"class_type": "LoadImage", "inputs": {"image": server.upload_image(base)}}
    p["strokes"] = {"class_type": "LoadImage", "inputs": {"image": server.upload_image(strokes)}}
    p["sg"] = {"class_type": "SDEditStrokeGuide",
               "inputs": {"base": ["base", 0], "strokes": ["strokes", 0], "grow": 2, "threshold": threshold}}
    p["sdedit"]["inputs"].update({"guide": ["sg", 0], "mask": ["sg", 1]})
    return p


def _linked_cfg(server, prefix):
    """cfg fed by a PrimitiveFloat: ComfyUI checks no bounds on linked values."""
    p = sdedit.base_prompt(server, seed=52, prefix=prefix)
    p["cfg_value"] = {"class_type": "PrimitiveFloat", "inputs": {"value": 1e9}}
    p["sdedit"]["inputs"]["cfg"] = ["cfg_value", 0]
    return p


CASES = [
    ("SDEdit cfg", lambda s, px: _sdedit(s, px, cfg=NAN), "cfg: must be a finite number in [0, 100], got nan"),
    ("SDEdit mask_feather", lambda s, px: _sdedit(s, px, mask_feather=NAN), "mask_feather: must be a finite number in [0, 128], got nan"),
    ("SDEdit linked cfg out of range", _linked_cfg, "cfg: must be a finite number in [0, 100], got 1e+09"),
    ("SDE Inpaint cfg", lambda s, px: family.inpaint_prompt(s, "sde", prefix=px, cfg=NAN), "cfg: must be a finite number in [0, 100], got nan"),
    ("SDE Inpaint mask_feather", lambda s, px: family.inpaint_prompt(s, "sde", prefix=px, mask_feather=NAN), "mask_feather: must be a finite number"),
    ("DiffEdit cfg", lambda s, px: family.i2i_prompt(s, "sde", prefix=px, cfg=NAN), "cfg: must be a finite number in [0, 100], got nan"),
    ("DiffEdit mask_threshold",
     lambda s, px: family.i2i_prompt(s, "sde", prefix=px, with_mask=False, mask_threshold=NAN),
     "mask_threshold: must be a finite number in [0, 1], got nan"),
    ("DiffEdit t0", lambda s, px: family.i2i_prompt(s, "sde", prefix=px, t0=NAN), "t0: must be a finite number"),
    ("Drag step_size", lambda s, px: family.drag_prompt(s, prefix=px, step_size=NAN), "step_size: must be a finite number in [0.5, 64], got nan"),
    ("Drag cfg", lambda s, px: family.drag_prompt(s, prefix=px, cfg=NAN), "cfg: must be a finite number in [1, 30], got nan"),
    ("Drag alpha", lambda s, px: family.drag_prompt(s, prefix=px, alpha=NAN), "alpha: must be a finite number in [0.5, 2], got nan"),
    ("Drag beta", lambda s, px: family.drag_prompt(s, prefix=px, beta=NAN), "beta: must be a finite number in [0, 1], got nan"),
    ("StrokeGuide threshold", lambda s, px: _stroke_guide(s, px, NAN), "threshold: must be a finite number in [0, 1], got nan"),
]


@pytest.mark.parametrize("label, make, message", CASES, ids=[c[0] for c in CASES])
def test_nan_or_unbounded_float_is_an_error_naming_the_input_and_the_server_keeps_serving(comfy_server, label, make, message):
    prefix = "nan_" + label.replace(" ", "_")
    with pytest.raises(harness.ComfyExecutionError) as err:
        comfy_server.run(make(comfy_server, prefix))
    assert message in str(err.value), str(err.value)[-600:]
    assert comfy_server.alive
    ok = comfy_server.run(sdedit.base_prompt(comfy_server, seed=53, prefix="ok_" + prefix))
    assert sdedit.image_of(ok).shape == (sdedit.H, sdedit.W, 3)


def test_every_float_input_of_every_node_is_checked_before_the_node_runs(comfy_inprocess):
    """Generic over NODES (nodes added later are covered): NaN in any FLOAT input raises a ValueError
    that names it, before the node touches its other (here: absent) inputs."""
    harness.import_pack()
    from comfy_api.v0_0_2 import io
    from comfyui_sdedit.nodes import NODES
    from comfyui_sdedit.nodes.inputs import SDEditNode

    checked = 0
    for node in NODES:
        assert issubclass(node, SDEditNode), f"{node.__name__} must derive from nodes.inputs.SDEditNode"
        schema = node.define_schema()
        for inp in schema.inputs:
            if not isinstance(inp, io.Float.Input):
                continue
            for bad in (NAN, math.inf, -math.inf):
                kwargs = {i.id: None for i in schema.inputs}
                kwargs[inp.id] = bad
                with pytest.raises(ValueError, match=f"^{inp.id}: must be a finite number"):
                    node.execute(**kwargs)
                checked += 1
    assert checked >= 3 * 13  # the 13 float inputs of the nine nodes of today, at least
