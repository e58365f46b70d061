"""Shapes in cluttered scenes: the fine-tuning data of the bundled model.

``training/shapes.py`` draws clean shapes on synthetic backgrounds; a model trained
only on those fires triangles on line crossings and edges. This generator puts the
same three classes among what real images hold: lines thin and thick, strokes, arcs,
text, other figures (stars, crosses, long bars and ellipses), shapes mostly cut off by
the border, occluders, photographs from scikit-image's bundled ``data`` folder, and a
fifth of images with no shape at all. Then blur, noise, colour jitter and a JPEG
round trip at quality 30–95. Only the three classes, whole and at most lightly
covered, are labelled; everything else must stay unboxed.

The ``EVALUATION_CASES`` style (for the third training stage, ``evaluation-cases``) follows the
evaluation's labelling convention and what it still caught the model on: a shape cut by the border
is labelled with its clipped box when at least half of it shows (as Ultralytics' and
COCO's datasets label truncated objects; a smaller part stays unlabelled, ambiguous),
bands cross shapes that stay labelled whole, a third of the shapes are small at the
model's input size, strokes zigzag, text comes large and bold, and some images lose
resolution. The hard-example rounds' pools go further, each style adding to the one before:
text also in shape-sized glyphs of more fonts (``FONT_GLYPHS``), the classes' outlines and
sprays of specks (``OUTLINES_AND_SPECKS``), and most scenes on photographs, a portrait among
them, half of them bare (``MOSTLY_PHOTOS``).

Every image is a pure function of ``(seed, index)``, as in ``training/shapes.py``.
The photographs and fonts are read from the installed wheels of scikit-image and
matplotlib (``importlib.resources``), never downloaded; Ultralytics' own ``bus.jpg``
and ``zidane.jpg`` are kept out on purpose: they are the evaluation's shape-free photos.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import string
from dataclasses import dataclass
from importlib import resources

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

from training.shapes import (
    CLASS_NAMES,
    MAX_COVERED_FRACTION,
    Shape,
    _background,
    _polygon,
    place_shapes,
    render_sample,
)

MIN_SIDE, MAX_SIDE = 224, 800
NEGATIVE_FRACTION = 0.2
PHOTO_FRACTION = 0.35
# A photograph in an installed wheel: its package and its path in the package.
PhotoRef = tuple[str, str]
# Photographs in scikit-image's wheel (skimage/data), none of them showing a filled
# circle, square or triangle: coins, chessboards, logos, the retina's disc and the
# horse silhouette are left out.
PHOTOS: tuple[PhotoRef, ...] = tuple(
    ("skimage", f"data/{name}")
    for name in (
        "astronaut.png",
        "brick.png",
        "camera.png",
        "chelsea.png",
        "clock_motion.png",
        "coffee.png",
        "grass.png",
        "gravel.png",
        "hubble_deep_field.jpg",
        "ihc.png",
        "moon.png",
        "motorcycle_left.png",
        "page.png",
        "rocket.jpg",
        "text.png",
    )
)
# Matplotlib's sample portrait, a person in a dark uniform on a plain background: the
# ``photos`` stage's pool adds it to the photographs above.
GRACE_HOPPER: PhotoRef = ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg")

# A shape cut by the border is labelled, with its clipped box, when at least this share of
# it is in the picture (the ``EVALUATION_CASES`` style on); less is ambiguous and stays unlabelled.
MIN_VISIBLE_FRACTION = 0.5
# The model's input side: small shapes are sized for what is left of them there.
INPUT_SIDE = 320

Colour = tuple[int, int, int]


@dataclass(frozen=True)
class SceneStyle:
    """What the later fine-tuning stage adds to the scenes; the defaults draw the ``scenes`` stage's data."""

    label_truncated: bool = False  # cut shapes reach into the picture, and mostly visible ones are labelled
    band_fraction: float = 0.0  # share of labelled shapes crossed by a band, still labelled whole
    small_fraction: float = 0.0  # share of shapes 3.5–9 px in radius at the model's input side
    sharp_strokes: bool = False  # half the strokes zigzag with sharp turns, text comes large and bold
    resolution_loss: float = 0.0  # share of images scaled down and back up before the JPEG round trip
    font_glyphs: bool = False  # half the text is a few shape-sized glyphs in one of matplotlib's bundled fonts
    hollow: bool = False  # the clutter also holds the classes' outlines, hollow or open, and sprays of specks
    photos: tuple[PhotoRef, ...] = PHOTOS  # the photographs backgrounds are cut from
    photo_fraction: float = PHOTO_FRACTION  # share of images on a photograph
    bare_photo_fraction: float = 0.0  # share of those that are the photograph alone: no clutter and no shape


