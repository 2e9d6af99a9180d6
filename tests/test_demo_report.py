"""The demo's prompt-following measurement reads colour, shape and motion off rendered clips."""

import itertools
import os

import numpy as np

from stiv_jax.apps import report as demo_report
from stiv_jax.data.synthetic import COLORS, MOTIONS, SHAPES, caption_for, render_clip


def _downsize(video, size):
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR)) for f in video])


def test_describe_recovers_rendered_attributes():
    rng = np.random.default_rng(0)
    hits = {"color": 0, "shape": 0, "motion": 0}
    combos = list(itertools.product(COLORS, SHAPES, MOTIONS))
    for color, shape, motion in combos:
        clip = _downsize(render_clip(color, shape, motion, 16, 64, rng)[::4], 24)  # as the demo sees it
        seen = demo_report.describe(clip)
        want = demo_report.parse_caption(caption_for(color, shape, motion))
        for k in hits:
            hits[k] += seen[k] == want[k]
    n = len(combos)
    assert hits == {"color": n, "shape": n, "motion": n}, hits


def test_prompt_following_scores_a_perfect_and_a_prompt_blind_generator():
    rng = np.random.default_rng(1)

    def render(prompts, blind=False):
        asked = [("red", "circle", "still") if blind else tuple(demo_report.parse_caption(p).values()) for p in prompts]
        return [_downsize(render_clip(*a, 16, 64, rng)[::4], 24) for a in asked]

    perfect = demo_report.prompt_following(render, batch=7)
    assert perfect["prompts"] == 60 and perfect["accuracy"] == dict(
        color=1.0, shape=1.0, motion=1.0, moving_or_still=1.0
    )
    blind = demo_report.prompt_following(lambda p: render(p, blind=True))
    # Always "a red circle standing still": right for 1/4 colours, 1/3 shapes, 1/5 motions, and
    # right about moving-vs-still exactly when the prompt asks for a still shape.
    assert blind["accuracy"] == dict(color=0.25, shape=1 / 3, motion=0.2, moving_or_still=0.2)
    assert blind["chance"]["color"] == 0.25 and abs(blind["chance"]["moving_or_still"] - 0.68) < 1e-9


def test_empty_video_is_not_described():
    assert demo_report.describe(np.zeros((4, 16, 16, 3), np.uint8)) == dict(color=None, shape=None, motion=None)


def test_contact_sheet_and_loss_curve(tmp_path):
    videos = [np.full((3, 8, 8, 3), v, np.uint8) for v in (0, 255)]
    sheet = demo_report.contact_sheet(videos, ["a", "b"], str(tmp_path / "s.png"))
    from PIL import Image

    img = np.asarray(Image.open(sheet))
    assert img.shape[1] > 3 * 8 * 3 and img.shape[0] > 2 * 8 * 3
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n')
    from stiv_jax.storage.workdir import Workdir

    rows = Workdir(str(tmp_path)).metrics()
    assert rows == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}]
    curve = demo_report.loss_curve(rows, str(tmp_path / "c.png"), title="run")
    assert os.path.getsize(curve) > 1000


def test_first_frames_show_the_asked_colour_and_shape_and_depend_on_the_prompt_only():
    prompts = demo_report.all_prompts(moving_only=True)
    assert len(prompts) == 48 and not any("still" in p for p in prompts)
    frames = demo_report.first_frames(prompts)
    assert frames.shape == (48, 64, 64, 3) and frames.dtype == np.uint8
    for prompt, frame in zip(prompts, frames):
        seen, want = demo_report.describe(_downsize(frame[None].repeat(4, 0), 24)), demo_report.parse_caption(prompt)
        assert (seen["color"], seen["shape"], seen["motion"]) == (want["color"], want["shape"], "still"), prompt
    np.testing.assert_array_equal(demo_report.first_frames(prompts[3:5]), frames[3:5])  # batch-independent


def test_prompt_following_chance_is_that_of_the_prompts_asked():
    rng = np.random.default_rng(2)
    moving = demo_report.all_prompts(moving_only=True)
    render = lambda ps: [
        _downsize(render_clip(*demo_report.parse_caption(p).values(), 16, 64, rng)[::4], 24) for p in ps
    ]
    got = demo_report.prompt_following(render, moving)
    assert got["prompts"] == 48 and got["accuracy"]["motion"] == 1.0
    assert got["chance"] == dict(color=0.25, shape=1 / 3, motion=0.25, moving_or_still=1.0)
