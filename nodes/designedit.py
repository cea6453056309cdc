"""DesignEdit nodes (sleight/edit): remove an object, move / resize / flip layers, zoom out and pan."""

import comfy.sample

from ..attention_patches import keymask
from ..attention_patches.core import families, masks, router, schedule
from ..samplers import designedit, fusion
from ..samplers.trajectory import SourceTrajectory
from ._compat import inp, io, schema
from .base import SleightNode
from .inversion import Trajectory

DesignLayers = io.Custom("SLEIGHT_DESIGN_LAYERS")
KEY_MODES = {"zero keys (official)": "zero", "exclude keys": "exclude"}
REFINE_DILATION = 10     # official: attend_mask(refine_mask) with its default attend_scale 10


def _ratio(model, who):
    return families.require(model, "designedit", who).downscale


class SleightDesignEditRemove(SleightNode):
    WHO = "Sleight · DesignEdit remove"

    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SleightDesignEditRemove",
            display_name="Sleight · DesignEdit remove object",
            category="sleight/edit",
            description=(
                "DesignEdit (Jia et al., AAAI 2025) object removal without training or an inpainting model: the "
                "sampled image starts on the source image's trajectory, stays equal to it outside the mask, and "
                "inside the mask every self-attention layer ignores the masked keys (key-masked self-attention) on "
                "the positive rows, so the hole is filled from the surroundings instead of redrawing the object. "
                "Connect the same (usually empty) prompt to positive and negative with cfg 7.5 (paper): CFG then "
                "amplifies exactly the key masking. Works on SD1.5, SDXL, SD3 and Flux; use ddim or euler."
            ),
            inputs=[
                inp(io.Model, "model", tooltip="The model to patch. A patched copy is returned; the input model is unchanged."),
                inp(Trajectory, "source",
                    tooltip="The source image's trajectory: from Sleight · Invert (real image, paper) or a re-noised "
                            "clean latent. Sample a latent of the same size with the same steps and scheduler."),
                inp(io.Mask, "mask", tooltip="What to remove (white = remove), the size of the source image."),
                inp(io.Int, "dilation", default=20, min=0, max=256, step=1,
                    tooltip="Grow the mask by this many pixels (a square kernel, as the official code): 20 for "
                            "removal and layer edits, 30 for zoom out and pan (paper)."),
                inp(io.Mask, "refine_mask", optional=True,
                    tooltip="Optional: shadows, reflections or other traces of the object. They join the key mask "
                            "for the first half of the steps (paper: steps 1-25 of 50), not the blending mask."),
                inp(io.Combo, "key_mode", options=list(KEY_MODES), default="zero keys (official)",
                    tooltip="'zero keys (official)': masked keys become 0, so their logits are 0 (the official code). "
                            "'exclude keys': masked keys get no attention at all (-inf logits)."),
                inp(io.Int, "feather", default=0, min=0, max=256, step=1,
                    tooltip="Soften the mask edge by this many pixels (Gaussian). 0 = a hard mask, as the paper."),
                inp(io.Float, "mask_start", default=0.02, min=0.0, max=1.0, step=0.01,
                    tooltip="Key masking runs from this fraction of the sampling steps (0.02 = step 1 of 50, paper)."),
                inp(io.Float, "mask_end", default=0.78, min=0.0, max=1.0, step=0.01,
                    tooltip="... to this fraction of the steps (0.78 = step 39 of 50, paper)."),
                inp(io.Float, "refine_end", default=0.50, min=0.0, max=1.0, step=0.01,
                    tooltip="The refine mask joins the key mask up to this fraction of the steps (0.5 = step 25 of 50)."),
                inp(io.Float, "blend_end", default=0.82, min=0.0, max=1.0, step=0.01,
                    tooltip="Outside the mask the latent is reset to the source's up to this fraction of the steps "
                            "(0.82 = entering step 41 of 50, paper); later steps harmonise freely. Layers are "
                            "pasted on the next step."),
                inp(io.Float, "proximal_strength", default=0.1, min=0.0, max=1.0, step=0.01,
                    tooltip="After the blending, pull the unmasked area this much towards the source at every step "
                            "(proximal guidance, paper 0.1). 0 = off. Not applied once layers are pasted."),
                inp(io.Float, "proximal_start_percent", default=0.6, min=0.0, max=1.0, step=0.01,
                    tooltip="Proximal guidance runs at steps whose noise level is below this point of the model's "
                            "time (0.6 = t < 400 of 1000, paper)."),
            ],
            outputs=[io.Model.Output(tooltip="The model that removes the object; sample a latent of the source size.")],
        )

    @classmethod
    def execute(cls, model, source, mask, dilation, refine_mask=None, key_mode="zero keys (official)", feather=0,
                mask_start=0.02, mask_end=0.78, refine_end=0.5, blend_end=0.82, proximal_strength=0.1,
                proximal_start_percent=0.6):
        who = cls.WHO
        if not isinstance(source, SourceTrajectory):
            raise ValueError(f"{who}: source must be a Sleight source trajectory (from Sleight · Invert).")
        if key_mode not in KEY_MODES:
            raise ValueError(f"{who}: key_mode must be one of {list(KEY_MODES)}")
        hw, ratio = tuple(source.clean.shape[-2:]), _ratio(model, who)
        m = masks.pixel_to_latent(mask, hw, ratio, dilation, feather, who, "mask")
        if not bool((m > 0).any()):
            raise ValueError(f"{who}: the mask is empty: paint what to remove (white = remove).")
        refine = None
        if refine_mask is not None:
            refine = masks.pixel_to_latent(refine_mask, hw, ratio, REFINE_DILATION, feather, who, "refine_mask")
        key_window = schedule.step_window(who, "mask_start/mask_end", mask_start, mask_end)
        refine_window = schedule.step_window(who, "mask_start/refine_end", mask_start, max(mask_start, refine_end))
        blend = schedule.step_window(who, "blend_end", 0.0, blend_end)
        if not 0.0 <= proximal_start_percent <= 1.0:
            raise ValueError(f"{who}: proximal_start_percent must lie in [0, 1].")
        m_out = model.clone()
        effect = keymask.KeyMask(m, key_window, refine, refine_window, KEY_MODES[key_mode], ("cond",), who)
        router.install(m_out, effect, who)
        designedit.install(m_out, designedit.Plan(source, m, blend, proximal_strength, proximal_start_percent, (), who))
        return io.NodeOutput(m_out)


