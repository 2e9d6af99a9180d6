"""The object-orbit renderer (multi-view data, App. J.3) against projective geometry."""

import numpy as np

from stiv_jax.data import orbits
from stiv_jax.data.synthetic import COLORS

SIZE = 64


def silhouette(view: np.ndarray) -> np.ndarray:
    """Pixels any sub-sample of which hit the object (the background colour is exact elsewhere)."""
    return (view != np.asarray(orbits.BACKGROUND, np.uint8)).any(axis=-1)


def projected_width(points: np.ndarray, azimuth_deg: float) -> float:
    """Horizontal extent in pixels of ``points [N, 3]`` projected by the orbit camera (pinhole)."""
    az, el = np.radians(azimuth_deg), np.radians(orbits.ELEVATION_DEG)
    eye = orbits.DISTANCE * np.array([np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)])
    forward = -eye / np.linalg.norm(eye)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    rel = points - eye
    x = orbits.FOCAL * (rel @ right) / (rel @ forward)  # in half image widths
    return float(np.ptp(x) * SIZE / 2)


def test_a_sphere_looks_the_same_from_everywhere_at_its_projected_size():
    r = 0.8
    views = orbits.render_orbit([orbits.Solid("sphere", (0.0, 0.0, 0.0), r, "green")], 7, SIZE)
    masks = [silhouette(v) for v in views]
    for m in masks[1:]:
        assert (m != masks[0]).sum() <= 2  # antialiased rim pixels at most
    # A sphere of radius r at distance D subtends asin(r / D); the image plane is FOCAL half-widths away.
    radius_px = orbits.FOCAL * np.tan(np.arcsin(r / orbits.DISTANCE)) * SIZE / 2
    # a pixel counts when one of its 2x2 sub-samples (0.35 px from its centre) falls on the disc
    assert np.pi * (radius_px - 0.5) ** 2 <= masks[0].sum() <= np.pi * (radius_px + 0.5) ** 2
    ys, xs = np.nonzero(masks[0])
    assert abs(xs.mean() + 0.5 - SIZE / 2) < 0.5 and abs(ys.mean() + 0.5 - SIZE / 2) < 0.5  # centred


def test_a_cube_is_widest_seen_along_its_diagonal():
    views = orbits.render_orbit([orbits.Solid("cube", (0.0, 0.0, 0.0), 0.6, "red")], 8, SIZE)
    width = [np.ptp(np.nonzero(silhouette(v).any(axis=0))[0]) + 1 for v in views]
    assert width[0] == width[2] == width[4] == width[6]  # the four face-on views (90° symmetry)
    corners = 0.6 * np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
    for k in (0, 1):  # face-on and edge-on: the hull of the projected corners, to a pixel
        assert abs(width[k] - projected_width(corners, 45.0 * k)) <= 1.5, (k, width[k])
    assert width[1] > width[0] + 4
    lit = [views[k][silhouette(views[k])].astype(float).mean() for k in range(8)]
    assert len({round(v, 3) for v in lit}) > 1  # the world-fixed light: faces change brightness


def test_a_pyramid_narrows_upwards_and_colours_are_the_demo_colours():
    view = orbits.render_view([orbits.Solid("pyramid", (0.0, 0.0, 0.0), 0.7, "yellow")], 0.0, SIZE)
    mask = silhouette(view)
    rows = np.nonzero(mask.any(axis=1))[0]
    widths = mask[rows].sum(axis=1)
    assert widths[2] < widths[len(widths) // 2] < widths[-3]  # apex at the top
    hue = view[mask].astype(float)
    ratio = hue / hue.max(axis=1, keepdims=True)
    target = np.asarray(COLORS["yellow"], float) / max(COLORS["yellow"])
    np.testing.assert_allclose(np.median(ratio, axis=0), target, atol=0.05)  # shading keeps the hue


def test_random_objects_are_seeded_and_their_views_differ():
    a = orbits.render_orbit(orbits.random_object(np.random.default_rng(3)), 7, 32)
    b = orbits.render_orbit(orbits.random_object(np.random.default_rng(3)), 7, 32)
    np.testing.assert_array_equal(a, b)
    objects = [orbits.random_object(np.random.default_rng(s)) for s in range(20)]
    assert {len(o) for o in objects} == {1, 2, 3} and {s.kind for o in objects for s in o} == set(orbits.KINDS)
    for solids in objects:
        for s in solids:  # every solid rests on the floor y = -0.6
            bottom = s.center[1] - s.size
            assert abs(bottom + 0.6) < 1e-9
    composite = next(o for o in objects if len(o) > 1)
    views = orbits.render_orbit(composite, 7, 32)
    assert np.abs(views[0].astype(int) - views[3].astype(int)).mean() > 1.0
