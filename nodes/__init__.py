"""Node classes, one module per family of tricks; each module exports its NODES, gathered here in menu order."""
from . import designedit, guidance, inpaint, insertion, inversion, prompt, routing, search, utils
from ._compat import ComfyExtension

NODES = [*guidance.NODES, *routing.NODES, *prompt.NODES, *utils.NODES, *inpaint.NODES, *inversion.NODES,
         *insertion.NODES, *search.NODES, *designedit.NODES]


class SleightExtension(ComfyExtension):
    async def get_node_list(self):
        return list(NODES)
