"""HD-Painter nodes (sleight/inpaint): PAIntA attention reweighting and the RASG sampler."""
from ..attention_patches import painta
from ..attention_patches.core import families, schedule, tokens
from ..samplers import rasg
from ._compat import inp, io, schema, with_options
from .base import SleightNode


class SleightPAIntA(SleightNode):
    WHO = "Sleight · PAIntA"

    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SleightPAIntA",
            display_name="Sleight · PAIntA (prompt-aware inpainting attention)",
            category="sleight/inpaint",
            description=(
                "HD-Painter's prompt-aware introverted attention (Manukyan et al., ICLR 2025): in the self-attention "
                "of the paper's levels, for the first half of the schedule, the hole attends less to known pixels "
                "that are unrelated to the prompt, so the hole follows the prompt instead of copying its "
                "surroundings. Encodes the prompt (use the conditioning output as the positive) and marks the model "
                "for Sleight · RASG. Works with inpainting checkpoints (InpaintModelConditioning) and with ordinary "
                "ones through a latent noise mask. SD1.5, SDXL, SD3, Flux (incl. Fill)."
            ),
            inputs=[
                inp(io.Model, "model", tooltip="The model to patch. A patched copy is returned; the input model is unchanged."),
                inp(io.Clip, "clip", tooltip="The model's CLIP: encodes the prompt and finds its tokens."),
                inp(io.String, "text", multiline=True, default="",
                    tooltip="What to paint in the hole (the paper's prompt, e.g. \"a red vintage car\"). Its tokens "
                            "(and the end token) decide which known pixels count as relevant."),
                inp(io.Mask, "mask", tooltip="The hole: 1 where to paint, 0 where the image is kept. Same size as the image."),
                inp(io.String, "quality_suffix", default=painta.PAPER_SUFFIX,
                    tooltip="Appended to the prompt after a comma for the conditioning (the paper's positive suffix); "
                            "its tokens do not count as prompt tokens. Empty = none."),
                inp(io.Float, "end_percent", default=0.5, min=0.0, max=1.0, step=0.01,
                    tooltip="PAIntA runs from the start until this point of the schedule (ComfyUI percent). 0.5 = the "
                            "paper's t > 500. 0 turns PAIntA off (the model still carries mask and prompt for RASG)."),
                inp(io.Combo, "layers", options=[painta.AUTO, painta.CUSTOM], default=painta.AUTO,
                    tooltip="'paper levels (auto)': UNet self-attention at 1/2 and 1/4 of the latent size (16² and 32² "
                            "at 512 px, the same relative depth at any size; a UNet without those levels uses the nearest); "
                            "SD3 / Flux: every joint block (no paper "
                            "setting exists there). 'custom': the block ids in custom_layers."),
                with_options(inp(io.String, "custom_layers", default="*",
                                 tooltip="Used when layers is 'custom': block ids as Sleight · Inspect attention layers "
                                         "lists them (output.4, input.7-8, double.*, *). UNet: self-attention layers; "
                                         "DiT: joint blocks. The 'pick blocks' button lists the connected model's blocks."),
                             sleight_layers="self", sleight_layers_switch=["layers", painta.CUSTOM]),
            ],
            outputs=[io.Model.Output(tooltip="The model with PAIntA; connect it to the sampler (or to Sleight · RASG's sampler)."),
                     io.Conditioning.Output(display_name="positive",
                                            tooltip="The encoded prompt (text + suffix): use it as the positive, e.g. "
                                                    "through InpaintModelConditioning.")],
        )

    @classmethod
    def execute(cls, model, clip, text, mask, quality_suffix=painta.PAPER_SUFFIX, end_percent=0.5,
                layers=painta.AUTO, custom_layers="*"):
        who = cls.WHO
        if clip is None:
            raise ValueError(f"{who}: connect the model's CLIP.")
        family = families.require(model, "painta" if end_percent > 0 else "rasg", who)
        m = painta.as_mask(mask, who)
        full = f"{text}, {quality_suffix}" if quality_suffix.strip() else text
        conditioning = clip.encode_from_tokens_scheduled(clip.tokenize(full))
        emb = conditioning[0][0]
        positions = tokens.prompt_positions(clip, text, quality_suffix, family, emb.shape[1], who)
        window = schedule.window(who, 0.0, end_percent)
        blocks = painta.resolve_blocks(model, layers, custom_layers, who)
        target = painta.InpaintTarget(m, positions, emb.shape[1], who)
        out = model.clone()
        painta.install(out, target, blocks, window, emb, who, painta_on=end_percent > 0)
        return io.NodeOutput(out, conditioning)


class SleightRASG(SleightNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SleightRASG",
            display_name="Sleight · RASG sampler (HD-Painter)",
            category="sleight/inpaint",
            description=(
                "HD-Painter's reweighting attention score guidance (Manukyan et al., ICLR 2025) as a SAMPLER for "
                "SamplerCustom / SamplerCustomAdvanced: DDIM with eta whose random noise is replaced by the "
                "normalised gradient that pulls the prompt's cross-attention into the hole. Needs a model from "
                "Sleight · PAIntA (which holds the mask and prompt). Backpropagates through the model every step "
                "(about 3x the time of plain sampling)."
            ),
            inputs=[
                inp(io.Float, "eta", default=0.1, min=0.0, max=1.0, step=0.01,
                    tooltip="DDIM eta: how strongly the guidance (in place of noise) moves the latent. 0.1 is the "
                            "official command-line default (its evaluation uses 0.25; diffusers' pipeline 0.01). "
                            "Raise it toward 0.25 when the hole still fills with background. 0 = plain DDIM, no "
                            "guidance."),
                inp(io.Combo, "noise_scale", options=list(rasg.NOISE_SCALES), default="official", advanced=True,
                    tooltip="How eta scales the guidance on SD1.5 / SDXL (eps / v models). official: as HD-Painter's "
                            "code, sigma_t from the per-step alpha (1 - beta). ddim: the DDIM paper's sigma_t from "
                            "the cumulative alpha-bar, 10-25x stronger at the same eta on SD1.5's schedule. Flow "
                            "models (SD3, Flux) use the rectified-flow ancestral step either way."),
            ],
            outputs=[io.Sampler.Output(tooltip="Connect to SamplerCustom's sampler input.")],
        )

    @classmethod
    def execute(cls, eta=0.1, noise_scale="official"):
        if noise_scale not in rasg.NOISE_SCALES:
            raise ValueError(f"{rasg.WHO}: noise_scale must be one of {list(rasg.NOISE_SCALES)}, got {noise_scale!r}.")
        return io.NodeOutput(rasg.ksampler(eta=eta, noise=noise_scale))


NODES = [SleightPAIntA, SleightRASG]
