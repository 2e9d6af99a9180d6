"""Object orbits for multi-view generation (App. J.3): procedural objects ray-cast in numpy.

An object is a few solid primitives (spheres, cubes, square pyramids) in the demo colours, resting
around the origin. The camera circles it at a fixed elevation and distance, looking at the origin;
view ``k`` of ``num_views`` is at azimuth ``360° · k / num_views`` (view 0, the front, is the
input of multi-view generation, the others are what the model draws). A fixed world-space light
shades the faces (Lambert plus ambient), so a face's brightness follows it around the orbit.
Pixels are 2× supersampled. Everything is deterministic for a seed.

:func:`make_orbit_data` writes such objects as a dataset (``stiv-make-demo-data --kind=orbits``):
one video per object whose frames are its views in azimuth order, with an empty caption (the
multi-view model is trained without text, App. J.3).
"""

from __future__ import annotations

import dataclasses
import json
import os

import chex
import numpy as np

from stiv_jax.data import video_io
from stiv_jax.data.synthetic import COLORS

KINDS = ("sphere", "cube", "pyramid")
ELEVATION_DEG = 20.0
DISTANCE = 4.0
FOCAL = 2.2  # focal length in units of half the image width
LIGHT = np.array([0.5, 0.8, 0.6]) / np.linalg.norm([0.5, 0.8, 0.6])  # towards the light, world frame
AMBIENT = 0.35
BACKGROUND = (20, 20, 28)
_SUPERSAMPLE = 2
SIZE, FPS = 64, 8.0  # the dataset's frame size and frame rate (make_orbit_data's defaults)


@dataclasses.dataclass(frozen=True)
class Solid:
    """A primitive: ``kind`` in KINDS, ``center`` (x, y, z; y up), ``size`` (radius, half edge, or
    half base with height 2·size), ``color`` a demo colour name."""

    kind: str
    center: tuple[float, float, float]
    size: float
    color: str


def _planes(solid: Solid) -> tuple[np.ndarray, np.ndarray]:
    """Outward normals ``[P, 3]`` and offsets ``[P]`` of a convex solid: ``n · x <= d`` inside."""
    c, s = np.asarray(solid.center, float), solid.size
    if solid.kind == "cube":
        normals = np.concatenate([np.eye(3), -np.eye(3)])
        return normals, normals @ c + s
    # Square pyramid: base at y = c_y − s, apex at y = c_y + s, base half-width s.
    slopes = [np.array(v, float) for v in ((2, 1, 0), (-2, 1, 0), (0, 1, 2), (0, 1, -2))]
    normals = np.stack([np.array([0.0, -1.0, 0.0]), *(v / np.linalg.norm(v) for v in slopes)])
    apex = c + np.array([0.0, s, 0.0])
    offsets = np.concatenate([[-(c[1] - s)], normals[1:] @ apex])
    return normals, offsets


def _hit(solid: Solid, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance along each ray ``[N]`` to the solid (inf: missed) and the surface normal ``[N, 3]``."""
    if solid.kind == "sphere":
        oc = origin - np.asarray(solid.center)
        b = dirs @ oc
        disc = b**2 - (oc @ oc - solid.size**2)
        t = np.where(disc >= 0, -b - np.sqrt(np.maximum(disc, 0.0)), np.inf)
        t = np.where(t > 0, t, np.inf)
        points = origin + np.where(np.isfinite(t), t, 0.0)[:, None] * dirs
        return t, (points - np.asarray(solid.center)) / solid.size
    normals, offsets = _planes(solid)
    denom = dirs @ normals.T  # [N, P]
    dist = offsets - normals @ origin  # [P]: > 0 when the camera is on the inner side
    with np.errstate(divide="ignore", invalid="ignore"):
        t = dist[None] / denom
    entering = denom < 0
    t_in = np.where(entering, t, -np.inf).max(axis=1)
    t_out = np.where(denom > 0, t, np.inf).min(axis=1)
    parallel_outside = ((denom == 0) & (dist[None] < 0)).any(axis=1)
    hit = (t_in <= t_out) & (t_in > 0) & ~parallel_outside
    face = np.where(entering, t, -np.inf).argmax(axis=1)
    return np.where(hit, t_in, np.inf), normals[face]


def camera_rays(azimuth_deg: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera position ``[3]`` and unit ray directions ``[size·size·ss², 3]`` (row-major, 2× supersampled)."""
    az, el = np.radians(azimuth_deg), np.radians(ELEVATION_DEG)
    eye = DISTANCE * np.array([np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)])
    forward = -eye / np.linalg.norm(eye)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    n = size * _SUPERSAMPLE
    u = (np.arange(n) + 0.5) / n * 2 - 1
    ys, xs = np.meshgrid(-u, u, indexing="ij")  # image y grows downwards
    dirs = FOCAL * forward + xs[..., None] * right + ys[..., None] * up
    dirs = dirs.reshape(-1, 3)
    return eye, dirs / np.linalg.norm(dirs, axis=1, keepdims=True)


