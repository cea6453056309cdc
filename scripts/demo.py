"""make demo: run every example workflow on a real ComfyUI server with the tiny models, then one contact sheet.
(`scripts/demo.py STEM ...` runs only those workflows.)

For each `tests/workflows/<stem>.api.json` (the API twin of `example_workflows/<stem>.json`) the real model file
names are swapped for the tiny models, latents shrink to 128 px and samplers to at most 12 steps; the prompt is
queued over HTTP, progress followed on the WebSocket, the images fetched into output/demo/<stem>/, and
output/demo/contact-sheet.png shows each workflow's "baseline" image beside its trick images.
Exit status 1 if any workflow fails.

Workflows on SD1.5 or SDXL (SHAPES_WORKFLOWS) run on the trained shapes model instead (models/shapes, shapes/README.md):
its checkpoint replaces the real one, a CLIPLoader with its frozen CLIP-L feeds every CLIP input, and each prompt is
swapped for a shapes-world caption (SHAPES_TEXT), so their pictures are real pictures of the shapes world, at most
20 steps. The shapes model is SD1.5-shaped and the paper names no text layers for SD1.5, so on it the text-routing
workflow routes its letter into every layer (SHAPES_INPUTS; still from 0.08 of the schedule, so the picture stays).
The others (SD3, Flux, Wan) run on random-weight tiny models: their images are noise-like and show only that the
graphs run; video latents shrink to MAX_FRAMES frames, each frame saved as an image.
"""
import copy
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # noqa: E402
from comfy_server import ComfyServer, ExecutionError, PromptError  # noqa: E402

EXAMPLES = comfy_env.ROOT / "example_workflows"
API_TWINS = comfy_env.ROOT / "tests" / "workflows"
OUT = comfy_env.OUTPUT / "demo"
MAX_SIDE, MAX_STEPS = 128, 12
SHAPES_STEPS = 20  # the shapes model's adherence is measured at 20 steps (shapes/adherence.py)

# real file name a workflow names -> (tiny model, role in tiny_models.MODELS[...].files)
SUBSTITUTES = {
    "v1-5-pruned-emaonly.safetensors": ("sd15", "checkpoint"),
    "v1-5-pruned-emaonly-fp16.safetensors": ("sd15", "checkpoint"),
    "sd-v1-5-inpainting.ckpt": ("sd15_inpaint", "checkpoint"),
    "sd_xl_base_1.0.safetensors": ("sdxl_layout", "checkpoint"),   # the real 70-block layout: presets resolve
    "sd3.5_medium.safetensors": ("sd3", "checkpoint"),
    "flux1-dev.safetensors": ("flux_dev", "unet"),
    "flux1-schnell.safetensors": ("flux_schnell", "unet"),
    "clip_l.safetensors": ("flux_dev", "clip"),
    "ae.safetensors": ("flux_dev", "vae"),
    "flux2_dev_fp8mixed.safetensors": ("flux2", "unet"),
    "flux2-vae.safetensors": ("flux2", "vae"),
    "qwen_image_edit_2509_fp8_e4m3fn.safetensors": ("qwen_image", "unet"),
    "qwen_image_vae.safetensors": ("qwen_image", "vae"),
    "wan2.1_t2v_1.3B_fp16.safetensors": ("wan21_t2v_stock", "unet"),
    "wan_2.1_vae.safetensors": ("wan21_t2v_stock", "vae"),
}
# language-model text encoders -> the tiny in-memory encoder standing in for them (tiny_models.TEXT_ENCODERS; the
# test-only loader in scripts/tiny_nodes builds it: a real CLIPLoader builds these encoders at their fixed full size)
TEXT_ENCODER_SUBSTITUTES = {"mistral_3_small_flux2_bf16.safetensors": "qwen3", "qwen_3_4b.safetensors": "qwen3",
                            "qwen_2.5_vl_7b_fp8_scaled.safetensors": "qwen25"}
# umT5-XXL has no tiny twin a server can load (CLIPLoader builds it at its fixed size): the tiny CLIP-L as type "sd3",
# 4096-wide like umT5, stands in
T5_STAND_INS = {"umt5_xxl_fp8_e4m3fn_scaled.safetensors", "umt5_xxl_fp16.safetensors"}
# T5-XXL has no tiny twin: multi-encoder loaders become CLIPLoader(tiny CLIP-L, type "sd3"), 4096-wide like T5
MULTI_CLIP_LOADERS = {"DualCLIPLoader", "TripleCLIPLoader"}
EMPTY_LATENTS = {"EmptyLatentImage", "EmptySD3LatentImage", "EmptyFlux2LatentImage", "EmptyHunyuanLatentVideo"}
MAX_FRAMES = 5    # video latents: 5 frames (2 latent frames)