class SleightDesignEditLayer(SleightNode):
    WHO = "Sleight · DesignEdit layer"

    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SleightDesignEditLayer",
            display_name="Sleight · DesignEdit layer",
            category="sleight/edit",
            description=(
                "One foreground layer for Sleight · DesignEdit layers: a latent, the mask of the part to paste, and "
                "where it goes (move, scale, flip about the mask's centre). Chain several: each one is pasted "
                "over the ones before it (z-order)."
            ),
            inputs=[
                inp(io.Latent, "latent",
                    tooltip="The layer's image, encoded at the canvas size (the source image itself to move an "
                            "object, or another image)."),
                inp(io.Mask, "mask", tooltip="The part of the layer to paste (white), at the layer image's size."),
                inp(io.Int, "move_x", default=0, min=-16384, max=16384, step=8,
                    tooltip="Move right by this many pixels (negative: left); snaps to the model's latent grid "
                            "(8 px on SD, SDXL, SD3 and Flux)."),
                inp(io.Int, "move_y", default=0, min=-16384, max=16384, step=8,
                    tooltip="Move down by this many pixels (negative: up); snaps to the model's latent grid "
                            "(8 px on SD, SDXL, SD3 and Flux)."),
                inp(io.Float, "scale", default=1.0, min=0.1, max=8.0, step=0.05,
                    tooltip="Resize about the mask's centre (nearest latent cell, so the layer's noise keeps its statistics)."),
                inp(io.Combo, "flip", options=list(fusion.FLIPS), default="none",
                    tooltip="Mirror the layer about the mask's centre."),
                inp(DesignLayers, "layers", optional=True,
                    tooltip="Layers below this one (from another DesignEdit layer node)."),
            ],
            outputs=[DesignLayers.Output(display_name="layers", tooltip="The layers so far, this one on top.")],
        )

    @classmethod
    def execute(cls, latent, mask, move_x, move_y, scale, flip, layers=None):
        if flip not in fusion.FLIPS:
            raise ValueError(f"{cls.WHO}: flip must be one of {list(fusion.FLIPS)}")
        if scale <= 0:
            raise ValueError(f"{cls.WHO}: scale must be positive.")
        if not bool((mask > 0.5).any()):
            raise ValueError(f"{cls.WHO}: the mask is empty: paint the part of the layer to paste.")
        entry = {"samples": latent["samples"][:1], "mask": mask, "move_x": move_x, "move_y": move_y,
                 "scale": scale, "flip": flip}
        return io.NodeOutput(list(layers or []) + [entry])