@functools.cache
def _photo(ref: PhotoRef) -> Image.Image:
    package, path = ref
    with resources.files(package).joinpath(path).open("rb") as stream:
        return Image.open(stream).convert("RGB")


def _photo_background(rng: np.random.Generator, width: int, height: int, photos: tuple[PhotoRef, ...]) -> np.ndarray:
    """A random crop of one of ``photos``, resized to the image and maybe mirrored."""
    photo = _photo(photos[int(rng.integers(len(photos)))])
    scale = rng.uniform(0.35, 1.0)
    crop_w = max(16, int(photo.width * scale))
    crop_h = max(16, int(min(photo.height, crop_w * height / width)))
    crop_w = min(crop_w, photo.width)
    left = int(rng.integers(0, photo.width - crop_w + 1))
    top = int(rng.integers(0, photo.height - crop_h + 1))
    image = photo.crop((left, top, left + crop_w, top + crop_h)).resize((width, height), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(image).copy()


def _colour(rng: np.random.Generator) -> Colour:
    r, g, b = (int(v) for v in rng.integers(0, 256, size=3))
    return r, g, b


def _point(rng: np.random.Generator, width: int, height: int, margin: float = 0.0) -> tuple[float, float]:
    return (
        float(rng.uniform(-margin * width, (1 + margin) * width)),
        float(rng.uniform(-margin * height, (1 + margin) * height)),
    )


def _line(draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int) -> None:
    """A straight line, hairline to thick, often crossing the whole image."""
    thickness = int(rng.choice([1, 1, 2, 2, 3, 4, 6, 9, 12]))
    start, end = _point(rng, width, height, 0.2), _point(rng, width, height, 0.2)
    draw.line([start, end], fill=_colour(rng), width=thickness)


def _stroke(draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int) -> None:
    """A pen stroke: a polyline of short random steps, sometimes with rounded joints."""
    x, y = _point(rng, width, height)
    step = rng.uniform(0.03, 0.15) * min(width, height)
    heading = rng.uniform(0, 2 * math.pi)
    points = [(x, y)]
    for _ in range(int(rng.integers(3, 12))):
        heading += rng.normal(0, 0.8)
        x, y = x + step * math.cos(heading), y + step * math.sin(heading)
        points.append((x, y))
    draw.line(points, fill=_colour(rng), width=int(rng.integers(1, 8)), joint="curve" if rng.random() < 0.5 else None)


def _zigzag_or_stroke(draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int) -> None:
    """Half the time a zigzag: straight strokes meeting at sharp angles, the corners a triangle has; else a stroke."""
    if rng.random() < 0.5:
        _stroke(draw, rng, width, height)
        return
    x, y = _point(rng, width, height)
    step = rng.uniform(0.04, 0.2) * min(width, height)
    heading = rng.uniform(0, 2 * math.pi)
    points = [(x, y)]
    for k in range(int(rng.integers(2, 8))):
        heading += rng.uniform(1.5, 2.9) * (1 if k % 2 else -1)
        x, y = x + step * math.cos(heading), y + step * math.sin(heading)
        points.append((x, y))
    draw.line(points, fill=_colour(rng), width=int(rng.integers(2, 13)))


def _arc(draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int) -> None:
    """Part of a circle's or ellipse's outline, never the whole of it."""
    cx, cy = _point(rng, width, height)
    rx = rng.uniform(0.04, 0.35) * min(width, height)
    ry = rx * rng.uniform(0.5, 1.5)
    start = rng.uniform(0, 360)
    draw.arc(
        (cx - rx, cy - ry, cx + rx, cy + ry),
        start,
        start + rng.uniform(30, 280),
        fill=_colour(rng),
        width=int(rng.integers(1, 7)),
    )


def _text(draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int) -> None:
    """A word or two of random letters and digits in Pillow's bundled font."""
    size = int(rng.uniform(0.03, 0.14) * min(width, height)) + 6
    alphabet = string.ascii_letters + string.digits + "  -/+=:#"
    text = "".join(alphabet[i] for i in rng.integers(0, len(alphabet), size=int(rng.integers(1, 14))))
    draw.text(_point(rng, width, height), text, fill=_colour(rng), font=ImageFont.load_default(size))


def _bold_text(draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int) -> None:
    """Capitals and digits, large and often outlined thick: letters like A, V, O and D are near the classes."""
    size = int(rng.uniform(0.05, 0.25) * min(width, height)) + 8
    alphabet = string.ascii_uppercase + string.digits + " /"
    text = "".join(alphabet[i] for i in rng.integers(0, len(alphabet), size=int(rng.integers(1, 7))))
    outline = int(rng.integers(0, 4))
    font = ImageFont.load_default(size)
    draw.text(_point(rng, width, height), text, fill=_colour(rng), font=font, stroke_width=outline)


# Fonts that ship inside matplotlib's wheel (an Ultralytics dependency), read from the installed package.
FONTS: tuple[str, ...] = (
    "DejaVuSans-Bold.ttf",
    "DejaVuSans.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif.ttf",
    "STIXGeneralBol.ttf",
    "cmss10.ttf",
    "cmr10.ttf",
)
# Letters, digits and signs whose outline is near a circle, a square or a triangle, then any.
ROUND_OR_ANGULAR = "0O8BDQGCSA4VWMNZ"
GLYPHS = ROUND_OR_ANGULAR + string.ascii_letters + string.digits + "#%&@"


@functools.cache
def _font_bytes(name: str) -> bytes:
    return resources.files("matplotlib").joinpath("mpl-data", "fonts", "ttf", name).read_bytes()


def _glyphs(draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int) -> None:
    """One to four glyphs as large as the shapes, in a bundled font, often bold or outlined: O, 8, A and W are
    near the classes, and a model that has seen only one font boxes another's."""
    size = int(rng.uniform(0.05, 0.3) * min(width, height)) + 8
    font = ImageFont.truetype(io.BytesIO(_font_bytes(FONTS[int(rng.integers(len(FONTS)))])), size)
    pool = ROUND_OR_ANGULAR if rng.random() < 0.6 else GLYPHS
    text = "".join(pool[i] for i in rng.integers(0, len(pool), size=int(rng.integers(1, 5))))
    draw.text(_point(rng, width, height), text, fill=_colour(rng), font=font, stroke_width=int(rng.integers(0, 3)))


def _text_or_glyphs(draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int) -> None:
    """Half the time shape-sized glyphs in a bundled font, else large bold capitals in Pillow's."""
    (_glyphs if rng.random() < 0.5 else _bold_text)(draw, rng, width, height)


def _figure(draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int) -> None:
    """A filled figure that is none of the classes: a star, a cross, a long bar or ellipse, an n-gon."""
    cx, cy = _point(rng, width, height)
    radius = rng.uniform(0.04, 0.2) * min(width, height)
    angle = rng.uniform(0, 2 * math.pi)
    kind = int(rng.integers(0, 5))
    if kind == 0:  # star
        spikes = int(rng.integers(4, 8))
        inner = rng.uniform(0.35, 0.55)
        points = [
            (
                cx + radius * (1 if k % 2 == 0 else inner) * math.cos(angle + math.pi * k / spikes),
                cy + radius * (1 if k % 2 == 0 else inner) * math.sin(angle + math.pi * k / spikes),
            )
            for k in range(2 * spikes)
        ]
    elif kind == 1:  # plus or x
        arm = rng.uniform(0.15, 0.35)
        corners = [(1, arm), (arm, arm), (arm, 1), (-arm, 1), (-arm, arm), (-1, arm)]
        corners += [(-x, -y) for x, y in corners]
        points = [
            (
                cx + radius * (x * math.cos(angle) - y * math.sin(angle)),
                cy + radius * (x * math.sin(angle) + y * math.cos(angle)),
            )
            for x, y in corners
        ]
    elif kind == 2:  # long bar
        aspect = rng.uniform(2.0, 6.0)
        half_w, half_h = radius, radius / aspect
        points = [
            (
                cx + x * math.cos(angle) - y * math.sin(angle),
                cy + x * math.sin(angle) + y * math.cos(angle),
            )
            for x, y in ((-half_w, -half_h), (half_w, -half_h), (half_w, half_h), (-half_w, half_h))
        ]
    elif kind == 3:  # long ellipse, axis-aligned
        aspect = rng.uniform(2.0, 5.0)
        rx, ry = (radius, radius / aspect) if rng.random() < 0.5 else (radius / aspect, radius)
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=_colour(rng))
        return
    else:  # irregular blob
        corners = int(rng.integers(5, 11))
        points = [
            (
                cx + radius * rng.uniform(0.4, 1.0) * math.cos(angle + 2 * math.pi * k / corners),
                cy + radius * rng.uniform(0.4, 1.0) * math.sin(angle + 2 * math.pi * k / corners),
            )
            for k in range(corners)
        ]
    draw.polygon(points, fill=_colour(rng))


