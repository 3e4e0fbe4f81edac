"""Toy faces: a procedural, CelebA-like distribution of front-facing portraits with known attributes.

Each face is drawn from polygons at 256 px or more (PIL ImageDraw), box-filtered down to the
requested resolution (antialiasing), then lit and noised in numpy. Attributes (see
`grammar.ATTRIBUTES`) are each drawn to be unambiguous at 64x64: grey hair and wrinkles for
age, red lips for lipstick, bright studs for earrings that sit on top of long hair, a dark
frame for eyeglasses, an open mouth with teeth for smiling. Nuisance factors that are NOT
labels make it a distribution rather than a lookup table: pose (rotation, offset, scale),
lighting gradient and brightness, colour jitter, clothing, hat / frame / earring / iris
colours and shapes, fringe, hair length, strand texture, pixel noise.

Every sample is a pure function of (seed, split, index): attributes come from one random
stream and the nuisance factors from another, so the same seed gives the same image and labels.

Splits: "train" and "test" draw the same distribution from different streams and never
contain the HELDOUT_COMBINATIONS; "heldout" renders only those combinations (cycling through
them by index) so a generator can be tested on attribute combinations it never saw.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from wordcanvas.data.base import CaptionedDataset, LabelSpec, Prompt
from wordcanvas.data.grammar import ATTRIBUTES, BALD, FEMALE, MALE, caption, mentionable

SPLITS = {"train": 0, "test": 1, "heldout": 2}  # split -> random stream
DEFAULT_SIZES = {"train": 50_000, "test": 10_000, "heldout": 2_000}

# Combinations the train and test splits never render (each value is a class index).
HELDOUT_COMBINATIONS: tuple[dict[str, int], ...] = (
    {"gender": FEMALE, "hair_style": BALD},              # a bald woman
    {"age": 2, "hair_color": 3},                         # an old redhead
    {"beard": 1, "eyeglasses": 1, "hair_color": 2},      # a blond bearded man in glasses
    {"gender": MALE, "hat": 1, "earrings": 1},           # a man wearing a hat and earrings
)

# ---------------------------------------------------------------------------------------------
# Attributes
# ---------------------------------------------------------------------------------------------

_HAIR_STYLE_P = {  # (gender, age) -> P(bald, short, long)
    FEMALE: ([0.02, 0.26, 0.72], [0.02, 0.30, 0.68], [0.03, 0.42, 0.55]),
    MALE: ([0.08, 0.75, 0.17], [0.28, 0.62, 0.10], [0.45, 0.50, 0.05]),
}
_HAIR_COLOR_P = (  # age -> P(black, brown, blond, red, grey); old people skew grey
    [0.30, 0.33, 0.22, 0.13, 0.02],
    [0.28, 0.30, 0.17, 0.10, 0.15],
    [0.08, 0.10, 0.07, 0.05, 0.70],
)


def _cat(rng: np.random.Generator, probs) -> int:
    u, acc = rng.random(), 0.0
    for k, p in enumerate(probs):
        acc += p
        if u < acc:
            return k
    return len(probs) - 1


def is_valid(a: dict[str, int]) -> bool:
    """Physical consistency: a bald head has no hair colour and no hat over it; no women's beards, no men's lipstick."""
    if a["gender"] == FEMALE and a["beard"] or a["gender"] == MALE and a["lipstick"]:
        return False
    if a["hair_style"] == BALD:
        return a["hat"] == 0 and a["hair_color"] == -1
    return a["hair_color"] >= 0


def _draw_attributes(rng: np.random.Generator, force: dict[str, int]) -> dict[str, int]:
    a: dict[str, int] = {}

    def pick(name: str, probs) -> int:
        a[name] = int(force[name]) if name in force else _cat(rng, probs)
        return a[name]

    gender = pick("gender", [0.5, 0.5])
    age = pick("age", [0.45, 0.33, 0.22])
    bald = pick("hair_style", _HAIR_STYLE_P[gender][age]) == BALD
    pick("hat", [1.0, 0.0] if bald else [0.8, 0.2])
    if "hair_color" in force:
        a["hair_color"] = int(force["hair_color"])
    else:
        a["hair_color"] = -1 if bald else _cat(rng, _HAIR_COLOR_P[age])
    pick("eyeglasses", [[0.8, 0.2], [0.7, 0.3], [0.5, 0.5]][age])
    pick("smiling", [0.5, 0.5])
    pick("beard", [1.0, 0.0] if gender == FEMALE else [[0.7, 0.3], [0.55, 0.45], [0.55, 0.45]][age])
    pick("lipstick", [0.5, 0.5] if gender == FEMALE else [1.0, 0.0])
    pick("earrings", [0.5, 0.5] if gender == FEMALE else [0.92, 0.08])
    pick("skin_tone", [0.45, 0.33, 0.22])
    pick("background", [0.25, 0.25, 0.25, 0.25])
    return {name: a[name] for name in ATTRIBUTES}


def sample_attributes(rng: np.random.Generator, force: dict[str, int] | None = None) -> dict[str, int]:
    """One consistent attribute draw; `force` fixes some values (the rest are drawn given them)."""
    for _ in range(1000):
        a = _draw_attributes(rng, force or {})
        if is_valid(a):
            return a
    raise ValueError(f"no consistent face has {force}")


def matches(attrs: dict[str, int], combo: dict[str, int]) -> bool:
    return all(attrs.get(k) == v for k, v in combo.items())


def change_attribute(attrs: dict[str, int], attr: str, value: int, rng: np.random.Generator) -> dict[str, int]:
    """attrs with attr set to value, and what comes with that change: hair grown on a bald head gets a
    colour drawn from rng; a head made bald loses its hair colour and hat. Check the result with
    is_valid (and heldout_combination) before rendering it."""
    new = {**attrs, attr: value}
    if attr == "hair_style" and attrs[attr] == BALD:
        new["hair_color"] = int(rng.integers(len(ATTRIBUTES["hair_color"])))
    if attr == "hair_style" and value == BALD:
        new["hair_color"], new["hat"] = -1, 0
    return new


def mention_with(attrs: dict[str, int], new: dict[str, int], attr: str, rng: np.random.Generator) -> list[str]:
    """The attributes a caption of a one-attribute change names: the changed one and 0-3 others that
    both faces let a caption mention (a near miss reads like its true caption but for one fact)."""
    others = [k for k in mentionable(attrs) if k in mentionable(new) and k != attr]
    return [attr, *rng.choice(others, size=min(len(others), int(rng.integers(4))), replace=False).tolist()]


def heldout_combination(attrs: dict[str, int]) -> int:
    """Index of the held-out combination these attributes contain, or -1."""
    return next((k for k, c in enumerate(HELDOUT_COMBINATIONS) if matches(attrs, c)), -1)


def sample_for_split(rng: np.random.Generator, split: str, index: int) -> dict[str, int]:
    if split == "heldout":
        return sample_attributes(rng, HELDOUT_COMBINATIONS[index % len(HELDOUT_COMBINATIONS)])
    while True:  # rejection keeps the conditional distribution of everything else intact
        a = sample_attributes(rng)
        if heldout_combination(a) < 0:
            return a


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

_SKIN = [(236, 200, 172), (196, 140, 98), (98, 62, 44)]
_HAIR = [(32, 27, 25), (138, 82, 36), (232, 194, 82), (196, 70, 26), (176, 176, 180)]
_BACKGROUND = [(236, 236, 230), (88, 138, 214), (96, 178, 104), (146, 98, 188)]
_FRAMES = [(18, 18, 20), (58, 34, 20), (22, 30, 78), (86, 16, 22)]
_BRIGHT = [(255, 210, 30), (40, 230, 240), (250, 60, 210), (250, 250, 255), (120, 255, 60)]
_IRIS = [(70, 45, 30), (40, 90, 150), (60, 110, 60), (30, 25, 25)]
_TAU = 2 * math.pi


def _jitter(rng: np.random.Generator, color, amount: float = 0.05) -> tuple[int, ...]:
    """Mostly brightness, a little hue: grey hair stays grey."""
    c = np.asarray(color, float) * (1 + amount * rng.standard_normal()) * (1 + 0.3 * amount * rng.standard_normal(3))
    return tuple(int(v) for v in np.clip(c, 0, 255))


def _shade(color, k: float) -> tuple[int, ...]:
    return tuple(int(min(255, max(0, v * k))) for v in color)


def _mix(a, b, t: float) -> tuple[int, ...]:
    return tuple(int(x * (1 - t) + y * t) for x, y in zip(a, b))


def _far_color(rng: np.random.Generator, palette, avoid, min_dist: float = 110.0) -> tuple[int, ...]:
    """A palette colour that stands out against every colour in `avoid`."""
    order = rng.permutation(len(palette))
    for k in order:
        if all(np.linalg.norm(np.subtract(palette[k], c)) >= min_dist for c in avoid):
            return palette[k]
    return max(palette, key=lambda p: min(np.linalg.norm(np.subtract(p, c)) for c in avoid))


@functools.lru_cache(maxsize=256)
def _unit_arc(a0: float, a1: float, n: int) -> np.ndarray:
    t = np.linspace(a0, a1, n)
    return np.stack([np.cos(t), np.sin(t)], 1)


def _arc(cx, cy, rx, ry, a0=0.0, a1=_TAU, n=32) -> np.ndarray:
    return _unit_arc(float(a0), float(a1), n) * (rx, ry) + (cx, cy)


class _Canvas:
    """Draws shapes given in unit coordinates through one pose transform (rotation, scale, offset)."""

    def __init__(self, size: int, background, angle: float, scale: float, offset):
        self.img = Image.new("RGB", (size, size), background)
        self.draw = ImageDraw.Draw(self.img)
        c, s = math.cos(angle) * scale, math.sin(angle) * scale
        centre = np.array([0.5, 0.55])
        self.lin = np.array([[c, -s], [s, c]]) * size
        self.shift = (centre + np.asarray(offset) - np.array([[c, -s], [s, c]]) @ centre) * size
        self.px = size * scale  # pixels per unit length

    def _xy(self, pts) -> list[float]:
        return (np.asarray(pts, float) @ self.lin.T + self.shift).ravel().tolist()

    def poly(self, pts, fill) -> None:
        self.draw.polygon(self._xy(pts), fill=fill)

    def line(self, pts, fill, width: float, closed: bool = False) -> None:
        pts = np.asarray(pts, float)
        if closed:
            pts = np.concatenate([pts, pts[:2]])
        self.draw.line(self._xy(pts), fill=fill, width=max(1, round(width * self.px)), joint="curve")

    def ellipse(self, cx, cy, rx, ry, fill, n: int = 28) -> None:
        self.poly(_arc(cx, cy, rx, ry, n=n), fill)


@dataclass
class _Head:
    """Where the face sits (unit coordinates before the pose transform) and its colours."""

    cx: float
    cy: float
    rx: float
    ry: float
    outline: np.ndarray
    skin: tuple
    hair: tuple
    eye_y: float
    eye_dx: float


def render_face(attrs: dict[str, int], rng: np.random.Generator, resolution: int = 64) -> np.ndarray:
    """Render one face as uint8 (H, W, 3). `rng` supplies every nuisance factor.

    Each attribute-dependent part (hair, beard, mouth, glasses, hat, earrings, light) draws its
    nuisances from its own stream, so flipping one attribute with the same `rng` changes only
    that part of the picture.
    """
    if not 16 <= resolution <= 1024:
        raise ValueError(f"resolution must be in 16..1024, got {resolution}")
    seeds = rng.integers(0, 2**63, size=7)
    part = {name: (lambda k=k: np.random.default_rng(seeds[k])) for k, name in
            enumerate(["hair", "beard", "mouth", "glasses", "hat", "earrings", "light"])}
    ss = max(2, -(-256 // resolution))  # supersampling factor: draw at >= 256 px
    g, age = attrs["gender"], attrs["age"]

    skin = _jitter(rng, _SKIN[attrs["skin_tone"]], 0.04)
    hidden = _cat(rng, _HAIR_COLOR_P[age])  # a bald man's brows and beard still have a colour
    hair = _jitter(rng, _HAIR[attrs["hair_color"] if attrs["hair_color"] >= 0 else hidden], 0.05)
    bg = _jitter(rng, _BACKGROUND[attrs["background"]], 0.05)
    clothes = tuple(int(v) for v in rng.integers(20, 236, 3))
    cv = _Canvas(resolution * ss, bg, angle=math.radians(rng.uniform(-7, 7)), scale=rng.uniform(0.92, 1.06),
                 offset=rng.uniform(-0.035, 0.035, 2))

    # Men wider with a squarer jaw, women narrower with a tapered chin, old faces longer.
    cx, cy = 0.5, 0.47
    rx = (0.21 if g == MALE else 0.185) + rng.uniform(-0.006, 0.006)
    ry = 0.265 + 0.012 * (age == 2) + rng.uniform(-0.008, 0.008)
    taper = (0.12 if g == MALE else 0.36) + rng.uniform(-0.04, 0.04)
    circle = _unit_arc(0.0, _TAU * 47 / 48, 48)
    lower = np.clip(circle[:, 1], 0, None)
    outline = np.stack([cx + rx * circle[:, 0] * (1 - taper * lower**2), cy + ry * circle[:, 1]], 1)
    head = _Head(cx, cy, rx, ry, outline, skin, hair, eye_y=cy - ry * 0.06, eye_dx=rx * 0.43)

    cv.ellipse(0.5, 1.03, 0.37, 0.21, clothes)
    hair_rng = part["hair"]()
    _draw_back_hair(cv, head, attrs, hair_rng)
    neck = 0.075 if g == MALE else 0.06
    cv.poly([[cx - neck, cy + 0.15], [cx + neck, cy + 0.15], [cx + neck + 0.01, 0.9], [cx - neck - 0.01, 0.9]],
            _shade(skin, 0.86))
    for side in (-1, 1):
        cv.ellipse(cx + side * rx * 0.97, cy + 0.01, 0.034, 0.055, _shade(skin, 0.9), n=16)
    cv.poly(outline, skin)
    _draw_top_hair(cv, head, attrs, hair_rng)
    _draw_wrinkles(cv, head, attrs)
    _draw_eyes_and_nose(cv, head, attrs, rng)
    if attrs["beard"]:
        _draw_beard(cv, head, part["beard"]())
    _draw_mouth(cv, head, attrs, part["mouth"]())
    if attrs["eyeglasses"]:
        _draw_glasses(cv, head, part["glasses"]())
    if attrs["hat"]:
        _draw_hat(cv, head, bg, part["hat"]())
    if attrs["earrings"]:  # last, so long hair never hides them
        _draw_earrings(cv, head, bg, part["earrings"]())

    # Antialias, then light: a brightness gradient in a random direction, global gain, pixel noise.
    img = np.asarray(cv.img.reduce(ss), dtype=np.float32)
    light_rng, n = part["light"](), resolution
    phi = light_rng.uniform(0, _TAU)
    ramp = (np.arange(n) + 0.5) / n - 0.5
    gradient = ramp[None, :] * math.cos(phi) + ramp[:, None] * math.sin(phi)
    light = light_rng.uniform(0.9, 1.1) * (1 + light_rng.uniform(0, 0.3) * gradient)
    img = img * light[..., None] + light_rng.normal(0, 2.5, img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _draw_back_hair(cv: _Canvas, h: _Head, attrs: dict, rng: np.random.Generator) -> None:
    """Long hair down to the shoulders, or a woman's short bob, behind the face."""
    style = attrs["hair_style"]
    if not (style == 2 or (style == 1 and attrs["gender"] == FEMALE)):
        return
    length = rng.uniform(0.3, 0.4) if style == 2 else rng.uniform(0.1, 0.13)
    top = _arc(h.cx, h.cy - 0.02, h.rx * 1.25, h.ry * 1.1, math.pi, _TAU, 20)
    ends = np.stack([np.linspace(h.cx + h.rx * 1.32, h.cx - h.rx * 1.32, 9),
                     h.cy + length + (0.02 if style == 2 else 0.004) * np.sin(np.arange(9) * 2.1)], 1)
    side = h.cy + length * 0.5
    cv.poly(np.concatenate([top, [[h.cx + h.rx * 1.3, side]], ends, [[h.cx - h.rx * 1.3, side]]]), h.hair)