class SleightDesignEditLayers(SleightNode):
    WHO = "Sleight · DesignEdit layers"

    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SleightDesignEditLayers",
            display_name="Sleight · DesignEdit layers (move, resize, flip)",
            category="sleight/edit",
            description=(
                "Multi-layer latent fusion (DesignEdit): after the removal has inpainted the background, the "
                "layers are pasted over it in z-order at the step after the blending window (paper: step 42 of "
                "50), then the last steps harmonise the canvas. To move an object: remove it (mask = its old "
                "place) and add it back as a layer of the same image with a move."
            ),
            inputs=[
                inp(io.Model, "model", tooltip="A model from Sleight · DesignEdit remove object."),
                inp(DesignLayers, "layers", tooltip="The layers to paste, from Sleight · DesignEdit layer."),
            ],
            outputs=[io.Model.Output(tooltip="The model that removes, then pastes the layers; sample as for removal.")],
        )

    @classmethod
    def execute(cls, model, layers):
        who = cls.WHO
        plan = designedit.current_plan(model)
        if plan is None:
            raise ValueError(f"{who}: the model has no DesignEdit removal: connect it after Sleight · DesignEdit "
                             "remove object (its mask is the background to fill).")
        if not layers:
            raise ValueError(f"{who}: no layers: connect at least one Sleight · DesignEdit layer.")
        ratio = _ratio(model, who)
        clean = plan.trajectory.clean
        hw = tuple(clean.shape[-2:])
        fmt = model.get_model_object("latent_format")
        built = []
        for i, entry in enumerate(layers, 1):
            samples = comfy.sample.fix_empty_latent_channels(model, entry["samples"])
            lat = fmt.process_in(samples.float())
            if tuple(lat.shape[1:]) != tuple(clean.shape[1:]):
                raise ValueError(f"{who}: layer {i}'s latent {tuple(lat.shape[1:])} differs from the source "
                                 f"{tuple(clean.shape[1:])}. Encode the layer image at the source image's size.")
            mask = masks.pixel_to_latent(entry["mask"], hw, ratio, 0, 0, who, f"mask of layer {i}")
            if not bool((mask > 0).any()):
                raise ValueError(f"{who}: layer {i}'s mask is empty.")
            fh, fv = fusion.FLIPS[entry["flip"]]
            layer = fusion.Layer(lat, mask, round(entry["move_x"] / ratio), round(entry["move_y"] / ratio),
                                 float(entry["scale"]), fh, fv)
            fusion.check_inside(layer, hw, ratio, who, i)
            built.append(layer)
        out = model.clone()
        designedit.install(out, designedit.with_layers(plan, built))
        return io.NodeOutput(out)


class SleightDesignEditZoomOut(SleightNode):
    WHO = "Sleight · DesignEdit zoom out"

    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SleightDesignEditZoomOut",
            display_name="Sleight · DesignEdit zoom out",
            category="sleight/edit",
            description=(
                "Shrinks the image into its own centre and returns the border as a mask: encode and invert the "
                "image, then remove the mask with Sleight · DesignEdit remove object (dilation 30) to paint new "
                "surroundings. Any aspect ratio."
            ),
            inputs=[
                inp(io.Image, "image", tooltip="The image to zoom out of."),
                inp(io.Float, "scale_width", default=0.9, min=0.05, max=1.0, step=0.01,
                    tooltip="New width of the picture as a fraction of the canvas (0.9, the official app's default: the scene "
                            "grows by 11%; it recommends 0.75-1)."),
                inp(io.Float, "scale_height", default=0.9, min=0.05, max=1.0, step=0.01,
                    tooltip="New height of the picture as a fraction of the canvas."),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="The shrunk picture on the canvas (same size)."),
                     io.Mask.Output(display_name="mask", tooltip="The border to fill (white).")],
        )

    @classmethod
    def execute(cls, image, scale_width, scale_height):
        return io.NodeOutput(*fusion.zoom_out(image, scale_width, scale_height, cls.WHO))


class SleightDesignEditPan(SleightNode):
    WHO = "Sleight · DesignEdit pan"

    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SleightDesignEditPan",
            display_name="Sleight · DesignEdit pan",
            category="sleight/edit",
            description=(
                "Shifts the picture and returns the uncovered strip as a mask: encode and invert the image, then "
                "remove the mask with Sleight · DesignEdit remove object (dilation 30) to extend the scene."
            ),
            inputs=[
                inp(io.Image, "image", tooltip="The image to pan."),
                inp(io.Int, "move_x", default=-256, min=-16384, max=16384, step=8,
                    tooltip="Shift the picture right by this many pixels (negative: left, revealing new scene on the right)."),
                inp(io.Int, "move_y", default=0, min=-16384, max=16384, step=8,
                    tooltip="Shift the picture down by this many pixels (negative: up)."),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="The shifted picture (same size)."),
                     io.Mask.Output(display_name="mask", tooltip="The uncovered strips to fill (white).")],
        )

    @classmethod
    def execute(cls, image, move_x, move_y):
        return io.NodeOutput(*fusion.pan(image, move_x, move_y, cls.WHO))


NODES = [SleightDesignEditRemove, SleightDesignEditLayer, SleightDesignEditLayers, SleightDesignEditZoomOut,
         SleightDesignEditPan]
