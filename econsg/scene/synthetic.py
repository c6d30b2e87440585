"""The embedded procedural scene: a textured indoor room with labelled furniture and an exact ray caster.

World frame: metres, z up, the room is the box [-Lx/2, Lx/2] x [-Ly/2, Ly/2] x [0, Lz] with
`room_size = (Lx, Ly, Lz)`. Structure classes come first in the class list (`wall`, `floor`,
`ceiling`), then every given object class, so class ids do not depend on the seed. Instance ids:
0 = none, 1-4 the walls, 5 the floor, 6 the ceiling, then one id per object (all primitives of an
object share it).

Appearance is view-independent: albedo = a base colour drawn from a class palette (palettes overlap
between classes, so colour alone does not give the label) plus a smooth pattern (a weighted sum of
a few sinusoids of the 3D hit point, wavelengths 0.4-1.5 m), times Lambertian shading from two fixed
lights and an ambient term. No per-pixel noise, so 3D Gaussian splatting can fit the images.

Cameras use the OpenCV convention (x right, y down, z forward); rays go through pixel centres
(j + 0.5, i + 0.5); depth is metric z-depth.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image

from econsg.artifacts import staged_folder
from econsg.errors import EconsgError
from econsg.progress import track

if TYPE_CHECKING:
    from econsg.config.synth import SynthParams

STRUCTURE_CLASSES: tuple[str, ...] = ("wall", "floor", "ceiling")
DEFAULT_OBJECT_CLASSES: tuple[str, ...] = ("table", "chair", "sofa", "lamp", "cabinet", "bed", "plant", "tv", "shelf")
DEFAULT_ROOM_SIZE: tuple[float, float, float] = (6.0, 5.0, 2.8)
MIN_ROOM_SIZE: tuple[float, float, float] = (4.5, 4.5, 2.2)
MAX_ROOM_SIZE: tuple[float, float, float] = (20.0, 20.0, 6.0)
MAX_OBJECTS = 16

CAMERA_WALL_GAP = 0.3  # metres between the camera path and the walls
CAMERA_PATH_CLEARANCE = 0.6  # metres between the camera path and any object footprint (roughly)
OBJECT_WALL_GAP = 1.0  # metres between object footprints and the walls
OBJECT_SPACING = 0.15  # metres between object footprints
OBJECT_AREA_PER_OBJECT = 1.6  # square metres of the object region budgeted per object (capacity heuristic)
CAMERA_TRIES = 12  # draws per camera pose before the least blocked one is kept
PROBE_WIDTH = 32  # pixels across the blocking probe image (its height keeps the aspect ratio)
NEAR_DEPTH = 1.0  # metres: probe pixels closer than this count as blocked
MAX_BLOCKED_FRACTION = 0.25  # a pose is accepted when at most this fraction of its probe is blocked
SUPERELLIPSE_EXPONENT = 8.0  # the camera path is |x/a|^8 + |y/b|^8 = 1: close to the walls, corners rounded

KEY_LIGHT = (0.4, 0.25, 1.0)  # direction towards the main light (normalised when used)
FILL_LIGHT = (-0.6, -0.8, 0.3)
AMBIENT, KEY_STRENGTH, FILL_STRENGTH = 0.4, 0.5, 0.2
RAY_EPS = 1e-9

DEPTH_SCALE = 1000.0  # depth PNG value / DEPTH_SCALE = metres
UNLABELED_PNG = 255

WALL_INSTANCES = (1, 2, 3, 4)
FLOOR_INSTANCE = 5
CEILING_INSTANCE = 6
FIRST_OBJECT_INSTANCE = 7

PrimitiveKind = Literal["plane", "box", "cylinder", "sphere"]

# Named base colours (linear-ish RGB in [0, 1]); classes share names so palettes overlap.
COLOURS = MappingProxyType(
    {
        "wood_light": (0.72, 0.55, 0.36),
        "wood_dark": (0.45, 0.30, 0.18),
        "white": (0.88, 0.87, 0.84),
        "grey": (0.55, 0.56, 0.58),
        "black": (0.16, 0.16, 0.18),
        "blue": (0.27, 0.36, 0.60),
        "green": (0.30, 0.55, 0.28),
        "red": (0.66, 0.26, 0.21),
        "beige": (0.82, 0.75, 0.60),
        "teal": (0.22, 0.50, 0.50),
        "terracotta": (0.70, 0.40, 0.28),
        "pale_blue": (0.70, 0.78, 0.85),
    }
)
PALETTES = MappingProxyType(
    {
        "wall": ("white", "beige", "pale_blue"),
        "floor": ("wood_light", "wood_dark", "grey"),
        "ceiling": ("white",),
        "table": ("wood_light", "wood_dark", "white"),
        "chair": ("wood_dark", "red", "black", "blue"),
        "sofa": ("grey", "blue", "beige", "red", "teal"),
        "lamp": ("white", "beige", "black"),
        "cabinet": ("wood_light", "white", "grey"),
        "bed": ("beige", "white", "blue"),
        "plant": ("green", "teal"),
        "tv": ("black",),
        "shelf": ("wood_light", "wood_dark", "white"),
        "pot": ("terracotta", "grey", "white"),
        "metal": ("black", "grey"),
        "trim": ("wood_dark", "black", "wood_light"),
    }
)
COLOUR_JITTER = 0.06


@dataclass(frozen=True)
class Primitive:
    """One analytic surface of the scene.

    kind: "plane" (infinite, one-sided: hit only from the side `normal` points to), "box" (rotated by
    `yaw` radians about +z around its centre), "cylinder" (vertical axis), "sphere".
    center: a point on the plane, or the solid's centre, metres [3].
    half_size: box half extents in its own frame; cylinder (radius, radius, half height); sphere
    (radius, radius, radius); unused (zeros) for planes. Metres [3].
    color: base albedo RGB in [0, 1]; waves: pattern terms (kx, ky, kz [rad/m], phase [rad], weight),
    weights summing to 1; tint: RGB amplitude of the pattern.
    """

    kind: PrimitiveKind
    center: tuple[float, float, float]
    half_size: tuple[float, float, float]
    class_id: int
    instance_id: int
    color: tuple[float, float, float]
    waves: tuple[tuple[float, float, float, float, float], ...]
    tint: tuple[float, float, float]
    yaw: float = 0.0
    normal: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class PlacedObject:
    """One piece of furniture: its footprint is the rectangle of half extents `half_extent` (metres)
    around `center_xy`, rotated by `yaw` radians; it stands on the floor and is `height` metres tall."""

    instance_id: int
    class_id: int
    class_name: str
    center_xy: tuple[float, float]
    yaw: float
    half_extent: tuple[float, float]
    height: float


@dataclass(frozen=True)
class Room:
    """A generated room: size (Lx, Ly, Lz) metres, the class list, the primitives and the objects."""

    size: tuple[float, float, float]
    class_names: tuple[str, ...]
    primitives: tuple[Primitive, ...]
    objects: tuple[PlacedObject, ...]

    def instance_classes(self) -> dict[int, int]:
        """Instance id -> class id for every instance in the room."""
        return {p.instance_id: p.class_id for p in self.primitives}


@dataclass(frozen=True, eq=False)
class RayCastResult:
    """One rendered view: rgb [H,W,3] float32 in [0,1], depth [H,W] float32 z-depth in metres (0 = no hit),
    class_id [H,W] int16 (IGNORE = -1 where nothing is hit), instance_id [H,W] int32 (0 = none)."""

    rgb: np.ndarray
    depth: np.ndarray
    class_id: np.ndarray
    instance_id: np.ndarray


# --------------------------------------------------------------------------------------------------
# Object recipes: (footprint half extents, parts). A part is (kind, local centre, half size, palette or
# None = the instance's own colour). Local frame: origin at the footprint centre on the floor, z up,
# the back of the object towards +y. Every part lies within the footprint, so footprints that do not
# overlap mean objects that do not intersect.

Part = tuple[PrimitiveKind, tuple[float, float, float], tuple[float, float, float], str | None]
Recipe = tuple[tuple[float, float], list[Part]]


def _table(rng: np.random.Generator) -> Recipe:
    hx, hy, top = 0.5 * rng.uniform(1.0, 1.3), 0.5 * rng.uniform(0.6, 0.8), rng.uniform(0.7, 0.76)
    return (hx, hy), [
        ("box", (0.0, 0.0, top - 0.025), (hx, hy, 0.025), None),
        ("box", (0.0, 0.0, 0.5 * (top - 0.05)), (0.5 * hx, 0.35 * hy, 0.5 * (top - 0.05)), None),
    ]


def _chair(rng: np.random.Generator) -> Recipe:
    h = 0.5 * rng.uniform(0.42, 0.5)
    seat = rng.uniform(0.43, 0.48)
    back = rng.uniform(0.85, 0.95)
    return (h, h), [
        ("box", (0.0, 0.0, 0.5 * seat), (h, h, 0.5 * seat), None),
        ("box", (0.0, h - 0.03, 0.5 * (seat + back)), (h, 0.03, 0.5 * (back - seat)), None),
    ]


def _sofa(rng: np.random.Generator) -> Recipe:
    hx, hy = 0.5 * rng.uniform(1.4, 1.7), 0.5 * rng.uniform(0.75, 0.85)
    seat, back = rng.uniform(0.4, 0.45), rng.uniform(0.8, 0.9)
    return (hx, hy), [
        ("box", (0.0, -0.1, 0.5 * seat), (hx, hy - 0.1, 0.5 * seat), None),
        ("box", (0.0, hy - 0.1, 0.5 * back), (hx, 0.1, 0.5 * back), None),
    ]


def _lamp(rng: np.random.Generator) -> Recipe:
    pole = rng.uniform(1.3, 1.5)
    shade = rng.uniform(0.18, 0.22)
    return (shade, shade), [
        ("cylinder", (0.0, 0.0, 0.015), (0.16, 0.16, 0.015), "metal"),
        ("cylinder", (0.0, 0.0, 0.5 * pole), (0.03, 0.03, 0.5 * pole), "metal"),
        ("sphere", (0.0, 0.0, pole + 0.6 * shade), (shade, shade, shade), None),
    ]


def _cabinet(rng: np.random.Generator) -> Recipe:
    hx, hy, h = 0.5 * rng.uniform(0.7, 0.9), 0.5 * rng.uniform(0.4, 0.5), rng.uniform(0.8, 1.0)
    return (hx, hy), [
        ("box", (0.0, 0.0, 0.5 * h), (hx - 0.02, hy - 0.02, 0.5 * h), None),
        ("box", (0.0, 0.0, h + 0.02), (hx, hy, 0.02), "trim"),
    ]


def _bed(rng: np.random.Generator) -> Recipe:
    hx, hy = 0.5 * rng.uniform(1.7, 1.9), 0.5 * rng.uniform(1.1, 1.3)
    base, mattress, head = 0.3, rng.uniform(0.5, 0.55), rng.uniform(0.9, 1.0)
    return (hx, hy), [
        ("box", (0.0, 0.0, 0.5 * base), (hx, hy, 0.5 * base), "trim"),
        ("box", (0.04, 0.0, 0.5 * (base + mattress)), (hx - 0.06, hy - 0.03, 0.5 * (mattress - base)), None),
        ("box", (-hx + 0.03, 0.0, 0.5 * head), (0.03, hy, 0.5 * head), "trim"),
    ]


def _plant(rng: np.random.Generator) -> Recipe:
    pot_r, pot_h = rng.uniform(0.14, 0.18), rng.uniform(0.28, 0.35)
    leaves = rng.uniform(0.28, 0.34)
    return (leaves, leaves), [
        ("cylinder", (0.0, 0.0, 0.5 * pot_h), (pot_r, pot_r, 0.5 * pot_h), "pot"),
        ("sphere", (0.0, 0.0, pot_h + 0.8 * leaves), (leaves, leaves, leaves), None),
    ]


def _tv(rng: np.random.Generator) -> Recipe:
    hx, hy, stand = 0.5 * rng.uniform(1.0, 1.2), 0.5 * rng.uniform(0.35, 0.45), rng.uniform(0.45, 0.5)
    screen_w, screen_h = hx - 0.05, 0.5 * rng.uniform(0.5, 0.6)
    return (hx, hy), [
        ("box", (0.0, 0.0, 0.5 * stand), (hx, hy, 0.5 * stand), "trim"),
        ("box", (0.0, 0.0, stand + 0.02 + screen_h), (screen_w, 0.03, screen_h), None),
    ]


def _shelf(rng: np.random.Generator) -> Recipe:
    hx, hy, h = 0.5 * rng.uniform(0.8, 1.0), 0.5 * rng.uniform(0.3, 0.4), rng.uniform(1.4, 1.7)
    return (hx, hy), [
        ("box", (0.0, 0.0, 0.5 * h), (hx - 0.02, hy - 0.02, 0.5 * h), None),
        ("box", (0.0, 0.0, h + 0.02), (hx, hy, 0.02), "trim"),
    ]


RECIPES: MappingProxyType[str, Callable[[np.random.Generator], Recipe]] = MappingProxyType(
    {
        "table": _table,
        "chair": _chair,
        "sofa": _sofa,
        "lamp": _lamp,
        "cabinet": _cabinet,
        "bed": _bed,
        "plant": _plant,
        "tv": _tv,
        "shelf": _shelf,
    }
)


# --------------------------------------------------------------------------------------------------
# Validation shared with SynthParams.


def object_capacity(room_size: Sequence[float]) -> int:
    """How many objects a room of this size is budgeted to hold (area of the object region / 1.6 m^2)."""
    lx, ly = float(room_size[0]), float(room_size[1])
    area = max(lx - 2 * OBJECT_WALL_GAP, 0.0) * max(ly - 2 * OBJECT_WALL_GAP, 0.0)
    return min(MAX_OBJECTS, int(area // OBJECT_AREA_PER_OBJECT))


def check_room_size(room_size: Sequence[float], where: str = "room_size") -> tuple[float, float, float]:
    """(Lx, Ly, Lz) as floats within MIN_ROOM_SIZE..MAX_ROOM_SIZE, or EconsgError naming `where`."""
    try:
        size = tuple(float(v) for v in room_size)
    except (TypeError, ValueError):
        raise EconsgError(f"{where}: {room_size!r} is not three numbers (x, y, height) in metres") from None
    if len(size) != 3 or not all(math.isfinite(v) for v in size):
        raise EconsgError(f"{where}: {room_size!r} is not three finite numbers (x, y, height) in metres")
    for axis, value, low, high in zip("xyz", size, MIN_ROOM_SIZE, MAX_ROOM_SIZE):
        if not low <= value <= high:
            raise EconsgError(f"{where}: {axis} = {value} m is outside [{low}, {high}] m")
    return size  # type: ignore[return-value]


def check_object_classes(object_classes: Sequence[str], where: str = "object_classes") -> tuple[str, ...]:
    """A non-empty tuple of unique, known object class names, or EconsgError naming `where`."""
    if isinstance(object_classes, str):
        raise EconsgError(f"{where}: got the string {object_classes!r}, expected a list of class names")
    classes = tuple(object_classes)
    if not classes:
        raise EconsgError(f"{where}: the class list is empty; expected at least one of {list(RECIPES)}")
    unknown = [name for name in classes if name not in RECIPES]
    if unknown:
        raise EconsgError(f"{where}: unknown classes {unknown}; the generator has shapes for {list(RECIPES)}")
    repeated = sorted({name for name in classes if classes.count(name) > 1})
    if repeated:
        raise EconsgError(f"{where}: classes {repeated} appear more than once; expected unique names")
    return classes


# --------------------------------------------------------------------------------------------------
# Room generation.


def _draw_colour(rng: np.random.Generator, palette: str) -> tuple[float, float, float]:
    names = PALETTES[palette]
    base = np.asarray(COLOURS[names[int(rng.integers(len(names)))]])
    colour = np.clip(base + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, 3), 0.05, 0.95)
    return tuple(float(c) for c in colour)  # type: ignore[return-value]


def _draw_texture(
    rng: np.random.Generator, stripe_axis: int | None = None
) -> tuple[tuple[tuple[float, float, float, float, float], ...], tuple[float, float, float]]:
    """Three sinusoids of random direction, wavelength 0.4-1.5 m, phase and weight; amplitude 0.1-0.22.

    `stripe_axis` forces the first wave to run along that world axis (floor planks)."""
    waves = []
    weights = rng.dirichlet(np.full(3, 2.0))
    for index in range(3):
        direction = rng.normal(size=3)
        if index == 0 and stripe_axis is not None:
            direction = np.eye(3)[stripe_axis]
        direction = direction / max(float(np.linalg.norm(direction)), 1e-12)
        wavelength = rng.uniform(0.4, 1.5)
        k = direction * (2.0 * math.pi / wavelength)
        waves.append((float(k[0]), float(k[1]), float(k[2]), float(rng.uniform(0, 2 * math.pi)), float(weights[index])))
    amplitude = rng.uniform(0.1, 0.22)
    tint = amplitude * (0.75 + 0.5 * rng.random(3))
    return tuple(waves), tuple(float(t) for t in tint)  # type: ignore[return-value]


def _structure_primitives(rng: np.random.Generator, size: tuple[float, float, float]) -> list[Primitive]:
    """Four walls, floor and ceiling as inward-facing planes (class ids 0, 1, 2)."""
    lx, ly, lz = size
    wall_colour = _draw_colour(rng, "wall")
    planes = [
        ((-lx / 2, 0.0, lz / 2), (1.0, 0.0, 0.0), 0, WALL_INSTANCES[0], wall_colour, None),
        ((lx / 2, 0.0, lz / 2), (-1.0, 0.0, 0.0), 0, WALL_INSTANCES[1], wall_colour, None),
        ((0.0, -ly / 2, lz / 2), (0.0, 1.0, 0.0), 0, WALL_INSTANCES[2], wall_colour, None),
        ((0.0, ly / 2, lz / 2), (0.0, -1.0, 0.0), 0, WALL_INSTANCES[3], wall_colour, None),
        ((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), 1, FLOOR_INSTANCE, _draw_colour(rng, "floor"), int(rng.integers(2))),
        ((0.0, 0.0, lz), (0.0, 0.0, -1.0), 2, CEILING_INSTANCE, _draw_colour(rng, "ceiling"), None),
    ]
    primitives = []
    for point, normal, class_id, instance_id, colour, stripe_axis in planes:
        waves, tint = _draw_texture(rng, stripe_axis)
        primitives.append(
            Primitive("plane", point, (0.0, 0.0, 0.0), class_id, instance_id, colour, waves, tint, normal=normal)
        )
    return primitives


def _draw_object_classes(rng: np.random.Generator, num_objects: int, num_classes: int) -> list[int]:
    """Indices into the class list: without replacement while possible, then another permutation, ..."""
    drawn: list[int] = []
    while len(drawn) < num_objects:
        drawn.extend(int(i) for i in rng.permutation(num_classes))
    return drawn[:num_objects]


def _footprint_axes(yaw: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([c, s]), np.array([-s, c])


def footprints_overlap(
    center_a: Sequence[float], half_a: Sequence[float], yaw_a: float,
    center_b: Sequence[float], half_b: Sequence[float], yaw_b: float, gap: float = 0.0,
) -> bool:
    """Whether two rotated rectangles (centres [2], half extents [2], yaw radians), each grown by gap/2, overlap.

    Separating-axis test over the four edge normals."""
    axes_a, axes_b = _footprint_axes(yaw_a), _footprint_axes(yaw_b)
    delta = np.asarray(center_b, dtype=float) - np.asarray(center_a, dtype=float)
    ha = np.asarray(half_a, dtype=float) + gap / 2
    hb = np.asarray(half_b, dtype=float) + gap / 2
    for axis in (*axes_a, *axes_b):
        ra = ha[0] * abs(axes_a[0] @ axis) + ha[1] * abs(axes_a[1] @ axis)
        rb = hb[0] * abs(axes_b[0] @ axis) + hb[1] * abs(axes_b[1] @ axis)
        if abs(delta @ axis) > ra + rb:
            return False
    return True


def footprint_corners(center_xy: Sequence[float], half_extent: Sequence[float], yaw: float) -> np.ndarray:
    """The four corners [4,2] of a rotated rectangle (metres)."""
    u, v = _footprint_axes(yaw)
    signs = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]], dtype=float)
    return np.asarray(center_xy, dtype=float) + (signs[:, :1] * half_extent[0]) * u + (signs[:, 1:] * half_extent[1]) * v


def camera_path_semi_axes(room_size: Sequence[float]) -> tuple[float, float]:
    """Semi-axes (a, b) in metres of the superellipse |x/a|^8 + |y/b|^8 = 1 the cameras move on."""
    return room_size[0] / 2 - CAMERA_WALL_GAP, room_size[1] / 2 - CAMERA_WALL_GAP


def _inside_object_region(corners: np.ndarray, room_size: tuple[float, float, float]) -> bool:
    lx, ly, _ = room_size
    if np.any(np.abs(corners[:, 0]) > lx / 2 - OBJECT_WALL_GAP) or np.any(np.abs(corners[:, 1]) > ly / 2 - OBJECT_WALL_GAP):
        return False
    a, b = camera_path_semi_axes(room_size)
    a, b = a - CAMERA_PATH_CLEARANCE, b - CAMERA_PATH_CLEARANCE
    value = np.abs(corners[:, 0] / a) ** SUPERELLIPSE_EXPONENT + np.abs(corners[:, 1] / b) ** SUPERELLIPSE_EXPONENT
    return bool(np.all(value <= 1.0))


def _propose_pose(
    rng: np.random.Generator, half: tuple[float, float], room_size: tuple[float, float, float]
) -> tuple[float, float, float]:
    """One candidate (x, y, yaw) for a footprint of half extents `half`.

    Three times in four the object stands with its back (local +y) to a random wall, pushed against
    the edge of the object region (how furniture is arranged, and what lets large pieces fit); else
    anywhere, at a right angle plus up to +-20 degrees."""
    x_max, y_max = room_size[0] / 2 - OBJECT_WALL_GAP, room_size[1] / 2 - OBJECT_WALL_GAP
    if rng.random() < 0.75:
        side = int(rng.integers(4))  # +y, -x, -y, +x walls: yaw turns local +y towards that wall
        yaw = side * (math.pi / 2) + float(rng.uniform(-0.1, 0.1))
    else:
        side = -1
        yaw = float(rng.integers(4) * (math.pi / 2) + rng.uniform(-0.35, 0.35))
    c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
    bound_x, bound_y = c * half[0] + s * half[1], s * half[0] + c * half[1]
    x = float(rng.uniform(-x_max + bound_x, x_max - bound_x)) if x_max > bound_x else 0.0
    y = float(rng.uniform(-y_max + bound_y, y_max - bound_y)) if y_max > bound_y else 0.0
    inset = float(rng.uniform(0.0, 0.15))
    if side == 0:
        y = y_max - bound_y - inset
    elif side == 1:
        x = -x_max + bound_x + inset
    elif side == 2:
        y = -y_max + bound_y + inset
    elif side == 3:
        x = x_max - bound_x - inset
    return x, y, yaw


def _place_footprints(
    rng: np.random.Generator,
    half_extents: list[tuple[float, float]],
    room_size: tuple[float, float, float],
    tries_per_object: int = 300,
    restarts: int = 30,
) -> list[tuple[float, float, float]]:
    """(x, y, yaw) per footprint, non-overlapping (OBJECT_SPACING apart) inside the object region.

    Rejection sampling of `_propose_pose`, largest footprint first, restarting from scratch when an
    object finds no place."""
    order = sorted(range(len(half_extents)), key=lambda i: -half_extents[i][0] * half_extents[i][1])
    for _restart in range(restarts):
        placed: dict[int, tuple[float, float, float]] = {}
        for index in order:
            half = half_extents[index]
            for _try in range(tries_per_object):
                x, y, yaw = _propose_pose(rng, half, room_size)
                if not _inside_object_region(footprint_corners((x, y), half, yaw), room_size):
                    continue
                if any(
                    footprints_overlap((x, y), half, yaw, (ox, oy), half_extents[j], oyaw, OBJECT_SPACING)
                    for j, (ox, oy, oyaw) in placed.items()
                ):
                    continue
                placed[index] = (x, y, yaw)
                break
            else:
                break
        if len(placed) == len(half_extents):
            return [placed[i] for i in range(len(half_extents))]
    raise EconsgError(
        f"num_objects: could not place {len(half_extents)} objects without overlap in a room of size "
        f"{list(room_size)} m; use fewer objects or a larger room_size"
    )


def generate_room(
    rng: np.random.Generator,
    num_objects: int,
    object_classes: Sequence[str] = DEFAULT_OBJECT_CLASSES,
    room_size: Sequence[float] = DEFAULT_ROOM_SIZE,
) -> Room:
    """A random room of `room_size` (x, y, height) metres holding `num_objects` objects of `object_classes`.

    Class list: wall, floor, ceiling, then all of `object_classes` (ids stable across seeds). Objects
    stand on the floor, inside the room, apart from each other and from the camera path."""
    if not isinstance(rng, np.random.Generator):
        raise EconsgError(f"rng: got {type(rng).__name__}, expected a numpy.random.Generator")
    size = check_room_size(room_size)
    classes = check_object_classes(object_classes)
    capacity = object_capacity(size)
    if isinstance(num_objects, bool) or not isinstance(num_objects, (int, np.integer)) or not 0 <= num_objects <= capacity:
        raise EconsgError(
            f"num_objects: {num_objects!r} is not an integer in [0, {capacity}] (what a room of {list(size)} m holds)"
        )
    class_names = (*STRUCTURE_CLASSES, *classes)
    primitives = _structure_primitives(rng, size)
    drawn = _draw_object_classes(rng, int(num_objects), len(classes))
    recipes = [RECIPES[classes[i]](rng) for i in drawn]
    poses = _place_footprints(rng, [recipe[0] for recipe in recipes], size)
    objects = []
    for number, (class_index, (half, parts), (x, y, yaw)) in enumerate(zip(drawn, recipes, poses)):
        class_id = len(STRUCTURE_CLASSES) + class_index
        instance_id = FIRST_OBJECT_INSTANCE + number
        own_colour = _draw_colour(rng, classes[class_index])
        cos_yaw, sin_yaw = math.cos(yaw), math.sin(yaw)
        top = 0.0
        for kind, (px, py, pz), part_half, palette in parts:
            centre = (x + cos_yaw * px - sin_yaw * py, y + sin_yaw * px + cos_yaw * py, pz)
            colour = own_colour if palette is None else _draw_colour(rng, palette)
            waves, tint = _draw_texture(rng)
            primitives.append(
                Primitive(
                    kind, centre, part_half, class_id, instance_id, colour, waves, tint, yaw=yaw if kind == "box" else 0.0
                )
            )
            top = max(top, pz + part_half[2])
        objects.append(PlacedObject(instance_id, class_id, classes[class_index], (x, y), yaw, half, top))
    return Room(size=size, class_names=class_names, primitives=tuple(primitives), objects=tuple(objects))


# --------------------------------------------------------------------------------------------------
# Cameras.


def intrinsics_from_fov(width: int, height: int, fov_deg: float) -> np.ndarray:
    """3x3 pinhole K with horizontal field of view `fov_deg`, square pixels, principal point at the centre."""
    focal = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    return np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])


def look_at(position: Sequence[float], target: Sequence[float]) -> np.ndarray:
    """OpenCV camera-to-world [4,4] at `position` looking at `target`, world +z up (not straight up/down)."""
    position = np.asarray(position, dtype=float)
    forward = np.asarray(target, dtype=float) - position
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    norm = np.linalg.norm(right)
    if norm < 1e-6:
        raise EconsgError(f"look_at: view direction {forward.tolist()} is vertical; the camera roll is undefined")
    right /= norm
    down = np.cross(forward, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, forward, position
    return c2w


def held_out_view_mask(num_views: int, test_every: int) -> np.ndarray:
    """[V] bool: view v is a test view when v % test_every == test_every - 1 (interleaved, nerfstudio style)."""
    return np.arange(num_views) % test_every == test_every - 1


def camera_trajectory(
    rng: np.random.Generator, room: Room, num_views: int, width: int, height: int, fov_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    """Ks [V,3,3] and OpenCV c2ws [V,4,4] on two rings around the room.

    The first ceil(V/2) views go round a low ring (37% of the room height), the rest round a high
    ring (65%), offset by half a step. Rings follow the superellipse |x/a|^8 + |y/b|^8 = 1 kept
    CAMERA_WALL_GAP from the walls, with small jitter in angle, radius and height; each camera looks at
    a point near the room centre (jittered), so objects are seen from all sides. A pose whose view is
    mostly blocked by a nearby object (see `blocked_fraction`) is redrawn with wider angle jitter, up
    to CAMERA_TRIES times; the least blocked draw is kept."""
    if not isinstance(num_views, (int, np.integer)) or num_views < 1:
        raise EconsgError(f"num_views: {num_views!r}, expected a positive integer")
    if not isinstance(width, (int, np.integer)) or not isinstance(height, (int, np.integer)) or width < 1 or height < 1:
        raise EconsgError(f"width/height: {width!r}x{height!r}, expected positive integers")
    if not 1.0 < float(fov_deg) < 179.0:
        raise EconsgError(f"fov_deg: {fov_deg!r}, expected a horizontal field of view in (1, 179) degrees")
    lz = room.size[2]
    K = intrinsics_from_fov(int(width), int(height), float(fov_deg))
    probe_size = (PROBE_WIDTH, max(1, round(PROBE_WIDTH * int(height) / int(width))))
    probe_K = intrinsics_from_fov(*probe_size, float(fov_deg))
    n_low = (num_views + 1) // 2
    rings = [(n_low, 0.37 * lz, 0.0), (num_views - n_low, 0.65 * lz, 0.5)]
    c2ws = []
    for count, ring_height, offset in rings:
        for k in range(count):
            best, best_blocked = None, math.inf
            for attempt in range(CAMERA_TRIES):
                spread = 0.2 + 0.3 * attempt / max(CAMERA_TRIES - 1, 1)  # of one angular step
                c2w = _ring_pose(rng, room, (k + offset + rng.uniform(-spread, spread)) / count, ring_height)
                blocked = blocked_fraction(room, probe_K, c2w, *probe_size)
                if blocked < best_blocked:
                    best, best_blocked = c2w, blocked
                if blocked <= MAX_BLOCKED_FRACTION:
                    break
            c2ws.append(best)
    return np.repeat(K[None], num_views, axis=0), np.stack(c2ws)


def _ring_pose(rng: np.random.Generator, room: Room, turn: float, ring_height: float) -> np.ndarray:
    """A c2w on the camera superellipse at `turn` (fraction of a full turn), jittered, looking near the centre."""
    lx, ly, _ = room.size
    a, b = camera_path_semi_axes(room.size)
    angle = 2 * math.pi * turn
    c, s = math.cos(angle), math.sin(angle)
    radius = (abs(c / a) ** SUPERELLIPSE_EXPONENT + abs(s / b) ** SUPERELLIPSE_EXPONENT) ** (-1 / SUPERELLIPSE_EXPONENT)
    radius -= rng.uniform(0.0, 0.08)
    position = (radius * c, radius * s, ring_height + rng.uniform(-0.05, 0.05))
    target = (rng.uniform(-0.12, 0.12) * lx, rng.uniform(-0.12, 0.12) * ly, rng.uniform(0.35, 0.65))
    return look_at(position, target)


def blocked_fraction(room: Room, K: np.ndarray, c2w: np.ndarray, width: int, height: int) -> float:
    """Fraction of the pixels of a (coarse) view whose z-depth is below NEAR_DEPTH metres."""
    depth = ray_cast(room, K, c2w, width, height).depth
    return float(np.mean(depth < NEAR_DEPTH))


# --------------------------------------------------------------------------------------------------
# Ray casting.


def camera_rays(K: np.ndarray, c2w: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Origin [3] and world directions [H*W,3] through pixel centres (j+0.5, i+0.5), row-major.

    Directions are scaled to unit camera-z component, so the ray parameter t of a hit is its z-depth."""
    K = np.asarray(K, dtype=np.float64)
    c2w = np.asarray(c2w, dtype=np.float64)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise EconsgError(f"K: {K.tolist()} is not a 3x3 pinhole matrix with positive focal lengths")
    if c2w.shape != (4, 4) or not np.all(np.isfinite(c2w)):
        raise EconsgError(f"c2w: shape {c2w.shape}, expected a finite 4x4 camera-to-world matrix")
    if not isinstance(width, (int, np.integer)) or not isinstance(height, (int, np.integer)) or width < 1 or height < 1:
        raise EconsgError(f"width/height: {width!r}x{height!r}, expected positive integers")
    jj, ii = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    pixels = np.stack([jj.ravel(), ii.ravel(), np.ones(jj.size)], axis=0)
    cam = np.linalg.solve(K, pixels)
    cam = cam / cam[2:3]
    dirs = (c2w[:3, :3] @ cam).T
    return c2w[:3, 3].copy(), dirs


