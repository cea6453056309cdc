"""Build the example workflows with the real ComfyUI frontend from the specs below.

For each spec: the page creates the nodes with LiteGraph, sets widget values and connects them; every node is
measured as the bundled and the newest frontend draw it (the larger size counts), and `layout` places them
(layers from the links, left to right); `graph.serialize()` becomes example_workflows/<name>.json (UI format),
`app.graphToPrompt()` its API twin tests/workflows/<name>.api.json (the inputs each node declares), and a
screenshot the template thumbnail <name>.jpg. A spec node is (key, type, title, widget values, column, row);
column and row only break ties in the layout's order.

    .venv/bin/python scripts/make_workflows.py [NAME ...]
"""
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # noqa: E402
import example_inputs  # noqa: E402
import thumbnails  # noqa: E402
from comfy_server import ComfyServer  # noqa: E402

SDXL = {"name": "sd_xl_base_1.0.safetensors", "directory": "checkpoints",
        "url": "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors"}
SD15 = {"name": "v1-5-pruned-emaonly-fp16.safetensors", "directory": "checkpoints",
        "url": "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/v1-5-pruned-emaonly-fp16.safetensors"}
SD15_INPAINT = {"name": "sd-v1-5-inpainting.ckpt", "directory": "checkpoints",
                "url": "https://huggingface.co/webui/stable-diffusion-inpainting/resolve/main/sd-v1-5-inpainting.ckpt"}
KS = {"seed": 806052, "control_after_generate": "fixed", "steps": 30, "cfg": 7, "sampler_name": "euler",
      "scheduler": "normal", "denoise": 1}


def pair(trick, trick_title, ks, prefix):
    """Baseline and trick samplers from the same seed, decoded and saved side by side (the demo pairs them)."""
    return [
        ("k0", "KSampler", "KSampler · baseline", ks, 3, 0),
        ("k1", "KSampler", f"KSampler · {trick_title}", ks, 3, 1),
        ("d0", "VAEDecode", "VAE Decode · baseline", {}, 4, 0),
        ("d1", "VAEDecode", f"VAE Decode · {trick_title}", {}, 4, 1),
        ("s0", "SaveImage", "Save · baseline", {"filename_prefix": f"{prefix}/baseline"}, 5, 0),
        ("s1", "SaveImage", f"Save · {trick_title}", {"filename_prefix": f"{prefix}/{trick}"}, 5, 1),
    ], [("k0", 0, "d0", "samples"), ("k1", 0, "d1", "samples"), ("ckpt", 2, "d0", "vae"), ("ckpt", 2, "d1", "vae"),
        ("d0", 0, "s0", "images"), ("d1", 0, "s1", "images")]


def sdxl_base(pos, neg, width=1024, height=1024, model=None, label="SDXL"):
    nodes = [
        ("ckpt", "CheckpointLoaderSimple", f"Load Checkpoint ({label})", {"ckpt_name": (model or SDXL)["name"]}, 0, 1),
        ("pos", "CLIPTextEncode", "Positive prompt", {"text": pos}, 1, 0),
        ("neg", "CLIPTextEncode", "Negative prompt", {"text": neg}, 1, 1),
        ("lat", "EmptyLatentImage", f"Empty latent {width}×{height}", {"width": width, "height": height, "batch_size": 1}, 1, 2),
    ]
    links = [("ckpt", 1, "pos", "clip"), ("ckpt", 1, "neg", "clip"),
             ("ckpt", 0, "k0", "model"), ("pos", 0, "k0", "positive"), ("neg", 0, "k0", "negative"), ("lat", 0, "k0", "latent_image"),
             ("pos", 0, "k1", "positive"), ("neg", 0, "k1", "negative"), ("lat", 0, "k1", "latent_image")]
    return nodes, links


def spec_apg():
    nodes, links = sdxl_base("a photo of a red fox in a snowy forest, detailed fur", "blurry, low quality", 512, 512,
                             SD15, "SD1.5")
    more, more_links = pair("apg", "APG", {**KS, "cfg": 15}, "sleight-apg")
    return {"nodes": nodes + [("apg", "SleightAPG", "Sleight · APG", {}, 2, 1)] + more,
            "links": links + more_links + [("ckpt", 0, "apg", "model"), ("apg", 0, "k1", "model")],
            "note": "Same seed, same CFG 15, two samplers.\nTop row: plain CFG (over-saturated, burnt at high CFG).\n"
                    "Bottom row: the same model through Sleight · APG (adaptive projected guidance, default settings), "
                    "which keeps colours natural at high CFG.\n\nCompare the two Save nodes."}


def spec_text_routing():
    nodes, links = sdxl_base('A sign that says "HELLO" on a brick wall', "blurry, low quality")
    more, more_links = pair("routed", "routed", {**KS, "cfg": 5, "steps": 50}, "sleight-text-routing")
    return {"nodes": nodes + more + [
                ("alt", "CLIPTextEncode", "Routed prompt (new text)", {"text": 'A sign that says "WORLD" on a brick wall'}, 1, 3),
                ("route", "SleightPromptRoute", "Sleight · Route prompt into layers", {}, 2, 1),
                ("inspect", "SleightInspectAttention", "Sleight · Inspect attention layers", {}, 2, 3)],
            "links": links + more_links + [("ckpt", 1, "alt", "clip"), ("ckpt", 0, "route", "model"),
                                           ("alt", 0, "route", "conditioning"), ("route", 0, "k1", "model"),
                                           ("ckpt", 0, "inspect", "model")],
            "note": "Text-layer routing (Staniszewski et al., ICLR 2025).\nThe routed prompt reaches only the three "
                    "cross-attention layers that render text in SDXL (output.2.1-3), from step 4 of 50: the sign "
                    "should read WORLD while the rest of the picture stays as in the baseline.\n"
                    "Inspect attention layers lists every block id you can route into."}