def _hollow(draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int) -> None:
    """A class's outline, not filled: a ring, a frame, or part of one (a chevron, a bracket). The classes are
    filled shapes; letters such as O, A and V are their outlines drawn with a pen."""
    cx, cy = _point(rng, width, height)
    radius = rng.uniform(0.03, 0.2) * min(width, height) + 4
    pen = int(max(1, radius * rng.uniform(0.08, 0.35)))
    cls = int(rng.integers(0, len(CLASS_NAMES)))
    if cls == 0:
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), outline=_colour(rng), width=pen)
        return
    corners = _polygon(cls, cx, cy, radius, rng.uniform(0, 2 * math.pi))
    sides = len(corners) if rng.random() < 0.5 else len(corners) - 1  # closed, or open by one side
    start = int(rng.integers(len(corners)))
    points = [corners[(start + k) % len(corners)] for k in range(sides + 1)]
    draw.line(points, fill=_colour(rng), width=pen, joint="curve" if rng.random() < 0.5 else None)


def _specks(draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int) -> None:
    """A spray of round specks, each smaller at the model's input than the smallest labelled shape."""
    cx, cy = _point(rng, width, height)
    spread = rng.uniform(0.02, 0.12) * min(width, height)
    scale = max(width, height) / INPUT_SIDE  # image pixels per input pixel
    colour = _colour(rng)
    for _ in range(int(rng.integers(3, 30))):
        x, y = rng.normal(cx, spread), rng.normal(cy, spread)
        r = rng.uniform(0.5, 2.5) * scale
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)