# Workflows whose pictures the shapes model can draw.
SHAPES_WORKFLOWS = ("sleight-apg", "sleight-rare-to-frequent", "sleight-hdpainter", "sleight-noise-search",
                    "sleight-addit", "sleight-addit-real", "sleight-designedit-remove", "sleight-designedit-layers",
                    "sleight-designedit-zoom-out", "sleight-text-routing")
# Node inputs set on the shapes model: no paper text-layer preset fits SD1.5 (docs/BENCHMARKS.md, text-layer routing)
SHAPES_INPUTS = {"SleightPromptRoute": {"layers": "custom", "custom_layers": "*"}}
SHAPES_CHECKPOINTS = {"v1-5-pruned-emaonly.safetensors", "v1-5-pruned-emaonly-fp16.safetensors",
                      "sd-v1-5-inpainting.ckpt", "sd_xl_base_1.0.safetensors"}
_LIVING_ROOM = "a photo of a cozy living room with a grey sofa, warm afternoon light"
_RED_BLUE = "a red circle and a blue square on a yellow background"
# Each text a shapes workflow holds -> a caption of the shapes world (shapes/world.py's grammar); negatives -> "".
SHAPES_TEXT = {
    "": "",
    "blurry, low quality": "",
    "blurry, low quality, deformed": "",
    "a photo of a red fox in a snowy forest, detailed fur": "a large orange circle in the centre on a white background",
    _LIVING_ROOM: "a large red circle on the left on a yellow background",
    _LIVING_ROOM + " and a dog sleeping on the sofa":
        "a large red circle on the left and a large blue square on the right on a yellow background",
    "dog": "blue square",
    _RED_BLUE: "a large red circle on the left and a large blue square on the right on a yellow background",
    _RED_BLUE + " and a cat":
        "a large red circle on the left, a large blue square on the right and a large green triangle at the top "
        "on a yellow background",
    "cat": "green triangle",
    'A sign that says "HELLO" on a brick wall':
        "a large red circle in the centre and a sign with the letter J at the top right on a green background",
    'A sign that says "WORLD" on a brick wall':
        "a large red circle in the centre and a sign with the letter S at the top right on a green background",
    "a red vintage car": "a large purple star on the right on a yellow background",
    "### Input: A hairy hamburger on a wooden table\n### Visual Detail Level: 5\n### Final Prompt Sequence: "
    "A hairy object BREAK A hairy hamburger":
        "### Input: a large red star in the centre on a black background\n### Visual Detail Level: 3\n"
        "### Final Prompt Sequence: a large red circle in the centre on a black background BREAK "
        "a large red star in the centre on a black background",
}
TEXT_INPUTS = ("text", "prompt", "subject")


def shapes_checkpoint():
    """The trained shapes checkpoint, or None where it is not there."""
    comfy_env.import_pack()
    from sleight.shapes import train

    return train.CHECKPOINT if train.CHECKPOINT.is_file() else None


def shapes_prompt(prompt, stem="", steps=SHAPES_STEPS):
    """A copy of an API prompt on the shapes model: its checkpoint, its CLIP-L through a CLIPLoader, shapes-world
    captions, 128 px, <= `steps` steps. KeyError names a text SHAPES_TEXT lacks."""
    comfy_env.import_pack()
    from sleight.shapes import train

    prompt = copy.deepcopy(prompt)
    clip_id = str(max(int(k) for k in prompt if k.isdigit()) + 1)
    loaders = set()
    for nid, node in prompt.items():
        inputs = node["inputs"]
        if node["class_type"] == "CheckpointLoaderSimple":
            if inputs["ckpt_name"] not in SHAPES_CHECKPOINTS:
                raise KeyError(f"{stem}: {inputs['ckpt_name']} has no shapes-model stand-in")
            inputs["ckpt_name"] = train.CHECKPOINT.name
            loaders.add(nid)
        for key in TEXT_INPUTS:
            if isinstance(inputs.get(key), str):
                if inputs[key] not in SHAPES_TEXT:
                    raise KeyError(f"{stem}: no shapes-world caption for {key} {inputs[key]!r} in SHAPES_TEXT")
                inputs[key] = SHAPES_TEXT[inputs[key]]
        inputs.update(SHAPES_INPUTS.get(node["class_type"], {}))
        if isinstance(inputs.get("steps"), int):
            inputs["steps"] = min(inputs["steps"], steps)
        _shrink_latent(node)
    for node in prompt.values():
        for key, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and value[0] in loaders and value[1] == 1:
                node["inputs"][key] = [clip_id, 0]  # the checkpoint holds no text encoder: CLIPLoader's CLIP-L
    prompt[clip_id] = {"class_type": "CLIPLoader", "_meta": {"title": "Load CLIP (shapes model's CLIP-L)"},
                       "inputs": {"clip_name": train.clip_l_path().name, "type": "stable_diffusion"}}
    return prompt