def _draw_top_hair(cv: _Canvas, h: _Head, attrs: dict, rng: np.random.Generator) -> None:
    """Hair over the crown with strands, so it never reads as bare skin; a bald head gets a shine."""
    if attrs["hair_style"] == BALD:
        cv.ellipse(h.cx - h.rx * 0.3, h.cy - h.ry * 0.78, h.rx * 0.3, h.ry * 0.1, _shade(h.skin, 1.12), n=16)
        return
    hairline = h.cy - h.ry * rng.uniform(0.58, 0.66)
    dip = rng.uniform(-0.5, 0.5)  # where the fringe dips lowest
    outer = _arc(h.cx, h.cy - 0.015, h.rx * 1.1, h.ry * 1.1, math.pi, _TAU, 24)
    xs = np.linspace(h.cx + h.rx * 0.75, h.cx - h.rx * 0.75, 9)
    fringe = np.stack([xs, hairline + 0.03 * np.exp(-(((xs - h.cx) / h.rx - dip) ** 2) * 4)], 1)
    temples = [[h.cx + h.rx * 0.99, h.cy - 0.01]], [[h.cx - h.rx * 0.99, h.cy - 0.01]]
    cv.poly(np.concatenate([outer, temples[0], fringe, temples[1]]), h.hair)
    strand = _shade(h.hair, 0.72 if h.hair[0] > 90 else 1.6)
    for _ in range(5):
        x0 = h.cx + h.rx * rng.uniform(-0.8, 0.8)
        cv.line([[x0, h.cy - h.ry * 1.02], [x0 + h.rx * rng.uniform(-0.3, 0.3), hairline - 0.01]], strand, 0.008)


