"""Writing text with the language model a CLIP already holds: the Qwen text encoders of ComfyUI.

`language_model(clip, node)` finds the Qwen language model inside a CLIP (Z-Image's Qwen3-4B, OmniGen2's
Qwen2.5-VL-3B, ...) or raises an error naming the encoders that can write. Its `generate` uses the CLIP's own
`generate` where the running ComfyUI has one (newer ComfyUI, comfy/text_encoders/qwen_generation.py); on ComfyUI
without it (0.3.75) a greedy / seeded decoder with a KV cache runs ComfyUI's own modules of the encoder: its
embedding, norms, projections and MLPs, called one block at a time so that each new token attends to the cached
keys and values instead of recomputing the whole sequence (ComfyUI 0.3.75's attention takes no past keys).
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import comfy.model_management
import comfy.ops
import comfy.sd1_clip
import comfy.utils
from comfy.text_encoders import llama

# Language models whose output head is their token embedding matrix (tie_word_embeddings: true in the released
# configs of Qwen3-4B and Qwen2.5(-VL)-3B). ComfyUI 0.3.75 loads no lm_head, so only these can write there.
TIED_HEAD = {llama.Qwen3_4BConfig: "Qwen3-4B (Z-Image)", llama.Qwen25_3BConfig: "Qwen2.5-VL-3B (OmniGen2)"}
CAN_WRITE = ("Qwen3-4B (Z-Image; CLIPLoader type lumina2) and Qwen2.5-VL-3B (OmniGen2) on any ComfyUI; on a newer "
             "ComfyUI whose Qwen encoders can generate text, also those (Qwen-Image's Qwen2.5-VL-7B, Flux.2 Klein's "
             "Qwen3)")
# Qwen3's reasoning markers <think> / </think>: ids of the Qwen3 vocabulary (ComfyUI 0.3.75's Qwen tokenizer files
# are Qwen2.5's, which name these ids otherwise). An empty block before the answer is Qwen3's "no thinking" mode.
QWEN3_THINK = (151667, 151668)
TEMPERATURE, TOP_P = 0.6, 0.9   # R2F's LLaMA-3 setting (official gpt/mllm.py: temperature 0.6, top_p 0.9)


def _err(node, msg):
    return ValueError(f"{node}: {msg}")


@dataclass
class LanguageModel:
    """The language model of a CLIP: its ComfyUI wrapper (an SDClipModel), the tokenizer, and how to prompt it."""

    clip: object
    wrapper: object          # comfy.sd1_clip.SDClipModel whose transformer is a ComfyUI Llama-family model
    tokenizer: object        # the Hugging Face tokenizer ComfyUI loaded for it
    label: str
    key: str                 # the name of its tokens in ComfyUI's token dicts
    node: str

    @property
    def thinks(self):
        """Qwen3 (query/key norms on Llama blocks) reasons in a <think> block unless given an empty one."""
        return self.wrapper.transformer.model.config.q_norm is not None

    @property
    def stop_ids(self):
        return {i for i in self.tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"]) if i is not None}

    def chat_ids(self, system: str, user: str) -> list:
        """ChatML (the Qwen chat format) ending where the assistant's answer starts."""
        text = f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
        ids = self.tokenizer(text)["input_ids"]
        if self.thinks:
            blank = self.tokenizer("\n\n")["input_ids"]
            ids += [QWEN3_THINK[0], *blank, QWEN3_THINK[1], *blank]
        return ids

    def count(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    def decode(self, ids) -> str:
        """The answer's text: stop tokens, a reasoning block and ids the tokenizer does not know are left out."""
        ids = list(ids)
        if QWEN3_THINK[1] in ids:
            ids = ids[ids.index(QWEN3_THINK[1]) + 1:]
        known = len(self.tokenizer)
        return self.tokenizer.decode([i for i in ids if 0 <= i < known and i not in self.stop_ids],
                                     skip_special_tokens=True)

    def generate(self, ids, max_new_tokens: int, seed=None) -> list:
        """New token ids after `ids` (at most max_new_tokens, ending at a stop token): greedy when seed is None,
        else sampled at the paper's temperature / top-p from a generator seeded with `seed`."""
        if comfy_can_generate(self.clip, self.wrapper):
            return self._comfy_generate(ids, max_new_tokens, seed)
        self.clip.load_model()
        device = self.clip.patcher.load_device
        dtype = torch.bfloat16 if comfy.model_management.should_use_bf16(device) else torch.float32
        pick = greedy if seed is None else sampler(seed)
        bar = comfy.utils.ProgressBar(max_new_tokens)
        return decode_tokens(self.wrapper.transformer, ids, max_new_tokens, pick, self.stop_ids, device, dtype,
                             on_token=lambda n: bar.update(1))

    def _comfy_generate(self, ids, max_new_tokens, seed):
        tokens = {self.key: [[(i, 1.0) for i in ids]]}
        out = self.clip.generate(tokens, do_sample=seed is not None, max_length=max_new_tokens,
                                 temperature=TEMPERATURE, top_k=0, top_p=TOP_P, min_p=0.0, repetition_penalty=1.0,
                                 seed=0 if seed is None else int(seed))
        out = out.tolist() if torch.is_tensor(out) else list(out)
        if out and not isinstance(out[0], int):          # a batch of one sequence
            out = out[0].tolist() if torch.is_tensor(out[0]) else list(out[0])
        return [int(i) for i in out][:max_new_tokens]


def comfy_can_generate(clip, wrapper) -> bool:
    """The running ComfyUI writes text with this CLIP itself (CLIP.generate down to the language model)."""
    return all(callable(getattr(o, "generate", None)) for o in (clip, clip.cond_stage_model, wrapper, wrapper.transformer))


def language_model(clip, node: str) -> LanguageModel:
    """The Qwen language model inside `clip`, or a ValueError naming why it cannot write and which encoders can."""
    if clip is None:
        raise _err(node, f"the clip input is empty. Connect a text encoder that can write: {CAN_WRITE}.")
    found = [(name, m) for name, m in clip.cond_stage_model.named_modules()
             if isinstance(m, comfy.sd1_clip.SDClipModel) and isinstance(getattr(m, "transformer", None), llama.BaseLlama)]
    if not found:
        kinds = sorted({type(m.transformer).__name__ for _, m in clip.cond_stage_model.named_modules()
                        if isinstance(m, comfy.sd1_clip.SDClipModel)}) or [type(clip.cond_stage_model).__name__]
        raise _err(node, f"this CLIP holds no language model that can write text (it holds {', '.join(kinds)}: CLIP "
                         f"and T5 encoders only encode). Plan with {CAN_WRITE}, and connect your model's own CLIP to "
                         "encode_clip.")
    name, wrapper = found[0]
    attr = name.rsplit(".", 1)[-1] if name else clip.cond_stage_model.clip
    tok = getattr(getattr(clip.tokenizer, attr, None), "tokenizer", None)
    lm = wrapper.transformer
    label = TIED_HEAD.get(type(lm.model.config), type(lm).__name__)
    convert = getattr(tok, "convert_tokens_to_ids", None)
    if convert is None or convert("<|im_start|>") in (None, getattr(tok, "unk_token_id", None)):
        raise _err(node, f"the language model of this CLIP ({label}) is not a Qwen model (no ChatML tokens in its "
                         f"tokenizer); Sleight plans only with Qwen encoders: {CAN_WRITE}.")
    model = LanguageModel(clip, wrapper, tok, label, getattr(clip.cond_stage_model, "clip_name", attr), node)
    if not comfy_can_generate(clip, wrapper):
        _check_decodable(lm, label, node)
    return model


def _check_decodable(lm, label, node):
    blocks_ok = (all(type(b) is llama.TransformerBlock and hasattr(b.self_attn, "q_proj") for b in lm.model.layers)
                 and not getattr(lm.model, "normalize_in", False))
    if not blocks_ok:
        raise _err(node, f"{label} has blocks Sleight's decoder does not run (Gemma-style norms or attention), and "
                         f"this ComfyUI cannot generate text with it. Plan with {CAN_WRITE}.")
    if _head(lm) is None:
        raise _err(node, f"{label} was loaded without its output head (ComfyUI keeps what encoding needs, and this "
                         "model's head is not its token embedding), so it cannot write text on this ComfyUI. Plan "
                         f"with {CAN_WRITE}.")


def _head(lm):
    """The module whose weight maps hidden states to token logits: lm_head, or the tied token embedding."""
    head = getattr(lm.model, "lm_head", None)
    if head is not None:
        return head
    return lm.model.embed_tokens if type(lm.model.config) in TIED_HEAD else None


# ---------------------------------------------------------------- decoding over ComfyUI's Llama / Qwen modules

def greedy(logits):
    return int(torch.argmax(logits, dim=-1))


def sampler(seed):
    """Temperature + nucleus sampling on the CPU from a generator seeded once (the same seed, the same tokens on
    any device)."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))

    def pick(logits):
        probs = torch.softmax(logits.float().cpu() / TEMPERATURE, dim=-1)
        order = torch.argsort(probs, descending=True)
        ranked = probs[order]
        keep = torch.cumsum(ranked, dim=-1) - ranked < TOP_P   # the smallest prefix whose mass reaches top-p
        ranked = ranked * keep
        return int(order[torch.multinomial(ranked / ranked.sum(), 1, generator=gen)])

    return pick


class _KVCache:
    """Keys and values of every layer for `capacity` positions, filled left to right."""

    def __init__(self, n_layers, kv_heads, head_dim, capacity, device, dtype):
        self.k = torch.empty(n_layers, 1, kv_heads, capacity, head_dim, device=device, dtype=dtype)
        self.v = torch.empty_like(self.k)
        self.length = 0

    def extend(self, layer, k, v):
        end = self.length + k.shape[2]
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


def _block(block, x, freqs_cis, cache, layer, causal):
    """llama.TransformerBlock.forward with the keys and values of earlier positions taken from the cache."""
    attn = block.self_attn
    b, n, _ = x.shape
    h = block.input_layernorm(x)
    q = attn.q_proj(h).view(b, n, attn.num_heads, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(h).view(b, n, attn.num_kv_heads, attn.head_dim).transpose(1, 2)
    v = attn.v_proj(h).view(b, n, attn.num_kv_heads, attn.head_dim).transpose(1, 2)
    if attn.q_norm is not None:
        q = attn.q_norm(q)
    if attn.k_norm is not None:
        k = attn.k_norm(k)
    q, k = llama.apply_rope(q, k, freqs_cis=freqs_cis)
    k, v = cache.extend(layer, k, v)
    # ComfyUI runs this attention with SDPA too (optimized_attention_for_device(..., small_input=True))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=attn.num_heads != attn.num_kv_heads)
    x = x + attn.o_proj(out.transpose(1, 2).reshape(b, n, attn.inner_size))
    return x + block.mlp(block.post_attention_layernorm(x))


def _step(lm, ids, cache, dtype, head_weight):
    """Run `ids` (the prompt, or one new token) through the model; the logits of the last position."""
    model, cfg = lm.model, lm.model.config
    start, n = cache.length, ids.shape[1]
    x = model.embed_tokens(ids, out_dtype=dtype)
    positions = torch.arange(start, start + n, device=ids.device).unsqueeze(0)
    freqs = llama.precompute_freqs_cis(cfg.head_dim, positions, cfg.rope_theta, cfg.rope_scale, cfg.rope_dims,
                                       device=ids.device)
    # is_causal aligns the mask top-left: right for the prompt (no cache yet); one new token needs no mask
    causal = n > 1
    assert start == 0 or not causal, "only the prompt runs several positions at once"
    for i, block in enumerate(model.layers):
        x = _block(block, x, freqs, cache, i, causal)
    cache.length += n
    return F.linear(model.norm(x[0, -1]), head_weight)


@torch.no_grad()
def decode_tokens(lm, ids, max_new_tokens, pick, stop_ids, device, dtype, on_token=None):
    """Up to max_new_tokens new ids after the prompt `ids`, each chosen by pick(logits), stopping after a stop id.
    The prompt runs once; every new token runs alone against the cache (the cost of one token, not of the whole
    sequence, per step)."""
    cfg = lm.model.config
    cache = _KVCache(len(lm.model.layers), cfg.num_key_value_heads, cfg.head_dim, len(ids) + max_new_tokens,
                     device, dtype)
    head = _head(lm)
    # cast once for the whole answer (ComfyUI's cast per call would copy the vocabulary matrix at every token)
    weight, bias, stream = comfy.ops.cast_bias_weight(head, dtype=dtype, device=device, offloadable=True)
    out = []
    try:
        logits = _step(lm, torch.tensor([ids], device=device), cache, dtype, weight)
        while len(out) < max_new_tokens:
            comfy.model_management.throw_exception_if_processing_interrupted()
            token = pick(logits)
            out.append(token)
            if on_token is not None:
                on_token(len(out))
            if token in stop_ids or len(out) == max_new_tokens:
                break
            logits = _step(lm, torch.tensor([[token]], device=device), cache, dtype, weight)
    finally:
        comfy.ops.uncast_bias_weight(head, weight, bias, stream)
    return out
