"""Sleight · R2F plan: a Rare-to-Frequent plan written by the language model of the text encoder.

The language model is a tiny Qwen of ComfyUI's own classes (Z-Image's Qwen3-4B encoder class, OmniGen2's
Qwen2.5-VL-3B class) with random seeded weights (tiny_models.text_encoder): it writes nonsense, so the decoder is
checked against ComfyUI's own forward, and the plan path on hand-written answers in the official format.
"""
import json
import time
import uuid

import pytest
import torch

import comfy.model_management as mm
import comfy.utils
import demo
import tiny_models
from sleight.nodes.prompt import LEVEL_KEY, STAGE_KEY, SleightR2FPlan, SleightRareToFrequent, _conditionings
from sleight.samplers import r2f_plan, r2f_text, text_generation
from sleight.samplers.r2f import DEFAULT_ALPHAS
from tinyrun import encode, load, sample

PROMPT = "A hairy hamburger on a wooden table"
PLAN = dict(decoding="greedy", seed=0, max_new_tokens=12, on_failure="plain prompt")
R2F = dict(visual_detail_level=3, mode="alternate", stop_percent=-1.0, level_map="auto", alphas=DEFAULT_ALPHAS)
ANSWER = """a. Rare concept: A hairy hamburger
b. A hairy hamburger hardly occurs in reality, a hairy object does. Main noun: hamburger, context: hairy, frequent noun: object
c. A hairy object BREAK A hairy hamburger
d. Hair is drawn strand by strand, the finest local detail. Visual Detail Level: 5
### Visual Detail Level: 5
### Final Prompt Sequence: A hairy object BREAK A hairy hamburger"""


@pytest.fixture(scope="module")
def qwen3():
    return tiny_models.text_encoder("qwen3")


def reference_greedy(lm, ids, n):
    """Greedy decoding by full recompute through ComfyUI's own forward (llama.Llama2_), the tied head applied by
    hand: the logits of every step and the tokens."""
    model = lm.wrapper.transformer.model
    head = model.embed_tokens.weight.float()
    seq, logits, tokens = list(ids), [], []
    with torch.no_grad():
        for _ in range(n):
            x, _ = model(torch.tensor([seq]), dtype=torch.float32)
            logits.append(x[0, -1] @ head.T)
            tokens.append(int(torch.argmax(logits[-1])))
            seq.append(tokens[-1])
    return logits, tokens


# ------------------------------------------------------------------ the decoder

@pytest.mark.parametrize("kind", ["qwen3", "qwen25_3b"])
def test_kv_cached_decoder_equals_full_recompute_greedy(kind, qwen3):
    clip = qwen3 if kind == "qwen3" else tiny_models.text_encoder(kind)
    lm = text_generation.language_model(clip, "test")
    assert lm.thinks == (kind == "qwen3")         # Qwen3 gets the empty <think> block, Qwen2.5 does not
    assert not text_generation.comfy_can_generate(clip, lm.wrapper)   # ComfyUI 0.3.75: Sleight's own decoder
    ids = lm.chat_ids("You plan.", f"### Input: {PROMPT}\n### Output:\n")
    ref_logits, ref_tokens = reference_greedy(lm, ids, 16)
    seen = []

    def record(logits):
        seen.append(logits.clone())
        return text_generation.greedy(logits)

    tokens = text_generation.decode_tokens(lm.wrapper.transformer, ids, 16, record, set(), torch.device("cpu"),
                                           torch.float32)
    assert tokens == ref_tokens
    for got, want in zip(seen, ref_logits):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    before = clip.encode_from_tokens_scheduled(clip.tokenize(PROMPT))
    assert lm.generate(ids, 16) == ref_tokens       # the public entry point: the same greedy tokens
    after = clip.encode_from_tokens_scheduled(clip.tokenize(PROMPT))
    assert torch.equal(before[0][0], after[0][0])   # writing leaves the encoder as it was


def test_same_seed_same_answer_and_max_new_tokens_bound(qwen3):
    lm = text_generation.language_model(qwen3, "test")
    ids = lm.chat_ids("You plan.", f"### Input: {PROMPT}\n### Output:\n")
    bar = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: bar.append((value, total)))
    try:
        a = lm.generate(ids, 7, seed=123)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    assert len(a) == 7 and bar == [(i, 7) for i in range(1, 8)]
    assert lm.generate(ids, 7, seed=123) == a
    assert lm.generate(ids, 7, seed=124) != a
    assert lm.generate(ids, 5) == lm.generate(ids, 5)            # greedy ignores the seed
    assert len(lm.generate(ids, 1)) == 1