def _draw_wrinkles(cv: _Canvas, h: _Head, attrs: dict) -> None:
    """None when young; one forehead line and faint folds when middle-aged; many lines when old."""
    age, cx, cy, rx, ry = attrs["age"], h.cx, h.cy, h.rx, h.ry
    if age == 0:
        return
    crease = _shade(h.skin, 0.6 if attrs["skin_tone"] < 2 else 0.55)
    for r in [-0.42] if age == 1 else [-0.52, -0.41, -0.30]:  # forehead
        cv.line(_arc(cx, cy + ry * r + 0.12, rx * 0.55, 0.12, math.pi * 1.32, math.pi * 1.68, 8), crease, 0.011)
    for side in (-1, 1):  # nasolabial folds
        fold = [[cx + side * rx * 0.22, cy + ry * 0.26], [cx + side * rx * 0.38, cy + ry * 0.5],
                [cx + side * rx * 0.36, cy + ry * 0.62]]
        cv.line(fold, crease if age == 2 else _mix(h.skin, crease, 0.6), 0.011)
    if age == 2:
        for side in (-1, 1):
            ex = cx + side * h.eye_dx
            cv.line(_arc(ex, h.eye_y + 0.018, 0.032, 0.014, 0.2, math.pi - 0.2, 8), crease, 0.009)  # bags
            for dy in (-0.012, 0.01):  # crow's feet
                cv.line([[ex + side * 0.045, h.eye_y], [ex + side * 0.07, h.eye_y + dy]], crease, 0.008)
            cv.line([[cx + side * rx * 0.42, cy + ry * 0.62], [cx + side * rx * 0.4, cy + ry * 0.8]], crease, 0.009)


