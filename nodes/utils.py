"""Utility nodes (sleight/utils)."""
from ..attention_patches.core import families
from ._compat import inp, io, schema, ui
from .base import SleightNode


class SleightInspectAttention(SleightNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SleightInspectAttention",
            display_name="Sleight · Inspect attention layers",
            category="sleight/utils",
            description=(
                "Lists the model's attention layers in forward order: block id (as the Sleight routing nodes "
                "accept it), kind (self / cross / joint), heads, head size and image tokens at a resolution."
            ),
            inputs=[
                inp(io.Model, "model", tooltip="Any SD1.5, SDXL, SD3 or Flux model."),
                inp(io.Int, "width", default=1024, min=16, max=16384, step=8, tooltip="Image width in pixels, for the token counts."),
                inp(io.Int, "height", default=1024, min=16, max=16384, step=8, tooltip="Image height in pixels, for the token counts."),
            ],
            outputs=[io.String.Output(tooltip="One line per attention layer.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, width, height):
        text = families.format_layers(model, width, height)
        return io.NodeOutput(text, ui=ui.PreviewText(text))


NODES = [SleightInspectAttention]
