"""The synthetic world: how big a demo is, the species and how they look, the camera locations with their
backgrounds, and every frame's plan (visits, bursts, sequences, who crosses the scene)."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from PIL import Image, ImageDraw

from iwc.data.categories import EMPTY

FRAME_SIZES = ((640, 480), (600, 400), (640, 360))  # original (width, height); one per location
EMPTY_SHARE = 0.35  # share of visits that are empty triggers
NIGHT_SKIP = 0.5  # chance to push a visit that falls at night to a later time (~30% night frames)
HUMAN = 75


@dataclass(frozen=True)
class Scale:
    """How big a demo competition is."""

    train_images: int  # about this many train images (the last burst at a location may overshoot)
    test_images: int
    train_locations: int
    test_locations: int
    missing: int  # train images listed in the JSON but absent on disk
    corrupt: int  # truncated train originals, absent from the resized dataset
    omitted: int  # test images left out of sample_submission.csv


SCALES = {
    "small": Scale(400, 150, 8, 3, missing=2, corrupt=2, omitted=3),  # tests
    "medium": Scale(1500, 500, 30, 6, missing=3, corrupt=4, omitted=6),  # the demo
    # the real competition's counts (written by `bulk`): 6 corrupt train JPEGs, 24 undecodable test ones
    "full": Scale(217_959, 62_894, 441, 111, missing=0, corrupt=6, omitted=24),
}


@dataclass(frozen=True)
class Species:
    """How one category looks: sizes are relative to the body length, which is relative to the frame."""

    id: int
    name: str
    weight: float  # overall relative frequency
    length: float  # body length as a fraction of the frame width (mid depth)
    aspect: float  # body height / body length
    leg: float  # leg length / body height
    neck: float  # how far the head is raised, in body heights
    tail: float  # tail length / body length
    snout: bool
    colour: tuple[int, int, int]
    pattern: str  # "plain" | "spots" | "stripes" | "collar" | "vest"
    herd: int  # most individuals in one visit


SPECIES = (
    Species(2, "tayassu pecari", 10, 0.29, 0.55, 0.45, 0.05, 0.0, True, (72, 62, 56), "collar", 3),
    Species(3, "dasyprocta punctata", 14, 0.21, 0.60, 0.70, 0.25, 0.0, False, (168, 102, 48), "plain", 1),
    Species(6, "puma concolor", 3, 0.37, 0.38, 0.85, 0.15, 0.8, False, (178, 140, 96), "plain", 1),
    Species(8, "mazama americana", 8, 0.29, 0.50, 1.25, 0.75, 0.1, False, (142, 68, 42), "plain", 1),
    Species(24, "tapirus terrestris", 4, 0.40, 0.55, 0.60, 0.10, 0.0, True, (46, 43, 41), "plain", 1),
    Species(72, "leopardus pardalis", 5, 0.26, 0.40, 0.65, 0.15, 0.6, False, (192, 156, 82), "spots", 1),
    Species(96, "tamandua mexicana", 3, 0.26, 0.45, 0.55, 0.05, 0.6, True, (204, 182, 122), "vest", 1),
    Species(101, "crax rubra", 6, 0.14, 1.05, 0.60, 0.45, 0.3, False, (28, 27, 32), "plain", 2),
    Species(372, "tragelaphus scriptus", 4, 0.32, 0.50, 1.10, 0.70, 0.1, False, (122, 76, 46), "stripes", 1),
)
# The rest of the category list, real ids: empty and human occur (humans drawn as people), the others are
# listed but never seen, as many entries of the real list are.
OTHER_CATEGORIES = ((EMPTY, "empty"), (4, "cuniculus paca"), (HUMAN, "human"), (79, "unknown"),
                    (290, "unidentifiable"), (404, "misfire"))


@dataclass(frozen=True)
class Location:
    id: int
    size: tuple[int, int]
    horizon: float  # y of the horizon, px
    day: Image.Image  # background by day (RGB)
    night: Image.Image  # background under the infrared flash (gray RGB)
    weights: np.ndarray  # species frequencies here (sum 1)
    single: bool  # each trigger is its own one-frame sequence (frames of a visit seconds apart)
    start: datetime


@dataclass(frozen=True)
class Actor:
    """One individual crossing the scene during a visit."""

    species: Species | None  # None: a person
    length: float  # body length (animals) or height (people), px
    aspect: float
    leg: float
    neck: float
    colour: tuple[int, int, int]
    clothes: tuple[int, int, int]
    marks: np.ndarray  # (k, 2) spot or stripe positions in body units
    facing: int  # +1 right, -1 left
    x: float  # feet position at the first frame, px
    y: float
    vx: float  # px per frame
    vy: float


@dataclass(frozen=True)
class Frame:
    id: str
    split: str  # "train" | "test"
    location: Location
    seq_id: str
    seq_num_frames: int
    frame_num: int
    when: datetime
    category_id: int
    actors: tuple[Actor, ...]
    step: int  # frames since the visit began


def plan(rng: np.random.Generator, split: str, loc_ids: list[int], total: int) -> list[Frame]:
    """Every frame of one split: cameras get uneven shares of `total`."""
    shares = rng.dirichlet(np.full(len(loc_ids), 3.0))
    frames: list[Frame] = []
    for i, loc_id in enumerate(loc_ids):
        # the first test camera shoots one-frame sequences, as many real test cameras do; the first camera
        # of each split sees a person, so person boxes always exist
        loc = _location(rng, loc_id, single=rng.random() < 0.3 or (split == "test" and i == 0))
        frames += _plan_visits(rng, loc, split, max(12, round(shares[i] * total)), force_human=i == 0)
    return frames


def _location(rng: np.random.Generator, loc_id: int, single: bool) -> Location:
    """A camera's fixed view: sky or canopy, textured ground, trunks, bushes and rocks; its species mix."""
    w, h = FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
    horizon = h * rng.uniform(0.22, 0.5)
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    ridge = horizon + h * 0.03 * np.sin(xs / w * rng.uniform(2, 9) + rng.uniform(0, 6))
    if rng.random() < 0.5:  # open country: hazy sky
        top, low = rng.uniform([90, 120, 150], [170, 190, 230]), rng.uniform([150, 160, 170], [225, 225, 230])
    else:  # forest: dark green canopy
        top, low = rng.uniform([20, 45, 15], [60, 95, 50]), rng.uniform([30, 60, 20], [80, 120, 60])
    ground = rng.uniform(70, 150) * np.array([1.0, rng.uniform(0.8, 1.0), rng.uniform(0.5, 0.8)])  # earth
    t = (ys / max(horizon, 1.0))[..., None]
    sky = top * (1 - t) + low * t
    depth = np.clip((ys - ridge) / (h - horizon), 0, 1)[..., None]
    land = ground * (0.75 + 0.35 * depth)
    img = np.where((ys >= ridge)[..., None], land, sky)
    img *= (0.8 + 0.4 * _smooth_noise(rng, w, h, 10))[..., None]
    img *= (0.9 + 0.2 * _smooth_noise(rng, w, h, 90))[..., None]
    day = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(day)
    for _ in range(int(rng.integers(1, 5))):  # trunks
        x, tw = rng.uniform(0, w), rng.uniform(0.015, 0.06) * w
        base = horizon + rng.uniform(0.05, 0.4) * (h - horizon)
        draw.rectangle((x, 0, x + tw, base), fill=tuple(int(c) for c in rng.uniform([35, 25, 15], [95, 75, 55])))
    for _ in range(int(rng.integers(3, 9))):  # bushes and rocks
        cx, cy = rng.uniform(0, w), horizon + rng.uniform(-0.05, 0.9) * (h - horizon)
        rx, ry = rng.uniform(0.03, 0.12) * w, rng.uniform(0.02, 0.07) * h
        rock = rng.random() < 0.35
        colour = rng.uniform([90, 90, 90], [150, 145, 140]) if rock else rng.uniform([20, 50, 15], [70, 110, 50])
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=tuple(int(c) for c in colour))
    gray = np.asarray(day.convert("L"), dtype=np.float32)
    r2 = ((xs - w / 2) / (w / 2)) ** 2 + ((ys - h * 0.6) / (h * 0.6)) ** 2
    flash = gray * (1.05 - 0.55 * np.clip(r2, 0, 1.3)) * 0.85  # the infrared flash lights the centre
    night = Image.fromarray(np.clip(flash, 0, 255).astype(np.uint8)).convert("RGB")
    weights = np.array([s.weight for s in SPECIES]) * rng.gamma(1.2, size=len(SPECIES))
    absent = rng.random(len(SPECIES)) < 0.3
    absent[np.argsort(-weights)[:3]] = False  # every location keeps at least its three commonest
    weights[absent] = 0.0
    start = datetime(2012, 1, 1) + timedelta(days=int(rng.integers(0, 2700)))
    return Location(loc_id, (w, h), float(horizon), day, night, weights / weights.sum(),
                     single, start)