def _draw_eyes_and_nose(cv: _Canvas, h: _Head, attrs: dict, rng: np.random.Generator) -> None:
    """Women: lined lids with a flick of lashes and thin arched brows. Men: heavy, low, straight brows."""
    brow = _shade(h.hair, 0.6) if h.hair[0] > 60 else h.hair
    iris = _IRIS[int(rng.integers(len(_IRIS)))]
    eye_r = 0.036 + 0.004 * (attrs["age"] == 0)
    gaze = rng.uniform(-0.006, 0.006)
    y = h.eye_y
    for side in (-1, 1):
        ex = h.cx + side * h.eye_dx
        cv.ellipse(ex, y, eye_r, eye_r * 0.5, (245, 245, 240), n=16)
        cv.ellipse(ex + gaze, y, 0.015, 0.015, iris, n=12)
        cv.ellipse(ex + gaze, y, 0.007, 0.007, (10, 10, 10), n=10)
        lid = _arc(ex, y + 0.004, eye_r, eye_r * 0.6, math.pi * 1.1, math.pi * 1.9, 8)
        if attrs["gender"] == FEMALE:
            cv.line(lid, (25, 15, 15), 0.013)
            lash = [[ex + side * eye_r * 0.9, y - 0.006], [ex + side * (eye_r + 0.014), y - 0.016]]
            cv.line(lash, (25, 15, 15), 0.009)
            by = h.cy - h.ry * 0.27 + rng.uniform(-0.006, 0.006)
            cv.line([[ex - side * 0.03, by + 0.008], [ex + side * 0.005, by - 0.008], [ex + side * 0.045, by + 0.006]],
                    brow, 0.009)
        else:
            cv.line(lid, (30, 20, 20), 0.007)
            by = h.cy - h.ry * 0.22 + rng.uniform(-0.006, 0.006)
            cv.line([[ex - side * 0.032, by], [ex + side * 0.045, by - 0.003]], brow, 0.02)
    nose = _shade(h.skin, 0.7)
    cv.line([[h.cx + 0.006, h.cy + h.ry * 0.02], [h.cx + 0.014, h.cy + h.ry * 0.3], [h.cx - 0.004, h.cy + h.ry * 0.34]],
            nose, 0.01)
    cv.line(_arc(h.cx, h.cy + h.ry * 0.3, 0.026, 0.014, 0.3, math.pi - 0.3, 8), nose, 0.009)


