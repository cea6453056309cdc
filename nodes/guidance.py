"""Guidance nodes (sleight/guidance)."""
from ..attention_patches.core import families, hooks, schedule
from ..samplers import apg
from ._compat import inp, io, schema
from .base import SleightNode


class SleightAPG(SleightNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SleightAPG",
            display_name="Sleight · APG (adaptive projected guidance)",
            category="sleight/guidance",
            description=(
                "Adaptive projected guidance (Sadat et al., ICLR 2025): high CFG without oversaturation. "
                "Works on the x0 predictions before the CFG mix, with the sampler's cfg as the scale w: "
                "D = D_cond + (w-1)(dD_orth + eta*dD_par), with reverse momentum and norm clipping. "
                "Stacks with other pre/post-CFG patches. Needs cfg > 1."
            ),
            inputs=[
                inp(io.Model, "model", tooltip="The model to guide. A patched copy is returned; the input model is unchanged."),
                inp(io.Float, "eta", default=0.0, min=-1.0, max=2.0, step=0.01,
                    tooltip="Weight of the guidance component parallel to the conditional prediction. "
                            "0 (paper default) removes it, which is what prevents oversaturation; 1 keeps it (plain CFG direction)."),
                inp(io.Float, "momentum", default=-0.5, min=-1.5, max=1.0, step=0.01,
                    tooltip="Reverse momentum beta: running sum of past guidance, dD_t + beta*dD_(t-1). "
                            "Negative values (paper: -0.5) push away from the previous direction. 0 disables it; "
                            "try 0 if colours clip at high cfg (a negative beta amplifies guidance that flips "
                            "between steps), and sample with more steps (about 50)."),
                inp(io.Float, "norm_threshold", default=15.0, min=0.0, max=200.0, step=0.1,
                    tooltip="r: the guidance vector is rescaled to at most this L2 norm (per image, over all latent "
                            "elements). Paper: 15 for SDXL at 1024x1024. 0 disables clipping."),
                inp(io.Float, "start_percent", default=0.0, min=0.0, max=1.0, step=0.001,
                    tooltip="APG is active from this point of the schedule (ComfyUI percent, 0 = first step). Outside the window plain CFG runs."),
                inp(io.Float, "end_percent", default=1.0, min=0.0, max=1.0, step=0.001,
                    tooltip="APG is active until this point of the schedule (1 = last step)."),
                inp(io.Int, "cfg_warmup_steps", default=0, min=0, max=1000,
                    tooltip="Run plain CFG for this many first steps before APG takes over (HunyuanImage-2.1 uses 5). 0 = off."),
                inp(io.Float, "cfg_warmup_scale", default=0.0, min=0.0, max=100.0, step=0.1,
                    tooltip="CFG scale during the warm-up steps (HunyuanImage-2.1: 3.5). 0 = the sampler's cfg."),
                inp(io.Boolean, "scale_threshold_by_latent_size", default=False,
                    tooltip="Scale norm_threshold by sqrt(latent elements / SDXL-1024 latent elements), so one value "
                            "serves every resolution and architecture (equal to norm_threshold for SDXL at 1024x1024)."),
            ],
            outputs=[io.Model.Output(tooltip="The model with APG; connect it to the sampler.")],
        )

    @classmethod
    def execute(cls, model, eta, momentum, norm_threshold, start_percent, end_percent,
                cfg_warmup_steps, cfg_warmup_scale, scale_threshold_by_latent_size):
        families.refuse_unsupported(model, "apg", "Sleight · APG")
        window = schedule.window("Sleight · APG", start_percent, end_percent)
        settings = apg.APGSettings(eta=eta, momentum=momentum, norm_threshold=norm_threshold, window=window,
                                   warmup_steps=cfg_warmup_steps, warmup_cfg=cfg_warmup_scale,
                                   scale_threshold=scale_threshold_by_latent_size)
        m = model.clone()
        pre_cfg = m.model_options.get("sampler_pre_cfg_function", [])     # a second APG replaces the first
        m.model_options["sampler_pre_cfg_function"] = [f for f in pre_cfg if not getattr(f, "sleight_apg", False)]
        m.set_model_sampler_pre_cfg_function(apg.make_pre_cfg(settings))
        hooks.on_run(m, apg.KEY)        # momentum lives for one sampling run
        return io.NodeOutput(m)


NODES = [SleightAPG]