def spec_rare_to_frequent():
    nodes, links = sdxl_base("unused", "blurry, low quality")
    nodes = [n for n in nodes if n[0] != "pos"]
    links = [l for l in links if "pos" not in (l[0], l[2])]
    more, more_links = pair("r2f", "Rare-to-Frequent", {**KS, "cfg": 5, "steps": 50, "sampler_name": "dpmpp_2m",
                                                          "scheduler": "karras"}, "sleight-rare-to-frequent")
    text = ("### Input: A hairy hamburger on a wooden table\n### Visual Detail Level: 5\n"
            "### Final Prompt Sequence: A hairy object BREAK A hairy hamburger")
    return {"nodes": nodes + more + [
                ("r2fp", "SleightR2FPrompt", "Sleight · R2F prompt", {"text": text}, 1, 0),
                ("r2f", "SleightRareToFrequent", "Sleight · Rare-to-Frequent", {}, 2, 1)],
            "links": links + more_links + [
                ("ckpt", 1, "r2fp", "clip"), ("r2fp", 0, "k0", "positive"), ("r2fp", 0, "k1", "positive"),
                ("ckpt", 0, "r2f", "model"), ("r2fp", 0, "r2f", "rare"), ("r2fp", 1, "r2f", "frequent"),
                ("r2f", 0, "k1", "model")],
            "note": "Rare-to-Frequent (Park et al., ICLR 2025).\nA rare concept (a hairy hamburger) is drawn from a "
                    "frequent one (a hairy object) in the first steps, alternating step by step, then the rare prompt "
                    "alone. The visual detail level (5 here) sets how long: on SDXL 30 of 50 steps.\n"
                    "Paste what the paper's LLM prompt answers into Sleight · R2F prompt, or write frequent BREAK rare."}


QWEN3_4B = {"name": "qwen_3_4b.safetensors", "directory": "text_encoders",
            "url": "https://huggingface.co/Comfy-Org/z_image_turbo/resolve/main/split_files/text_encoders/qwen_3_4b.safetensors"}


def spec_r2f_plan():
    """The plan written by Z-Image's text encoder (Qwen3-4B), sampled on SD1.5: a Z-Image graph waits for its
    family adapter; any model's CLIP can encode the plan (encode_clip)."""
    nodes, links = sdxl_base("unused", "blurry, low quality", 512, 512, SD15, "SD1.5")
    nodes = [n for n in nodes if n[0] != "pos"]
    links = [l for l in links if "pos" not in (l[0], l[2])]
    more, more_links = pair("r2f", "Rare-to-Frequent", {**KS, "cfg": 7, "steps": 50, "sampler_name": "dpmpp_2m",
                                                          "scheduler": "karras"}, "sleight-r2f-plan")
    return {"nodes": nodes + more + [
                ("llm", "CLIPLoader", "Load CLIP (Qwen3-4B: writes the plan)",
                 {"clip_name": QWEN3_4B["name"], "type": "lumina2"}, 0, 0),
                ("plan", "SleightR2FPlan", "Sleight · R2F plan", {"prompt": "A hairy hamburger on a wooden table"}, 1, 0),
                ("r2f", "SleightRareToFrequent", "Sleight · Rare-to-Frequent", {}, 2, 1),
                ("show", "PreviewAny", "Preview Any · the plan", {}, 2, 2)],
            "links": links + more_links + [
                ("llm", 0, "plan", "clip"), ("ckpt", 1, "plan", "encode_clip"), ("plan", 3, "show", "source"),
                ("plan", 0, "k0", "positive"), ("plan", 0, "k1", "positive"),
                ("ckpt", 0, "r2f", "model"), ("plan", 0, "r2f", "rare"), ("plan", 1, "r2f", "frequent"),
                ("r2f", 0, "k1", "model")],
            "model": SD15, "models": [QWEN3_4B],
            "note": "Rare-to-Frequent without an outside LLM.\nSleight · R2F plan asks the language model of a text "
                    "encoder, here Z-Image's Qwen3-4B (loaded only to plan), for the paper's plan: 'a hairy object' "
                    "before 'a hairy hamburger', level 5. Preview Any shows the plan; the checkpoint's CLIP "
                    "(encode_clip) encodes it for Sleight · Rare-to-Frequent.\nWith Z-Image itself, one CLIP "
                    "plans and encodes (leave encode_clip empty); this SD1.5 graph stands in until Sleight has a "
                    "Z-Image adapter.\nAn answer that does not parse runs the plain prompt; the plan text says why."}


def spec_hdpainter():
    """SD1.5 inpainting (the paper's main model): plain DDIM against PAIntA + the RASG sampler (SamplerCustom)."""
    prompt = "a red vintage car"
    nodes = [
        ("ckpt", "CheckpointLoaderSimple", "Load Checkpoint (SD1.5 inpainting)", {"ckpt_name": SD15_INPAINT["name"]}, 0, 1),
        ("img", "LoadImage", "Image + hole (paint the mask in the mask editor)", {"image": example_inputs.IMAGE}, 1, 0),
        ("neg", "CLIPTextEncode", "Negative prompt", {"text": "blurry, low quality, deformed"}, 1, 1),
        ("painta", "SleightPAIntA", "Sleight · PAIntA", {"text": prompt}, 2, 0),
        ("inp", "InpaintModelConditioning", "Inpaint conditioning", {"noise_mask": True}, 2, 1),
        ("rasg", "SleightRASG", "Sleight · RASG sampler", {"eta": 0.1}, 2, 2),
        ("sched", "BasicScheduler", "Scheduler (50 steps)", {"scheduler": "ddim_uniform", "steps": 50, "denoise": 1.0}, 3, 1),
        ("k0", "KSampler", "KSampler · baseline", {**KS, "steps": 50, "cfg": 7.5, "sampler_name": "ddim",
                                                   "scheduler": "ddim_uniform"}, 3, 0),
        ("k1", "SamplerCustom", "SamplerCustom · PAIntA + RASG", {"noise_seed": KS["seed"], "cfg": 7.5}, 3, 2),
        ("d0", "VAEDecode", "VAE Decode · baseline", {}, 4, 0),
        ("d1", "VAEDecode", "VAE Decode · HD-Painter", {}, 4, 1),
        ("s0", "SaveImage", "Save · baseline", {"filename_prefix": "sleight-hdpainter/baseline"}, 5, 0),
        ("s1", "SaveImage", "Save · HD-Painter", {"filename_prefix": "sleight-hdpainter/hdpainter"}, 5, 1),
    ]
    links = [("ckpt", 1, "neg", "clip"),
             ("ckpt", 0, "painta", "model"), ("ckpt", 1, "painta", "clip"), ("img", 1, "painta", "mask"),
             ("painta", 1, "inp", "positive"), ("neg", 0, "inp", "negative"), ("ckpt", 2, "inp", "vae"),
             ("img", 0, "inp", "pixels"), ("img", 1, "inp", "mask"),
             ("ckpt", 0, "k0", "model"), ("inp", 0, "k0", "positive"), ("inp", 1, "k0", "negative"),
             ("inp", 2, "k0", "latent_image"),
             ("painta", 0, "sched", "model"), ("painta", 0, "k1", "model"), ("inp", 0, "k1", "positive"),
             ("inp", 1, "k1", "negative"), ("rasg", 0, "k1", "sampler"), ("sched", 0, "k1", "sigmas"),
             ("inp", 2, "k1", "latent_image"),
             ("k0", 0, "d0", "samples"), ("k1", 0, "d1", "samples"), ("ckpt", 2, "d0", "vae"), ("ckpt", 2, "d1", "vae"),
             ("d0", 0, "s0", "images"), ("d1", 0, "s1", "images")]
    return {"nodes": nodes, "links": links, "model": SD15_INPAINT,
            "note": "HD-Painter (Manukyan et al., ICLR 2025) for inpainting, on SD1.5 inpainting as in the paper.\n"
                    "Load an image and paint the hole with the mask editor. Top: plain DDIM, which tends to continue "
                    "the surroundings into the hole. Bottom: Sleight · PAIntA (the hole attends less to known pixels "
                    "the prompt does not mention) and the RASG sampler (DDIM eta 0.1 whose noise is the gradient "
                    "pulling the prompt's attention into the hole).\nSame seed; the prompt is typed once, in PAIntA, "
                    "which hands its encoding on."}