def _luma(c) -> float:
    return 0.3 * c[0] + 0.59 * c[1] + 0.11 * c[2]


def _draw_beard(cv: _Canvas, h: _Head, rng: np.random.Generator) -> None:
    """The lower face and a moustache in a textured hair colour (drawn before the mouth)."""
    beard = _shade(h.hair, 0.85)
    if abs(_luma(beard) - _luma(h.skin)) < 45:  # a brown beard on dark skin: darker, so it never melts into the face
        beard = _shade(beard, max(0.2, (_luma(h.skin) - 45) / max(_luma(beard), 1)))
    cx, cy, rx, ry = h.cx, h.cy, h.rx, h.ry
    jaw = h.outline[h.outline[:, 1] > cy + ry * 0.12]
    jaw = jaw[np.argsort(np.arctan2(jaw[:, 1] - cy, jaw[:, 0] - cx))]  # right cheek -> chin -> left cheek
    jaw = np.stack([cx + (jaw[:, 0] - cx) * 1.03, cy + (jaw[:, 1] - cy) * 1.06], 1)
    moustache = [[cx - rx * 0.62, cy + ry * 0.32], [cx - 0.02, cy + ry * 0.4], [cx + 0.02, cy + ry * 0.4],
                 [cx + rx * 0.62, cy + ry * 0.32]]
    cv.poly(np.concatenate([jaw, moustache]), beard)
    texture = _shade(beard, 0.7 if beard[0] > 80 else 1.7)
    for _ in range(10):
        p = np.array([cx + rx * rng.uniform(-0.7, 0.7), cy + ry * rng.uniform(0.45, 0.95)])
        cv.line([p, p + [0.004, 0.02]], texture, 0.006)