def _rotate_z(vectors: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    out = vectors.copy()
    out[..., 0] = c * vectors[..., 0] - s * vectors[..., 1]
    out[..., 1] = s * vectors[..., 0] + c * vectors[..., 1]
    return out


def _hit_plane(origin: np.ndarray, dirs: np.ndarray, prim: Primitive) -> np.ndarray:
    normal = np.asarray(prim.normal)
    denom = dirs @ normal
    with np.errstate(divide="ignore", invalid="ignore"):
        t = ((np.asarray(prim.center) - origin) @ normal) / denom
    return np.where((denom < -1e-12) & (t > RAY_EPS), t, np.inf)


def _hit_box(origin: np.ndarray, dirs: np.ndarray, prim: Primitive) -> np.ndarray:
    o = _rotate_z(origin - np.asarray(prim.center), -prim.yaw)
    d = _rotate_z(dirs, -prim.yaw)
    half = np.asarray(prim.half_size)
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-half - o) / d
        t2 = (half - o) / d
    t_near = np.fmax.reduce(np.fmin(t1, t2), axis=1)
    t_far = np.fmin.reduce(np.fmax(t1, t2), axis=1)
    return np.where((t_near <= t_far) & (t_near > RAY_EPS), t_near, np.inf)


def _hit_cylinder(origin: np.ndarray, dirs: np.ndarray, prim: Primitive) -> np.ndarray:
    o = origin - np.asarray(prim.center)
    radius, half_height = prim.half_size[0], prim.half_size[2]
    a = dirs[:, 0] ** 2 + dirs[:, 1] ** 2
    b = 2 * (o[0] * dirs[:, 0] + o[1] * dirs[:, 1])
    c = o[0] ** 2 + o[1] ** 2 - radius**2
    disc = b * b - 4 * a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * a)
        side_ok = (a > 1e-15) & (disc >= 0) & (t_side > RAY_EPS) & (np.abs(o[2] + t_side * dirs[:, 2]) <= half_height)
        best = np.where(side_ok, t_side, np.inf)
        for cap in (-half_height, half_height):
            t_cap = (cap - o[2]) / dirs[:, 2]
            x = o[0] + t_cap * dirs[:, 0]
            y = o[1] + t_cap * dirs[:, 1]
            cap_ok = np.isfinite(t_cap) & (t_cap > RAY_EPS) & (x * x + y * y <= radius**2)
            best = np.where(cap_ok & (t_cap < best), t_cap, best)
    return best


