"""Inference-time search node (sleight/search)."""

import json

import comfy.sample

from ..attention_patches.core import families
from ..samplers import search, verifiers
from ._compat import inp, io, schema
from .base import SleightNode

NAME = "Sleight · Noise search"
VERIFIERS = ["self_consistency", "reference", "ensemble"]


class SearchNoise:
    """A NOISE (as RandomNoise gives) that returns a stored initial noise: the winner's, for SamplerCustomAdvanced."""

    def __init__(self, noise, seed):
        self.noise, self.seed = noise, seed

    def generate_noise(self, input_latent):
        return self.noise.clone()


def build_verifiers(choice, clip_vision, vae, reference_image):
    clip_ok = clip_vision is not None and vae is not None
    if choice == "self_consistency":
        return [verifiers.SelfConsistencyClip(clip_vision) if clip_ok else verifiers.SelfConsistencyLatent()]
    if choice == "reference":
        if not clip_ok or reference_image is None:
            raise ValueError(f"{NAME}: the reference verifier needs clip_vision, vae and reference_image connected "
                             "(Load CLIP Vision, the checkpoint's VAE, Load Image)")
        return [verifiers.ReferenceSimilarity(clip_vision, reference_image)]
    found = [verifiers.SelfConsistencyLatent()]
    if clip_ok:
        found.append(verifiers.SelfConsistencyClip(clip_vision))
        if reference_image is not None:
            found.append(verifiers.ReferenceSimilarity(clip_vision, reference_image))
    if len(found) < 2:
        raise ValueError(f"{NAME}: the ensemble averages the ranks of several verifiers, but only the latent "
                         "self-consistency is available: connect clip_vision and vae (and reference_image), or "
                         "choose verifier self_consistency")
    return found