def _draw_mouth(cv: _Canvas, h: _Head, attrs: dict, rng: np.random.Generator) -> None:
    """Closed lips, or open with upper teeth and raised corners when smiling; lipstick is a saturated red."""
    lipstick = _jitter(rng, (205, 18, 42), 0.06)  # drawn either way: the other draws stay put when it flips
    lips = lipstick if attrs["lipstick"] else _mix(_shade(h.skin, 0.82), (170, 70, 80), 0.3)
    lip_w = 0.017 if attrs["lipstick"] else 0.011
    cx, my = h.cx, h.cy + h.ry * 0.6
    if attrs["smiling"]:
        w = 0.088 + rng.uniform(-0.006, 0.006)
        xs = np.linspace(-w, w, 13)
        upper = np.stack([cx + xs, my - 0.022 + 0.018 * (1 - (xs / w) ** 2)], 1)
        lower = np.stack([cx + xs[::-1], my - 0.022 + 0.065 * (1 - (xs[::-1] / w) ** 2)], 1)
        mouth = np.concatenate([upper, lower])
        cv.line(mouth, lips, 2 * lip_w, closed=True)  # lips first: the opening then hides their inner half
        cv.poly(mouth, (92, 24, 30))
        cv.poly(np.concatenate([upper[1:-1], upper[1:-1][::-1] + [0, 0.022]]), (250, 250, 245))
    else:
        w = 0.058 + rng.uniform(-0.006, 0.006)
        xs = np.linspace(-w, w, 9)
        thick = 1.5 if attrs["lipstick"] else 1.0
        top = np.stack([cx + xs, my - 0.011 * thick * (1 - (xs / w) ** 2) ** 0.5], 1)
        bottom = np.stack([cx + xs[::-1], my + 0.016 * thick * (1 - (xs[::-1] / w) ** 2) ** 0.5], 1)
        cv.poly(np.concatenate([top, bottom]), lips)
        cv.line([[cx - w, my], [cx, my + 0.002], [cx + w, my]], _shade(lips, 0.55), 0.006)