def _hit_sphere(origin: np.ndarray, dirs: np.ndarray, prim: Primitive) -> np.ndarray:
    o = origin - np.asarray(prim.center)
    radius = prim.half_size[0]
    a = np.einsum("ij,ij->i", dirs, dirs)
    b = 2 * (dirs @ o)
    c = o @ o - radius**2
    disc = b * b - 4 * a * c
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * a)
    return np.where((disc >= 0) & (t > RAY_EPS), t, np.inf)


def _normals(prim: Primitive, points: np.ndarray) -> np.ndarray:
    """Unit outward normals [N,3] of `prim` at surface points [N,3] (planes: their inward normal)."""
    if prim.kind == "plane":
        return np.broadcast_to(np.asarray(prim.normal), points.shape).copy()
    local = points - np.asarray(prim.center)
    if prim.kind == "sphere":
        return local / np.linalg.norm(local, axis=1, keepdims=True)
    if prim.kind == "box":
        local = _rotate_z(local, -prim.yaw)
        axis = np.argmax(np.abs(local) / np.asarray(prim.half_size), axis=1)
        normal = np.zeros_like(local)
        rows = np.arange(len(local))
        normal[rows, axis] = np.sign(local[rows, axis])
        return _rotate_z(normal, prim.yaw)
    radius, half_height = prim.half_size[0], prim.half_size[2]
    radial = np.hypot(local[:, 0], local[:, 1])
    on_cap = np.abs(local[:, 2]) - half_height > radial - radius
    normal = np.zeros_like(local)
    safe = np.maximum(radial, 1e-12)
    normal[:, 0] = np.where(on_cap, 0.0, local[:, 0] / safe)
    normal[:, 1] = np.where(on_cap, 0.0, local[:, 1] / safe)
    normal[:, 2] = np.where(on_cap, np.sign(local[:, 2]), 0.0)
    return normal


