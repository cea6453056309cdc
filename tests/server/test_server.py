"""End to end on a real ComfyUI server (CPU, tiny models): what a user's install would see.

One server for the module. Every tests/workflows/*.api.json runs with the demo's model substitution
(scripts/demo.py `tiny_prompt`), with its seeds shifted per workflow so ComfyUI's cache never answers for it.
After each workflow and each interrupted run, a plain KSampler on the same loaded checkpoint and seed must give
the bytes it gave before any trick ran (tests/server/plain.py): nothing leaks into the model or the server.
"""
import json
import re

import pytest
import requests
from PIL import Image

import comfy_env
import demo
from comfy_server import ComfyServer, PromptError
from plain import Plain, checkpoints, tiny_ckpt

WORKFLOWS = sorted(demo.API_TWINS.glob("*.api.json"))
LOG = comfy_env.OUTPUT / "server-tests" / "server.log"
PROVOKED = []  # (start, end) offsets of the server log written while a test provoked an error on purpose
RUNS = {}      # stem -> Result, for the checks after the runs


def stem_of(path):
    return path.name[: -len(".api.json")]


@pytest.fixture(scope="module")
def server():
    import tiny_models

    needed = {"sd15"} | {m for p in WORKFLOWS for m in demo.tiny_prompt(json.loads(p.read_text()))[1]}
    tiny_models.ensure_models(names=sorted(needed))
    with ComfyServer(log_path=LOG) as s:
        yield s


@pytest.fixture(scope="module")
def plain(server):
    """Plain runs on the workflows' checkpoints. Each checkpoint's baseline is taken right before the first trick
    on it (a global leak from an earlier trick shows in that trick's own checks), so it costs no extra load."""
    return Plain(server)


def test_tiny_prompt_substitutes_models_sizes_and_steps():
    flux = {
        "1": {"class_type": "UNETLoader",
              "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "fp8_e4m3fn"}},
        "2": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
                                                         "clip_name2": "t5xxl_fp16.safetensors", "type": "flux"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "4": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 1024, "height": 768, "batch_size": 4}},
        "5": {"class_type": "BasicScheduler", "inputs": {"steps": 30, "scheduler": "simple", "denoise": 1.0,
                                                         "model": ["1", 0]}},
        "6": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd3.5_medium.safetensors"}},
    }
    tiny, needed = demo.tiny_prompt(flux)
    assert flux["2"]["class_type"] == "DualCLIPLoader", "the input prompt must not be modified"
    assert needed == ["flux_dev", "sd3"]
    assert tiny["1"]["inputs"] == {"unet_name": "sleight-tiny-flux-dev.safetensors", "weight_dtype": "default"}
    assert tiny["2"] == {"class_type": "CLIPLoader", "inputs": {"clip_name": "sleight-tiny-clip-l.safetensors",
                                                                "type": "sd3"}}
    assert tiny["3"]["inputs"]["vae_name"] == "sleight-tiny-taef1.safetensors"
    assert tiny["4"]["inputs"] == {"width": 128, "height": 96, "batch_size": 1}
    assert tiny["5"]["inputs"]["steps"] == demo.MAX_STEPS
    assert tiny["6"]["inputs"]["ckpt_name"] == "sleight-tiny-sd3.safetensors"


def test_tiny_prompt_runs_wan_on_its_stock_loadable_twin():
    wan = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "wan2.1_t2v_1.3B_fp16.safetensors",
                                                     "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                                                     "type": "wan", "device": "default"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}},
        "4": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 832, "height": 480, "length": 33,
                                                                  "batch_size": 2}},
    }
    tiny, needed = demo.tiny_prompt(wan)
    assert needed == ["flux_dev", "wan21_t2v_stock"]
    assert tiny["1"]["inputs"]["unet_name"] == "sleight-tiny-wan21-t2v-stock.safetensors"
    assert tiny["2"] == {"class_type": "CLIPLoader", "inputs": {"clip_name": "sleight-tiny-clip-l.safetensors",
                                                                "type": "sd3"}}
    assert tiny["3"]["inputs"]["vae_name"] == "sleight-tiny-taew21.safetensors"
    assert tiny["4"]["inputs"] == {"width": 128, "height": 80, "length": demo.MAX_FRAMES, "batch_size": 1}


def sleight_nodes(object_info):
    return {k: v for k, v in object_info.items() if v.get("python_module", "").endswith("sleight")}