def _shrink_latent(node):
    if node["class_type"] in EMPTY_LATENTS:
        inputs = node["inputs"]
        w, h = inputs["width"], inputs["height"]
        scale = MAX_SIDE / max(w, h)
        inputs["width"], inputs["height"] = (max(16, round(v * scale / 16) * 16) for v in (w, h))
        inputs["batch_size"] = 1
        if "length" in inputs:
            inputs["length"] = min(inputs["length"], MAX_FRAMES)


def tiny_file(model, role):
    import tiny_models

    return Path(tiny_models.MODELS[model].files[role]).name  # loaders take names relative to their folder


def tiny_prompt(prompt, steps=MAX_STEPS):
    """A copy of an API prompt on the tiny models, 128 px, <= `steps` steps; and the tiny model names it needs."""
    prompt, needed = copy.deepcopy(prompt), set()
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] in MULTI_CLIP_LOADERS or inputs.get("clip_name") in T5_STAND_INS:
            node["class_type"], needed = "CLIPLoader", needed | {"flux_dev"}
            node["inputs"] = inputs = {"clip_name": tiny_file("flux_dev", "clip"), "type": "sd3"}
        for key, value in list(inputs.items()):
            if isinstance(value, str) and value in SUBSTITUTES:
                model, role = SUBSTITUTES[value]
                inputs[key] = tiny_file(model, role)
                needed.add(model)
        _shrink_latent(node)
        if node["class_type"] == "UNETLoader":
            inputs["weight_dtype"] = "default"  # fp8 weight dtypes are for real GPUs
            _stand_in_loader(node)
        if node["class_type"] == "CLIPLoader" and inputs.get("clip_name") in TEXT_ENCODER_SUBSTITUTES:
            node["class_type"] = "SleightTinyTextEncoder"
            node["inputs"] = {"text_encoder": TEXT_ENCODER_SUBSTITUTES[inputs["clip_name"]]}
        if isinstance(inputs.get("steps"), int):
            inputs["steps"] = min(inputs["steps"], steps)
    _reference_images_as_latents(prompt)
    return prompt, sorted(needed)


def _stand_in_loader(node):
    """A tiny diffusion model that 0.3.75's detection cannot size loads through the test-only loader."""
    import tiny_models

    spec = next((s for s in tiny_models.MODELS.values() if Path(s.files.get("unet", "")).name == node["inputs"]["unet_name"]),
                None)
    if spec is not None and not spec.detected:
        node["class_type"] = "SleightTinyDiffusionModel"
        node["inputs"] = {"unet_name": node["inputs"]["unet_name"]}


def _reference_images_as_latents(prompt):
    """TextEncodeQwenImageEdit with an image: the tiny encoder has no vision tower, so the image reaches the model
    the way the node hands it on anyway, as a reference latent (VAE Encode -> ReferenceLatent); the prompt stays."""
    for nid, node in list(prompt.items()):
        inputs = node["inputs"]
        if node["class_type"] != "TextEncodeQwenImageEdit" or "image" not in inputs:
            continue
        image, vae = inputs.pop("image"), inputs.pop("vae", None)
        enc, ref = f"{nid}0001", f"{nid}0002"
        prompt[enc] = {"class_type": "VAEEncode", "inputs": {"pixels": image, "vae": vae}}
        prompt[ref] = {"class_type": "ReferenceLatent", "inputs": {"conditioning": [nid, 0], "latent": [enc, 0]}}
        for other_id, other in prompt.items():
            if other_id == ref:
                continue
            for key, value in other["inputs"].items():
                if value == [nid, 0]:
                    other["inputs"][key] = [ref, 0]


def workflows():
    """[(stem, API prompt)] for every API twin of an example workflow."""
    stems = [p.name[: -len(".api.json")] for p in sorted(API_TWINS.glob("*.api.json"))]
    return [(stem, json.loads((API_TWINS / f"{stem}.api.json").read_text())) for stem in stems
            if (EXAMPLES / f"{stem}.json").exists()]


