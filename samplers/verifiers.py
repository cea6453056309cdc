"""Verifiers for inference-time search (Ma et al. 2025, arXiv 2501.09732): score candidates, higher is better.

A verifier sees a batch of candidates as `Candidates`: the final latents and the x0 predictions at an early
step, both in the latent space the user sees (process_latent_out applied), decoded to images only when a
verifier asks (decoding is the costly part, done once per batch and shared). Video candidates (5-D latents,
decoded to (B, frames, H, W, 3)) are scored frame by frame in CLIP space and the frames' scores averaged: the
self-consistency of a clip is the mean over its frames of the early-vs-final cosine of each frame, its reference
similarity the mean over its frames of each frame's cosine to the reference. In latent space the whole
(C, T, H, W) latent is one vector, as for images.

- Self-consistency (the paper's self-supervised verifier): cosine similarity between the x0 prediction at an
  early noise level and the final sample, in the latent or in CLIP-vision feature space.
- Reference similarity: CLIP-vision cosine similarity between the final sample and a reference image.
- Several verifiers: the paper's "Verifier Ensemble", the average of each verifier's rank (`rank_average`).
"""
import torch


class Candidates:
    """One batch of candidates. `final`, `early`: (B, C, H, W) latents; `decode(latents) -> IMAGE` or None."""

    def __init__(self, final, early=None, decode=None):
        self.final = final
        self.early = early
        self._decode = decode
        self._images = {}

    def images(self, which: str):
        if self._decode is None:
            raise ValueError("this verifier needs a VAE to decode the candidates")
        if which not in self._images:
            self._images[which] = self._decode(self.final if which == "final" else self.early)
        return self._images[which]


def cosine_rows(a, b):
    """Cosine similarity of matching rows, everything after the batch dimension flattened (float64)."""
    a, b = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    return torch.nn.functional.cosine_similarity(a, b.to(a.device), dim=1)


def clip_embeds(clip_vision, images):
    """CLIPVisionEncode (crop 'center') image embeddings: (B, D) for images (B, H, W, 3), (B, F, D) for videos
    (B, F, H, W, 3), every frame embedded."""
    with torch.no_grad():
        if images.ndim == 5:
            b, f = images.shape[:2]
            return clip_vision.encode_image(images.reshape(b * f, *images.shape[2:]), crop=True)[
                "image_embeds"].float().reshape(b, f, -1)
        return clip_vision.encode_image(images, crop=True)["image_embeds"].float()


def frame_cosine(a, b):
    """Cosine of matching embeddings (B, D), or of matching frames (B, F, D) averaged over the frames: (B,)."""
    if a.ndim == 2:
        return cosine_rows(a, b)
    return torch.nn.functional.cosine_similarity(a.double(), b.double().to(a.device), dim=-1).mean(1)


class SelfConsistencyLatent:
    name = "self_consistency_latent"
    needs_early = True

    def __call__(self, c: Candidates):
        return cosine_rows(c.early, c.final).cpu()


class SelfConsistencyClip:
    name = "self_consistency_clip"
    needs_early = True

    def __init__(self, clip_vision):
        self.clip_vision = clip_vision

    def __call__(self, c: Candidates):
        return frame_cosine(clip_embeds(self.clip_vision, c.images("early")),
                            clip_embeds(self.clip_vision, c.images("final"))).cpu()


class ReferenceSimilarity:
    name = "reference_clip"
    needs_early = False

    def __init__(self, clip_vision, reference_image):
        self.clip_vision = clip_vision
        ref = clip_embeds(clip_vision, reference_image[:1, :, :, :3])
        self.reference = ref

    def __call__(self, c: Candidates):
        final = clip_embeds(self.clip_vision, c.images("final"))
        return frame_cosine(final, self.reference.reshape(1, *[1] * (final.ndim - 2), -1).expand_as(final)).cpu()


def ranks01(values):
    """Rank of each value among all of them in [0, 1] (0 = worst, 1 = best), ties sharing their mean rank."""
    v = torch.as_tensor(values, dtype=torch.float64)
    n = v.numel()
    if n <= 1:
        return torch.ones_like(v)
    below = (v[None, :] < v[:, None]).sum(1).double()
    equal = (v[None, :] == v[:, None]).sum(1).double()
    return (below + (equal - 1) / 2) / (n - 1)


def rank_average(matrix):
    """Ensemble score per candidate: the mean over verifiers (columns) of its rank among all candidates (rows).
    With one verifier the raw scores are returned, so single-verifier scores stay readable."""
    m = torch.as_tensor(matrix, dtype=torch.float64)
    if m.ndim == 1 or m.shape[1] == 1:
        return m.reshape(-1)
    return torch.stack([ranks01(m[:, j]) for j in range(m.shape[1])], 1).mean(1)
