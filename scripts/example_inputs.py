"""The input image the example workflows load (LoadImage), generated so tests, the demo and the frontend
thumbnails need no downloaded picture: a shapes-world scene (128 px) whose alpha channel cuts a hole over one
shape, so LoadImage's MASK output (1 - alpha) is the region to inpaint, remove or edit.

ComfyServer writes it into the server's input folder; a user of the template picks their own image.
"""
from pathlib import Path

IMAGE = "sleight-example.png"
SIZE = 128


def write(folder) -> Path:
    import comfy_env

    comfy_env.import_pack()
    import numpy as np
    from PIL import Image
    from sleight.shapes import world

    scene = world.Scene("yellow", (world.Shape("circle", "red", "left", "large", 0.0, 0.0),
                                   world.Shape("square", "blue", "right", "large", 0.0, 0.0)), None, False)
    rgb = (world.render([scene], SIZE)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    alpha = np.full((SIZE, SIZE, 1), 255, np.uint8)
    alpha[SIZE // 3: 2 * SIZE // 3, 2 * SIZE // 3:] = 0  # the hole: the right grid cell (the blue square)
    path = Path(folder) / IMAGE
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA").save(path)
    return path