def _visible_part(
    outline: list[tuple[float, float]] | None, circle: tuple[float, float, float], width: int, height: int
) -> tuple[float, tuple[float, float, float, float] | None]:
    """The share of a shape inside the picture and the tight box of that part (``None`` when nothing shows).

    ``outline`` is a polygon's corners, or ``None`` for the circle ``circle`` (centre x, y and radius);
    a polygon lies within ``circle`` too, which sizes the mask.
    """
    cx, cy, radius = circle
    pad = int(radius + max(0.0, -cx, -cy, cx - width, cy - height)) + 2
    mask = Image.new("L", (width + 2 * pad, height + 2 * pad))
    draw = ImageDraw.Draw(mask)
    if outline is None:
        draw.ellipse((cx - radius + pad, cy - radius + pad, cx + radius + pad, cy + radius + pad), fill=1)
    else:
        draw.polygon([(x + pad, y + pad) for x, y in outline], fill=1)
    pixels = np.asarray(mask)
    inside = pixels[pad : pad + height, pad : pad + width]
    total, shown = int(pixels.sum()), int(inside.sum())
    if not shown:
        return 0.0, None
    rows, cols = np.nonzero(inside)
    return shown / total, (float(cols.min()), float(rows.min()), float(cols.max()), float(rows.max()))


def _cut_shape(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int, label_truncated: bool = False
) -> Shape | None:
    """One of the classes cut by the border.

    By default its centre lies beyond the border, so most of it is cut off and it is not
    labelled. With ``label_truncated`` the centre may also lie inside, and a shape with at
    least ``MIN_VISIBLE_FRACTION`` of it in the picture is labelled with its clipped box,
    as Ultralytics and COCO label truncated objects.
    """
    cls = int(rng.integers(0, len(CLASS_NAMES)))
    radius = rng.uniform(0.08, 0.3) * min(width, height)
    edge = int(rng.integers(0, 4))
    depth = rng.uniform(-0.7 if label_truncated else 0.05, 0.9) * radius  # how far beyond the border the centre lies
    along_x, along_y = rng.uniform(0, width), rng.uniform(0, height)
    cx, cy = [(-depth, along_y), (width + depth, along_y), (along_x, -depth), (along_x, height + depth)][edge]
    if cls == 0:
        outline = None
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=_colour(rng))
    else:
        radius *= 1.2
        outline = _polygon(cls, cx, cy, radius, rng.uniform(0, 2 * math.pi))
        draw.polygon(outline, fill=_colour(rng))
    if not label_truncated:
        return None
    fraction, box = _visible_part(outline, (cx, cy, radius), width, height)
    return Shape(cls, box) if box is not None and fraction >= MIN_VISIBLE_FRACTION else None


