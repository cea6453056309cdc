"""Verifiers for inference-time search (Ma et al. 2025, arXiv 2501.09732): score candidates, higher is better.

A verifier sees a batch of candidates as `Candidates`: the final latents and the x0 predictions at an early
step, both in the latent space the user sees (process_latent_out applied), decoded to images only when a
verifier asks (decoding is the costly part, done once per batch and shared).

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
    """CLIPVisionEncode (crop 'center') image embeddings, (B, D)."""
    with torch.no_grad():
        return clip_vision.encode_image(images, crop=True)["image_embeds"].float()


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
        return cosine_rows(clip_embeds(self.clip_vision, c.images("early")),
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
        return cosine_rows(final, self.reference.expand(final.shape[0], -1)).cpu()


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
