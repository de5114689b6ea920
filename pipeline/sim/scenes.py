"""Scene content for the synthetic camera: real photographs shipped with scikit-image and
procedural scenes, randomly cropped, flipped and scaled to the sensor frame.

Scene types belong to two groups with their own lighting, so that a scene group is visible
in the images (colour cast, brightness) and can be correlated with the age class
(``scenes.scene_bias``):

* ``indoor``: warm tungsten-like light, darker key — photographs ``coffee``, ``chelsea``,
  ``astronaut``, ``motorcycle``; procedural ``room``, ``brick_wall``.
* ``outdoor``: daylight, bright key — photographs ``rocket``, ``cameraman``; procedural
  ``sky``, ``meadow``, ``hills``, ``gravel_path``.

The photographs are read straight from scikit-image's package folder with Pillow, never
through ``skimage.data`` (whose fetchers may try to download), so no network is touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
from PIL import Image

from pipeline.sim.config import SCENE_GROUPS, SceneConfig

__all__ = ["SceneType", "SceneLighting", "SCENE_TYPES", "LIGHTING", "scene_types_in", "choose_scene",
           "render_scene", "srgb_to_linear"]

CANVAS_WIDTH, CANVAS_HEIGHT = 640, 480  # procedural scenes are drawn at this size, then cropped


@dataclass(frozen=True)
class SceneType:
    """A kind of scene: its name (manifest ``scene``), its group, and its source.

    ``source`` is ``"photo:<file in skimage/data>"``, ``"texture:<file>"`` (a grey texture
    photo that a procedural scene colours) or ``"procedural"``.
    """

    name: str
    group: str
    source: str


@dataclass(frozen=True)
class SceneLighting:
    """Light of a scene group: RGB tint relative to daylight, and exposure key (linear gain)."""

    tint: tuple[float, float, float]
    key: float


SCENE_TYPES: dict[str, SceneType] = {s.name: s for s in (
    SceneType("coffee", "indoor", "photo:coffee.png"),
    SceneType("chelsea", "indoor", "photo:chelsea.png"),
    SceneType("astronaut", "indoor", "photo:astronaut.png"),
    SceneType("motorcycle", "indoor", "photo:motorcycle_left.png"),
    SceneType("room", "indoor", "procedural"),
    SceneType("brick_wall", "indoor", "texture:brick.png"),
    SceneType("rocket", "outdoor", "photo:rocket.jpg"),
    SceneType("cameraman", "outdoor", "photo:camera.png"),
    SceneType("sky", "outdoor", "procedural"),
    SceneType("meadow", "outdoor", "texture:grass.png"),
    SceneType("hills", "outdoor", "procedural"),
    SceneType("gravel_path", "outdoor", "texture:gravel.png"),
)}

LIGHTING: dict[str, SceneLighting] = {
    "indoor": SceneLighting(tint=(1.30, 1.0, 0.68), key=0.55),
    "outdoor": SceneLighting(tint=(0.95, 1.0, 1.08), key=1.0),
}
assert set(LIGHTING) == set(SCENE_GROUPS) == {s.group for s in SCENE_TYPES.values()}


def scene_types_in(group: str) -> list[str]:
    """Names of the scene types of ``group``, in a fixed order."""
    return [name for name, s in SCENE_TYPES.items() if s.group == group]


def choose_scene(class_index: int, scenes: SceneConfig, rng: np.random.Generator) -> str:
    """Draw a scene type for an image of the ``class_index``-th class.

    The class's own group (``scenes.group_for_class[class_index]``) is taken with probability
    ``scene_bias``; otherwise a group is drawn uniformly (which may be the same group). The
    type is then uniform within the group. Always consumes two uniform draws.
    """
    favoured = scenes.group_for_class[class_index]
    u_bias, u_group_type = rng.random(2)
    if u_bias < scenes.scene_bias:
        group = favoured
        u_type = u_group_type
    else:
        scaled = u_group_type * len(SCENE_GROUPS)
        group = SCENE_GROUPS[min(int(scaled), len(SCENE_GROUPS) - 1)]
        u_type = scaled - int(scaled)
    names = scene_types_in(group)
    return names[min(int(u_type * len(names)), len(names) - 1)]


_SRGB_LUT = None


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    """Decode 8-bit sRGB to linear float32 in [0, 1] (IEC 61966-2-1 curve, via a table)."""
    global _SRGB_LUT
    if _SRGB_LUT is None:
        v = np.arange(256, dtype=np.float64) / 255.0
        _SRGB_LUT = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4).astype(np.float32)
    return _SRGB_LUT[values]


@lru_cache(maxsize=None)
def _skimage_picture(filename: str) -> np.ndarray:
    """A picture of scikit-image's package data folder as uint8 RGB (read-only array)."""
    resource = resources.files("skimage") / "data" / filename
    if not resource.is_file():
        raise FileNotFoundError(
            f"scikit-image's data file {filename!r} is missing from {resource}: reinstall scikit-image "
            "(the simulator reads the photos shipped inside the package and never downloads)")
    with resources.as_file(resource) as path, Image.open(path) as img:
        array = np.asarray(img.convert("RGB"))
    array.setflags(write=False)
    return array


