"""Prompt routing nodes (sleight/prompt): a second prompt into chosen layers, and finding those layers."""

import comfy.samplers

from ..attention_patches.core import families, schedule
from ..samplers import find_layers, routing
from ._compat import inp, io, schema, ui, with_options
from .base import SleightNode

LAYERS_TOOLTIP = (
    "Which attention layers receive the routed prompt. "
    "'paper text layers (auto)': the layers Staniszewski et al. (ICLR 2025) found to control rendered text, "
    "for this model's family (SDXL: output.2.1-3, the cross-attention layers 55-57 of 70; SD3: joint.10). "
    "The named presets force one paper's layers and refuse another architecture. "
    "'custom': the block ids written in custom_layers.")
CUSTOM_TOOLTIP = (
    "Used when layers is 'custom'; ignored otherwise. Block ids as Sleight · Inspect attention layers lists "
    "them, separated by commas: output.2.1 (one transformer block), output.2.1-3 (a range), output.2 (every "
    "transformer block of ComfyUI block output 2), output.*.0 or double.* (wildcards), * (all). "
    "A preset name also works here. Every item must match a layer of the model. The 'pick blocks' button lists "
    "the connected model's block ids to choose from.")


class SleightPromptRoute(SleightNode):
    WHO = "Sleight · Route prompt"

    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SleightPromptRoute",
            display_name="Sleight · Route prompt into layers",
            category="sleight/prompt",
            description=(
                "Sends a second prompt into chosen attention layers only; every other layer keeps the sampler's "
                "prompt. With the paper's text layers (Staniszewski et al., ICLR 2025) this changes the text "
                "written in the image (a sign that says \"B\") while the rest of the picture stays as prompt A "
                "made it. SD1.5 / SDXL swap the cross-attention context of the chosen transformer blocks, at no "
                "extra cost; stacks with other attention patches."
            ),
            inputs=[
                inp(io.Model, "model", tooltip="The model to patch. A patched copy is returned; the input model is unchanged."),
                inp(io.Conditioning, "conditioning",
                    tooltip="The routed prompt (B), encoded with this model's CLIP. Only its token embedding is "
                            "routed; SDXL's pooled embedding stays the sampler's. Any token length works."),
                inp(io.Combo, "layers", options=routing.LAYER_CHOICES, default=routing.AUTO, tooltip=LAYERS_TOOLTIP),
                with_options(inp(io.String, "custom_layers", default="output.2.1-3", multiline=False, tooltip=CUSTOM_TOOLTIP),
                             sleight_layers="text", sleight_layers_switch=["layers", routing.CUSTOM]),
                inp(io.Float, "start_percent", default=0.08, min=0.0, max=1.0, step=0.001,
                    tooltip="Routing starts here (ComfyUI percent of the model's time, 0 = first step). 0.08 is the "
                            "paper's step 4 of 50 (with the normal, sgm_uniform or ddim_uniform scheduler it is "
                            "exactly step 4 of 50): the first steps lay out the image from prompt A. Use 0 to route from the start."),
                inp(io.Float, "end_percent", default=1.0, min=0.0, max=1.0, step=0.001,
                    tooltip="Routing stops after this point of the schedule (1 = last step)."),
                inp(io.Combo, "rows", options=list(routing.ROWS), default="cond",
                    tooltip="Which prompt the routed one replaces: 'cond' only the positive (paper), "
                            "'cond and uncond' also the negative, so CFG does not push against B in those layers."),
            ],
            outputs=[io.Model.Output(tooltip="The model with the prompt routed; connect it to the sampler.")],
        )

    @classmethod
    def execute(cls, model, conditioning, layers, custom_layers, start_percent, end_percent, rows):
        families.require(model, "route", cls.WHO)
        window = schedule.window(cls.WHO, start_percent, end_percent)
        blocks = routing.resolve_blocks(model, layers, custom_layers, cls.WHO)
        return io.NodeOutput(routing.route(model, conditioning, blocks, window, routing.ROWS[rows], cls.WHO))