def test_nodes_have_descriptions_and_tooltips(server):
    nodes = sleight_nodes(server.client.object_info())
    assert {"SleightAPG", "SleightInspectAttention"} <= set(nodes), f"pack nodes missing: {sorted(nodes)}"
    for name, info in nodes.items():
        assert info["display_name"].startswith("Sleight"), name
        assert info["category"].startswith("sleight/"), name
        assert len(info.get("description", "")) > 40, f"{name} has no real description"
        for section in ("required", "optional"):
            for inp, spec in info["input"].get(section, {}).items():
                opts = spec[1] if len(spec) > 1 else {}
                assert opts.get("tooltip"), f"{name}.{inp} has no tooltip"
        assert info.get("output_tooltips") and all(info["output_tooltips"]), f"{name} outputs lack tooltips"


def test_node_docs_are_served(server):
    docs = sorted((comfy_env.ROOT / "web" / "docs").glob("*.md"))
    assert "SleightAPG.md" in [d.name for d in docs]
    for doc in docs:
        r = requests.get(f"{server.url}/extensions/sleight/docs/{doc.name}", timeout=30)
        assert r.status_code == 200, doc.name
        assert r.content == doc.read_bytes(), f"{doc.name}: served bytes differ from the file"  # (UTF-8, no charset)
        assert r.text.lstrip().startswith("#"), f"{doc.name} should start with a heading"


def test_example_workflows_are_templates(server):
    listed = requests.get(f"{server.url}/api/workflow_templates", timeout=30).json()
    examples = sorted(p.stem for p in (comfy_env.ROOT / "example_workflows").glob("*.json"))
    assert "sleight-apg" in examples
    assert sorted(listed.get("sleight", [])) == examples
    for stem in examples:
        r = requests.get(f"{server.url}/api/workflow_templates/sleight/{stem}.json", timeout=30)
        assert r.status_code == 200 and r.json()["version"] == 0.4, stem


# Few steps (DesignEdit's layers need 6: its blending window takes 82 % of them): these check that every workflow
# runs, its trick shows and nothing leaks; `make demo` runs them at 12 steps on the tiny models, 20 on the shapes model.
TEST_STEPS = 6


def shift_seeds(prompt, offset):
    for node in prompt.values():
        for key in ("seed", "noise_seed"):
            if isinstance(node["inputs"].get(key), int):
                node["inputs"][key] += offset
    return prompt


@pytest.mark.parametrize("path", WORKFLOWS, ids=stem_of)
def test_workflow_runs_and_leaves_the_model_as_it_was(server, plain, path, tmp_path):
    prompt, _ = demo.tiny_prompt(json.loads(path.read_text()), steps=TEST_STEPS)
    for ckpt in checkpoints(prompt):
        plain.baseline(ckpt)
    check_run(server, shift_seeds(prompt, 1000 + WORKFLOWS.index(path)), stem_of(path), tmp_path)
    for ckpt in checkpoints(prompt):
        plain.check(ckpt, f"the workflow {stem_of(path)}", reuses_model=True)


SHAPES = [p for p in WORKFLOWS if stem_of(p) in demo.SHAPES_WORKFLOWS]


