"""Train-step time and memory against frames and resolution: factorised vs. full 3D attention.

STIV factorises attention (§2.1): spatial attention inside each frame (S tokens) and temporal
attention across the T' frames at each position, so its attention cost grows like
T'·S² + S·T'² instead of (T'·S)² for one joint attention over all tokens. This benchmark runs
the real train step for both layouts at equal width, depth and heads (``attention_layout=
'joint'`` drops the temporal attention and attends over all T'·S tokens with 3D RoPE) over a
frame sweep and a resolution sweep, interleaving the two layouts at each point. At equal
width/depth/heads the joint model has fewer parameters (no temporal attention projections), so
below roughly ``2·width`` tokens it also does fewer FLOPs; the printed ``train_gflop`` and
``attention_share`` columns show where the quadratic term takes over.

Memory is XLA's static estimate for the compiled step (temporaries = activations and scratch,
exact for the program, independent of machine load).

Run: ``stiv-bench scaling [--frames=8,16,32] [--sizes=16,32] [--repeats=2]``.
"""

from __future__ import annotations

import dataclasses

from absl import flags

from stiv_jax.bench import timing
from stiv_jax.bench.trainer import Arch, Shape, StivStep, bench_config
from stiv_jax.model.flops import forward_flops_by_kind

LAYOUTS = ("factorised", "joint")


def _flag_values() -> flags.FlagValues:
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    flags.DEFINE_list("frames", ["8", "16", "32"], "Latent frame counts (at --base_size).", **d)
    flags.DEFINE_list("sizes", ["16", "32"], "Latent sizes (at --base_frames).", **d)
    flags.DEFINE_integer("base_frames", 8, "Frames of the resolution sweep.", **d)
    flags.DEFINE_integer("base_size", 16, "Latent size of the frame sweep.", **d)
    flags.DEFINE_integer("batch", 1, "Clips per step.", **d)
    flags.DEFINE_integer("layers", 4, "Blocks, including the 2 MaskDiT decoder blocks.", **d)
    flags.DEFINE_integer("width", 256, "Model width.", **d)
    flags.DEFINE_integer("heads", 4, "Attention heads.", **d)
    flags.DEFINE_integer("temporal_patch", 2, "Temporal patch size (STIV: 2).", **d)
    flags.DEFINE_string("remat", "dots", "model.remat_policy.", **d)
    flags.DEFINE_integer("repeats", 2, "Timed rounds per point (medians reported).", **d)
    return fv


def attention_share(cfg, shape: Shape) -> float:
    """Fraction of the model FLOPs in attention score/value products (QKᵀ and AV)."""
    kinds = forward_flops_by_kind(
        cfg, frames=shape.frames, height=shape.size, width=shape.size, text_len=shape.text_len
    )
    return kinds["attention"] / (kinds["attention"] + kinds["dense"])


def run_point(shape: Shape, arch: Arch, remat: str, repeats: int) -> list[dict]:
    steps = {
        layout: StivStep(bench_config(shape, dataclasses.replace(arch, layout=layout), remat=remat), shape)
        for layout in LAYOUTS
    }
    t = timing.interleaved({k: s.step for k, s in steps.items()}, repeats=repeats, warmup=1)
    paired = {layout: t.paired_ratio(layout, LAYOUTS[0]) for layout in LAYOUTS}  # vs factorised, per round
    rows = []
    for layout, s in steps.items():
        tokens = max(shape.frames // arch.temporal_patch, 1) * (shape.size // arch.patch) ** 2
        rows.append(
            dict(
                layout=layout,
                frames=shape.frames,
                size=shape.size,
                tokens=tokens,
                step_s=t.median(layout),
                time_vs_factorised=paired[layout],
                temp_mb=s.memory_bytes()["temporaries"] / 2**20,
                train_gflop=s.flops / 1e9,
                attention_share=attention_share(s.config.model, shape),
                params=s.num_params,
            )
        )
    return rows


def _growth(rows: list[dict], key: str) -> None:
    """Prints each layout's step time and memory relative to its first point of a sweep."""
    for layout in LAYOUTS:
        mine = [r for r in rows if r["layout"] == layout]
        first = mine[0]
        for r in mine:
            print(
                timing.report(
                    sweep=key,
                    layout=layout,
                    **{key: r[key]},
                    time_x=r["step_s"] / first["step_s"],
                    memory_x=r["temp_mb"] / first["temp_mb"],
                    tokens_x=float(r["tokens"] / first["tokens"]),
                )
            )


def main(argv: list[str] | None = None) -> list[dict]:
    from stiv_jax.console import flag_utils

    fv = flag_utils.parse(_flag_values(), argv, "stiv-bench scaling")
    arch = Arch(layers=fv.layers, width=fv.width, heads=fv.heads, temporal_patch=fv.temporal_patch)
    print(timing.machine())
    print("model:", timing.report(**dataclasses.asdict(arch), remat=fv.remat, batch=fv.batch))
    sweeps = {
        "frames": [Shape(batch=fv.batch, frames=int(f), size=fv.base_size) for f in fv.frames],
        "size": [Shape(batch=fv.batch, frames=fv.base_frames, size=int(s)) for s in fv.sizes],
    }
    done: dict[Shape, list[dict]] = {}
    all_rows = []
    for key, shapes in sweeps.items():
        rows = []
        for shape in shapes:
            if shape not in done:
                done[shape] = run_point(shape, arch, fv.remat, fv.repeats)
                for r in done[shape]:
                    print(timing.report(**r), flush=True)
            rows += done[shape]
        _growth(rows, key)
        all_rows += rows
    summary = [
        timing.report(
            frames=shape.frames,
            size=shape.size,
            joint_over_factorised_time=joint["time_vs_factorised"],
            joint_over_factorised_memory=joint["temp_mb"] / fact["temp_mb"],
        )
        for shape, (fact, joint) in done.items()
    ]
    for line in summary[:-1]:
        print(line)
    timing.headline(summary[-1])
    return all_rows


if __name__ == "__main__":
    main()
