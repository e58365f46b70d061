"""An evaluation set of shapes drawn independently of the training data.

A model scored on images from its own generator is scored on that generator's
habits. This one shares no code with ``training/`` and is never imported by it: it
draws with OpenCV (anti-aliased, ``cv2.fillPoly``/``cv2.circle``) where training draws
with Pillow, on backgrounds of its own (cloudy low-frequency noise, vignettes, ruled
paper, speckle), with other clutter (thin clutter lines, Bézier curves, hatching,
zigzags, chevrons, Hershey text, dot clouds, shapes mostly outside the frame, bands
across shapes) and other degradations (motion blur, resolution loss, Gaussian and
salt-and-pepper noise, JPEG quality 35–90). Sizes and counts follow ranges of its
own. A tenth of the images hold no shape at all.

A whole shape, at most lightly crossed, is an object. A shape cut by the border is
labelled by the convention of Ultralytics' and COCO's datasets: with its clipped box, as
an object when at least half of it is in the picture, and as an *ignore* region (COCO's
``iscrowd``) when less is: such a part is ambiguous, so a box on it is neither a hit nor
a false box, and it is never required. Everything else must come back without a box.
Every image is a pure function of ``(seed, index)``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from evaluation.matching import Truth

CLASSES: tuple[str, ...] = ("circle", "square", "triangle")
NEGATIVE_FRACTION = 0.1
MIN_VISIBLE_FRACTION = 0.5  # a shape cut by the border with less than this share in the picture is ignored


def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    b, g, r = (int(v) for v in rng.integers(0, 256, size=3))
    return b, g, r


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Plain, cloudy, vignetted, ruled-paper or speckled, with sensor noise."""
    kind = int(rng.integers(0, 5))
    base = rng.uniform(0, 255, size=3)
    canvas = np.empty((height, width, 3), np.float32)
    canvas[:] = base
    if kind == 1:  # cloudy: coarse noise blown up smoothly
        coarse = rng.normal(0, 1, size=(int(rng.integers(3, 9)), int(rng.integers(3, 9)), 3)).astype(np.float32)
        canvas += cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC) * rng.uniform(15, 45)
    elif kind == 2:  # vignette around an off-centre point
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        distance = np.hypot(xx - cx, yy - cy) / math.hypot(width, height)
        canvas -= (distance * rng.uniform(60, 160))[..., None]
    elif kind == 3:  # ruled paper
        spacing = int(rng.integers(14, 40))
        ink = np.clip(base + rng.uniform(-90, 90, size=3), 0, 255)
        for y in range(int(rng.integers(0, spacing)), height, spacing):
            cv2.line(canvas, (0, y), (width, y), tuple(float(v) for v in ink), 1, cv2.LINE_AA)
    elif kind == 4:  # speckle
        speckle = rng.random((height, width)) < rng.uniform(0.01, 0.06)
        canvas[speckle] = np.clip(base + rng.uniform(-120, 120, size=3), 0, 255)
    canvas += rng.normal(0, rng.uniform(0, 12), size=canvas.shape).astype(np.float32)
    return np.clip(canvas, 0, 255).astype(np.uint8)


def _far_colour(rng: np.random.Generator, patch: np.ndarray) -> tuple[int, int, int]:
    """A colour that stands out from ``patch`` in brightness or hue."""
    mean = patch.reshape(-1, 3).astype(np.float32).mean(axis=0)
    best, best_distance = _random_colour(rng), 0.0
    for _ in range(40):
        candidate = _random_colour(rng)
        distance = float(np.abs(np.array(candidate, np.float32) - mean).sum())
        if distance > best_distance:
            best, best_distance = candidate, distance
        if distance > 220:
            break
    return best


