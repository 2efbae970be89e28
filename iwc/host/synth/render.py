"""Rendering one frame: the camera's background under its light, the animals and people crossing it, and the
detector's boxes around what is visible."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from iwc.host.synth.detector import detect, detection
from iwc.host.synth.world import Actor, Frame, Species, is_night


def render(rng: np.random.Generator, f: Frame) -> tuple[Image.Image, list[dict]]:
    """The frame's pixels and its MegaDetector detections (normalized [x, y, w, h], top-left origin)."""
    loc, night = f.location, is_night(f.when)
    w, h = loc.size
    # exposure: the flash varies a little at night; by day light follows the hour, with a slight colour cast
    gain = rng.uniform(0.85, 1.1) if night else 1.15 - 0.04 * abs(f.when.hour + f.when.minute / 60 - 12.5)
    cast = np.ones(3) if night else rng.uniform(0.94, 1.06, 3)
    lut = np.minimum(255, np.arange(256)[None, :] * gain * cast[:, None]).astype(np.uint8)
    image = (loc.night if night else loc.day).point(lut.ravel().tolist())
    boxes = []
    for a in f.actors:
        sprite = _draw_person(a) if a.species is None else _draw_animal(a, a.species, night, f.step)
        x, y = a.x + a.vx * f.step, a.y + a.vy * f.step
        left, top = round(x - sprite.width / 2), round(y - sprite.height)
        image.paste(sprite, (left, top), sprite)
        bl, bt, br, bb = sprite.getbbox()
        full = (br - bl) * (bb - bt)
        x0, y0 = max(left + bl, 0), max(top + bt, 0)
        x1, y1 = min(left + br, w), min(top + bb, h)
        if x1 > x0 and y1 > y0:
            visible = (x1 - x0) * (y1 - y0) / full
            boxes += detect(rng, (x0 / w, y0 / h, (x1 - x0) / w, (y1 - y0) / h), visible, night,
                             "1" if a.species else "2")
    if rng.random() < (0.25 if not f.actors else 0.06):  # a false box on a bush, rock or shadow
        bw, bh = rng.uniform(0.04, 0.2), rng.uniform(0.04, 0.2)
        bx, by = rng.uniform(0, 1 - bw), rng.uniform(loc.horizon / h - 0.1, 1 - bh)
        boxes.append(detection("1", (bx, max(by, 0.0), bw, bh), rng.beta(1.3, 2.6)))
    if night:
        image = image.convert("L").convert("RGB")
    return image, boxes


def _draw_animal(a: Actor, s: Species, night: bool, step: int) -> Image.Image:
    """An RGBA sprite facing `a.facing`, feet on its bottom edge; drawn at 2x, then halved (smooth edges)."""
    bl = a.length * 2
    bh = bl * a.aspect
    left, top = bl * (s.tail + 0.05) + 2, bh * (a.neck + 0.4) + 2
    size = (int(left + bl * 1.55) + 2, int(top + bh * (1 + a.leg)) + 2)
    mask, coat = Image.new("L", size, 0), Image.new("RGB", size, a.colour)
    dm, dc = ImageDraw.Draw(mask), ImageDraw.Draw(coat)
    legw = max(2, int(bl * 0.08))
    for i, fx in enumerate((0.15, 0.3, 0.7, 0.85)):  # legs swing with the step
        swing = 0.35 * math.sin(step * 1.7 + i * 1.3)
        x0, y0, ln = left + fx * bl, top + 0.75 * bh, bh * (a.leg + 0.25)
        dm.line((x0, y0, x0 + ln * math.sin(swing), y0 + ln * math.cos(swing)), fill=255, width=legw)
    dm.ellipse((left, top, left + bl, top + bh), fill=255)
    hx, hy = left + bl * 1.05, top + bh * (0.25 - a.neck)
    hr, vr = bl * 0.17, bh * 0.28 if a.aspect < 0.9 else bl * 0.17
    dm.line((left + 0.8 * bl, top + 0.4 * bh, hx, hy), fill=255, width=max(2, int(bh * 0.3)))
    dm.ellipse((hx - hr, hy - vr, hx + hr, hy + vr), fill=255)
    if s.snout:
        dm.ellipse((hx, hy - vr * 0.2, hx + bl * 0.4, hy + vr * 0.45), fill=255)
    if s.tail:
        tx, ty = left + 0.03 * bl, top + 0.3 * bh
        dm.line((tx, ty, tx - s.tail * bl, ty + s.tail * bl * 0.35), fill=255, width=max(2, int(bl * 0.05)))
    belly = tuple(min(255, int(c * 1.25)) for c in a.colour)
    dc.ellipse((left + 0.15 * bl, top + 0.6 * bh, left + 0.85 * bl, top + 1.05 * bh), fill=belly)
    _pattern(dc, s.pattern, a, left, top, bl, bh)
    er = max(1.5, bl * 0.035)
    dc.ellipse((hx + hr * 0.3 - er, hy - vr * 0.3 - er, hx + hr * 0.3 + er, hy - vr * 0.3 + er),
               fill=(250, 250, 240) if night else (15, 12, 10))  # eye shine under the flash
    sprite = coat.convert("RGBA")
    sprite.putalpha(mask)
    return _finish(sprite, a.facing)


