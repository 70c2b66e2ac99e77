"""ComfyUI nodes of comfyui-sdedit: thin V3-schema front ends over ``sdedit_engine``."""

from comfy_api.v0_0_2 import ComfyExtension, io


class SDEditExtension(ComfyExtension):
    """Registers the pack's nodes with ComfyUI."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return []
