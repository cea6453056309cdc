"""pyproject.toml against the Comfy Registry's rules (Comfy-Org/docs registry/specifications.mdx and the parser in
comfy-cli, summarised in ../shared/design/ecosystem.md §1.1), and the icon it points at: made by
scripts/make_icon.py, a square PNG of at most 400 px."""
import re
import tomllib

from PIL import Image

import comfy_env
import make_icon

PROJECT = tomllib.loads((comfy_env.ROOT / "pyproject.toml").read_text())
CLASSIFIERS = {"Operating System :: OS Independent", "Operating System :: Microsoft :: Windows",
               "Operating System :: POSIX :: Linux", "Operating System :: MacOS",
               "Environment :: GPU :: NVIDIA CUDA", "Environment :: GPU :: AMD ROCm", "Environment :: GPU :: Intel Arc",
               "Environment :: GPU :: Apple Metal", "Environment :: NPU :: Huawei Ascend"}


def test_project_table_follows_the_registry_rules():
    p = PROJECT["project"]
    name = p["name"]
    assert len(name) < 100 and re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", name) and not re.search(r"[-_.]{2}", name)
    assert "comfyui" not in name.lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?", p["version"])
    assert p["description"] and p["requires-python"] and (p["license"].get("file") or p["license"].get("text"))
    assert (comfy_env.ROOT / p["license"]["file"]).exists() and (comfy_env.ROOT / p["readme"]).exists()
    # the only dependency is the frontend-compatibility marker, which the registry reads and never installs
    assert [d.split(">=")[0] for d in p["dependencies"]] == ["comfyui-frontend-package"]
    assert set(p["classifiers"]) <= CLASSIFIERS
    assert p["urls"]["Repository"].startswith("https://")


def test_tool_comfy_table_and_icon(tmp_path):
    c = PROJECT["tool"]["comfy"]
    assert c["PublisherId"] and c["DisplayName"]
    assert re.fullmatch(r"(==|>=|<=|!=|~=|>|<|<>)\d+\.\d+\.\d+(-\S+)?", c["requires-comfyui"])
    assert c["Icon"].startswith("https://") and c["Icon"].endswith("/web/icon.png")
    with Image.open(comfy_env.ROOT / "web" / "icon.png") as icon:
        assert icon.format == "PNG" and icon.width == icon.height <= 400
        committed = icon.convert("RGBA")
    fresh = tmp_path / "icon.png"
    make_icon.main(fresh)                                   # the committed icon is what the script draws
    with Image.open(fresh) as im:
        a, b = committed.tobytes(), im.convert("RGBA").tobytes()
    assert len(a) == len(b) and sum(abs(x - y) for x, y in zip(a, b)) / len(a) < 2