def test_shapes_prompt_maps_every_shapes_workflow():
    assert len(SHAPES) == len(demo.SHAPES_WORKFLOWS), "a SHAPES_WORKFLOWS entry has no API twin"
    for path in SHAPES:
        original = json.loads(path.read_text())
        prompt = demo.shapes_prompt(original, stem_of(path))  # KeyError on a text SHAPES_TEXT lacks
        loaders = [n for n in prompt.values() if n["class_type"] == "CheckpointLoaderSimple"]
        assert [n["inputs"]["ckpt_name"] for n in loaders] == ["sleight-shapes-sd15.safetensors"]
        ckpt = next(k for k, n in prompt.items() if n["class_type"] == "CheckpointLoaderSimple")
        clip = next(k for k, n in prompt.items() if n["class_type"] == "CLIPLoader")
        links = [v for n in prompt.values() for v in n["inputs"].values() if isinstance(v, list)]
        assert [ckpt, 1] not in links and [clip, 0] in links, "CLIP inputs must come from the CLIPLoader"
        texts = [n["inputs"][k] for n in prompt.values() for k in demo.TEXT_INPUTS if isinstance(n["inputs"].get(k), str)]
        assert all(t in demo.SHAPES_TEXT.values() for t in texts)
        assert all(n["inputs"]["steps"] <= demo.SHAPES_STEPS for n in prompt.values() if "steps" in n["inputs"])
    with pytest.raises(KeyError, match="no shapes-world caption"):
        demo.shapes_prompt({"1": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat"}}}, "x")


@pytest.mark.skipif(demo.shapes_checkpoint() is None, reason="the trained shapes model is not in models/shapes")
@pytest.mark.parametrize("path", SHAPES, ids=stem_of)
def test_workflow_runs_on_the_shapes_model(server, path, tmp_path):
    prompt = demo.shapes_prompt(json.loads(path.read_text()), stem_of(path), steps=TEST_STEPS)
    check_run(server, shift_seeds(prompt, 2000 + WORKFLOWS.index(path)), "shapes:" + stem_of(path), tmp_path)


def check_run(server, prompt, name, tmp_path):
    """Runs an API prompt; every sampler shows a full progress bar, every SaveImage an image, tricks differ."""
    result = server.client.run(prompt)  # raises with the node's message on any error
    RUNS[name] = result

    samplers = {nid for nid, n in prompt.items()   # KSampler-like nodes (schedulers take steps but show no bar)
                if isinstance(n["inputs"].get("steps"), int) and not n["class_type"].endswith("Scheduler")}
    # a seedless sampler (Sleight · Invert) with the same inputs as in an earlier workflow is answered from
    # ComfyUI's cache: it did not run and shows no bar. Seeded samplers are never cached (seeds are shifted).
    cached = {str(n) for d in result.of_type("execution_cached") for n in d.get("nodes", [])}
    seeded = {nid for nid in samplers if any(k in prompt[nid]["inputs"] for k in ("seed", "noise_seed"))}
    assert not cached & seeded, f"seeded samplers answered from the cache: {cached & seeded}"
    progress = result.of_type("progress")
    for nid in samplers - cached:
        seen = [p for p in progress if str(p["node"]) == nid]
        # ddim_uniform can give one sigma more than asked (a ComfyUI quirk): a full bar of at least `steps`
        assert seen and seen[-1]["value"] == seen[-1]["max"] >= prompt[nid]["inputs"]["steps"], \
            f"no complete progress for sampler node {nid}: {seen}"

    saves = demo.save_nodes(prompt)
    paths = server.client.download_outputs(result.history, tmp_path)
    assert set(saves) <= set(paths), f"SaveImage nodes without output: {set(saves) - set(paths)}"
    pixels = {}
    for nid, (p, *_) in paths.items():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", p
        with Image.open(p) as im:
            im.verify()
        with Image.open(p) as im:
            assert max(im.size) == demo.MAX_SIDE, (p, im.size)
            pixels[nid] = im.convert("RGB").tobytes()
    base = [nid for nid in saves if "baseline" in str(prompt[nid]["inputs"]["filename_prefix"])]
    for b in base:
        for nid in saves:
            if nid != b and name in SAME_AS_BASELINE:
                assert pixels[nid] == pixels[b], f"{saves[nid]}: {SAME_AS_BASELINE[name]}, yet it differs"
            elif nid != b:
                assert pixels[nid] != pixels[b], f"{saves[nid]} is identical to the baseline: the trick did nothing"


# Runs whose trick must leave the image as the baseline on the tiny models, and why.
SAME_AS_BASELINE = {"sleight-r2f-plan": "the tiny random Qwen3's plan does not parse, so Rare-to-Frequent samples "
                                        "the prompt as written (its documented fallback)"}


def sleight_problems(log):
    """Tracebacks, IMPORT FAILED and error lines that mention the pack."""
    problems, lines, i = [], log.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("Traceback"):
            j = i + 1
            inside = ("Traceback", "During", "The above")
            while j < len(lines) and (lines[j][:1].isspace() or lines[j].startswith(inside) or not lines[j].strip()):
                j += 1
            block = "\n".join(lines[i:j + 1])
            if "sleight" in block.lower():
                problems.append(block)
            i = j + 1
            continue
        if ("IMPORT FAILED" in line or re.search(r"error|exception", line, re.I)) and "sleight" in line.lower():
            problems.append(line)
        i += 1
    return problems


def test_sleight_problems_detector():
    log = ("ok\nTraceback (most recent call last):\n  File \"/x/custom_nodes/sleight/nodes/a.py\", line 1\n"
           "ValueError: boom\nfine\n0.1 seconds (IMPORT FAILED): /x/custom_nodes/sleight\n"
           "Traceback (most recent call last):\n  File \"/x/comfy_extras/nodes_audio.py\"\n"
           "ModuleNotFoundError: torchaudio\n")
    found = sleight_problems(log)
    assert len(found) == 2 and "ValueError: boom" in found[0] and "IMPORT FAILED" in found[1]


def test_server_log_is_clean(server):
    if not RUNS:
        pytest.skip("no workflow ran in this session: this test checks the log the workflow runs leave")
    log = server.log_text()
    for start, end in reversed(PROVOKED):
        log = log[:start] + log[end:]
    assert re.search(r"seconds: .*custom_nodes[/\\]sleight$", log, re.M), "the pack is not in the import list"
    assert not sleight_problems(log), "\n\n".join(sleight_problems(log))


def apg_prompt(seed, **apg):
    """CheckpointLoader(tiny sd15) -> SleightAPG -> KSampler -> VAEDecode -> SaveImage, 64 px."""
    ckpt = demo.tiny_file("sd15", "checkpoint")
    apg = {"eta": 0.0, "momentum": -0.5, "norm_threshold": 15.0, "start_percent": 0.0, "end_percent": 1.0,
           "cfg_warmup_steps": 0, "cfg_warmup_scale": 0.0, "scale_threshold_by_latent_size": False, **apg}
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "SleightAPG", "inputs": {"model": ["1", 0], **apg}},
        "6": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": 2, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["5", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0]}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"filename_prefix": f"sleight-test/apg-{seed}", "images": ["7", 0]}},
    }


