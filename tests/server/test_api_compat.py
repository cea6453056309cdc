"""The HTTP side of compatibility on a real ComfyUI 0.3.75 server: the client reads results through /history
there (no Jobs API), and the block picker's route lists exactly what Sleight · Inspect attention layers prints
for the same file, without loading the file's weights, and answers bad queries with a clear 400."""
import os

import pytest
import requests

import comfy_env
from comfy_server import ComfyServer

LOG = comfy_env.OUTPUT / "server-tests" / "api-compat.log"
SDXL = "sleight-tiny-sdxl.safetensors"         # 1.1 GB
SD15 = "sleight-tiny-sd15.safetensors"
FLUX = "sleight-tiny-flux-dev.safetensors"     # a diffusion-model file (no CLIP, no VAE), 1.1 GB


@pytest.fixture(scope="module")
def server():
    import tiny_models

    tiny_models.ensure_models(names=["sd15", "sdxl", "flux_dev"])
    with ComfyServer(log_path=LOG) as s:
        yield s


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def layers(server, **query):
    return requests.get(f"{server.url}/sleight/layers", params=query, timeout=120)


def test_route_reads_the_structure_not_the_weights(server):
    before = rss_mb(server.proc.pid)
    for folder, name in (("checkpoints", SDXL), ("diffusion_models", FLUX)):
        r = layers(server, folder=folder, file=name, kinds="text")
        assert r.status_code == 200, r.text
        size_mb = os.path.getsize(comfy_env.MODELS / folder / name) / 2 ** 20
        grown = rss_mb(server.proc.pid) - before
        assert grown < 0.25 * size_mb, f"{name}: the server grew by {grown:.0f} MB for a {size_mb:.0f} MB file"
    info = r.json()
    assert info["label"] == "Flux" and info["eligible"] == ["double.0", "single.0"]


def inspect_text(server, loader, width, height):
    prompt = {"1": loader, "2": {"class_type": "SleightInspectAttention",
                                 "inputs": {"model": ["1", 0], "width": width, "height": height}}}
    result = server.client.run(prompt)
    return result.history["outputs"]["2"]["text"][0]


@pytest.mark.parametrize("folder,name,loader", [
    ("checkpoints", SD15, {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD15}}),
    ("diffusion_models", FLUX, {"class_type": "UNETLoader", "inputs": {"unet_name": FLUX, "weight_dtype": "default"}}),
])
def test_route_lists_what_inspect_attention_prints(server, folder, name, loader):
    assert not server.client.has_jobs_api(), "0.3.75 has no Jobs API: the client reads /history"
    info = layers(server, folder=folder, file=name, kinds="text", width=256, height=192).json()
    assert info["table"] == inspect_text(server, loader, 256, 192)
    assert [(x["block"], x["kind"]) for x in info["layers"]] == [
        tuple(line.split()[:2]) for line in info["table"].splitlines()[2:]]


def test_route_selection_and_kinds(server):
    text = layers(server, file=SD15, kinds="text", spec="output.*").json()
    assert text["selected"] == ["output.0.0", "output.1.0"] and text["spec_error"] is None
    assert text["width"] == text["height"] == 512                      # the family's own size by default
    own = layers(server, file=SD15, kinds="self", spec="nothing.9").json()
    assert own["eligible"] == ["input.1.0", "middle.0.0", "output.0.0", "output.1.0"] and not own["selected"]
    assert "matches no layer" in own["spec_error"]


@pytest.mark.parametrize("query,says", [
    ({"file": "no-such.safetensors"}, "no model file 'no-such.safetensors' in checkpoints"),
    ({"file": SD15, "folder": "loras"}, "folder must be one of"),
    ({"file": SD15, "kinds": "cross"}, "kinds must be 'text' or 'self'"),
    ({"file": SD15, "width": "wide"}, "width must be a whole number"),
    ({"file": SD15, "height": "99999"}, "height must be a whole number"),
])
def test_route_answers_bad_queries_clearly(server, query, says):
    r = layers(server, **query)
    assert r.status_code == 400 and says in r.json()["error"] and r.json()["error"].startswith("Sleight · block picker")
    assert requests.get(f"{server.url}/system_stats", timeout=30).status_code == 200
