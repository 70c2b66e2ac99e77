"""ComfyUI nodes of comfyui-sdedit: thin V3-schema front ends over ``sdedit_engine``."""

from comfy_api.v0_0_2 import ComfyExtension, io

from .custom_sampling import SDEditSampler, SDEditSigmas
from .guides import SDEditCompositeGuide, SDEditStrokeGuide
from .sde_family import SDEditCycleInpaint, SDEditDrag, SDEditImageToImage
from .sdedit_nodes import SDEdit, SDEditT0Sweep

NODES: list[type[io.ComfyNode]] = [
    SDEdit,
    SDEditT0Sweep,
    SDEditSigmas,
    SDEditSampler,
    SDEditStrokeGuide,
    SDEditCompositeGuide,
    SDEditDrag,
    SDEditCycleInpaint,
    SDEditImageToImage,
]


class SDEditExtension(ComfyExtension):
    """Registers the pack's nodes with ComfyUI."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