class SleightFindTextLayers(SleightNode):
    WHO = "Sleight · Find text layers"

    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SleightFindTextLayers",
            display_name="Sleight · Find text layers",
            category="sleight/prompt",
            description=(
                "Localization for any checkpoint: routes prompt B into one layer (or one block) at a time, "
                "samples with the same seed, and ranks the layers by how much the image changes compared with "
                "prompt A alone (with a mask: inside minus outside it). Outputs the ranked table, a layer spec "
                "for Sleight · Route prompt into layers, and a labelled contact sheet. Costs one sampling run per "
                "candidate, plus two."
            ),
            inputs=[
                inp(io.Model, "model", tooltip="The model to search."),
                inp(io.Conditioning, "positive", tooltip="Prompt A, e.g. A sign that says \"HELLO\"."),
                inp(io.Conditioning, "routed",
                    tooltip="Prompt B, routed into the candidate layer, e.g. A sign that says \"WORLD\". "
                            "Keep everything but the part to localise equal to A."),
                inp(io.Conditioning, "negative", tooltip="The negative prompt."),
                inp(io.Int, "seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                    tooltip="Noise seed, the same for every run (as KSampler uses it)."),
                inp(io.Int, "steps", default=20, min=1, max=10000, tooltip="Sampling steps per run."),
                inp(io.Float, "cfg", default=5.0, min=0.0, max=100.0, step=0.1, round=0.01,
                    tooltip="CFG scale (the paper: 5 for SDXL, 7 for SD3)."),
                inp(io.Combo, "sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler",
                    tooltip="Sampler, as in KSampler."),
                inp(io.Combo, "scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="normal",
                    tooltip="Scheduler, as in KSampler."),
                inp(io.Int, "width", default=1024, min=16, max=16384, step=8, tooltip="Image width in pixels."),
                inp(io.Int, "height", default=1024, min=16, max=16384, step=8, tooltip="Image height in pixels."),
                inp(io.Combo, "granularity", options=list(find_layers.GRANULARITY), default="layer",
                    tooltip="'layer': one transformer block at a time (output.2.1), as in the paper. 'block': all "
                            "transformer blocks of one ComfyUI block at once (output.2): 11 runs instead of 70 on "
                            "SDXL; search the best block again with 'layer' and search_layers. DiTs: both are per block."),
                inp(io.Int, "max_candidates", default=100, min=1, max=1000,
                    tooltip="At most this many candidates are sampled (in forward order); the table says when "
                            "candidates were left out."),
                inp(io.Int, "top_k", default=3, min=1, max=100,
                    tooltip="How many of the best candidates the layer spec output holds (the paper found 3 on SDXL, 1 on SD3)."),
                inp(io.Vae, "vae", optional=True,
                    tooltip="Optional: decode the contact sheet with it. Without it the sheet shows rough latent "
                            "previews. Ranking always uses the latents."),
                inp(io.Mask, "mask", optional=True,
                    tooltip="Optional: where B should change the image (e.g. the sign). Candidates are then ranked "
                            "by the change inside minus the change outside the mask."),
                inp(io.Float, "start_percent", default=0.08, min=0.0, max=1.0, step=0.001,
                    tooltip="Routing starts here in every run (as in Route prompt into layers; 0.08 = the paper's step 4 of 50)."),
                with_options(inp(io.String, "search_layers", default="*",
                                 tooltip="Only these layers are candidates (layer spec, e.g. output.* or output.2). * = all. "
                                         "The 'pick blocks' button lists the connected model's block ids."),
                             sleight_layers="text"),
            ],
            outputs=[
                io.String.Output(display_name="table", tooltip="Ranked candidates with their scores."),
                io.String.Output(display_name="layers", tooltip="The top_k candidates as a layer spec: paste or "
                                 "connect it to custom_layers of Route prompt into layers."),
                io.Image.Output(display_name="contact_sheet",
                                tooltip="A alone, B in every candidate, then each candidate best first, labelled."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, positive, routed, negative, seed, steps, cfg, sampler_name, scheduler, width, height,
                granularity, max_candidates, top_k, vae=None, mask=None, start_percent=0.08, search_layers="*"):
        families.require(model, "route", cls.WHO)
        schedule.window(cls.WHO, start_percent, 1.0)
        table, spec, sheet = find_layers.find_layers(
            model, positive, routed, negative, seed, steps, cfg, sampler_name, scheduler, width, height,
            granularity=granularity, max_candidates=max_candidates, top_k=top_k, vae=vae, mask=mask,
            start_percent=start_percent, search_layers=search_layers, who=cls.WHO)
        return io.NodeOutput(table, spec, sheet, ui=ui.PreviewText(table))


NODES = [SleightPromptRoute, SleightFindTextLayers]
