"""Source trajectories (sleight/edit): invert a real image, or re-noise a clean latent with a fixed noise."""

import comfy.sample
import comfy.samplers

from ..attention_patches.core import families
from ..samplers import inversion
from ..samplers.trajectory import TRAJECTORY_TYPE, SourceTrajectory
from ._compat import inp, io, schema
from .base import SleightNode

Trajectory = io.Custom(TRAJECTORY_TYPE)

TRAJECTORY_TOOLTIP = ("The source image's path through the schedule, for editing nodes that run the source in "
                      "lockstep with the new image (Sleight · Add-it, DesignEdit).")


def _one_latent(who, latent):
    samples = latent["samples"]
    if samples.shape[0] != 1:
        raise ValueError(f"{who}: the latent holds {samples.shape[0]} images; give one source image "
                         "(split the batch with Latent From Batch).")
    if "noise_mask" in latent:
        raise ValueError(f"{who}: the latent carries an inpainting mask (Set Latent Noise Mask); give the plain "
                         "encoded source image.")
    return samples


class SleightInvert(SleightNode):
    WHO = "Sleight · Invert"

    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SleightInvert",
            display_name="Sleight · Invert image (DDIM / flow)",
            category="sleight/edit",
            description=(
                "Runs the sampler backwards from an encoded image to noise and records the latent at every step: "
                "DDIM inversion for SD1.5/SDXL (eps and v-prediction), rectified-flow inversion for SD3 and Flux. "
                "Fixed-point iterations refine each step until sampling forward with Euler lands back on the "
                "image (Add-it uses 2). Sample the edit with the same steps, scheduler and denoise. The latents "
                "stay on the CPU."
            ),
            inputs=[
                inp(io.Model, "model", tooltip="The model the edit will sample with."),
                inp(io.Latent, "latent", tooltip="One encoded source image (VAE Encode)."),
                inp(io.Conditioning, "conditioning",
                    tooltip="The source prompt (a description of the image, or empty). Inversion runs at cfg 1 "
                            "with it; on Flux set its guidance to 1 with FluxGuidance, as Add-it does."),
                inp(io.Int, "steps", default=30, min=1, max=10000,
                    tooltip="Steps of the schedule (Add-it: 30). Must match the sampler of the edit."),
                inp(io.Combo, "scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="normal",
                    tooltip="Scheduler, as in KSampler; must match the sampler of the edit."),
                inp(io.Float, "denoise", default=1.0, min=0.01, max=1.0, step=0.01,
                    tooltip="Invert only the last part of the schedule, as KSampler's denoise does."),
                inp(io.Int, "fixed_point_iterations", default=2, min=0, max=20,
                    tooltip="Extra model evaluations per step that refine the inverted latent so that an Euler "
                            "step maps it back exactly. 0 = plain DDIM inversion; Add-it uses 2. Costs "
                            "(1 + this) model calls per step."),
                inp(io.Sigmas, "sigmas", optional=True,
                    tooltip="Optional: a schedule (from BasicScheduler etc.) that replaces steps/scheduler/denoise. "
                            "Use the same SIGMAS for the edit's SamplerCustom."),
            ],
            outputs=[Trajectory.Output(display_name="trajectory", tooltip=TRAJECTORY_TOOLTIP)],
        )

    @classmethod
    def execute(cls, model, latent, conditioning, steps, scheduler, denoise, fixed_point_iterations, sigmas=None):
        families.refuse_unsupported(model, "invert", cls.WHO)
        samples = _one_latent(cls.WHO, latent)
        if sigmas is None:
            sigmas = inversion.schedule_sigmas(model, steps, scheduler, denoise)
        return io.NodeOutput(inversion.invert(model, samples, conditioning, sigmas, fixed_point_iterations, cls.WHO))


class SleightSourceTrajectory(SleightNode):
    WHO = "Sleight · Source trajectory"

    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SleightSourceTrajectory",
            display_name="Sleight · Source trajectory (re-noised)",
            category="sleight/edit",
            description=(
                "A source image's path made by re-noising its clean latent with one fixed noise at every sigma: "
                "x_sigma = (1 - sigma) x0 + sigma n for flow models, x0 + sigma n for SD1.5/SDXL. This is what "
                "Add-it does for generated images; it needs no extra model calls. Works with any schedule."
            ),
            inputs=[
                inp(io.Model, "model", tooltip="The model the edit will sample with (its latent format is used)."),
                inp(io.Latent, "latent",
                    tooltip="One clean source latent: a generated image's LATENT, or an encoded image."),
                inp(io.Conditioning, "conditioning",
                    tooltip="The source prompt: the source row runs with it in lockstep with the edit."),
                inp(io.Int, "noise_seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                    tooltip="Seed of the fixed noise (the seed that generated the source is a good choice; "
                            "Add-it's default source seed is 6311)."),
            ],
            outputs=[Trajectory.Output(display_name="trajectory", tooltip=TRAJECTORY_TOOLTIP)],
        )

    @classmethod
    def execute(cls, model, latent, conditioning, noise_seed):
        samples = comfy.sample.fix_empty_latent_channels(model, _one_latent(cls.WHO, latent))
        noise = comfy.sample.prepare_noise(samples, noise_seed)
        clean = model.model.process_latent_in(samples.clone().float())
        return io.NodeOutput(SourceTrajectory(clean, conditioning, noise=noise.float()))


NODES = [SleightInvert, SleightSourceTrajectory]