def _pattern(dc: ImageDraw.ImageDraw, pattern: str, a: Actor, left: float, top: float, bl: float,
             bh: float) -> None:
    dark = tuple(int(c * 0.3) for c in a.colour)
    if pattern == "spots":
        r = bl * 0.045
        for u, v in a.marks:
            cx, cy = left + u * bl, top + v * bh
            dc.ellipse((cx - r, cy - r, cx + r, cy + r), fill=dark)
    elif pattern == "stripes":
        for u in a.marks[:5, 0]:
            x = left + u * bl
            dc.line((x, top + 0.1 * bh, x, top + 0.75 * bh), fill=(236, 230, 218), width=max(2, int(bl * 0.03)))
    elif pattern == "collar":
        dc.rectangle((left + 0.72 * bl, top, left + 0.84 * bl, top + bh), fill=(205, 198, 186))
    elif pattern == "vest":
        dc.polygon([(left + 0.3 * bl, top), (left + 0.75 * bl, top), (left + 0.5 * bl, top + bh),
                    (left + 0.1 * bl, top + bh)], fill=(22, 20, 20))


def _draw_person(a: Actor) -> Image.Image:
    """An upright person `a.length` px tall: head, shirt, trousers, arms."""
    ht = a.length * 2
    wd = ht * 0.35
    size = (int(wd) + 4, int(ht) + 4)
    sprite = Image.new("RGBA", size, (0, 0, 0, 0))
    d = ImageDraw.Draw(sprite)
    cx, hr = size[0] / 2, ht * 0.07
    trousers = (*(int(c * 0.6) for c in a.clothes), 255)
    d.line((cx - wd * 0.12, ht * 0.55, cx - wd * 0.18, ht), fill=trousers, width=max(2, int(wd * 0.18)))
    d.line((cx + wd * 0.12, ht * 0.55, cx + wd * 0.18, ht), fill=trousers, width=max(2, int(wd * 0.18)))
    d.rectangle((cx - wd * 0.25, ht * 0.16, cx + wd * 0.25, ht * 0.58), fill=(*a.clothes, 255))
    for sx in (-1, 1):
        d.line((cx + sx * wd * 0.25, ht * 0.18, cx + sx * wd * 0.45, ht * 0.5), fill=(*a.clothes, 255),
               width=max(2, int(wd * 0.1)))
    d.ellipse((cx - hr, ht * 0.16 - 2 * hr, cx + hr, ht * 0.16), fill=(*a.colour, 255))
    return _finish(sprite, a.facing)


def _finish(sprite: Image.Image, facing: int) -> Image.Image:
    sprite = sprite.reduce(2)
    return sprite if facing > 0 else sprite.transpose(Image.FLIP_LEFT_RIGHT)