DDIM50 = {**KS, "steps": 50, "cfg": 7.5, "sampler_name": "ddim", "scheduler": "ddim_uniform"}


def designedit_source(title, pixels=("img", 0)):
    """SD1.5 + LoadImage -> VAE Encode -> DDIM inversion (empty prompt, 50 ddim_uniform steps, as the paper);
    the decoded source is the baseline save."""
    nodes = [
        ("ckpt", "CheckpointLoaderSimple", "Load Checkpoint (SD1.5)", {"ckpt_name": SD15["name"]}, 0, 1),
        ("img", "LoadImage", title, {"image": example_inputs.IMAGE}, 1, 0),
        ("empty", "CLIPTextEncode", "Empty prompt (positive and negative)", {"text": ""}, 1, 1),
        ("enc", "VAEEncode", "VAE Encode", {}, 2, 0),
        ("inv", "SleightInvert", "Sleight · Invert image (DDIM, 50 steps)",
         {"steps": 50, "scheduler": "ddim_uniform", "denoise": 1.0, "fixed_point_iterations": 0}, 2, 1),
        ("k1", "KSampler", "KSampler (ddim, cfg 7.5, empty prompt)", DDIM50, 4, 0),
        ("d0", "VAEDecode", "VAE Decode · source", {}, 5, 1),
        ("d1", "VAEDecode", "VAE Decode · edit", {}, 5, 0),
    ]
    links = [("ckpt", 1, "empty", "clip"), (*pixels, "enc", "pixels"), ("ckpt", 2, "enc", "vae"),
             ("ckpt", 0, "inv", "model"), ("enc", 0, "inv", "latent"), ("empty", 0, "inv", "conditioning"),
             ("empty", 0, "k1", "positive"), ("empty", 0, "k1", "negative"), ("enc", 0, "k1", "latent_image"),
             ("enc", 0, "d0", "samples"), ("ckpt", 2, "d0", "vae"), ("k1", 0, "d1", "samples"), ("ckpt", 2, "d1", "vae")]
    return nodes, links


def spec_designedit_remove():
    nodes, links = designedit_source("Image + mask of the object (paint it in the mask editor)")
    nodes += [
        ("remove", "SleightDesignEditRemove", "Sleight · DesignEdit remove object", {"dilation": 20}, 3, 0),
        ("s0", "SaveImage", "Save · baseline (source)", {"filename_prefix": "sleight-designedit-remove/baseline"}, 6, 1),
        ("s1", "SaveImage", "Save · object removed", {"filename_prefix": "sleight-designedit-remove/removed"}, 6, 0),
    ]
    links += [("ckpt", 0, "remove", "model"), ("inv", 0, "remove", "source"), ("img", 1, "remove", "mask"),
              ("remove", 0, "k1", "model"), ("d0", 0, "s0", "images"), ("d1", 0, "s1", "images")]
    return {"nodes": nodes, "links": links, "model": SD15,
            "note": "DesignEdit (Jia et al., AAAI 2025): remove an object without training or an inpainting model.\n"
                    "Load an image and paint the object with the mask editor. Sleight · Invert runs DDIM backwards "
                    "(50 steps, empty prompt); DesignEdit masks the object's keys in every self-attention layer of "
                    "the positive row, and CFG 7.5 with the same empty prompt on both sides amplifies that, so the "
                    "background grows into the hole. Outside the mask the latent follows the source.\n"
                    "Sample with the same steps and scheduler as the inversion (ddim, ddim_uniform, 50)."}


def spec_designedit_layers():
    nodes, links = designedit_source("Image + mask of the object to move (paint it in the mask editor)")
    nodes += [
        ("remove", "SleightDesignEditRemove", "Sleight · DesignEdit remove object (its old place)", {"dilation": 20}, 3, 0),
        ("layer", "SleightDesignEditLayer", "Sleight · DesignEdit layer (move, 3/4 size, flip)",
         {"move_x": -48, "move_y": 40, "scale": 0.75, "flip": "horizontal"}, 3, 1),
        ("layers", "SleightDesignEditLayers", "Sleight · DesignEdit layers", {}, 3, 2),
        ("s0", "SaveImage", "Save · baseline (source)", {"filename_prefix": "sleight-designedit-layers/baseline"}, 6, 1),
        ("s1", "SaveImage", "Save · object moved", {"filename_prefix": "sleight-designedit-layers/moved"}, 6, 0),
    ]
    links += [("ckpt", 0, "remove", "model"), ("inv", 0, "remove", "source"), ("img", 1, "remove", "mask"),
              ("enc", 0, "layer", "latent"), ("img", 1, "layer", "mask"),
              ("remove", 0, "layers", "model"), ("layer", 0, "layers", "layers"),
              ("layers", 0, "k1", "model"), ("d0", 0, "s0", "images"), ("d1", 0, "s1", "images")]
    return {"nodes": nodes, "links": links, "model": SD15,
            "note": "DesignEdit (Jia et al., AAAI 2025): move, resize and flip an object.\n"
                    "Paint the object with the mask editor. DesignEdit remove object fills its old place (key-masked "
                    "self-attention, CFG 7.5 on an empty prompt); DesignEdit layer takes the object from the same "
                    "latent and mask, moves it (pixels, snapped to 8), scales it about its centre and flips it; "
                    "DesignEdit layers pastes it at step 42 of 50, and the last 8 steps harmonise it.\n"
                    "Sample with the same steps and scheduler as the inversion (ddim, ddim_uniform, 50)."}


