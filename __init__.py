"""ComfyUI entry point of comfyui-sdedit (V3 schema).

ComfyUI imports this file from ``custom_nodes/<pack>/``. The nodes live in ``nodes/`` and are thin
front ends over the torch-only engine in ``sdedit_engine/``.
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    """Return the pack's ``ComfyExtension`` (imported lazily so the engine never needs ComfyUI)."""
    from .nodes import SDEditExtension

    return SDEditExtension()
