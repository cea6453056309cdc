"""Node classes, one module per family; `SleightExtension` lists them for ComfyUI's V3 loader."""
from ._compat import ComfyExtension
from .guidance import SleightAPG
from .utils import SleightInspectAttention

NODES = [SleightAPG, SleightInspectAttention]


class SleightExtension(ComfyExtension):
    async def get_node_list(self):
        return list(NODES)