class SleightNoiseSearch(SleightNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SleightNoiseSearch",
            display_name=NAME,
            category="sleight/search",
            description=(
                "Inference-time search over sampling noises (Ma et al. 2025): samples many candidates with your "
                "sampler and sigmas, scores each with a verifier and returns the best. Modes: random search "
                "(best of N seeds), zero-order search (neighbours of the best noise on a sphere) and search over "
                "paths (branch, re-noise and prune during sampling). Verifiers: self-consistency (early x0 "
                "prediction vs final sample; latent space, or CLIP-vision space with clip_vision + vae), "
                "CLIP-vision similarity to a reference image, or the rank average of all available ones."
            ),
            inputs=[
                inp(io.Model, "model", tooltip="The model to sample (patched models from other nodes work)."),
                inp(io.Conditioning, "positive", tooltip="Positive conditioning, as for SamplerCustom."),
                inp(io.Conditioning, "negative", tooltip="Negative conditioning, as for SamplerCustom."),
                inp(io.Latent, "latent_image", tooltip="The starting latent, batch of 1 (e.g. Empty Latent Image). A noise_mask on it is honoured."),
                inp(io.Sampler, "sampler", tooltip="The sampler (KSamplerSelect or any SAMPLER node). Search over paths needs a k-diffusion sampler."),
                inp(io.Sigmas, "sigmas", tooltip="The schedule (BasicScheduler or any SIGMAS node), as for SamplerCustom."),
                inp(io.Float, "cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01, tooltip="CFG scale, as for SamplerCustom."),
                inp(io.Int, "seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                    tooltip="Base seed. Random search tries seed, seed+1, ...: the winner's seed (in scores) "
                            "reproduces it in SamplerCustom with a deterministic sampler. The same seed gives the same search."),
                inp(io.Combo, "mode", options=list(search.MODES), default="random",
                    tooltip="random: best of `budget` seeds. zero_order: neighbours of the current best noise at "
                            "cosine `cosine`, moving while they improve, a fresh seed when none does. paths: `budget` "
                            "paths branched `branches` times per round with re-noising, pruned by the verifier on the x0 prediction."),
                inp(io.Int, "budget", default=4, min=1, max=4096,
                    tooltip="random / zero_order: how many full samplings (candidates). paths: how many paths N survive each round. "
                            "Cost: random/zero_order ≈ budget samplings; paths ≈ budget × branches × the steps after the first branching."),
                inp(io.Int, "batch_size", default=4, min=1, max=256,
                    tooltip="Candidates sampled together in one batch. Larger is faster on a GPU until memory runs out."),
                inp(io.Int, "top_k", default=4, min=1, max=256,
                    tooltip="How many of the best candidates come out of the top_k output (best first). Only these latents are kept during the search."),
                inp(io.Combo, "verifier", options=VERIFIERS, default="self_consistency",
                    tooltip="self_consistency: similarity of the early x0 prediction and the final sample (needs no "
                            "extra model; CLIP-vision space when clip_vision and vae are connected, else latent space). "
                            "reference: CLIP-vision similarity to reference_image. ensemble: rank average of every "
                            "verifier the connected inputs allow. Searching one verifier can hurt others (see the docs)."),
                inp(io.Float, "early_percent", default=0.4, min=0.0, max=1.0, step=0.01,
                    tooltip="Where the self-consistency verifier takes its early x0 prediction: the first step at or "
                            "below this ComfyUI schedule percent."),
                inp(io.Float, "cosine", default=0.95, min=0.0, max=0.9999, step=0.0001,
                    tooltip="zero_order: cosine similarity of each neighbour to the pivot noise (norm kept). "
                            "0.95 is the default of the paper's first author's code."),
                inp(io.Int, "neighbours", default=4, min=1, max=256, tooltip="zero_order: neighbours per round (default 4)."),
                inp(io.Int, "branches", default=2, min=1, max=64, tooltip="paths: branches M per path at each round."),
                inp(io.Float, "branch_start_percent", default=0.5, min=0.0, max=1.0, step=0.01,
                    tooltip="paths: the first branching happens at the first step at or below this schedule percent; "
                            "all paths run plainly until there."),
                inp(io.Int, "renoise_steps", default=1, min=0, max=1000,
                    tooltip="paths: Δf, each branch is re-noised with fresh noise this many steps back up the schedule. 0 = no re-noising."),
                inp(io.Int, "denoise_steps", default=2, min=1, max=1000,
                    tooltip="paths: Δb, each branch is then denoised this many steps (must exceed renoise_steps)."),
                inp(io.ClipVision, "clip_vision", optional=True,
                    tooltip="Optional CLIP vision model (Load CLIP Vision): self-consistency in CLIP space, and the reference verifier."),
                inp(io.Vae, "vae", optional=True, tooltip="Optional VAE, needed with clip_vision to decode candidates."),
                inp(io.Image, "reference_image", optional=True, tooltip="Optional reference image for the reference verifier (first image of the batch)."),
            ],
            outputs=[
                io.Latent.Output(display_name="best", tooltip="The best candidate."),
                io.Latent.Output(display_name="top_k", tooltip="The top_k best candidates as a batch, best first."),
                io.String.Output(display_name="scores", tooltip="JSON: every candidate's scores, seeds and parents, the top_k, the model steps spent."),
                io.Noise.Output(display_name="best_noise", tooltip="The winner's initial noise, for SamplerCustomAdvanced (paths: its path's starting noise)."),
            ],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, sampler, sigmas, cfg, seed, mode, budget, batch_size,
                top_k, verifier, early_percent, cosine, neighbours, branches, branch_start_percent, renoise_steps,
                denoise_steps, clip_vision=None, vae=None, reference_image=None):
        families.refuse_unsupported(model, "search", NAME)
        samples = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
        if samples.shape[0] != 1:
            raise ValueError(f"{NAME}: the latent has a batch of {samples.shape[0]}; the search makes one image, "
                             "so use a batch_size of 1 on the latent (the top_k output gives you several)")
        if verifier not in VERIFIERS:
            raise ValueError(f"{NAME}: unknown verifier {verifier!r}; choose one of {VERIFIERS}")
        settings = search.SearchSettings(mode=mode, budget=budget, batch_size=batch_size, top_k=top_k,
                                         early_percent=early_percent, cosine=cosine, neighbours=neighbours,
                                         branches=branches, branch_start_percent=branch_start_percent,
                                         renoise_steps=renoise_steps, denoise_steps=denoise_steps)
        checks = build_verifiers(verifier, clip_vision, vae, reference_image)
        decode = vae.decode if vae is not None else None
        try:
            run = search.NoiseSearch(model, positive, negative, cfg, sampler, sigmas, samples, seed, settings, checks,
                                     decode=decode, noise_mask=latent_image.get("noise_mask"))
            result = run.run()
        except ValueError as e:
            raise ValueError(f"{NAME}: {e}") from None
        base = {k: v for k, v in latent_image.items() if k not in ("samples", "batch_index")}
        best = {**base, "samples": result.top[:1]}
        top = {**base, "samples": result.top}
        best_noise = SearchNoise(result.noises[:1], result.report.get("best_seed", seed))
        return io.NodeOutput(best, top, json.dumps(result.report, indent=1), best_noise)


NODES = [SleightNoiseSearch]