DISTRACTORS = (_line, _stroke, _arc, _text, _figure, _cut_shape)


def _occlude(draw: ImageDraw.ImageDraw, rng: np.random.Generator, shape: Shape) -> None:
    """An irregular blob over one side of ``shape``, covering at most a quarter of its box."""
    x1, y1, x2, y2 = shape.box
    w, h = x2 - x1, y2 - y1
    side = int(rng.integers(0, 4))
    depth = rng.uniform(0.08, MAX_COVERED_FRACTION)
    if side == 0:
        box = (x1 - w * 0.3, y1 - h * 0.2, x1 + w * depth, y2 + h * 0.2)
    elif side == 1:
        box = (x2 - w * depth, y1 - h * 0.2, x2 + w * 0.3, y2 + h * 0.2)
    elif side == 2:
        box = (x1 - w * 0.2, y1 - h * 0.3, x2 + w * 0.2, y1 + h * depth)
    else:
        box = (x1 - w * 0.2, y2 - h * depth, x2 + w * 0.2, y2 + h * 0.3)
    bx1, by1, bx2, by2 = box
    cx, cy = (bx1 + bx2) / 2, (by1 + by2) / 2
    corners = int(rng.integers(5, 9))
    points = [
        (
            min(max(cx + (bx2 - bx1) / 2 * rng.uniform(0.7, 1.0) * math.cos(2 * math.pi * k / corners), bx1), bx2),
            min(max(cy + (by2 - by1) / 2 * rng.uniform(0.7, 1.0) * math.sin(2 * math.pi * k / corners), by1), by2),
        )
        for k in range(corners)
    ]
    draw.polygon(points, fill=_colour(rng))


def _band(draw: ImageDraw.ImageDraw, rng: np.random.Generator, shape: Shape) -> None:
    """A straight band right across ``shape``, 4–15 % of its size thick: it stays recognisable, and labelled whole."""
    x1, y1, x2, y2 = shape.box
    w, h = x2 - x1, y2 - y1
    cx, cy = x1 + w * rng.uniform(0.3, 0.7), y1 + h * rng.uniform(0.3, 0.7)
    angle = rng.uniform(0, math.pi)
    reach = math.hypot(w, h) * rng.uniform(0.7, 2.0)
    dx, dy = reach * math.cos(angle), reach * math.sin(angle)
    thickness = max(2, int(min(w, h) * rng.uniform(0.04, 0.15)))
    draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=_colour(rng), width=thickness)


def _radius(style: SceneStyle, rng: np.random.Generator, width: int, height: int) -> float | None:
    """A whole shape's radius: 3.5–30 % of the picture's shorter side and at least 8 pixels, or in ``style`` small
    at the model's input side; None when the shape would not fit the picture."""
    radius = max(8.0, rng.uniform(0.035, 0.3) * min(width, height))
    if style.small_fraction and rng.random() < style.small_fraction:
        radius = max(6.0, rng.uniform(3.5, 9.0) * max(width, height) / INPUT_SIDE)
    return None if 2 * radius > min(width, height) - 4 else radius


def _outline_width(rng: np.random.Generator) -> int:
    return int(rng.integers(1, 5))