def _albedo(prim: Primitive, points: np.ndarray) -> np.ndarray:
    """Base colour plus the smooth pattern at world points [N,3] -> RGB [N,3] in [0,1]."""
    waves = np.asarray(prim.waves)  # [k,5]
    pattern = np.sin(points @ waves[:, :3].T + waves[:, 3]) @ waves[:, 4]
    return np.clip(np.asarray(prim.color) + pattern[:, None] * np.asarray(prim.tint), 0.0, 1.0)


def shade(normals: np.ndarray) -> np.ndarray:
    """Lambertian shading factor [N] of unit normals [N,3]: ambient + key + fill light."""
    key = np.asarray(KEY_LIGHT) / np.linalg.norm(KEY_LIGHT)
    fill = np.asarray(FILL_LIGHT) / np.linalg.norm(FILL_LIGHT)
    return AMBIENT + KEY_STRENGTH * np.maximum(normals @ key, 0.0) + FILL_STRENGTH * np.maximum(normals @ fill, 0.0)


HIT_FUNCTIONS = MappingProxyType({"plane": _hit_plane, "box": _hit_box, "cylinder": _hit_cylinder, "sphere": _hit_sphere})


def ray_cast(room: Room, K: np.ndarray, c2w: np.ndarray, width: int, height: int) -> RayCastResult:
    """Render one view exactly: the nearest analytic hit per pixel centre.

    K [3,3] pixels, c2w [4,4] OpenCV camera-to-world. Returns rgb [H,W,3] float32 in [0,1], z-depth
    [H,W] float32 metres, class_id [H,W] int16, instance_id [H,W] int32 (misses: 0, IGNORE = -1, 0)."""
    origin, dirs = camera_rays(K, c2w, width, height)
    best_t = np.full(len(dirs), np.inf)
    best_index = np.full(len(dirs), -1, dtype=np.int64)
    for index, prim in enumerate(room.primitives):
        t = HIT_FUNCTIONS[prim.kind](origin, dirs, prim)
        closer = t < best_t
        best_t[closer] = t[closer]
        best_index[closer] = index
    hit = best_index >= 0
    rgb = np.zeros((len(dirs), 3))
    class_id = np.full(len(dirs), -1, dtype=np.int16)
    instance_id = np.zeros(len(dirs), dtype=np.int32)
    points = origin + np.where(hit, best_t, 0.0)[:, None] * dirs
    for index in np.unique(best_index[hit]):
        prim = room.primitives[index]
        mask = best_index == index
        rgb[mask] = _albedo(prim, points[mask]) * shade(_normals(prim, points[mask]))[:, None]
        class_id[mask] = prim.class_id
        instance_id[mask] = prim.instance_id
    depth = np.where(hit, best_t, 0.0)
    return RayCastResult(
        rgb=np.clip(rgb, 0.0, 1.0).reshape(height, width, 3).astype(np.float32),
        depth=depth.reshape(height, width).astype(np.float32),
        class_id=class_id.reshape(height, width),
        instance_id=instance_id.reshape(height, width),
    )


