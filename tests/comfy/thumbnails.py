"""Template-browser thumbnails of the shipped workflows: ``workflows/<name>.jpg`` next to each
``workflows/<name>.json`` (ComfyUI serves both at ``/api/workflow_templates/<pack>/``, and the
frontend shows ``<name>.jpg`` on the workflow's tile).

Each thumbnail is a real output of its workflow: the run tests (test_workflows.py,
test_point_editor.py, test_sde_family_nodes.py) call :func:`record` with the image the workflow
produced (tiny test models, 64x64 test images) and, as an inset, its input. They write only when
``SDEDIT_WRITE_THUMBNAILS=1``; regenerate after changing a workflow with

    SDEDIT_WRITE_THUMBNAILS=1 bash scripts/test.sh tests/comfy -k "workflow or point_editor" -k pinned

A new workflow needs a run test that calls :func:`record` (test_workflows checks every file has one).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
SIZE = 256  # px, square: the template browser crops tiles to squares
INSET = 96  # px, the input in the bottom-left corner
MAX_BYTES = 40_000
QUALITY = 85


def thumbnail(result: np.ndarray, source: np.ndarray | None = None) -> Image.Image:
    """``result`` (H, W, 3 uint8) fitted into a SIZE² square (nearest: the test images are 64 px), with
    ``source`` as a framed inset in the bottom-left corner."""
    out = Image.new("RGB", (SIZE, SIZE), (24, 24, 24))
    img = Image.fromarray(np.asarray(result, np.uint8)[..., :3])
    scale = SIZE / max(img.size)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.NEAREST)
    out.paste(img, ((SIZE - img.width) // 2, (SIZE - img.height) // 2))
    if source is not None:
        src = Image.fromarray(np.asarray(source, np.uint8)[..., :3])
        s = (INSET - 4) / max(src.size)
        src = src.resize((max(1, round(src.width * s)), max(1, round(src.height * s))), Image.NEAREST)
        frame = Image.new("RGB", (src.width + 4, src.height + 4), (255, 255, 255))
        frame.paste(src, (2, 2))
        out.paste(frame, (6, SIZE - frame.height - 6))
    return out


def record(name: str, result: np.ndarray, source: np.ndarray | None = None) -> Path | None:
    """Write ``workflows/<name>.jpg`` from a run of workflow ``name`` when SDEDIT_WRITE_THUMBNAILS=1."""
    if os.environ.get("SDEDIT_WRITE_THUMBNAILS", "") in ("", "0"):
        return None
    if not (WORKFLOWS / f"{name}.json").is_file():
        raise ValueError(f"no workflow {name}.json to record a thumbnail for")
    path = WORKFLOWS / f"{name}.jpg"
    thumbnail(result, source).save(path, "JPEG", quality=QUALITY, optimize=True, progressive=False)
    return path
