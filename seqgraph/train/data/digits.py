"""Handwritten-looking 8x8 digits, rendered from strokes under random affine maps, and
captions that spell each digit's name."""

from __future__ import annotations

import numpy as np

from ...errors import SeqgraphError
from .dataset import ID_DTYPE, PAD, TIME, Dataset
from .tasks import BOS, EOS, FIRST_SYMBOL
from .validation import check_count


def _arc(cx, cy, rx, ry, start, stop, points=10) -> list:
    """Points on an ellipse, angles in degrees; 0 is right and 90 is down (y grows down)."""
    angles = np.radians(np.linspace(start, stop, points))
    return list(zip(cx + rx * np.cos(angles), cy + ry * np.sin(angles)))


# Each digit is a few polylines in the unit square (x right, y down), drawn like handwriting.
_DIGIT_STROKES = [
    [_arc(0.5, 0.5, 0.27, 0.4, 0, 360, 16)],
    [[(0.33, 0.28), (0.55, 0.1), (0.55, 0.9)]],
    [_arc(0.5, 0.33, 0.27, 0.23, 180, 400) + [(0.22, 0.9), (0.8, 0.9)]],
    [_arc(0.48, 0.3, 0.25, 0.2, 200, 450), _arc(0.48, 0.7, 0.28, 0.2, 270, 520)],
    [[(0.65, 0.9), (0.65, 0.1), (0.2, 0.62), (0.82, 0.62)]],
    [[(0.75, 0.1), (0.3, 0.1), (0.28, 0.47)] + _arc(0.48, 0.65, 0.27, 0.23, 225, 510)],
    [[(0.68, 0.1), (0.42, 0.3), (0.3, 0.55)] + _arc(0.5, 0.68, 0.21, 0.2, 180, 540, 14)],
    [[(0.2, 0.12), (0.8, 0.12), (0.42, 0.9)]],
    [_arc(0.5, 0.3, 0.2, 0.19, 0, 360, 12), _arc(0.5, 0.7, 0.24, 0.21, 0, 360, 12)],
    [_arc(0.5, 0.32, 0.22, 0.2, 0, 360, 12), [(0.72, 0.32), (0.7, 0.65), (0.6, 0.9)]],
]


def _digit_segments() -> list:
    """Every digit's strokes as line segments: a ``(S, 2 ends, 2 coords)`` array per digit."""
    return [np.array([(line[i], line[i + 1]) for line in strokes for i in range(len(line) - 1)])
            for strokes in _DIGIT_STROKES]


def digits8x8(n: int = 5_000, seed: int = 0, *, noise: float = 0.1) -> Dataset:
    """8x8 grayscale images of handwritten-looking digits 0-9, drawn procedurally.

    Each digit's strokes are bent by a random affine map (rotation up to ±15°, scale
    0.8-1.1 per axis, shear, a shift of about a pixel), drawn with a random pen width on a
    16x16 grid, averaged down to 8x8 (like scikit-learn's digits), scaled by a random ink
    intensity and covered in Gaussian ``noise``, then clipped to [0, 1]. ``img`` is
    ``(N, 1, 8, 8)`` float32 and ``label`` ``(N,)`` int64. A small CNN reaches high
    accuracy; a nearest-template rule does not. Metric accuracy.
    """
    where = "builtin dataset 'digits8x8'"
    n = check_count(where, "n", n, 1)
    if not isinstance(noise, (int, float)) or isinstance(noise, bool) or not 0 <= noise <= 1:
        raise SeqgraphError(f"{where}: noise must be a number in [0, 1], not {noise!r}")
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 10, n).astype(ID_DTYPE)
    angle = rng.uniform(-0.26, 0.26, n)
    scale = rng.uniform(0.8, 1.1, (n, 2))
    shear = rng.uniform(-0.2, 0.2, n)
    shift = rng.uniform(-0.12, 0.12, (n, 2))
    pen = rng.uniform(0.045, 0.085, n)
    ink = rng.uniform(0.6, 1.0, n)
    cos, sin = np.cos(angle), np.sin(angle)
    # (N, 2, 2) maps: rotate . shear . scale, about the centre of the picture
    rotate = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    shear_scale = np.zeros((n, 2, 2))
    shear_scale[:, 0, 0] = scale[:, 0]
    shear_scale[:, 0, 1] = shear * scale[:, 1]
    shear_scale[:, 1, 1] = scale[:, 1]
    maps = rotate @ shear_scale
    fine = 16  # draw on a 16x16 grid, then average 2x2 blocks down to 8x8
    centres = (np.arange(fine) + 0.5) / fine
    pixels = np.stack(np.meshgrid(centres, centres, indexing="ij")[::-1], -1).reshape(-1, 2)
    picture = np.empty((n, fine * fine))
    for digit, strokes in enumerate(_digit_segments()):
        chosen = np.flatnonzero(label == digit)
        for lo in range(0, len(chosen), 256):  # in chunks: (chunk, pixels, segments) stays small
            part = chosen[lo:lo + 256]
            ends = np.einsum("nij,sej->nsei", maps[part], strokes - 0.5)
            ends += 0.5 + shift[part, None, None, :]
            distance = _distance_to_segments(pixels, ends)
            picture[part] = np.clip((pen[part, None] - distance) * fine + 1.0, 0.0, 1.0)
    img = picture.reshape(n, 8, 2, 8, 2).mean(axis=(2, 4)) * ink[:, None, None]
    img = img + rng.normal(0.0, noise, img.shape)
    img = np.clip(img, 0.0, 1.0).astype(np.float32)[:, None]
    return Dataset(arrays={"img": img, "label": label}, kind="image", metric="accuracy",
                   num_classes=10, name="builtin:digits8x8",
                   info={"sizes": {"n": n, "seed": seed, "noise": noise}})


_DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def digit_captions(n: int = 5_000, seed: int = 0, *, noise: float = 0.1) -> Dataset:
    """Image captioning (one-to-many): the 8x8 digits of :func:`digits8x8`, each captioned
    with its name spelled out ("seven").

    Ids: 0 padding, 1 BOS, 2 EOS, then the letters of the ten names. ``img`` is
    ``(N, 1, 8, 8)``; ``caption_in`` is BOS then the letters and ``caption_out`` the
    letters then EOS, both ``(N, 6)`` on time axis ``"time"`` with lengths ``len(name) + 1``.
    Metric token accuracy.
    """
    images = digits8x8(n, seed, noise=noise)
    letters = sorted(set("".join(_DIGIT_NAMES)))
    code = {c: i + FIRST_SYMBOL for i, c in enumerate(letters)}
    steps = max(len(name) for name in _DIGIT_NAMES) + 1
    names = [_DIGIT_NAMES[d] for d in images.arrays["label"]]
    caption_in = np.zeros((len(names), steps), dtype=ID_DTYPE)
    caption_out = np.zeros((len(names), steps), dtype=ID_DTYPE)
    for row, name in enumerate(names):
        ids = [code[c] for c in name]
        caption_in[row, :len(ids) + 1] = [BOS] + ids
        caption_out[row, :len(ids) + 1] = ids + [EOS]
    lengths = np.array([len(name) + 1 for name in names])
    vocab_size = len(letters) + FIRST_SYMBOL
    return Dataset(arrays={"img": images.arrays["img"], "caption_in": caption_in, "caption_out": caption_out},
                   kind="sequence", metric="accuracy",
                   time_axes={"caption_in": TIME, "caption_out": TIME}, lengths={TIME: lengths},
                   vocab_size=vocab_size, num_classes=vocab_size, name="builtin:digit_captions",
                   info={"pad": PAD, "bos": BOS, "eos": EOS, "letters": letters,
                         "sizes": {"n": n, "seed": seed, "noise": noise}})


def _distance_to_segments(points: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """``(N, P)``: the distance from each of ``points`` (P, 2) to the nearest of each
    example's ``segments`` (N, S, 2 ends, 2 coords). Coordinates are handled one by one:
    NumPy reduces a length-2 last axis slowly."""
    px, py = points[None, :, None, 0], points[None, :, None, 1]    # (1, P, 1)
    ax, ay = segments[:, None, :, 0, 0], segments[:, None, :, 0, 1]  # (N, 1, S)
    dx, dy = segments[:, None, :, 1, 0] - ax, segments[:, None, :, 1, 1] - ay
    ox, oy = px - ax, py - ay                                        # (N, P, S)
    t = np.clip((ox * dx + oy * dy) / np.maximum(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
    ex, ey = ox - t * dx, oy - t * dy
    return np.sqrt((ex * ex + ey * ey).min(axis=-1))