# --------------------------------------------------------------------------------------------------
# Dataset writing.


def _write_png(array: np.ndarray, path: Path) -> None:
    """Write uint8 RGB / uint8 or uint16 single-channel PNGs."""
    Image.fromarray(array).save(path)


def _encode_view(result: RayCastResult) -> dict[str, np.ndarray]:
    """The four PNG payloads of one view (uint8 RGB, uint16 mm depth, uint8 class, uint16 instance)."""
    depth_mm = np.round(result.depth.astype(np.float64) * DEPTH_SCALE)
    depth_mm = np.where((depth_mm >= 1) & (depth_mm <= np.iinfo(np.uint16).max), depth_mm, 0).astype(np.uint16)
    classes = np.where(result.class_id < 0, UNLABELED_PNG, result.class_id).astype(np.uint8)
    return {
        "images": np.round(result.rgb * 255.0).astype(np.uint8),
        "depth": depth_mm,
        "semantic": classes,
        "instance": result.instance_id.astype(np.uint16),
    }


def _transforms(K: np.ndarray, width: int, height: int, frames: list[dict]) -> dict:
    return {
        "camera_model": "PINHOLE",
        "w": int(width),
        "h": int(height),
        "fl_x": float(K[0, 0]),
        "fl_y": float(K[1, 1]),
        "cx": float(K[0, 2]),
        "cy": float(K[1, 2]),
        "depth_scale": DEPTH_SCALE,
        "frames": frames,
    }