def test_stop_token_ends_the_answer_and_interrupt_stops_it(qwen3):
    lm = text_generation.language_model(qwen3, "test")
    ids = lm.chat_ids("You plan.", "a cat")
    first = lm.generate(ids, 3)[0]
    out = text_generation.decode_tokens(lm.wrapper.transformer, ids, 50, text_generation.greedy, {first},
                                        torch.device("cpu"), torch.float32)
    assert out == [first]
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            lm.generate(ids, 5)
    finally:
        mm.interrupt_current_processing(False)


def test_decode_drops_reasoning_stop_and_unknown_ids(qwen3):
    lm = text_generation.language_model(qwen3, "test")
    think = [*text_generation.QWEN3_THINK]
    ids = lm.tokenizer("a. Rare concept: x")["input_ids"]
    im_end = lm.tokenizer.convert_tokens_to_ids("<|im_end|>")
    noise = lm.tokenizer("I should think first.")["input_ids"]
    assert lm.decode([think[0], *noise, think[1], *ids, 151900, im_end]) == "a. Rare concept: x"


def test_prompt_ends_with_qwen3_no_thinking_block(qwen3):
    lm = text_generation.language_model(qwen3, "test")
    ids = lm.chat_ids("S", "U")
    blank = lm.tokenizer("\n\n")["input_ids"]
    assert ids[-(2 + 2 * len(blank)):] == [text_generation.QWEN3_THINK[0], *blank, text_generation.QWEN3_THINK[1], *blank]
    assert lm.tokenizer.decode(ids[:-(2 + 2 * len(blank))]) == \
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"


# ------------------------------------------------------------------ the instruction and the answer

def test_every_few_shot_answer_parses_to_its_plan():
    wanted = {"A hairy hamburger": (("A hairy object",), (5,)), "A peach made of glass": (("A pink sphere made of glass",), (4,)),
              "A horned frog": (("A horned animal",), (3,)), "A swimming helicopter": (("A swimming vehicle",), (2,)),
              "A banana shaped apple": (("A banana shaped red object",), (1,)), "A running dog": ((), ()),
              "A horned lion and a hairy frog": (("A horned animal and a hairy animal", "A horned lion and a hairy animal"),
                                                 (3, 5))}
    message = r2f_plan.user_message(PROMPT)
    assert message.endswith(f"### Input: {PROMPT}\n### Output:\n")
    for text, concepts in r2f_plan._EXAMPLES:
        spec = r2f_text.parse_r2f_text(r2f_text.plan_of_answer(text, r2f_plan._answer(text, concepts)))
        assert (spec.stages, spec.levels) == wanted[text], text
        assert f"### Input: {text}\n### Output:\n{r2f_plan._answer(text, concepts)}" in message


def test_answer_in_the_official_format_becomes_the_stages(qwen3):
    model, clip, _ = load("sd15")
    plan = r2f_plan.plan_from_answer(PROMPT, ANSWER + "\n\n### Input: A swimming helicopter\n### Output:\nc. ...")
    assert not plan.warning and plan.text.startswith(f"### Input: {PROMPT}\n") and "helicopter" not in plan.text
    assert plan.spec.stages == ("A hairy object on a wooden table",) and plan.spec.levels == (5,)
    rare, frequent, levels, _ = _conditionings(clip, plan.spec)
    assert levels == "5" and [(e[1][STAGE_KEY], e[1][LEVEL_KEY]) for e in frequent] == [(0, 5)]
    assert torch.equal(frequent[0][0], encode(clip, "A hairy object on a wooden table")[0][0])
    assert torch.equal(rare[0][0], encode(clip, PROMPT)[0][0])
    # the plan text reads back through Sleight · R2F prompt's parser to the same plan
    assert r2f_text.parse_r2f_text(plan.text) == plan.spec


# ------------------------------------------------------------------ the node