def _regular_polygon(corners: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    steps = np.arange(corners) * 2 * np.pi / corners + angle
    return np.stack([cx + radius * np.cos(steps), cy + radius * np.sin(steps)], axis=1)


def _fill(canvas: np.ndarray, points: np.ndarray, colour: tuple[int, int, int]) -> None:
    cv2.fillPoly(canvas, [np.round(points * 16).astype(np.int32)], colour, cv2.LINE_AA, shift=4)


def _clutter_line(canvas: np.ndarray, rng: np.random.Generator) -> None:
    """A thin line right across the image, as scanned or ruled clutter."""
    height, width = canvas.shape[:2]
    a = (int(rng.integers(-50, width + 50)), int(rng.integers(-50, height + 50)))
    b = (int(rng.integers(-50, width + 50)), int(rng.integers(-50, height + 50)))
    cv2.line(canvas, a, b, _random_colour(rng), int(rng.choice([1, 1, 1, 2, 3])), cv2.LINE_AA)


def _bezier(canvas: np.ndarray, rng: np.random.Generator) -> None:
    """A cubic Bézier curve through four random control points."""
    height, width = canvas.shape[:2]
    control = rng.uniform(0, 1, size=(4, 2)) * (width, height)
    t = np.linspace(0, 1, 60)[:, None]
    curve = (
        (1 - t) ** 3 * control[0]
        + 3 * (1 - t) ** 2 * t * control[1]
        + 3 * (1 - t) * t**2 * control[2]
        + t**3 * control[3]
    )
    thickness = int(rng.integers(1, 6))
    cv2.polylines(canvas, [curve.astype(np.int32)], False, _random_colour(rng), thickness, cv2.LINE_AA)


def _hatching(canvas: np.ndarray, rng: np.random.Generator) -> None:
    """A patch of parallel or crossed lines, the kind that makes many little corners."""
    height, width = canvas.shape[:2]
    x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
    size = int(rng.uniform(0.1, 0.35) * min(width, height))
    spacing = int(rng.integers(4, 12))
    colour = _random_colour(rng)
    for direction in range(int(rng.integers(1, 3))):
        for offset in range(-size, size, spacing):
            if direction == 0:
                a, b = (x0 + offset, y0), (x0 + offset + size // 2, y0 + size)
            else:
                a, b = (x0, y0 + offset + size // 2), (x0 + size, y0 + offset)
            cv2.line(canvas, a, b, colour, 1, cv2.LINE_AA)


def _zigzag(canvas: np.ndarray, rng: np.random.Generator) -> None:
    """A zigzag or a chevron: thick strokes meeting at sharp angles."""
    height, width = canvas.shape[:2]
    x, y = rng.uniform(0, width), rng.uniform(0, height)
    length = rng.uniform(0.05, 0.2) * min(width, height)
    heading = rng.uniform(0, 2 * math.pi)
    turn = rng.uniform(1.8, 2.8) * rng.choice([-1, 1])
    points = [(x, y)]
    for step in range(int(rng.integers(2, 7))):
        heading += turn * (1 if step % 2 else -1)
        x, y = x + length * math.cos(heading), y + length * math.sin(heading)
        points.append((x, y))
    cv2.polylines(canvas, [np.array(points, np.int32)], False, _random_colour(rng), int(rng.integers(2, 10)))


def _hershey_text(canvas: np.ndarray, rng: np.random.Generator) -> None:
    """Words in one of OpenCV's Hershey fonts, including capital A, V and O."""
    height, width = canvas.shape[:2]
    words = ("AVOID", "DO NOT", "TOP", "V4", "QA-17", "DELTA", "NO. 8", "O O O", "A/B", "WAVE", "LOT 42")
    font = int(rng.choice([cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX]))
    scale = rng.uniform(0.5, 2.5)
    origin = (int(rng.integers(0, width - 20)), int(rng.integers(20, height)))
    text = str(rng.choice(words))
    cv2.putText(canvas, text, origin, font, scale, _random_colour(rng), int(rng.integers(1, 4)), cv2.LINE_AA)


def _dots(canvas: np.ndarray, rng: np.random.Generator) -> None:
    """A cloud of small dots, smaller than any labelled circle."""
    height, width = canvas.shape[:2]
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    colour = _random_colour(rng)
    for _ in range(int(rng.integers(5, 40))):
        x, y = rng.normal(cx, 30), rng.normal(cy, 30)
        cv2.circle(canvas, (int(x), int(y)), int(rng.integers(1, 4)), colour, -1, cv2.LINE_AA)


def _outside_shape(canvas: np.ndarray, rng: np.random.Generator) -> Truth | None:
    """A circle, square or triangle whose centre lies beyond the frame, labelled by what is left of it.

    The part in the picture gets its clipped box: an object when at least
    ``MIN_VISIBLE_FRACTION`` of the shape shows, an ignore region when less does.
    """
    height, width = canvas.shape[:2]
    radius = rng.uniform(0.06, 0.25) * min(width, height)
    beyond = rng.uniform(0.2, 0.8) * radius
    cx, cy = [
        (-beyond, rng.uniform(0, height)),
        (width + beyond, rng.uniform(0, height)),
        (rng.uniform(0, width), -beyond),
        (rng.uniform(0, width), height + beyond),
    ][int(rng.integers(0, 4))]
    kind = int(rng.integers(0, 3))
    pad = int(radius) + 2
    mask = np.zeros((height + 2 * pad, width + 2 * pad), np.uint8)
    if kind == 0:
        cv2.circle(canvas, (int(cx), int(cy)), int(radius), _random_colour(rng), -1, cv2.LINE_AA)
        cv2.circle(mask, (int(cx) + pad, int(cy) + pad), int(radius), 1, -1)
    else:
        points = _regular_polygon(4 if kind == 1 else 3, cx, cy, radius, rng.uniform(0, math.pi))
        _fill(canvas, points, _random_colour(rng))
        cv2.fillPoly(mask, [np.round(points + pad).astype(np.int32)], 1)
    inside = mask[pad : pad + height, pad : pad + width]
    ys, xs = np.nonzero(inside)
    if not len(xs):
        return None
    box = (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))
    return Truth(CLASSES[kind], box, ignore=len(xs) < MIN_VISIBLE_FRACTION * int(mask.sum()))


CLUTTER = (_clutter_line, _clutter_line, _bezier, _hatching, _zigzag, _hershey_text, _dots, _outside_shape)


def _boxes_overlap(a: tuple[float, ...], b: tuple[float, ...], margin: float) -> bool:
    return not (a[2] + margin < b[0] or b[2] + margin < a[0] or a[3] + margin < b[1] or b[3] + margin < a[1])


def _shapes(canvas: np.ndarray, rng: np.random.Generator) -> list[Truth]:
    """Up to five whole shapes, apart from one another, each drawn in a colour far from what lies under it."""
    height, width = canvas.shape[:2]
    truths: list[Truth] = []
    for _ in range(int(rng.integers(1, 6))):
        for _attempt in range(30):
            name = CLASSES[int(rng.integers(0, 3))]
            radius = rng.uniform(max(12.0, 0.045 * min(width, height)), 0.24 * min(width, height))
            cx, cy = rng.uniform(radius + 3, width - radius - 3), rng.uniform(radius + 3, height - radius - 3)
            if name == "circle":
                points = None
                box = (cx - radius, cy - radius, cx + radius, cy + radius)
            else:
                corners = 4 if name == "square" else 3
                points = _regular_polygon(corners, cx, cy, radius, rng.uniform(0, 2 * math.pi / corners))
                box = (points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max())
            if box[0] < 1 or box[1] < 1 or box[2] > width - 2 or box[3] > height - 2:
                continue
            if any(_boxes_overlap(box, other.box, 4) for other in truths):
                continue
            patch = canvas[int(box[1]) : int(box[3]) + 1, int(box[0]) : int(box[2]) + 1]
            colour = _far_colour(rng, patch)
            if points is None:
                cv2.circle(canvas, (round(cx * 16), round(cy * 16)), round(radius * 16), colour, -1, cv2.LINE_AA, 4)
            else:
                _fill(canvas, points, colour)
            truths.append(Truth(name, (float(box[0]), float(box[1]), float(box[2]), float(box[3]))))
            break
    return truths


def _band(canvas: np.ndarray, rng: np.random.Generator, truth: Truth) -> None:
    """A narrow band across a shape, covering well under a fifth of it."""
    x1, y1, x2, y2 = truth.box
    thickness = max(2, int(min(x2 - x1, y2 - y1) * rng.uniform(0.05, 0.12)))
    y = int(rng.uniform(y1 + 0.25 * (y2 - y1), y1 + 0.75 * (y2 - y1)))
    cv2.line(canvas, (int(x1 - 40), y), (int(x2 + 40), y + int(rng.integers(-10, 11))), _random_colour(rng), thickness)


def _degrade(canvas: np.ndarray, rng: np.random.Generator) -> bytes:
    """Motion blur or resolution loss, noise of two kinds, then JPEG at quality 35–90."""
    height, width = canvas.shape[:2]
    if rng.random() < 0.3:
        length = int(rng.integers(3, 8))
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1 / length
        rotation = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), rng.uniform(0, 180), 1)
        kernel = cv2.warpAffine(kernel, rotation, (length, length))
        canvas = cv2.filter2D(canvas, -1, kernel / max(float(kernel.sum()), 1e-6))
    elif rng.random() < 0.3:
        factor = rng.uniform(0.4, 0.75)
        small = cv2.resize(canvas, (max(8, int(width * factor)), max(8, int(height * factor))), cv2.INTER_AREA)
        canvas = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.4:
        noisy = canvas.astype(np.float32) + rng.normal(0, rng.uniform(4, 15), size=canvas.shape)
        canvas = np.clip(noisy, 0, 255).astype(np.uint8)
    if rng.random() < 0.15:
        salt = rng.random((height, width)) < rng.uniform(0.002, 0.01)
        canvas[salt] = rng.choice([0, 255], size=(int(salt.sum()), 1))
    ok, encoded = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 91))])
    assert ok
    return encoded.tobytes()


def render(seed: int, index: int) -> tuple[bytes, int, int, list[Truth]]:
    """Image ``index`` of evaluation set ``seed``: JPEG bytes, width, height and the labelled shapes."""
    rng = np.random.default_rng([seed, index, 0xE7A1])
    width, height = int(rng.integers(300, 961)), int(rng.integers(260, 721))
    canvas = _background(rng, width, height)
    cut: list[Truth] = []
    for _ in range(int(rng.integers(1, 9))):
        truth = CLUTTER[int(rng.integers(len(CLUTTER)))](canvas, rng)
        cut += [truth] if truth is not None else []
    truths = [] if rng.random() < NEGATIVE_FRACTION else _shapes(canvas, rng)
    for truth in truths:
        if rng.random() < 0.15:
            _band(canvas, rng, truth)
    for _ in range(int(rng.integers(0, 4))):
        _clutter_line(canvas, rng)
    # A whole shape drawn over a cut one hides an unknown part of it: that part is ambiguous.
    cut = [Truth(c.name, c.box, ignore=c.ignore or any(_boxes_overlap(c.box, t.box, 0) for t in truths)) for c in cut]
    return _degrade(canvas, rng), width, height, truths + cut
