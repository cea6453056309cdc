"""Object insertion (sleight/edit): Add-it, training-free, on SD1.5, SDXL, SD3 and Flux."""
from ..attention_patches import extended
from ..attention_patches.core import families, masks, tokens
from ..samplers import addit
from ._compat import inp, io, schema
from .base import SleightNode
from .inversion import Trajectory

ADDIT_KEY = "sleight.addit"    # transformer_options: marks a model patched by Sleight · Add-it


class SleightAddIt(SleightNode):
    WHO = "Sleight · Add-it"

    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SleightAddIt",
            display_name="Sleight · Add-it (insert an object)",
            category="sleight/edit",
            description=(
                "Inserts an object into a source image without training (Add-it, Tewel et al., ICLR 2025). The "
                "source row runs in lockstep with the new image; the new image attends to the source's image "
                "tokens (weighted extended attention, gamma on its own keys), its latent is replaced by the "
                "re-noised source early on (structure transfer), and after the middle of the schedule it is "
                "blended back to the source outside the object's attention mask. Connect the MODEL and "
                "CONDITIONING outputs to KSampler / SamplerCustom with an empty latent the size of the source."
            ),
            inputs=[
                inp(io.Model, "model", tooltip="The model to patch. A patched copy is returned; the input model is unchanged."),
                inp(io.Clip, "clip", tooltip="The model's text encoder: encodes the prompt and finds the subject's tokens."),
                inp(Trajectory, "source",
                    tooltip="The source image: Sleight · Source trajectory (a generated image, re-noised) or "
                            "Sleight · Invert image (a real image)."),
                inp(io.String, "prompt", multiline=True, default="a photo of a dog on the sofa",
                    tooltip="The target prompt: the source description with the new object added."),
                inp(io.String, "subject", default="dog",
                    tooltip="The word(s) of the prompt that name the new object (any number of tokens; every "
                            "occurrence counts). Their attention makes the blending mask."),
                inp(io.Float, "gamma", default=0.0, min=-1.0, max=2.0, step=0.005,
                    tooltip="Weight of the new image's own keys against the source's (gamma multiplies its keys). "
                            "0 = the paper's value: 1.05 for a generated source, 1.1 for a real (inverted) one. "
                            "-1 = auto: solved in [1, 1.2] at the auto_gamma_at step so that the prompt tokens "
                            "attend 1.05x more to the new image than to the source (a few extra model calls "
                            "at that step). Raise it if the object does not appear; lower it to keep more of the "
                            "source."),
                inp(io.Float, "structure_transfer", default=-1.0, min=-1.0, max=1.0, step=0.001,
                    tooltip="Fraction of the steps at which the new latent is replaced by the source re-noised to "
                            "that step. -1 = paper (2/30 generated, 4/30 real); 1 = off. Lower it if the object "
                            "is not added."),
                inp(io.Float, "blend_at", default=-1.0, min=-1.0, max=1.0, step=0.001,
                    tooltip="Fraction of the steps after which the latent is blended with the source outside the "
                            "object mask (maps recorded over the 3 steps before). -1 = paper (15/30 generated, "
                            "18/30 real); 1 = off (free changes everywhere)."),
                inp(io.Float, "double_stream_end", default=round(10 / 30, 4), min=0.0, max=1.0, step=0.001,
                    tooltip="Extended attention runs from step 0 through the step at this fraction of the steps "
                            "(ends included, as the official code: 10/30 of 30 steps = steps 0-10; 0 = off) in Flux "
                            "double-stream blocks; on SD3 and SD1.5/SDXL in the first third of the layers by depth."),
                inp(io.Float, "single_stream_end", default=round(20 / 30, 4), min=0.0, max=1.0, step=0.001,
                    tooltip="The same for Flux single-stream blocks (paper: 20/30); elsewhere the deeper two "
                            "thirds of the layers."),
                inp(io.Mask, "mask", optional=True,
                    tooltip="Optional: where the object may appear (white), at the image size. Replaces the "
                            "attention mask; outside it the result is blended back to the source. Give one when "
                            "Sleight · Add-it mask shows the attention mask in the wrong place."),
                inp(io.Int, "dilation", default=1, min=0, max=16, advanced=True,
                    tooltip="The attention mask grows by this many tokens after Otsu thresholding."),
                inp(io.Float, "auto_gamma_at", default=round(5 / 30, 4), min=0.0, max=1.0, step=0.001, advanced=True,
                    tooltip="With gamma = -1 (auto): the fraction of the steps at which gamma is solved (paper: step "
                            "5 of 30); the steps before it use 1.05. Must lie inside the extended-attention "
                            "window."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The patched model; connect it to the sampler."),
                io.Conditioning.Output(display_name="positive",
                                       tooltip="The encoded prompt; connect it to the sampler's positive (on Flux "
                                               "through FluxGuidance, 3.5 in the paper)."),
            ],
        )

    @classmethod
    def execute(cls, model, clip, source, prompt, subject, gamma, structure_transfer, blend_at,
                double_stream_end, single_stream_end, mask=None, dilation=1, auto_gamma_at=5 / 30):
        family = families.require(model, "addit", cls.WHO)
        paper = addit.paper_defaults(source.inverted)
        if not 0.0 <= double_stream_end <= 1.0 or not 0.0 <= single_stream_end <= 1.0:
            raise ValueError(f"{cls.WHO}: the stream ends are fractions of the steps in [0, 1].")
        auto = gamma == -1.0
        if gamma not in (0.0, -1.0) and gamma < 0.5:
            raise ValueError(f"{cls.WHO}: gamma {gamma} is too small; use 0 for the paper's value, -1 for auto, or "
                             "1.0 to 1.2.")
        if auto and auto_gamma_at > max(double_stream_end, single_stream_end):
            raise ValueError(f"{cls.WHO}: auto gamma is solved at {auto_gamma_at:.3f} of the steps, after the "
                             "extended attention ends; lower auto_gamma_at or raise the stream ends.")
        positions = tokens.subject_positions(clip, prompt, subject, family, cls.WHO)
        latent_hw = tuple(source.clean.shape[-2:])
        user = None
        if mask is not None:
            user = masks.user_to_latent(mask, latent_hw, family.downscale, mask.shape[0] if mask.ndim == 3 else 1,
                                        cls.WHO)
        settings = addit.AddItSettings(
            gamma=extended.AUTO_START if auto else (gamma or paper["gamma"]), double_end=double_stream_end, single_end=single_stream_end,
            structure_at=paper["structure_at"] if structure_transfer < 0 else structure_transfer,
            blend_at=paper["blend_at"] if blend_at < 0 else blend_at, dilation=dilation, user_mask=user,
            auto_at=auto_gamma_at if auto else None)
        patched, _ = addit.install(model, source, positions, settings, tokens.token_count(clip, prompt), cls.WHO)
        patched.model_options.setdefault("transformer_options", {})[ADDIT_KEY] = True
        positive = clip.encode_from_tokens_scheduled(clip.tokenize(prompt))
        return io.NodeOutput(patched, positive)


class SleightAddItMask(SleightNode):
    WHO = "Sleight · Add-it mask"

    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SleightAddItMask",
            display_name="Sleight · Add-it mask",
            category="sleight/edit",
            description=("The blending mask Sleight · Add-it used in the sampling run that made these latents "
                         "(white = where the new image was kept), at the image size. Connect the sampler's output "
                         "latent directly: the mask travels with it."),
            inputs=[
                inp(io.Model, "model", tooltip="The MODEL output of Sleight · Add-it."),
                inp(io.Latent, "samples", tooltip="The LATENT output of the sampler that used the Add-it model: the "
                                                  "mask of that run travels with it."),
            ],
            outputs=[io.Mask.Output(display_name="mask", tooltip="The blending mask; all white if no blending ran.")],
        )

    @classmethod
    def execute(cls, model, samples):
        if not model.model_options.get("transformer_options", {}).get(ADDIT_KEY):
            raise ValueError(f"{cls.WHO}: this model does not come from Sleight · Add-it; connect its MODEL output.")
        family = families.detect(model, cls.WHO)
        return io.NodeOutput(addit.run_mask(samples["samples"], family.downscale, cls.WHO))


NODES = [SleightAddIt, SleightAddItMask]