def test_unparseable_answer_falls_back_to_the_plain_prompt_bit_identically(qwen3, caplog):
    model, clip, _ = load("sd15")
    with caplog.at_level("WARNING", logger="sleight"):
        out = SleightR2FPlan.execute(qwen3, "  A hairy\nhamburger  ", encode_clip=clip, **PLAN)
    rare, frequent, levels, text = out.result
    assert "Sleight · R2F plan: the language model's answer did not parse" in caplog.text
    assert "stopped at max_new_tokens = 12" in text
    assert text.splitlines()[-2:] == ["### Input: A hairy hamburger", "### Visual Detail Level: 0"]
    assert all(ln.startswith("# ") for ln in text.splitlines()[:-2])
    assert r2f_text.parse_r2f_text(text).stages == ()          # the plan text still reads as an R2F prompt
    assert levels == "" and frequent[0][1][LEVEL_KEY] == 0
    assert torch.equal(rare[0][0], encode(clip, "A hairy hamburger")[0][0])
    neg = encode(clip, "")
    patched = SleightRareToFrequent.execute(model, rare, frequent, **R2F).result[0]
    assert torch.equal(sample(patched, rare, neg, steps=3), sample(model, rare, neg, steps=3))
    with pytest.raises(ValueError, match="Sleight · R2F plan: the language model's answer did not parse.*The answer was"):
        SleightR2FPlan.execute(qwen3, PROMPT, **{**PLAN, "on_failure": "raise"})


def test_unicode_empty_and_very_long_prompts(qwen3):
    rare, frequent, levels, text = SleightR2FPlan.execute(qwen3, "ein haariger Hamburger 🍔 auf 木の机", **PLAN).result
    assert "### Input: ein haariger Hamburger 🍔 auf 木の机" in text and rare[0][0].shape[-1] == 64
    t = time.monotonic()
    rare, _, _, text = SleightR2FPlan.execute(qwen3, " \n ", **{**PLAN, "on_failure": "raise"}).result
    assert "the prompt is empty" in text and rare[0][0].shape[1] >= 1
    long = "a hairy hamburger on a table " * 300
    _, _, _, text = SleightR2FPlan.execute(qwen3, long, **PLAN).result
    assert "tokens long; plans are written for prompts of at most 1024 tokens" in text
    assert time.monotonic() - t < 5, "neither the empty nor the long prompt should reach the language model"
    with pytest.raises(ValueError, match="R2F plan: the prompt is 1800 tokens long"):
        SleightR2FPlan.execute(qwen3, long, **{**PLAN, "on_failure": "raise"})


def test_encoders_that_cannot_write_are_refused_naming_those_that_can():
    import comfy.ops
    from comfy.text_encoders import llama

    _, clip_l, _ = load("sd15")
    with pytest.raises(ValueError, match="R2F plan: this CLIP holds no language model.*Qwen3-4B \\(Z-Image"):
        SleightR2FPlan.execute(clip_l, PROMPT, **PLAN)
    with pytest.raises(ValueError, match="R2F plan: the clip input is empty.*Qwen3-4B"):
        SleightR2FPlan.execute(None, PROMPT, **PLAN)
    # a language model that is not a Qwen chat model: HiDream's Llama-3.1 (its class, at toy size)
    import comfy.sd
    import comfy.supported_models_base
    from comfy.text_encoders import hidream

    te = hidream.hidream_clip(clip_l=False, clip_g=False, t5=False, llama=True, dtype_t5=None, dtype_llama=None,
                              t5xxl_scaled_fp8=None, llama_scaled_fp8=None)
    cpu = torch.device("cpu")
    llama_clip = comfy.sd.CLIP(comfy.supported_models_base.ClipTarget(hidream.HiDreamTokenizer, te), model_options={
        "llama_model_config": {**tiny_models.TINY_LLM, "vocab_size": 128320}, "dtype": torch.float32,
        "load_device": cpu, "offload_device": cpu, "initial_device": cpu})
    with pytest.raises(ValueError, match="R2F plan: the language model of this CLIP \\(Llama2\\) is not a Qwen model"):
        SleightR2FPlan.execute(llama_clip, PROMPT, **PLAN)
    # a language model loaded without its output head (untied: Llama, Mistral, Qwen2.5-VL-7B on ComfyUI 0.3.75)
    untied = llama.Llama2({**tiny_models.TINY_LLM, "vocab_size": 256}, torch.float32, "cpu", comfy.ops.manual_cast)
    with pytest.raises(ValueError, match="loaded without its output head.*Qwen3-4B"):
        text_generation._check_decodable(untied, "Llama2", "Sleight · R2F plan")


# ------------------------------------------------------------------ headless: the example's API prompt