def build_synthetic_scene(params: SynthParams) -> tuple[Room, np.ndarray, np.ndarray]:
    """The room and the cameras (Ks [V,3,3], OpenCV c2ws [V,4,4]) that `write_synthetic_dataset` renders.

    The room and the trajectory draw from independent generators spawned from `params.seed`, so
    changing num_views does not change the room."""
    room_rng, camera_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(params.seed).spawn(2))
    room = generate_room(room_rng, params.num_objects, params.object_classes, params.room_size)
    Ks, c2ws = camera_trajectory(camera_rng, room, params.num_views, params.width, params.height, params.fov_deg)
    return room, Ks, c2ws


def _write_dataset_files(root: Path, params: SynthParams, progress: bool) -> None:
    room, Ks, c2ws = build_synthetic_scene(params)
    if len(room.class_names) >= UNLABELED_PNG:
        raise EconsgError(f"object_classes: {len(room.class_names)} classes do not fit uint8 label PNGs (at most 254)")
    for folder in ("images", "depth", "semantic", "instance"):
        (root / folder).mkdir()
    is_test = held_out_view_mask(params.num_views, params.test_every)
    frames: dict[str, list[dict]] = {"train": [], "test": []}
    views = range(params.num_views)
    for view in track(views, "synth: ray casting views") if progress else views:
        name = f"frame_{view:04d}.png"
        result = ray_cast(room, Ks[view], c2ws[view], params.width, params.height)
        for folder, array in _encode_view(result).items():
            _write_png(array, root / folder / name)
        frames["test" if is_test[view] else "train"].append(
            {
                "file_path": f"images/{name}",
                "depth_file_path": f"depth/{name}",
                "semantic_file_path": f"semantic/{name}",
                "instance_file_path": f"instance/{name}",
                "transform_matrix": (c2ws[view] @ np.diag([1.0, -1.0, -1.0, 1.0])).tolist(),
            }
        )
    for split, split_frames in frames.items():
        transforms = _transforms(Ks[0], params.width, params.height, split_frames)
        (root / f"transforms_{split}.json").write_text(json.dumps(transforms, indent=1), encoding="utf-8")
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in room.class_names), encoding="utf-8")
    provenance = {
        "econsg": {
            "generator": "econsg.scene.synthetic",
            "version": 1,
            "params": params.model_dump(mode="json"),
            "class_names": list(room.class_names),
            "room_size": list(room.size),
            "instances": {str(k): room.class_names[v] for k, v in sorted(room.instance_classes().items())},
            "objects": [
                {
                    "instance_id": obj.instance_id,
                    "class_name": obj.class_name,
                    "center_xy": list(obj.center_xy),
                    "yaw_rad": obj.yaw,
                    "half_extent": list(obj.half_extent),
                    "height": obj.height,
                }
                for obj in room.objects
            ],
            "test_views": [int(v) for v in np.flatnonzero(is_test)],
        }
    }
    (root / "scene.json").write_text(json.dumps(provenance, indent=1), encoding="utf-8")