def spec_designedit_zoom_out():
    nodes, links = designedit_source("Image", pixels=("zoom", 0))
    nodes += [
        ("zoom", "SleightDesignEditZoomOut", "Sleight · DesignEdit zoom out (0.75)",
         {"scale_width": 0.75, "scale_height": 0.75}, 1, 2),
        ("remove", "SleightDesignEditRemove", "Sleight · DesignEdit remove object (the border)", {"dilation": 30}, 3, 0),
        ("s0", "SaveImage", "Save · baseline (shrunk source)", {"filename_prefix": "sleight-designedit-zoom-out/baseline"}, 6, 1),
        ("s1", "SaveImage", "Save · zoomed out", {"filename_prefix": "sleight-designedit-zoom-out/zoomed"}, 6, 0),
    ]
    links += [("img", 0, "zoom", "image"),
              ("ckpt", 0, "remove", "model"), ("inv", 0, "remove", "source"), ("zoom", 1, "remove", "mask"),
              ("remove", 0, "k1", "model"), ("d0", 0, "s0", "images"), ("d1", 0, "s1", "images")]
    return {"nodes": nodes, "links": links, "model": SD15,
            "note": "DesignEdit (Jia et al., AAAI 2025): zoom out.\n"
                    "DesignEdit zoom out shrinks the picture into its centre and returns the border as a mask; "
                    "the shrunk image is inverted and DesignEdit remove object (dilation 30, as the paper) repaints "
                    "the border as new surroundings.\n"
                    "Sample with the same steps and scheduler as the inversion (ddim, ddim_uniform, 50)."}


def spec_noise_search():
    nodes, links = sdxl_base("a photo of a red fox in a snowy forest, detailed fur", "blurry, low quality", 512, 512,
                             SD15, "SD1.5")
    links = [l for l in links if l[2] != "k1" and l[2] != "k0"]
    nodes += [
        ("ksel", "KSamplerSelect", "KSamplerSelect", {"sampler_name": "euler"}, 2, 0),
        ("sched", "BasicScheduler", "BasicScheduler", {"scheduler": "normal", "steps": 30, "denoise": 1}, 2, 1),
        ("search", "SleightNoiseSearch", "Sleight · Noise search",
         {"cfg": 7, "seed": 806052, "control_after_generate": "fixed", "mode": "random", "budget": 8, "batch_size": 4,
          "top_k": 4}, 3, 0),
        ("d0", "VAEDecode", "VAE Decode · best", {}, 4, 0),
        ("d1", "VAEDecode", "VAE Decode · top 4", {}, 4, 1),
        ("s0", "SaveImage", "Save · best", {"filename_prefix": "sleight-noise-search/best"}, 5, 0),
        ("s1", "SaveImage", "Save · top 4", {"filename_prefix": "sleight-noise-search/top"}, 5, 1),
        ("show", "PreviewAny", "Scores (JSON)", {}, 4, 2),
    ]
    links += [("ckpt", 0, "search", "model"), ("pos", 0, "search", "positive"), ("neg", 0, "search", "negative"),
              ("lat", 0, "search", "latent_image"), ("ksel", 0, "search", "sampler"), ("sched", 0, "search", "sigmas"),
              ("ckpt", 0, "sched", "model"), ("search", 0, "d0", "samples"), ("search", 1, "d1", "samples"),
              ("ckpt", 2, "d0", "vae"), ("ckpt", 2, "d1", "vae"), ("d0", 0, "s0", "images"), ("d1", 0, "s1", "images"),
              ("search", 2, "show", "source")]
    return {"nodes": nodes, "links": links, "model": SD15,
            "note": "Inference-time search over noises (Ma et al. 2025).\nSleight · Noise search samples 8 seeds in "
                    "batches of 4 and keeps the best by the self-consistency verifier (early x0 prediction vs final "
                    "sample; no extra model). Connect Load CLIP Vision + the VAE for CLIP-space verifiers, a reference "
                    "image for the reference verifier.\nThe scores output lists every candidate; best_seed reproduces "
                    "the winner in SamplerCustom. Try mode zero_order or paths."}


def spec_addit():
    """Add-it on a generated SD1.5 image: the source from one KSampler, the same scene plus a dog from another."""
    source = "a photo of a cozy living room with a grey sofa, warm afternoon light"
    nodes = [
        ("ckpt", "CheckpointLoaderSimple", "Load Checkpoint (SD1.5)", {"ckpt_name": SD15["name"]}, 0, 1),
        ("pos", "CLIPTextEncode", "Source prompt", {"text": source}, 1, 0),
        ("neg", "CLIPTextEncode", "Negative prompt", {"text": "blurry, low quality"}, 1, 1),
        ("lat", "EmptyLatentImage", "Empty latent 512×512", {"width": 512, "height": 512, "batch_size": 1}, 1, 2),
        ("k0", "KSampler", "KSampler · source (baseline)", KS, 2, 0),
        ("traj", "SleightSourceTrajectory", "Sleight · Source trajectory",
         {"noise_seed": KS["seed"], "control_after_generate": "fixed"}, 3, 0),
        ("addit", "SleightAddIt", "Sleight · Add-it", {"prompt": source + " and a dog sleeping on the sofa",
                                                      "subject": "dog"}, 3, 1),
        ("k1", "KSampler", "KSampler · Add-it", KS, 4, 1),
        ("mask", "SleightAddItMask", "Sleight · Add-it mask", {}, 5, 2),
        ("m2i", "MaskToImage", "Mask to image", {}, 6, 2),
        ("prev", "PreviewImage", "Preview · blend mask", {}, 7, 2),
        ("d0", "VAEDecode", "VAE Decode · baseline", {}, 5, 0),
        ("d1", "VAEDecode", "VAE Decode · Add-it", {}, 5, 1),
        ("s0", "SaveImage", "Save · baseline", {"filename_prefix": "sleight-addit/baseline"}, 6, 0),
        ("s1", "SaveImage", "Save · Add-it", {"filename_prefix": "sleight-addit/addit"}, 6, 1),
    ]
    links = [("ckpt", 1, "pos", "clip"), ("ckpt", 1, "neg", "clip"),
             ("ckpt", 0, "k0", "model"), ("pos", 0, "k0", "positive"), ("neg", 0, "k0", "negative"),
             ("lat", 0, "k0", "latent_image"),
             ("ckpt", 0, "traj", "model"), ("k0", 0, "traj", "latent"), ("pos", 0, "traj", "conditioning"),
             ("ckpt", 0, "addit", "model"), ("ckpt", 1, "addit", "clip"), ("traj", 0, "addit", "source"),
             ("addit", 0, "k1", "model"), ("addit", 1, "k1", "positive"), ("neg", 0, "k1", "negative"),
             ("lat", 0, "k1", "latent_image"),
             ("addit", 0, "mask", "model"), ("k1", 0, "mask", "samples"), ("mask", 0, "m2i", "mask"),
             ("m2i", 0, "prev", "images"),
             ("k0", 0, "d0", "samples"), ("k1", 0, "d1", "samples"), ("ckpt", 2, "d0", "vae"), ("ckpt", 2, "d1", "vae"),
             ("d0", 0, "s0", "images"), ("d1", 0, "s1", "images")]
    return {"nodes": nodes, "links": links, "model": SD15,
            "note": "Add-it (Tewel et al., ICLR 2025): insert an object into a generated image without training.\n"
                    "Top: the source image. Bottom: the same scene with the target prompt (source + 'and a dog "
                    "sleeping on the sofa'); Sleight · Add-it runs the source in lockstep (extended attention, "
                    "structure transfer, blending outside the dog's attention mask, previewed on the right).\n"
                    "Change the subject word together with the prompt."}