class _Server:
    """What PromptExecutor sends to: ComfyUI's PromptServer, minus the network (messages are recorded)."""

    def __init__(self):
        self.client_id, self.last_node_id, self.messages = None, None, []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


class TinyQwen3CLIP:
    """Stands in for the example's CLIPLoader: the tiny Qwen3 CLIP of the fixture (a real loader builds Qwen3-4B
    at its fixed full size)."""

    clip = None
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def load(self):
        return (self.clip,)


def test_example_api_prompt_runs_headless_into_rare_to_frequent(qwen3, tmp_path):
    """The example's API twin through ComfyUI's own validation and PromptExecutor, in this process: its CLIPLoader
    becomes a node that hands over the fixture's tiny Qwen3, the checkpoint the tiny SD1.5 (the demo's swap)."""
    import asyncio

    import execution
    import folder_paths
    import nodes
    from comfy_extras.nodes_preview_any import NODE_CLASS_MAPPINGS as preview_any
    from PIL import Image
    from sleight.nodes import NODES

    stem = "sleight-r2f-plan"
    prompt, needed = demo.tiny_prompt(json.loads((demo.API_TWINS / f"{stem}.api.json").read_text()))
    tiny_models.ensure_models(names=needed)
    loaders = [k for k, n in prompt.items() if n["class_type"] == "SleightTinyTextEncoder"]   # the demo's stand-in
    assert [prompt[k]["inputs"]["text_encoder"] for k in loaders] == ["qwen3"]
    prompt[loaders[0]] = {"class_type": "TinyQwen3CLIP", "inputs": {}}
    for node in prompt.values():
        if "steps" in node["inputs"]:
            node["inputs"]["steps"] = 3
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=64, height=64)
        if node["class_type"] == "SleightR2FPlan":
            node["inputs"]["max_new_tokens"] = 16
    plan_id = next(k for k, n in prompt.items() if n["class_type"] == "SleightR2FPlan")
    TinyQwen3CLIP.clip = qwen3
    added = {"TinyQwen3CLIP": TinyQwen3CLIP, **preview_any, **{c.GET_SCHEMA().node_id: c for c in NODES}}
    before = {k: nodes.NODE_CLASS_MAPPINGS.get(k) for k in added}
    nodes.NODE_CLASS_MAPPINGS.update(added)
    checkpoints, output = str(tiny_models.MODELS_DIR / "checkpoints"), folder_paths.get_output_directory()
    folder_paths.add_model_folder_path("checkpoints", checkpoints)
    folder_paths.set_output_directory(str(tmp_path))
    try:
        prompt_id = str(uuid.uuid4())
        valid, error, outputs, node_errors = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
        assert valid, (error, node_errors)
        server = _Server()
        executor = execution.PromptExecutor(server, cache_type=execution.CacheType.NONE, cache_args={"lru": 0, "ram": 0})
        executor.execute(prompt, prompt_id, {"client_id": "test"}, outputs)
        assert executor.success, [m for m in server.messages if m[0] == "execution_error"]
    finally:
        folder_paths.set_output_directory(output)
        folder_paths.folder_names_and_paths["checkpoints"][0].remove(checkpoints)
        for k, v in before.items():
            if v is None:
                nodes.NODE_CLASS_MAPPINGS.pop(k, None)
            else:
                nodes.NODE_CLASS_MAPPINGS[k] = v
    done = [d["node"] for e, d in server.messages if e == "executed"]
    assert plan_id in done
    shown = "".join(executor.history_result["outputs"][plan_id]["text"])
    assert "answer did not parse" in shown and "### Input: A hairy hamburger on a wooden table" in shown
    preview = next(k for k, n in prompt.items() if n["class_type"] == "PreviewAny")
    assert prompt[preview]["inputs"]["source"] == [plan_id, 3]
    plan_text = executor.history_result["outputs"][preview]["text"][0]
    assert shown.startswith(plan_text) and plan_text.endswith("### Visual Detail Level: 0")
    images = {d["node"]: d["output"]["images"] for e, d in server.messages if e == "executed" and "images" in d["output"]}
    assert len(images) == 2                      # the baseline and the Rare-to-Frequent Save nodes
    pixels = []
    for (img,) in images.values():
        with Image.open(tmp_path / img["subfolder"] / img["filename"]) as im:
            pixels.append(im.tobytes())
    assert pixels[0] == pixels[1], "a plan that fell back must leave sampling as it was"