def save_nodes(prompt):
    """{node id: label} of the SaveImage nodes, labelled by title (or prefix), baseline first."""
    saves = {nid: (n.get("_meta", {}).get("title") or n["inputs"].get("filename_prefix", nid)).removeprefix("Save · ")
             for nid, n in prompt.items() if n["class_type"] == "SaveImage"}
    is_base = {nid: "baseline" in str(prompt[nid]["inputs"].get("filename_prefix", "")).lower() for nid in saves}
    return dict(sorted(saves.items(), key=lambda kv: (not is_base[kv[0]], int(kv[0]) if kv[0].isdigit() else 0)))


class ProgressPrinter:
    def __init__(self, prompt):
        self.titles = {nid: n.get("_meta", {}).get("title", n["class_type"]) for nid, n in prompt.items()}
        self.tty = sys.stdout.isatty()

    def __call__(self, data):
        value, total, title = data["value"], data["max"], self.titles.get(str(data.get("node")), "")
        bar = "#" * round(20 * value / max(total, 1))
        line = f"    [{bar:<20}] {value:>3}/{total} {title}"
        end = "\n" if value >= total or not self.tty else ""
        print(("\r" if self.tty else "") + line, end=end, flush=True)


def contact_sheet(rows, path, cell=256):
    """rows: [(stem, [(label, png path)])] -> one PNG, a row per workflow, baseline first."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=16)
    head, label_h, pad = 200, 26, 10
    ncols = max((len(images) for _, images in rows), default=1)
    sheet = Image.new("RGB", (head + ncols * (cell + pad) + pad, pad + len(rows) * (cell + label_h + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (stem, images) in enumerate(rows):
        y = pad + r * (cell + label_h + pad)
        draw.text((pad, y + label_h + cell // 2 - 8), stem, fill="black", font=font)
        for c, (label, png) in enumerate(images):
            x = head + pad + c * (cell + pad)
            with Image.open(png) as im:
                s = cell / max(im.size)
                im = im.convert("RGB").resize((round(im.width * s), round(im.height * s)),
                                              Image.NEAREST if s >= 1 else Image.LANCZOS)
                sheet.paste(im, (x, y + label_h))
            draw.text((x, y + 4), label, fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def main(only=()):
    import tiny_models

    t0 = time.monotonic()
    shapes = shapes_checkpoint()
    jobs = [(stem, shapes_prompt(prompt, stem), []) if shapes and stem in SHAPES_WORKFLOWS else (stem, *tiny_prompt(prompt))
            for stem, prompt in workflows() if not only or stem in only]
    if shapes:
        from sleight.shapes import train

        train.checked_clip_l_path()  # regenerated if missing; refused if this torch makes other bytes
        print(f"shapes model: {shapes.relative_to(comfy_env.ROOT)} for {sum(s in SHAPES_WORKFLOWS for s, *_ in jobs)} "
              "workflows")
    if not jobs:
        sys.exit(f"demo: no API twins of {EXAMPLES.relative_to(comfy_env.ROOT)}/*.json in {API_TWINS}")
    built = tiny_models.ensure_models(names=sorted({m for _, _, needed in jobs for m in needed}))
    if built:
        print(f"built tiny models {', '.join(built)} ({time.monotonic() - t0:.0f} s)")
    OUT.mkdir(parents=True, exist_ok=True)
    rows, failures = [], []
    with ComfyServer(log_path=OUT / "server.log") as server:
        print(f"ComfyUI ready at {server.url} in {server.startup_s:.1f} s (log: {server.log_path})")
        for stem, prompt, _ in jobs:
            print(f"{stem}:")
            t = time.monotonic()
            try:
                result = server.client.run(prompt, on_progress=ProgressPrinter(prompt))
            except (PromptError, ExecutionError, TimeoutError) as e:
                failures.append(stem)
                print(f"  FAILED after {time.monotonic() - t:.1f} s: {e}")
                continue
            dest = OUT / stem
            shutil.rmtree(dest, ignore_errors=True)
            paths = server.client.download_outputs(result.history, dest)
            rows.append((stem, [(label, paths[nid][0]) for nid, label in save_nodes(prompt).items() if nid in paths]))
            n = sum(map(len, paths.values()))
            print(f"  ok in {time.monotonic() - t:.1f} s: {n} image(s) in {dest.relative_to(comfy_env.ROOT)}/")
    if rows:
        sheet = contact_sheet(rows, OUT / "contact-sheet.png")
        print(f"contact sheet: {sheet.relative_to(comfy_env.ROOT)}")
    print(f"{len(jobs) - len(failures)}/{len(jobs)} workflows ok, total {time.monotonic() - t0:.1f} s")
    if failures:
        print(f"failed: {', '.join(failures)} (server log: {OUT / 'server.log'})")
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])     # workflow stems to run (default: all)
