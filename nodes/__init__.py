"""Node classes, one module per family; `SleightExtension` lists them for ComfyUI's V3 loader."""
from ._compat import ComfyExtension
from .designedit import NODES as DESIGNEDIT_NODES
from .guidance import SleightAPG
from .inpaint import SleightPAIntA, SleightRASG
from .insertion import SleightAddIt, SleightAddItMask
from .inversion import SleightInvert, SleightSourceTrajectory
from .prompt import SleightR2FPrompt, SleightRareToFrequent
from .routing import SleightFindTextLayers, SleightPromptRoute
from .search import SleightNoiseSearch
from .utils import SleightInspectAttention

NODES = [SleightAPG, SleightPromptRoute, SleightFindTextLayers, SleightRareToFrequent, SleightR2FPrompt,
         SleightInspectAttention, SleightPAIntA, SleightRASG, SleightInvert, SleightSourceTrajectory, SleightAddIt,
         SleightAddItMask, SleightNoiseSearch,
         *DESIGNEDIT_NODES]


class SleightExtension(ComfyExtension):
    async def get_node_list(self):
        return list(NODES)
