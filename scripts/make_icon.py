"""The registry icon web/icon.png (pyproject [tool.comfy] Icon), drawn here with PIL: a fan of three cards, the
front one carrying a spark, on a dark rounded square. Square and at most 400 px, as the registry asks.

    .venv/bin/python scripts/make_icon.py
"""
import math
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

ICON = Path(__file__).resolve().parent.parent / "web" / "icon.png"
SIZE = 256
SCALE = 4                                    # drawn at 4x, then downsampled (smooth edges)


def card(size, fill, edge):
    w, h = size
    im = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    d.rounded_rectangle((0, 0, w - 1, h - 1), radius=w // 8, fill=fill, outline=edge, width=max(2, w // 40))
    return im


def spark(draw, cx, cy, r, fill):
    """A four-pointed star."""
    pts = []
    for i in range(8):
        a = math.pi / 4 * i - math.pi / 2
        rr = r if i % 2 == 0 else r * 0.28
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    draw.polygon(pts, fill=fill)


def make(size=SIZE):
    s = size * SCALE
    im = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    bg = Image.new("RGBA", (s, s))
    top, bottom = (38, 24, 74), (16, 44, 92)
    for y in range(s):                       # vertical gradient
        t = y / (s - 1)
        ImageDraw.Draw(bg).line([(0, y), (s, y)], fill=tuple(round(a + (b - a) * t) for a, b in zip(top, bottom)))
    mask = Image.new("L", (s, s), 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, s - 1, s - 1), radius=s // 5, fill=255)
    im.paste(bg, (0, 0), mask)

    cw, ch = int(s * 0.36), int(s * 0.52)
    colours = [((120, 86, 200, 255), (200, 180, 255, 255)), ((70, 130, 210, 255), (170, 210, 255, 255)),
               ((245, 240, 255, 255), (255, 255, 255, 255))]
    for angle, (fill, edge) in zip((24, 8, -8), colours):
        c = card((cw, ch), fill, edge).rotate(angle, resample=Image.BICUBIC, expand=True)
        shadow = Image.new("RGBA", c.size, (0, 0, 0, 0))
        shadow.putalpha(c.getchannel("A").point(lambda a: a * 0.45))
        shadow = shadow.filter(ImageFilter.GaussianBlur(s / 80))
        x = int(s * 0.5 - c.width / 2 + (-angle) * s * 0.006)
        y = int(s * 0.52 - c.height / 2)
        im.alpha_composite(shadow, (x + s // 60, y + s // 40))
        im.alpha_composite(c, (x, y))
    front_cx = s * 0.5 + 8 * s * 0.006
    spark(ImageDraw.Draw(im), front_cx, s * 0.52, s * 0.13, (255, 190, 60, 255))
    return im.resize((size, size), Image.LANCZOS)


def main(path=ICON):
    make().save(path, optimize=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ICON)