def check_replaceable(target: Path) -> None:
    """Refuse a `target` synth may not replace: a file, or a folder that holds something but no scene.json of an
    earlier synth run (a dataset of the user's, say), which replacing the whole folder would delete."""
    if target.exists() and not target.is_dir():
        raise EconsgError(f"{target}: exists and is not a directory; expected a dataset folder (or nothing) there")
    if target.is_dir() and any(target.iterdir()) and not (target / "scene.json").is_file():
        raise EconsgError(f"{target}: holds files but no scene.json of an earlier synth run; synth replaces the whole "
                          "folder, so it refuses this one: set paths.data to an empty or new folder")


def write_synthetic_dataset(out_dir: Path, params: SynthParams, progress: bool = True) -> Path:
    """Render the procedural room and write it as a Blender-style dataset at `out_dir`; returns `out_dir`.

    Layout: transforms_{train,test}.json (OpenGL poses, PINHOLE intrinsics, depth_scale 1000),
    images/ (uint8 RGB), depth/ (uint16 mm, 0 = invalid), semantic/ (uint8 class ids, 255 unlabeled),
    instance/ (uint16, 0 = none), classes.txt, scene.json (provenance). Written into a temporary
    sibling folder and renamed into place, so a failure leaves an existing dataset untouched."""
    out_dir = Path(out_dir)
    check_replaceable(out_dir)  # before any rendering
    with staged_folder(out_dir) as staging:  # as a store is written: what a killed run left is removed next time
        _write_dataset_files(staging, params, progress)
    return out_dir