def test_bad_window_is_an_execution_error_naming_the_node(server):
    start = len(server.log_text())
    result = server.client.run(apg_prompt(1, start_percent=0.9, end_percent=0.1), check=False)
    PROVOKED.append((start, len(server.log_text())))
    assert result.status == "execution_error"
    (err,) = result.of_type("execution_error")
    assert err["node_type"] == "SleightAPG" and err["node_id"] == "5"
    assert "Sleight · APG" in err["exception_message"] and "start_percent" in err["exception_message"]
    assert result.history["status"]["status_str"] == "error"


def test_out_of_range_input_is_refused_by_validation(server):
    with pytest.raises(PromptError) as e:
        server.client.run(apg_prompt(2, eta=5.0))
    assert e.value.body["node_errors"]["5"]["class_type"] == "SleightAPG"
    assert "eta" in str(e.value)


def interrupted(server, prompt, sampler_id):
    """Runs `prompt`, interrupting it at the first progress of node `sampler_id`; the progress values it saw."""
    seen = []

    def interrupt_once(data):
        if str(data.get("node")) == sampler_id:
            if not seen:
                server.client.interrupt()
            seen.append(data["value"])

    start = len(server.log_text())
    result = server.client.run(prompt, on_progress=interrupt_once, check=False)
    PROVOKED.append((start, len(server.log_text())))
    assert result.status == "execution_interrupted", result.status
    return seen


def test_interrupt_stops_sampling(server, plain):
    prompt = apg_prompt(3)
    prompt["6"]["inputs"]["steps"] = 500
    plain.baseline(tiny_ckpt("sd15"))
    seen = interrupted(server, prompt, "6")
    assert seen and max(seen) < 500
    plain.check(tiny_ckpt("sd15"), "an interrupted APG run", reuses_model=True)


# the sampler node of each workflow's trick and the node holding its steps (hdpainter: RASG through BasicScheduler)
INTERRUPTED = {"sleight-hdpainter": ("9", "7"), "sleight-addit": ("8", "8")}


@pytest.mark.parametrize("stem", sorted(INTERRUPTED))
def test_interrupt_mid_trick_leaves_the_model_as_it_was(server, plain, stem):
    """Interrupted inside the trick's sampling (RASG swaps the UNet's weights for trainable copies while it runs;
    Add-it runs the source in lockstep): a plain run afterwards on the same loaded model gives the baseline."""
    sampler_id, steps_id = INTERRUPTED[stem]
    prompt, _ = demo.tiny_prompt(json.loads((demo.API_TWINS / f"{stem}.api.json").read_text()))
    prompt = shift_seeds(prompt, 3000)
    prompt[steps_id]["inputs"]["steps"] = 400
    for ckpt in checkpoints(prompt):
        plain.baseline(ckpt)
    seen = interrupted(server, prompt, sampler_id)
    assert seen and max(seen) < 400
    for ckpt in checkpoints(prompt):
        plain.check(ckpt, f"an interrupted {stem} run", reuses_model=True)