def _draw_glasses(cv: _Canvas, h: _Head, rng: np.random.Generator) -> None:
    """A dark frame (round or rectangular) around both eyes, a bridge and temples to the ears."""
    frame = _jitter(rng, _FRAMES[int(rng.integers(len(_FRAMES)))], 0.1)
    round_rims = rng.random() < 0.5
    hw, hh = (0.05, 0.045) if round_rims else (0.056, 0.038)
    y = h.eye_y
    for side in (-1, 1):
        ex = h.cx + side * h.eye_dx
        rim = _arc(ex, y, hw, hh, n=20)
        if not round_rims:  # squircle: push the ellipse out towards its bounding box
            d = rim - (ex, y)
            rim = (ex, y) + np.sign(d) * np.abs(d) ** 0.6 * np.array([hw, hh]) ** 0.4
        cv.line(rim, frame, 0.017, closed=True)
        cv.line([[ex + side * hw, y - 0.01], [h.cx + side * h.rx * 0.98, y - 0.004]], frame, 0.014)
    bridge_x = h.eye_dx - hw
    cv.line([[h.cx - bridge_x, y - 0.008], [h.cx, y - 0.014], [h.cx + bridge_x, y - 0.008]], frame, 0.014)


_HAT_COLORS = [(200, 30, 30), (30, 60, 170), (25, 25, 25), (245, 245, 240), (30, 130, 60), (230, 140, 20),
               (120, 40, 140), (240, 215, 40)]


def _draw_hat(cv: _Canvas, h: _Head, bg, rng: np.random.Generator) -> None:
    """A brimmed hat, a cap with its visor to the viewer, or a beanie; above the forehead lines."""
    color = _far_color(rng, _HAT_COLORS, [bg, h.hair, h.skin], 90)
    band = _shade(color, 0.5) if sum(color) > 300 else _mix(color, (255, 255, 255), 0.55)
    cx, rx = h.cx, h.rx
    brim = h.cy - h.ry * rng.uniform(0.66, 0.72)
    kind = int(rng.integers(3))
    if kind == 0:
        crown = [[cx - rx, brim], [cx - rx * 0.9, brim - 0.2], [cx - rx * 0.5, brim - 0.23],
                 [cx + rx * 0.5, brim - 0.23], [cx + rx * 0.9, brim - 0.2], [cx + rx, brim]]
        cv.poly(crown, color)
        ribbon = [[cx - rx * 0.98, brim - 0.045], [cx + rx * 0.98, brim - 0.045], [cx + rx, brim], [cx - rx, brim]]
        cv.poly(ribbon, band)
        cv.ellipse(cx, brim, rx * 1.7, 0.03, color)
        return
    cv.poly(_arc(cx, brim, rx * 1.13, h.ry * 0.95, math.pi, _TAU, 24), color)
    if kind == 1:
        cv.poly(_arc(cx, brim, rx * 0.95, 0.05, 0, math.pi, 16), _shade(color, 0.75) if sum(color) > 200 else band)
        cv.ellipse(cx, brim - h.ry * 0.95, 0.018, 0.012, band, n=10)  # the button on top
    else:  # the beanie's folded band
        w = rx * 1.13
        cv.poly([[cx - w, brim - 0.05], [cx + w, brim - 0.05], [cx + w, brim + 0.005], [cx - w, brim + 0.005]], band)


def _draw_earrings(cv: _Canvas, h: _Head, bg, rng: np.random.Generator) -> None:
    """Bright studs or hoops, in a colour far from skin, hair and background, with a contrasting rim."""
    color = _far_color(rng, _BRIGHT, [h.skin, h.hair, bg])
    rim = (20, 20, 20) if sum(color) > 300 else (250, 250, 250)
    hoop = rng.random() < 0.4
    for side in (-1, 1):
        ex, ey = h.cx + side * h.rx * 0.99, h.cy + 0.085
        if hoop:
            ring = _arc(ex, ey + 0.01, 0.024, 0.026, n=16)
            cv.line(ring, rim, 0.02, closed=True)
            cv.line(ring, color, 0.011, closed=True)
        else:
            cv.ellipse(ex, ey, 0.03, 0.03, rim, n=14)
            cv.ellipse(ex, ey, 0.022, 0.022, color, n=14)