def _crop_flip_resize(source: np.ndarray, width: int, height: int, rng: np.random.Generator,
                      min_scale: float = 0.6) -> np.ndarray:
    """Random crop with the frame's aspect ratio, random horizontal flip, resize to the frame."""
    src_h, src_w = source.shape[:2]
    aspect = width / height
    full_w, full_h = (src_h * aspect, src_h) if src_w / src_h > aspect else (src_w, src_w / aspect)
    scale = rng.uniform(min_scale, 1.0)
    crop_w, crop_h = full_w * scale, full_h * scale
    x0 = rng.uniform(0.0, src_w - crop_w)
    y0 = rng.uniform(0.0, src_h - crop_h)
    flip = rng.random() < 0.5
    resized = Image.fromarray(source).resize((width, height), Image.Resampling.BICUBIC,
                                             box=(x0, y0, x0 + crop_w, y0 + crop_h))
    out = np.asarray(resized)
    return out[:, ::-1] if flip else out


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-ish smooth noise: a ``cells``-wide random grid upsampled bicubically."""
    grid_w = max(2, cells)
    grid_h = max(2, int(round(cells * height / width)))
    grid = rng.standard_normal((grid_h, grid_w)).astype(np.float32)
    return np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC))


def _fractal_noise(rng: np.random.Generator, height: int, width: int, base_cells: int = 4,
                   octaves: int = 4) -> np.ndarray:
    total = np.zeros((height, width), np.float32)
    amplitude = 1.0
    for octave in range(octaves):
        total += amplitude * _smooth_noise(rng, height, width, base_cells * 2 ** octave)
        amplitude *= 0.5
    return total / 1.6


def _mix(a: np.ndarray, b: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return a + (b - a) * weight[..., None]


def _sky(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Linear-ish [0,1] RGB sky: a blue gradient darkening upwards with soft clouds."""
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None] ** rng.uniform(0.6, 1.4)
    zenith = np.array([0.10, 0.25, 0.62], np.float32) * rng.uniform(0.8, 1.2, 3).astype(np.float32)
    horizon = np.array([0.62, 0.72, 0.85], np.float32) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    sky = zenith + (horizon - zenith) * t[..., None]
    sky = np.broadcast_to(sky, (height, width, 3)).astype(np.float32)
    cover = rng.uniform(-0.6, 0.8)
    clouds = np.clip((_fractal_noise(rng, height, width, 3, 5) + cover) / 0.8, 0.0, 1.0)
    shade = 0.75 + 0.2 * np.clip(_smooth_noise(rng, height, width, 8), -1, 1)
    return _mix(sky, np.stack([shade] * 3, axis=-1), clouds)