def spec_addit_real():
    """Add-it on a real image: Load Image → VAE Encode → Sleight · Invert → Add-it → KSampler (same steps/scheduler)."""
    source = "a red circle and a blue square on a yellow background"
    nodes = [
        ("ckpt", "CheckpointLoaderSimple", "Load Checkpoint (SD1.5)", {"ckpt_name": SD15["name"]}, 0, 1),
        ("img", "LoadImage", "Your image", {"image": example_inputs.IMAGE}, 1, 0),
        ("pos", "CLIPTextEncode", "Source prompt (describe the image)", {"text": source}, 1, 1),
        ("neg", "CLIPTextEncode", "Negative prompt", {"text": "blurry, low quality"}, 1, 2),
        ("enc", "VAEEncode", "VAE Encode", {}, 2, 0),
        ("inv", "SleightInvert", "Sleight · Invert image", {"steps": 30, "scheduler": "normal", "denoise": 1.0,
                                                            "fixed_point_iterations": 2}, 3, 0),
        ("addit", "SleightAddIt", "Sleight · Add-it", {"prompt": source + " and a cat", "subject": "cat"}, 3, 1),
        ("k1", "KSampler", "KSampler · Add-it (same steps and scheduler as the inversion)",
         {**KS, "cfg": 5.0, "steps": 30, "scheduler": "normal"}, 4, 1),
        ("d0", "VAEDecode", "VAE Decode · baseline (the encoded image)", {}, 5, 0),
        ("d1", "VAEDecode", "VAE Decode · Add-it", {}, 5, 1),
        ("s0", "SaveImage", "Save · baseline", {"filename_prefix": "sleight-addit-real/baseline"}, 6, 0),
        ("s1", "SaveImage", "Save · Add-it", {"filename_prefix": "sleight-addit-real/addit"}, 6, 1),
    ]
    links = [("ckpt", 1, "pos", "clip"), ("ckpt", 1, "neg", "clip"), ("img", 0, "enc", "pixels"), ("ckpt", 2, "enc", "vae"),
             ("ckpt", 0, "inv", "model"), ("enc", 0, "inv", "latent"), ("pos", 0, "inv", "conditioning"),
             ("ckpt", 0, "addit", "model"), ("ckpt", 1, "addit", "clip"), ("inv", 0, "addit", "source"),
             ("addit", 0, "k1", "model"), ("addit", 1, "k1", "positive"), ("neg", 0, "k1", "negative"),
             ("enc", 0, "k1", "latent_image"),
             ("enc", 0, "d0", "samples"), ("k1", 0, "d1", "samples"), ("ckpt", 2, "d0", "vae"), ("ckpt", 2, "d1", "vae"),
             ("d0", 0, "s0", "images"), ("d1", 0, "s1", "images")]
    return {"nodes": nodes, "links": links, "model": SD15,
            "note": "Add-it (Tewel et al., ICLR 2025) on a real image.\nLoad your image and describe it in the source "
                    "prompt; Sleight · Invert image turns it into a trajectory (DDIM inversion; rectified-flow with "
                    "2 fixed-point iterations on SD3/Flux). Sleight · Add-it inserts the subject (γ 1.1, structure "
                    "transfer at 4/30, blending at 18/30 for real images). Keep the KSampler's steps and scheduler "
                    "equal to the inversion's."}


FLUX2 = [{"name": "flux2_dev_fp8mixed.safetensors", "directory": "diffusion_models",
          "url": "https://huggingface.co/Comfy-Org/flux2-dev/resolve/main/split_files/diffusion_models/flux2_dev_fp8mixed.safetensors"},
         {"name": "mistral_3_small_flux2_bf16.safetensors", "directory": "text_encoders",
          "url": "https://huggingface.co/Comfy-Org/flux2-dev/resolve/main/split_files/text_encoders/mistral_3_small_flux2_bf16.safetensors"},
         {"name": "flux2-vae.safetensors", "directory": "vae",
          "url": "https://huggingface.co/Comfy-Org/flux2-dev/resolve/main/split_files/vae/flux2-vae.safetensors"}]
QWEN_EDIT = [{"name": "qwen_image_edit_2509_fp8_e4m3fn.safetensors", "directory": "diffusion_models",
              "url": "https://huggingface.co/Comfy-Org/Qwen-Image-Edit_ComfyUI/resolve/main/split_files/diffusion_models/qwen_image_edit_2509_fp8_e4m3fn.safetensors"},
             {"name": "qwen_2.5_vl_7b_fp8_scaled.safetensors", "directory": "text_encoders",
              "url": "https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors"},
             {"name": "qwen_image_vae.safetensors", "directory": "vae",
              "url": "https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/vae/qwen_image_vae.safetensors"}]


def split_loaders(models, clip_type):
    """UNETLoader + CLIPLoader + VAELoader of a diffusion-model-only family (outputs: unet 0, clip 0, vae 0)."""
    unet, clip, vae = models
    return [("unet", "UNETLoader", "Load Diffusion Model", {"unet_name": unet["name"], "weight_dtype": "default"}, 0, 1),
            ("clip", "CLIPLoader", "Load CLIP (text encoder)", {"clip_name": clip["name"], "type": clip_type}, 0, 2),
            ("vae", "VAELoader", "Load VAE", {"vae_name": vae["name"]}, 0, 3)]