def _photometric(image: Image.Image, rng: np.random.Generator, style: SceneStyle) -> Image.Image:
    """Colour jitter, blur, maybe resolution loss, sensor noise and a JPEG round trip at quality 30–95."""
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.65, 1.35))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.6, 1.4))
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.5, 1.5))
    if rng.random() < 0.45:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 2.2)))
    if style.resolution_loss and rng.random() < style.resolution_loss:
        factor = rng.uniform(0.35, 0.75)
        small = image.resize((max(8, int(image.width * factor)), max(8, int(image.height * factor))))
        image = small.resize(image.size, Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        pixels = np.asarray(image, dtype=np.float32)
        pixels = pixels + rng.normal(0, rng.uniform(3, 20), size=pixels.shape)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.integers(30, 96)))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def render_scene(seed: int, index: int, style: SceneStyle = SceneStyle()) -> tuple[Image.Image, list[Shape]]:
    """Draw scene ``index`` of the dataset ``seed`` in ``style``: the picture and its ground truth."""
    rng = np.random.default_rng([seed, index, 7])
    width, height = (int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE + 1, size=2))
    photo = rng.random() < style.photo_fraction
    pixels = _photo_background(rng, width, height, style.photos) if photo else _background(rng, width, height)
    if photo and style.bare_photo_fraction and rng.random() < style.bare_photo_fraction:
        return _photometric(Image.fromarray(pixels), rng, style), []
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    distractors = DISTRACTORS
    if style.sharp_strokes:
        text = _text_or_glyphs if style.font_glyphs else _bold_text
        distractors = (_line, _zigzag_or_stroke, _arc, text, *DISTRACTORS[4:])
    if style.hollow:
        distractors = (*distractors, _hollow, _hollow, _specks)
    truncated: list[Shape] = []
    for _ in range(int(rng.integers(0, 6))):  # clutter under the shapes
        distractor = distractors[int(rng.integers(len(distractors)))]
        if distractor is _cut_shape:
            cut = _cut_shape(draw, rng, width, height, style.label_truncated)
            truncated += [cut] if cut is not None else []
        else:
            distractor(draw, rng, width, height)
    negative = rng.random() < NEGATIVE_FRACTION
    radius = functools.partial(_radius, style)
    shapes = truncated if negative else place_shapes(draw, rng, pixels, radius, _outline_width, truncated)
    for shape in shapes:
        if rng.random() < 0.2:
            _occlude(draw, rng, shape)
        elif style.band_fraction and rng.random() < style.band_fraction:
            _band(draw, rng, shape)
    for _ in range(int(rng.integers(0, 8))):  # clutter over them: lines and strokes across, text on top
        distractors[int(rng.integers(4))](draw, rng, width, height)
    return _photometric(image, rng, style), shapes


# What the independent evaluation still caught the ``scenes`` weights on, labelled by its convention.
EVALUATION_CASES = SceneStyle(
    label_truncated=True, band_fraction=0.3, small_fraction=0.35, sharp_strokes=True, resolution_loss=0.25
)


def render_evaluation_cases(seed: int, index: int) -> tuple[Image.Image, list[Shape]]:
    """Draw scene ``index`` of the dataset ``seed`` in the ``EVALUATION_CASES`` style, for the stage of that name."""
    return render_scene(seed, index, EVALUATION_CASES)


# The ``hard`` stage's pool: the ``EVALUATION_CASES`` style, with text also in shape-sized glyphs of more fonts.
FONT_GLYPHS = dataclasses.replace(EVALUATION_CASES, font_glyphs=True)


# The ``hollow`` stage's pool: the ``FONT_GLYPHS`` style with the classes' outlines and sprays of specks.
OUTLINES_AND_SPECKS = dataclasses.replace(FONT_GLYPHS, hollow=True)


# In the ``hard`` stage's pool every this-many-th image is a clean one: fine-tuning keeps what stage base learnt.
CLEAN_EVERY = 5


def render_mixed(seed: int, index: int, style: SceneStyle = FONT_GLYPHS) -> tuple[Image.Image, list[Shape]]:
    """Every ``CLEAN_EVERY``-th image from ``training/shapes.py``, the others in ``style``."""
    return render_sample(seed, index) if index % CLEAN_EVERY == 0 else render_scene(seed, index, style)


def render_hollow(seed: int, index: int) -> tuple[Image.Image, list[Shape]]:
    """``render_mixed`` in the ``OUTLINES_AND_SPECKS`` style, for the ``hollow`` stage."""
    return render_mixed(seed, index, OUTLINES_AND_SPECKS)


# The ``photos`` stage's pool: the ``OUTLINES_AND_SPECKS`` style, 70 % of it on photographs, a portrait
# among them, and half of those the photograph alone.
MOSTLY_PHOTOS = dataclasses.replace(
    OUTLINES_AND_SPECKS, photos=(*PHOTOS, GRACE_HOPPER), photo_fraction=0.7, bare_photo_fraction=0.5
)


def render_photos(seed: int, index: int) -> tuple[Image.Image, list[Shape]]:
    """``render_mixed`` in the ``MOSTLY_PHOTOS`` style, for the ``photos`` stage."""
    return render_mixed(seed, index, MOSTLY_PHOTOS)
