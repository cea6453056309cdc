"""The ComfyUI internals Sleight pins (attention_patches/core/comfy_compat.py): every symbol exists and takes the
parameters it is called with, and the sampler loop run outside KSAMPLER.sample equals KSAMPLER.sample bit for
bit. A ComfyUI that changes any of them fails here, naming the symbol, instead of changing results silently."""
import inspect

import pytest
import torch

from compat_scan import resolve
from sleight.attention_patches.core import comfy_compat
from tinyrun import encode, latent_for, load


@pytest.mark.parametrize("symbol", sorted(comfy_compat.PINNED))
def test_pinned_symbol_takes_its_parameters(symbol):
    params = list(inspect.signature(resolve(symbol)).parameters.values())
    names, want = tuple(p.name for p in params), comfy_compat.PINNED[symbol]
    assert names[:len(want)] == want, (f"{symbol}: this ComfyUI takes {names}; attention_patches/core/comfy_compat.py "
                                       f"calls it as {want}: adapt comfy_compat to the new signature")
    required = [p.name for p in params[len(want):]
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    assert not required, f"{symbol}: new required parameters {required} that comfy_compat does not pass"


class Twin:
    """A SAMPLER that runs the same KSAMPLER three ways inside one real sampling run: KSAMPLER.sample itself,
    comfy_compat's loop in two chained segments (or one, for ancestral samplers whose noise restarts per call),
    and KSAMPLER.sample started at an x-space state through noise_for_state."""

    def __init__(self, ksampler, segments):
        self.ks, self.segments, self.got = ksampler, segments, {}

    def max_denoise(self, model_wrap, sigmas):
        return self.ks.max_denoise(model_wrap, sigmas)

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        ks, ms = self.ks, model_wrap.inner_model.model_sampling
        real = ks.sample(model_wrap, sigmas, dict(extra_args), None, noise, latent_image, denoise_mask, True)
        x = comfy_compat.start_state(ks, model_wrap, sigmas, noise, latent_image)
        cut = len(sigmas) // 2 if self.segments == 2 else len(sigmas) - 1
        for lo, hi in ((0, cut), (cut, len(sigmas) - 1)) if self.segments == 2 else ((0, cut),):
            x = comfy_compat.run_steps(ks, model_wrap, sigmas[lo:hi + 1], x, extra_args, None, noise, latent_image,
                                       denoise_mask, schedule=sigmas)
        self.got["chained"] = ms.inverse_noise_scaling(sigmas[-1], x)
        start = comfy_compat.start_state(ks, model_wrap, sigmas, noise, latent_image)
        n, lat = comfy_compat.noise_for_state(ks, model_wrap, sigmas, start)
        restarted = ks.sample(model_wrap, sigmas, dict(extra_args), None, n, lat, None, True)
        self.got["restarted_state"] = comfy_compat.state_after(ms, sigmas, restarted)
        self.got["real_state"] = comfy_compat.state_after(ms, sigmas, real)
        self.got["real"] = real
        return real


@pytest.mark.parametrize("name,sampler,segments,masked", [
    ("sd15", "euler", 2, False), ("sd15", "euler", 2, True), ("sd15", "euler_ancestral", 1, True),
    ("sd3", "euler", 2, False)])
def test_loop_outside_ksampler_equals_ksampler_sample(name, sampler, segments, masked):
    import comfy.sample
    import comfy.samplers

    model, clip, _ = load(name)
    seen = []                # a denoise_mask_function (DifferentialDiffusion's hook) sees the whole schedule
    model = model.clone()
    model.set_model_denoise_mask_function(lambda sigma, mask, extra_options: seen.append(len(extra_options["sigmas"]))
                                          or mask)
    pos, neg = encode(clip, "a red circle"), encode(clip, "")
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 4).cpu()
    latent = latent_for(model) + 0.5
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., :, 32:] = 1.0
    twin = Twin(comfy.samplers.ksampler(sampler), segments)
    comfy.sample.sample_custom(model, comfy.sample.prepare_noise(latent, 3), 3.0, twin, sigmas, pos, neg, latent,
                               noise_mask=mask if masked else None, disable_pbar=True, seed=3)
    assert torch.equal(twin.got["chained"], twin.got["real"]), "comfy_compat.run_steps differs from KSAMPLER.sample"
    assert set(seen) == ({len(sigmas)} if masked else set())
    if not masked:         # a masked run re-noises the known region from `noise`, which noise_for_state replaces
        torch.testing.assert_close(twin.got["restarted_state"], twin.got["real_state"], rtol=1e-5, atol=1e-5)