def spec_flux2():
    """Flux.2 dev: a second prompt routed into the double-stream blocks, and APG at real CFG, against plain CFG."""
    ks = {**KS, "steps": 28, "cfg": 4.0}
    nodes = split_loaders(FLUX2, "flux2") + [
        ("pos", "CLIPTextEncode", "Positive prompt", {"text": 'A poster with the word "HELLO" on a brick wall'}, 1, 0),
        ("neg", "CLIPTextEncode", "Negative prompt", {"text": "blurry, low quality"}, 1, 1),
        ("alt", "CLIPTextEncode", "Routed prompt (new text)", {"text": 'A poster with the word "WORLD" on a brick wall'},
         1, 2),
        ("lat", "EmptyFlux2LatentImage", "Empty Flux.2 latent 1024×1024", {"width": 1024, "height": 1024}, 1, 3),
        ("route", "SleightPromptRoute", "Sleight · Route prompt into layers",
         {"layers": "custom", "custom_layers": "double.*", "start_percent": 0.1}, 2, 1),
        ("apg", "SleightAPG", "Sleight · APG", {}, 2, 2),
        ("inspect", "SleightInspectAttention", "Sleight · Inspect attention layers", {}, 2, 3),
        ("k0", "KSampler", "KSampler · baseline", ks, 3, 0),
        ("k1", "KSampler", "KSampler · routed + APG", ks, 3, 1),
        ("d0", "VAEDecode", "VAE Decode · baseline", {}, 4, 0),
        ("d1", "VAEDecode", "VAE Decode · routed + APG", {}, 4, 1),
        ("s0", "SaveImage", "Save · baseline", {"filename_prefix": "sleight-flux2/baseline"}, 5, 0),
        ("s1", "SaveImage", "Save · routed + APG", {"filename_prefix": "sleight-flux2/routed"}, 5, 1),
    ]
    links = [("clip", 0, "pos", "clip"), ("clip", 0, "neg", "clip"), ("clip", 0, "alt", "clip"),
             ("unet", 0, "route", "model"), ("alt", 0, "route", "conditioning"), ("route", 0, "apg", "model"),
             ("unet", 0, "inspect", "model"),
             ("unet", 0, "k0", "model"), ("apg", 0, "k1", "model")] + [
            (a, 0, k, inp) for k in ("k0", "k1") for a, inp in (("pos", "positive"), ("neg", "negative"),
                                                              ("lat", "latent_image"))] + [
            ("k0", 0, "d0", "samples"), ("k1", 0, "d1", "samples"), ("vae", 0, "d0", "vae"), ("vae", 0, "d1", "vae"),
            ("d0", 0, "s0", "images"), ("d1", 0, "s1", "images")]
    return {"nodes": nodes, "links": links, "models": FLUX2,
            "note": "Flux.2 dev with two Sleight tricks chained on one model.\n"
                    "Sleight · Route prompt sends the routed prompt (WORLD) into the double-stream blocks only, from "
                    "10 % of the schedule: the layout of the baseline stays, what those blocks render follows the "
                    "routed prompt. No paper names Flux.2's text layers yet: run Sleight · Find text layers on your "
                    "prompt pair to pick blocks (Inspect attention layers lists them).\n"
                    "Sleight · APG keeps colours natural at real CFG (4 here, with a negative prompt); Flux.2 dev is "
                    "guidance-distilled, so at CFG 1 APG has nothing to act on and says so."}


def spec_qwen_edit_addit():
    """Qwen-Image-Edit: Add-it inserts an object into your image, the reference image serving as its source."""
    source = "a red circle and a blue square on a yellow background"
    nodes = split_loaders(QWEN_EDIT, "qwen_image") + [
        ("img", "LoadImage", "Your image", {"image": example_inputs.IMAGE}, 1, 0),
        ("enc", "VAEEncode", "VAE Encode", {}, 1, 1),
        ("src", "CLIPTextEncode", "Source prompt (describe the image)", {"text": source}, 1, 2),
        ("neg", "CLIPTextEncode", "Negative prompt", {"text": ""}, 1, 3),
        ("traj", "SleightSourceTrajectory", "Sleight · Source trajectory",
         {"noise_seed": KS["seed"], "control_after_generate": "fixed"}, 2, 0),
        ("addit", "SleightAddIt", "Sleight · Add-it", {"prompt": source + " and a cat", "subject": "cat"}, 2, 1),
        ("refp", "ReferenceLatent", "Reference image → positive", {}, 3, 1),
        ("refn", "ReferenceLatent", "Reference image → negative", {}, 3, 2),
        ("k0", "KSampler", "KSampler · baseline (the edit model alone)", {**KS, "steps": 30, "cfg": 4.0}, 4, 0),
        ("k1", "KSampler", "KSampler · Add-it", {**KS, "steps": 30, "cfg": 4.0}, 4, 1),
        ("d0", "VAEDecode", "VAE Decode · baseline", {}, 5, 0),
        ("d1", "VAEDecode", "VAE Decode · Add-it", {}, 5, 1),
        ("s0", "SaveImage", "Save · baseline", {"filename_prefix": "sleight-qwen-edit-addit/baseline"}, 6, 0),
        ("s1", "SaveImage", "Save · Add-it", {"filename_prefix": "sleight-qwen-edit-addit/addit"}, 6, 1),
    ]
    links = [("img", 0, "enc", "pixels"), ("vae", 0, "enc", "vae"), ("clip", 0, "src", "clip"),
             ("clip", 0, "neg", "clip"),
             ("unet", 0, "traj", "model"), ("enc", 0, "traj", "latent"), ("src", 0, "traj", "conditioning"),
             ("unet", 0, "addit", "model"), ("clip", 0, "addit", "clip"), ("traj", 0, "addit", "source"),
             ("addit", 1, "refp", "conditioning"), ("enc", 0, "refp", "latent"),
             ("neg", 0, "refn", "conditioning"), ("enc", 0, "refn", "latent"),
             ("unet", 0, "k0", "model"), ("addit", 0, "k1", "model")] + [
            (a, 0, k, inp) for k in ("k0", "k1") for a, inp in (("refp", "positive"), ("refn", "negative"),
                                                              ("enc", "latent_image"))] + [
            ("k0", 0, "d0", "samples"), ("k1", 0, "d1", "samples"), ("vae", 0, "d0", "vae"), ("vae", 0, "d1", "vae"),
            ("d0", 0, "s0", "images"), ("d1", 0, "s1", "images")]
    return {"nodes": nodes, "links": links, "models": QWEN_EDIT,
            "note": "Add-it (Tewel et al., ICLR 2025) on Qwen-Image-Edit: insert an object into your image.\n"
                    "The image goes in twice: as the edit model's reference (Reference Latent, on both prompts) and "
                    "as Add-it's source trajectory. On an edit model Add-it takes its source keys from the "
                    "reference image's own tokens (no extra source pass): the target attends to [reference ; "
                    "gamma x itself], the structure is transferred from the source and the latents outside the "
                    "cat's attention mask are blended back to it.\nTop: the edit model alone with the same prompt."}