def _texture(filename: str, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    grey = _crop_flip_resize(_skimage_picture(filename), width, height, rng, min_scale=0.5)[..., 0]
    return srgb_to_linear(grey)


def _ground(texture: np.ndarray, colour, rng: np.random.Generator) -> np.ndarray:
    h, w = texture.shape
    light = 1.0 + 0.25 * _smooth_noise(rng, h, w, 4)
    base = np.asarray(colour, np.float32) * rng.uniform(0.8, 1.2, 3).astype(np.float32)
    return (texture * light)[..., None] * base * 2.0


def _with_horizon(top: np.ndarray, bottom: np.ndarray, rng: np.random.Generator, lo: float, hi: float,
                  roughness: float) -> np.ndarray:
    h, w = top.shape[:2]
    ridge = rng.uniform(lo, hi) * h + roughness * h * _smooth_noise(rng, 1, w, 6)[0]
    rows = np.arange(h, dtype=np.float32)[:, None]
    below = np.clip(rows - ridge[None, :] + 0.5, 0.0, 1.0)
    return _mix(top, bottom, below)


def _meadow(rng, height, width):
    grass = _ground(_texture("grass.png", rng, height, width), (0.16, 0.30, 0.07), rng)
    return _with_horizon(_sky(rng, height, width), grass, rng, 0.25, 0.6, 0.03)


def _gravel_path(rng, height, width):
    gravel = _ground(_texture("gravel.png", rng, height, width), (0.32, 0.28, 0.22), rng)
    return _with_horizon(_sky(rng, height, width), gravel, rng, 0.05, 0.3, 0.02)


def _hills(rng, height, width):
    image = _sky(rng, height, width)
    layers = int(rng.integers(2, 5))
    for layer in range(layers):
        depth = (layer + 1) / layers  # far layers are paler and bluer (aerial perspective)
        colour = np.array([0.10, 0.22, 0.08], np.float32) * (0.6 + 0.6 * depth)
        colour = colour + (1.0 - depth) * np.array([0.25, 0.28, 0.35], np.float32)
        hill = np.broadcast_to(colour, (height, width, 3)) * (
            1.0 + 0.3 * _fractal_noise(rng, height, width, 8, 4))[..., None]
        image = _with_horizon(image, hill.astype(np.float32), rng, 0.25 + 0.15 * layer, 0.35 + 0.2 * layer,
                              0.08 / (1 + layer))
    return image


def _lamp_falloff(rng, height, width) -> np.ndarray:
    cy, cx = rng.uniform(-0.2, 0.6) * height, rng.uniform(0.0, 1.0) * width
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / float(max(height, width)) ** 2
    return (1.0 / (1.0 + 3.0 * r2)).astype(np.float32)


def _room(rng, height, width):
    wall = np.array([0.55, 0.45, 0.33], np.float32) * rng.uniform(0.6, 1.2, 3).astype(np.float32)
    image = np.empty((height, width, 3), np.float32)
    image[:] = wall
    image *= (1.0 + 0.05 * _fractal_noise(rng, height, width, 6, 3))[..., None]
    floor_row = int(rng.uniform(0.65, 0.85) * height)
    grain = _smooth_noise(rng, height - floor_row, width // 16 + 2, 12)
    grain = np.asarray(Image.fromarray(grain).resize((width, height - floor_row)))
    floor = np.array([0.30, 0.17, 0.08], np.float32) * rng.uniform(0.7, 1.3)
    image[floor_row:] = floor * (1.0 + 0.25 * np.clip(grain, -2, 2))[..., None]
    for _ in range(int(rng.integers(2, 6))):  # pictures, shelves, furniture
        w, h = int(rng.uniform(0.08, 0.35) * width), int(rng.uniform(0.08, 0.45) * height)
        x0 = int(rng.uniform(0, width - w))
        y0 = int(rng.uniform(0, max(1.0, floor_row + 0.1 * height - h)))
        frame = rng.uniform(0.02, 0.15, 3).astype(np.float32)
        image[y0:y0 + h, x0:x0 + w] = frame
        b = max(2, min(w, h) // 12)
        inner = rng.uniform(0.05, 0.8, 3).astype(np.float32)
        image[y0 + b:y0 + h - b, x0 + b:x0 + w - b] = inner * (
            1.0 + 0.3 * _smooth_noise(rng, max(1, h - 2 * b), max(1, w - 2 * b), 5))[..., None]
    return image * _lamp_falloff(rng, height, width)[..., None] * 1.6


def _brick_wall(rng, height, width):
    bricks = _ground(_texture("brick.png", rng, height, width), (0.36, 0.16, 0.10), rng)
    return bricks * _lamp_falloff(rng, height, width)[..., None] * 1.4


_PROCEDURAL = {
    "room": _room, "brick_wall": _brick_wall, "sky": _sky, "meadow": _meadow,
    "hills": _hills, "gravel_path": _gravel_path,
}


def _linear_to_srgb8(linear: np.ndarray) -> np.ndarray:
    v = np.clip(linear, 0.0, 1.0)
    encoded = np.where(v <= 0.0031308, 12.92 * v, 1.055 * np.power(v, 1 / 2.4) - 0.055)
    return (encoded * 255.0 + 0.5).astype(np.uint8)


def render_scene(scene: str, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Render one scene of type ``scene`` at the sensor frame size.

    Parameters
    ----------
    scene : str
        A key of :data:`SCENE_TYPES`.
    width, height : int
        Output size in pixels.
    rng : numpy.random.Generator
        Drives the procedural content, the crop, the scale and the flip.

    Returns
    -------
    numpy.ndarray
        ``(height, width, 3)`` float32 linear RGB reflectance-like values in [0, 1], before
        the scene group's lighting.
    """
    if scene not in SCENE_TYPES:
        raise ValueError(f"unknown scene type {scene!r}; known: {sorted(SCENE_TYPES)}")
    kind = SCENE_TYPES[scene]
    if kind.source.startswith("photo:"):
        source = _skimage_picture(kind.source.split(":", 1)[1])
    else:
        source = _linear_to_srgb8(_PROCEDURAL[scene](rng, CANVAS_HEIGHT, CANVAS_WIDTH))
    return srgb_to_linear(_crop_flip_resize(source, width, height, rng))