def render_view(solids: list[Solid], azimuth_deg: float, size: int) -> np.ndarray:
    """``uint8 [size, size, 3]``: the solids seen from ``azimuth_deg`` (module docstring)."""
    eye, dirs = camera_rays(azimuth_deg, size)
    depth = np.full(len(dirs), np.inf)
    rgb = np.broadcast_to(np.asarray(BACKGROUND, float), (len(dirs), 3)).copy()
    for solid in solids:
        t, normal = _hit(solid, eye, dirs)
        nearer = t < depth
        shade = AMBIENT + (1 - AMBIENT) * np.clip(normal @ LIGHT, 0.0, 1.0)
        rgb[nearer] = shade[nearer, None] * np.asarray(COLORS[solid.color], float)
        depth = np.minimum(depth, t)
    pixels = rgb.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE, 3).mean(axis=(1, 3))
    return np.round(pixels).astype(np.uint8)


def render_orbit(solids: list[Solid], num_views: int, size: int) -> np.ndarray:
    """``uint8 [num_views, size, size, 3]``: views at azimuths ``360° · k / num_views``."""
    out = np.stack([render_view(solids, 360.0 * k / num_views, size) for k in range(num_views)])
    chex.assert_shape(out, (num_views, size, size, 3))
    return out


def random_object(rng: np.random.Generator) -> list[Solid]:
    """One to three solids of random kinds and colours, resting on the plane y = −0.6 around the
    origin (a single solid is centred; composites are spread so that views differ)."""
    count = int(rng.integers(1, 4))
    solids = []
    for i in range(count):
        kind = KINDS[int(rng.integers(len(KINDS)))]
        size = float(rng.uniform(0.35, 0.6)) if count == 1 else float(rng.uniform(0.25, 0.4))
        angle = 2 * np.pi * (i / count + rng.uniform(0, 0.2))
        spread = 0.0 if count == 1 else 0.65
        center = (spread * np.cos(angle), -0.6 + size, spread * np.sin(angle))
        solids.append(Solid(kind, center, size, list(COLORS)[int(rng.integers(len(COLORS)))]))
    return solids


def orbit_objects(num_objects: int, seed: int) -> list[list[Solid]]:
    """The objects of dataset ``seed``: object ``i`` depends only on ``(seed, i)``."""
    return [random_object(np.random.default_rng([seed, i])) for i in range(num_objects)]


def make_orbit_data(
    out: str, num_objects: int = 400, seed: int = 0, size: int = SIZE, num_views: int = 7, fps: float = FPS
) -> list[dict]:
    """Writes ``out/videos/NNNNN.mp4`` (one orbit per object, a view per frame) and
    ``out/captions.jsonl`` (empty captions; ``"object"``: the solids, for reference)."""
    os.makedirs(os.path.join(out, "videos"), exist_ok=True)
    entries = []
    for i, solids in enumerate(orbit_objects(num_objects, seed)):
        rel = f"videos/{i:05d}.mp4"
        video_io.write_video(os.path.join(out, rel), render_orbit(solids, num_views, size), fps)
        entries.append({"video": rel, "caption": "", "object": [dataclasses.asdict(s) for s in solids]})
    with open(os.path.join(out, "captions.jsonl"), "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in entries)
    return entries