WAN_REPO = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
WAN_T2V = {"name": "wan2.1_t2v_1.3B_fp16.safetensors", "directory": "diffusion_models",
           "url": f"{WAN_REPO}/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors"}
UMT5 = {"name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "directory": "text_encoders",
        "url": f"{WAN_REPO}/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors"}
WAN_VAE = {"name": "wan_2.1_vae.safetensors", "directory": "vae", "url": f"{WAN_REPO}/vae/wan_2.1_vae.safetensors"}


def spec_wan_video():
    """Wan 2.1 T2V 1.3B: plain CFG against APG + a prompt routed into the cross-attention from 40 % of the schedule."""
    ks = {**KS, "steps": 30, "cfg": 9, "sampler_name": "uni_pc", "scheduler": "simple"}
    nodes = [
        ("unet", "UNETLoader", "Load Diffusion Model (Wan 2.1 T2V 1.3B)", {"unet_name": WAN_T2V["name"]}, 0, 1),
        ("clip", "CLIPLoader", "Load CLIP (umT5-XXL)", {"clip_name": UMT5["name"], "type": "wan"}, 0, 2),
        ("vae", "VAELoader", "Load VAE (Wan 2.1)", {"vae_name": WAN_VAE["name"]}, 0, 3),
        ("pos", "CLIPTextEncode", "Positive prompt", {"text": "a red fox trotting through a snowy forest, "
                                                               "cinematic, detailed fur"}, 1, 0),
        ("neg", "CLIPTextEncode", "Negative prompt", {"text": "blurry, low quality, static, deformed"}, 1, 1),
        ("alt", "CLIPTextEncode", "Routed prompt (from 40 % of the schedule)",
         {"text": "an arctic fox with white fur trotting through a snowy forest, cinematic, detailed fur"}, 1, 2),
        ("lat", "EmptyHunyuanLatentVideo", "Empty video latent 832×480, 33 frames",
         {"width": 832, "height": 480, "length": 33, "batch_size": 1}, 1, 3),
        ("apg", "SleightAPG", "Sleight · APG", {}, 2, 1),
        ("route", "SleightPromptRoute", "Sleight · Route prompt into layers",
         {"layers": "custom", "custom_layers": "*", "start_percent": 0.4}, 2, 2),
        ("k0", "KSampler", "KSampler · baseline (CFG 9)", ks, 3, 0),
        ("k1", "KSampler", "KSampler · APG + routed prompt", ks, 3, 1),
        ("d0", "VAEDecode", "VAE Decode · baseline", {}, 4, 0),
        ("d1", "VAEDecode", "VAE Decode · APG + routing", {}, 4, 1),
        ("s0", "SaveImage", "Save · baseline (frames)", {"filename_prefix": "sleight-wan-video/baseline"}, 5, 0),
        ("s1", "SaveImage", "Save · APG + routing (frames)", {"filename_prefix": "sleight-wan-video/apg-routing"}, 5, 1),
    ]
    links = [("clip", 0, "pos", "clip"), ("clip", 0, "neg", "clip"), ("clip", 0, "alt", "clip"),
             ("unet", 0, "k0", "model"), ("unet", 0, "apg", "model"), ("apg", 0, "route", "model"),
             ("alt", 0, "route", "conditioning"), ("route", 0, "k1", "model"),
             ("pos", 0, "k0", "positive"), ("neg", 0, "k0", "negative"), ("lat", 0, "k0", "latent_image"),
             ("pos", 0, "k1", "positive"), ("neg", 0, "k1", "negative"), ("lat", 0, "k1", "latent_image"),
             ("k0", 0, "d0", "samples"), ("k1", 0, "d1", "samples"), ("vae", 0, "d0", "vae"), ("vae", 0, "d1", "vae"),
             ("d0", 0, "s0", "images"), ("d1", 0, "s1", "images")]
    return {"nodes": nodes, "links": links, "models": [WAN_T2V, UMT5, WAN_VAE],
            "note": "Wan 2.1 text-to-video with two Sleight tricks on the same model.\nSleight · APG (adaptive "
                    "projected guidance) keeps colours natural at a high CFG; on video its guidance norm spans the "
                    "whole clip (channels, frames, height, width), as the paper's.\nSleight · Route prompt hands the "
                    "routed prompt to every cross-attention layer (custom layers *) from 40 % of the schedule: the "
                    "first steps lay out the clip from the positive prompt, the routed one changes the fox. Route "
                    "into some blocks only (blocks.0-9, ...; Sleight · Inspect attention layers lists them, Find text "
                    "layers ranks them).\nEach Save node writes the clip's frames; use Save Animated WEBP for a file."}


SPECS = {"sleight-apg": spec_apg, "sleight-text-routing": spec_text_routing,
         "sleight-rare-to-frequent": spec_rare_to_frequent, "sleight-hdpainter": spec_hdpainter,
         "sleight-noise-search": spec_noise_search, "sleight-addit": spec_addit,
         "sleight-addit-real": spec_addit_real, "sleight-designedit-remove": spec_designedit_remove,
         "sleight-designedit-layers": spec_designedit_layers, "sleight-designedit-zoom-out": spec_designedit_zoom_out,
         "sleight-r2f-plan": spec_r2f_plan, "sleight-flux2": spec_flux2,
         "sleight-qwen-edit-addit": spec_qwen_edit_addit, "sleight-wan-video": spec_wan_video}

BUILD_JS = r"""(spec) => {
  const g = app.graph; g.clear();
  const byId = {}, hints = {};
  for (const [key, type, title, values, col, row] of spec.nodes) {
    const n = LiteGraph.createNode(type); if (!n) throw new Error(`unknown node type ${type}`);
    n.title = title; g.add(n); byId[key] = n; hints[n.id] = [col, row];
    for (const [k, v] of Object.entries(values)) {
      const w = n.widgets.find(w => w.name === k); if (!w) throw new Error(`${type} has no widget ${k}`); w.value = v;
    }
    if (type === "CheckpointLoaderSimple") n.properties.models = [spec.model];
    const files = (spec.models || []).filter(m => Object.values(values).includes(m.name));
    if (files.length) n.properties.models = files;
  }
  for (const [a, slot, b, input] of spec.links) byId[a].connect(slot, byId[b], input);
  const note = LiteGraph.createNode("Note"); note.title = "About this workflow"; g.add(note);
  note.widgets[0].value = spec.note; note.size = [320, 300];
  return JSON.stringify({graph: g.serialize(), hints});
}"""
GAP_X, GAP_Y, TITLE = 80, 50, 30     # px between columns, between a node and the title bar below it; title bar