# ---------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------


class ToyFaces(CaptionedDataset):
    """Procedural faces with CelebA-like attributes and MM-CelebA-HQ-like captions.

    split: "train" | "test" | "heldout"; caption_set: which template set `captions(i)` uses.
    Images are rendered on access (about 1-2 ms each at 64 px); `cache=True` keeps the uint8
    renders in memory (12 KB each at 64 px).
    """

    label_spec = LabelSpec(classes=ATTRIBUTES)
    name = "toy_faces"

    def __init__(self, split: str = "train", resolution: int = 64, size: int | None = None, seed: int = 0,
                 caption_set: str = "train", captions_per_image: int = 5, cache: bool = False):
        super().__init__(seed)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        if caption_set not in ("train", "heldout"):
            raise ValueError(f"caption_set must be 'train' or 'heldout', got {caption_set!r}")
        if not 32 <= resolution <= 256:
            raise ValueError(f"resolution must be in 32..256, got {resolution}")
        self.split, self.resolution, self.caption_set = split, resolution, caption_set
        self.size = DEFAULT_SIZES[split] if size is None else int(size)
        self.captions_per_image = captions_per_image
        self._cache: dict[int, np.ndarray] | None = {} if cache else None

    def __len__(self) -> int:
        return self.size

    def _rng(self, i: int, stream: int) -> np.random.Generator:
        if not 0 <= i < self.size:
            raise IndexError(i)
        return np.random.default_rng([self.seed, SPLITS[self.split], int(i), stream])

    def labels(self, i: int) -> dict[str, int]:
        return sample_for_split(self._rng(i, 0), self.split, int(i))

    def render(self, i: int) -> np.ndarray:
        """uint8 (H, W, 3)."""
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        img = render_face(self.labels(i), self._rng(i, 1), self.resolution)
        if self._cache is not None:
            self._cache[i] = img
        return img

    def image(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.render(i)).permute(2, 0, 1).float() / 127.5 - 1.0

    def captions(self, i: int) -> list[str]:
        attrs, rng = self.labels(i), self._rng(i, 2)
        must = tuple(HELDOUT_COMBINATIONS[i % len(HELDOUT_COMBINATIONS)]) if self.split == "heldout" else ()
        return [caption(attrs, rng, self.caption_set, must_mention=must)[0] for _ in range(self.captions_per_image)]

    def contrast_captions(self, i: int, n: int = 6) -> list[str]:
        """n near misses: captions of this face with one attribute changed (a face the split can
        render), naming the changed attribute and 0-3 others, as an edit's source and target differ."""
        attrs, rng, names = self.labels(i), self._rng(i, 3), list(ATTRIBUTES)
        out = []
        while len(out) < n:
            attr = names[rng.integers(len(names))]
            value = int(rng.integers(len(ATTRIBUTES[attr])))
            new = change_attribute(attrs, attr, value, rng)
            if value == attrs[attr] or attr not in mentionable(new) or not is_valid(new) or (
                    self.split != "heldout" and heldout_combination(new) >= 0):
                continue
            must = mention_with(attrs, new, attr, rng)
            out.append(caption(new, rng, self.caption_set, must_mention=must, low=len(must), high=len(must))[0])
        return out

    def eval_prompts(self, n: int, seed: int = 0, heldout: bool = False) -> list[Prompt]:
        """Prompts from fresh attribute draws of this split; heldout=True phrases them with held-out paraphrases.

        On the "heldout" split every prompt states its whole held-out combination.
        """
        rng = np.random.default_rng([seed, SPLITS[self.split], 7919])
        out = []
        for k in range(n):
            attrs = sample_for_split(rng, self.split, k)
            must = tuple(HELDOUT_COMBINATIONS[k % len(HELDOUT_COMBINATIONS)]) if self.split == "heldout" else ()
            text, mentioned = caption(attrs, rng, "heldout" if heldout else "train", must_mention=must)
            out.append(Prompt(text, mentioned))
        return out
