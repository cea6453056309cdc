"""Node classes, one module per family; `SleightExtension` lists them for ComfyUI's V3 loader."""
from ._compat import ComfyExtension
from .designedit import NODES as DESIGNEDIT_NODES
from .guidance import SleightAPG
from .prompt import SleightR2FPrompt, SleightRareToFrequent
from .routing import SleightFindTextLayers, SleightPromptRoute
from .utils import SleightInspectAttention

NODES = [SleightAPG, SleightPromptRoute, SleightFindTextLayers, SleightRareToFrequent, SleightR2FPrompt,
         SleightInspectAttention, *DESIGNEDIT_NODES]


class SleightExtension(ComfyExtension):
    async def get_node_list(self):
        return list(NODES)