def layout(workflow, sizes, hints=None, sweeps=4):
    """Place every node of a UI workflow in place: left to right in layers (a node one column right of its
    furthest input; a node without inputs one column left of its first consumer; unconnected nodes such as
    notes first in column 0), each column ordered by the barycentre of its neighbours (a few sweeps each way),
    each node aligned with its inputs where the column has room. `sizes`: {node id: [w, h]} (without the title
    bar); boxes never overlap. `hints`: {node id: (column, row)} break ties in the order."""
    hints = {str(k): tuple(v) for k, v in (hints or {}).items()}
    ids = [str(n["id"]) for n in workflow["nodes"]]
    preds, succs = {i: [] for i in ids}, {i: [] for i in ids}
    for link in workflow["links"]:
        a, b = str(link[1]), str(link[3])
        if a not in preds[b]:
            preds[b].append(a)
            succs[a].append(b)
    waiting = {i: len(preds[i]) for i in ids}
    topo, ready = [], [i for i in ids if not preds[i]]
    while ready:
        n = ready.pop(0)
        topo.append(n)
        for m in succs[n]:
            waiting[m] -= 1
            if waiting[m] == 0:
                ready.append(m)
    if len(topo) != len(ids):
        raise ValueError("the workflow has a cycle")
    layer = {}
    for n in topo:
        layer[n] = max((layer[p] + 1 for p in preds[n]), default=0)
    for n in reversed(topo):
        if not preds[n] and succs[n]:
            layer[n] = min(layer[m] for m in succs[n]) - 1
    free = [i for i in ids if not preds[i] and not succs[i]]
    low = min([layer[i] for i in ids if i not in free] or [0])
    for i in ids:
        layer[i] = 0 if i in free else layer[i] - low
    columns = {}
    for i in sorted(ids, key=lambda i: (i not in free, hints.get(i, (0, 0))[1], hints.get(i, (0, 0))[0], int(i))):
        columns.setdefault(layer[i], []).append(i)
    for sweep in range(2 * sweeps):
        forward = sweep % 2 == 0
        for c in sorted(columns) if forward else sorted(columns, reverse=True):
            index = {n: k for col in columns.values() for k, n in enumerate(col)}
            near = preds if forward else succs

            def centre(n):
                if n in free:
                    return (-1, index[n])
                ns = [index[m] for m in near[n]]
                return (sum(ns) / len(ns) if ns else index[n], index[n])
            columns[c].sort(key=centre)
    pos, x = {}, 0
    for c in sorted(columns):
        bottom = -GAP_Y
        for n in columns[c]:
            w, h = sizes[n]
            placed = [pos[p][1] + sizes[p][1] / 2 for p in preds[n] if p in pos]
            want = sum(placed) / len(placed) - h / 2 if placed else 0
            y = max(want, bottom + GAP_Y + TITLE)
            pos[n] = (x, y)
            bottom = y + h
        x += max(sizes[n][0] for n in columns[c]) + GAP_X
    top = min(y for _, y in pos.values()) - TITLE
    for node in workflow["nodes"]:
        i = str(node["id"])
        node["pos"] = [round(pos[i][0]), round(pos[i][1] - top)]
        node["size"] = [round(v) for v in sizes[i]]
    return workflow


TITLE_WIDTHS_JS = """() => {
  const ctx = document.createElement("canvas").getContext("2d");
  ctx.font = app.canvas.title_text_font || `${LiteGraph.NODE_TEXT_SIZE}px Arial`;
  return Object.fromEntries(app.graph._nodes.map(
    n => [String(n.id), ctx.measureText(n.title).width + 2 * LiteGraph.NODE_TITLE_HEIGHT + 20]));
}"""


def measure(fe, workflow, name):
    """{node id: [w, h]} as frontend `fe` draws the workflow's nodes (title bar excluded), wide enough for the
    whole title."""
    r = fe.load(workflow, name)
    title = fe.page.evaluate(TITLE_WIDTHS_JS)
    return {b[0]: [max(b[4] - b[2], title[b[0]]), b[5] - b[3] - TITLE] for b in r["boxes"]}


def check(result, name, label):
    problems = {k: result[k] for k in ("missing", "errored") if result[k]}
    bad = thumbnails.overlaps(result["boxes"])
    if problems or bad:
        raise SystemExit(f"{name} in the {label} frontend: {problems} overlapping {bad}")


def main(names):
    specs = {name: {"model": SDXL, **SPECS[name]()} for name in names}
    out = comfy_env.OUTPUT / "workflows"
    with tempfile.TemporaryDirectory(prefix="sleight-models-") as tmp:
        models = thumbnails.models_with(tmp, [m for s in specs.values() for m in [s["model"], *s.get("models", [])]])
        with ComfyServer(log_path=out / "server.log", models_dir=models) as server, \
                thumbnails.Frontend(server.url) as fe, \
                ComfyServer(log_path=out / "server-newest.log", models_dir=models,
                            extra_args=thumbnails.frontend_args(thumbnails.NEWEST_FRONTEND)) as newest, \
                thumbnails.Frontend(newest.url, browser=fe.browser) as fe_newest:
            declared = thumbnails.declared_inputs(server.client.object_info())
            for name, spec in specs.items():
                built = json.loads(fe.page.evaluate(BUILD_JS, spec))
                ui = built["graph"]
                a, b = measure(fe, ui, name), measure(fe_newest, ui, name)
                layout(ui, {i: [max(a[i][0], b[i][0]), max(a[i][1], b[i][1])] for i in a}, built["hints"])
                check(fe_newest.load(ui, name), name, thumbnails.NEWEST_FRONTEND)
                result = fe.load(ui, name)
                check(result, name, "bundled")
                (thumbnails.EXAMPLES / f"{name}.json").write_text(json.dumps(ui, indent=2) + "\n")
                twin = thumbnails.api_inputs(result["prompt"], declared)
                (comfy_env.ROOT / "tests" / "workflows" / f"{name}.api.json").write_text(json.dumps(twin, indent=2) + "\n")
                shot = fe.screenshot(out / f"{name}.png")
                thumbnails.make_thumbnail(shot, thumbnails.EXAMPLES / f"{name}.jpg")
                print(f"wrote {name}: {len(ui['nodes'])} nodes")


if __name__ == "__main__":
    main(sys.argv[1:] or list(SPECS))