def _smooth_noise(rng: np.random.Generator, w: int, h: int, cells: int) -> np.ndarray:
    """Noise in [0, 1) with about `cells` features across the width, bicubically upsampled to (h, w)."""
    coarse = rng.random((max(2, cells * h // w), cells))
    small = Image.fromarray((coarse * 255).astype(np.uint8))
    return np.asarray(small.resize((w, h), Image.BICUBIC), dtype=np.float32) / 255.0


def _plan_visits(rng: np.random.Generator, loc: Location, split: str, n_frames: int,
                 force_human: bool) -> list[Frame]:
    """Visits to one camera, in time order, until it holds at least `n_frames` frames.

    A visit is a burst of 1-5 frames one second apart under one seq_id, or, at a `single` camera,
    1-4 one-frame sequences a few seconds apart (only the time gap ties them together).
    """
    frames: list[Frame] = []
    when, visit = loc.start, 0
    while len(frames) < n_frames:
        when = _next_visit(rng, when)
        if force_human and visit == 1:
            category = HUMAN
        elif rng.random() < EMPTY_SHARE:
            category = EMPTY
        else:
            category = SPECIES[int(rng.choice(len(SPECIES), p=loc.weights))].id
        if loc.single:
            n = int(rng.choice([1, 2, 3, 4], p=[0.4, 0.3, 0.2, 0.1]))
            offsets = np.concatenate([[0], np.cumsum(rng.integers(3, 15, n - 1))]).astype(int)
        else:
            n = int(rng.choice([1, 2, 3, 4, 5], p=[0.1, 0.15, 0.45, 0.1, 0.2]))
            offsets = np.arange(n)
        actors = _actors(rng, loc, category, speed=3.0 if loc.single else 1.0)
        seq_id = uid(rng)
        for k in range(n):
            if loc.single and k:
                seq_id = uid(rng)
            frames.append(Frame(uid(rng), split, loc, seq_id, 1 if loc.single else n,
                                 1 if loc.single else k + 1, when + timedelta(seconds=int(offsets[k])),
                                 category, actors, k))
        when += timedelta(seconds=int(offsets[-1]))
        visit += 1
    return frames


def _next_visit(rng: np.random.Generator, after: datetime) -> datetime:
    """Minutes to days later; night times are partly skipped so about 30% of frames are at night."""
    while True:
        after += timedelta(seconds=int(math.exp(rng.uniform(math.log(120), math.log(4 * 86400)))))
        if not is_night(after) or rng.random() > NIGHT_SKIP:
            return after


def is_night(when: datetime) -> bool:
    """Night: 19:00 to 06:00 (grayscale frames under the infrared flash)."""
    return when.hour >= 19 or when.hour < 6


def _actors(rng: np.random.Generator, loc: Location, category: int, speed: float) -> tuple[Actor, ...]:
    """Who crosses the scene in one visit (nobody when empty): a herd walks in file, one speed and heading."""
    if category == EMPTY:
        return ()
    w, h = loc.size
    species = next((s for s in SPECIES if s.id == category), None)
    n = 1 if species is None else int(rng.integers(1, species.herd + 1))
    facing = 1 if rng.random() < 0.5 else -1
    vx = facing * rng.uniform(0.02, 0.12) * w * speed
    vy = rng.uniform(-0.01, 0.01) * h
    x0, y0 = rng.uniform(0.1, 0.9) * w, loc.horizon + rng.uniform(0.15, 0.95) * (h - loc.horizon)
    actors = []
    for i in range(n):
        y = float(np.clip(y0 + rng.normal(0, 0.04) * h * (i > 0), loc.horizon + 5, h - 2))
        near = 0.55 + 0.55 * (y - loc.horizon) / (h - loc.horizon)  # perspective: lower is nearer, larger
        x = x0 - facing * i * rng.uniform(0.6, 1.4) * (species.length if species else 0.05) * w
        if species is None:
            length, colour = rng.uniform(0.28, 0.42) * h * near, (196, 160, 130)
            aspect = leg = neck = 0.0
            marks = np.zeros((0, 2))
        else:
            length = species.length * w * near * math.exp(rng.normal(0, 0.12))
            aspect = species.aspect * rng.uniform(0.88, 1.12)
            leg, neck = species.leg * rng.uniform(0.85, 1.15), species.neck * rng.uniform(0.7, 1.3)
            colour = _jitter(rng, species.colour)
            marks = rng.uniform([0.1, 0.15], [0.9, 0.85], (int(rng.integers(5, 11)), 2))
        clothes = tuple(int(c) for c in rng.uniform(30, 200, 3))
        actors.append(Actor(species, length, aspect, leg, neck, colour, clothes, marks, facing,
                             float(x), y, float(vx), float(vy)))
    return tuple(actors)


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """Per-individual coat: overall brightness +-20%, each channel +-8 levels."""
    c = np.array(colour) * rng.uniform(0.8, 1.2) + rng.uniform(-8, 8, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def uid(rng: np.random.Generator) -> str:
    """A uuid4-shaped id drawn from `rng` (the competition's ids look like that)."""
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))
