"""Train-step comparison with diffusers' ``LatteTransformer3DModel`` (Ma et al., 2024).

Latte is an independent PyTorch factorised spatio-temporal DiT of the PixArt-α family: each of
its layers is a spatial block (self-attention, cross-attention to the caption, MLP; adaLN-single)
followed by a temporal block (self-attention, MLP). Both sides get the same width, heads, total
block count, spatial patch 2, latent batch and caption tokens, and both run one *training step*:
forward, backward, global-norm clip 1.0, an AdaFactor update (optax chain on our side,
``torch.optim.Adafactor`` on Latte's; ours also keeps β1 = 0.9 momentum) and an EMA of the
weights, in float32 with the same number of CPU threads. Latte is run eagerly, as its training
scripts do. Matching choices:

- tokens: Latte has no temporal patching (one token per latent frame), so stiv_jax runs with
  ``temporal_patch_size=1`` here; the token counts are then equal;
- depth: ``--layers`` counts every block of ours (main + 2 MaskDiT decoder blocks) and every
  spatial+temporal pair of Latte's;
- MaskDiT: reported at ``mask_ratio=0`` (identical token count: the headline figure) and at the
  paper's 0.5, where our main blocks see half the tokens (a real saving of the method, but not a
  like-for-like kernel comparison);
- FLOPs: ours from the analytic counter (stiv_jax/model/flops.py), Latte's measured with
  ``torch.utils.flop_counter.FlopCounterMode`` over one forward + backward (matmuls and
  attention, the same convention). The architectures differ where the papers do: a Latte layer
  has two MLPs (one in its spatial, one in its temporal block), a STIV block one, so at matched
  width and depth Latte does about 1.3× our FLOPs. ``speedup_vs_latte`` is the time ratio the
  comparison asks for; ``flop_rate_vs_latte`` (FLOP/s ratio) is printed next to it as the
  per-FLOP figure;
- execution: Latte eager in PyTorch (as its training scripts run), ours one jitted XLA step
  with the benchmark choices of :func:`stiv_jax.bench.trainer.bench_config` (layers unrolled,
  remat ``dots``), both float32 on the same thread count;
- timing: each side lives in its own worker process (PyTorch's and XLA's thread pools and
  allocators never share a process; measured 2026-12-02, sharing one slowed our step from 7.5 s
  to 10.4 s), the parent alternates single steps (Latte, ours at each mask ratio, Latte, …) and
  ``speedup_vs_latte`` is the median of the per-round ratios. ``--order=blocks`` runs each side's
  steps back to back instead (each side alone on the machine), for comparison. Each side's line
  gives ``page_faults``, the median minor page faults of its steps: the temporaries the kernel
  had to map and zero again (about 1.5 million per step of ours under glibc's defaults; near 0
  under ``stiv-bench``'s default ``--malloc=keep``, stiv_jax/console/host_memory.py).

Run: ``stiv-bench latte`` (last line ``speedup_vs_latte=<float> …``, mask_ratio 0).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import statistics
import time

from absl import flags

from stiv_jax.bench import timing
from stiv_jax.bench.trainer import Arch, Shape, StivStep, bench_config, define_workload_flags, workload


def latte_model(shape: Shape, arch: Arch):
    """A randomly initialised Latte with our width/heads/depth/patch (official Latte-1 options:
    GELU(tanh) MLPs, adaLN-single, no affine norms, biased attention projections)."""
    from diffusers import LatteTransformer3DModel

    return LatteTransformer3DModel(
        num_attention_heads=arch.heads,
        attention_head_dim=arch.width // arch.heads,
        in_channels=shape.channels,
        out_channels=shape.channels,
        num_layers=arch.layers,
        cross_attention_dim=arch.width,
        attention_bias=True,
        sample_size=shape.size,
        patch_size=arch.patch,
        activation_fn="gelu-approximate",
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        caption_channels=shape.text_dim,
        video_length=shape.frames,
    )


class LatteStep:
    """Latte's flow-matching train step in eager PyTorch on the same batch as :class:`StivStep`."""

    def __init__(
        self,
        shape: Shape,
        arch: Arch,
        threads: int | None = None,
        seed: int = 0,
        ema_decay: float = 0.9999,
        device: str = "cpu",
        autocast_dtype: str | None = None,
    ):
        """``autocast_dtype='bfloat16'``: float32 weights, bf16 compute (our ``model.dtype``)."""
        import torch

        from stiv_jax.bench.trainer import latent_batch

        if threads:
            torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.torch, self.device = torch, torch.device(device)
        self.autocast = getattr(torch, autocast_dtype) if autocast_dtype else None
        self.model = latte_model(shape, arch).to(self.device).train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.num_params = sum(p.numel() for p in self.params)
        self.opt = torch.optim.Adafactor(self.params, lr=1e-4)
        self.ema = [p.detach().clone() for p in self.params]
        self.ema_weight = 1.0 - ema_decay
        batch, _ = latent_batch(shape, seed)
        to = lambda a: torch.from_numpy(a).to(self.device)
        self.x1 = to(batch["latents"]).permute(0, 4, 1, 2, 3).contiguous()  # [B, C, T, H, W]
        self.text = to(batch["text_emb"])
        # Latte passes the caption mask straight to its per-frame spatial blocks as an additive bias.
        keep = to(batch["text_mask"]).float()
        self.text_bias = ((1.0 - keep) * -10000.0).repeat_interleave(shape.frames, 0)[:, None, :]
        self.flops = self._count_flops()

    def _loss(self):
        torch = self.torch
        b = self.x1.shape[0]
        t = torch.rand(b, device=self.device)
        eps = torch.randn_like(self.x1)
        tb = t.view(b, 1, 1, 1, 1)
        x_t = tb * self.x1 + (1 - tb) * eps
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            v = self.model(
                x_t, timestep=1000 * t, encoder_hidden_states=self.text, encoder_attention_mask=self.text_bias
            ).sample
        return torch.mean(torch.square(v.float() - (self.x1 - eps)))

    def _count_flops(self) -> float:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            self._loss().backward()
        self.opt.zero_grad(set_to_none=True)
        return float(counter.get_total_flops())

    def step(self) -> float:
        torch = self.torch
        phase = torch.profiler.record_function  # phases for bench/profile.py (no cost unprofiled)
        with phase("latte:forward"):
            loss = self._loss()
        with phase("latte:backward"):
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
        with phase("latte:update"), torch.no_grad():
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()
            torch._foreach_lerp_(self.ema, self.params, self.ema_weight)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return float(loss.detach())


def _flag_values() -> flags.FlagValues:
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    define_workload_flags(fv, Shape(batch=4), Arch())
    flags.DEFINE_integer("repeats", 3, "Timed rounds (medians of per-round ratios reported).", **d)
    flags.DEFINE_list("mask_ratios", ["0.5", "0"], "MaskDiT ratios to run; the last one gives the final line.", **d)
    flags.DEFINE_enum(
        "order", "alternate", ["alternate", "blocks"], "alternate: A B A B …; blocks: A A A, then B B B.", **d
    )
    return fv


def _worker(side: str, shape: Shape, arch: Arch, mask_ratios: list[float], threads: int, conn) -> None:
    """A worker process: builds one side's step(s), reports their counts, then runs one step per
    request (the step's name) and answers with its seconds; ``None`` ends it."""
    if side == "latte":
        steps = {"latte": LatteStep(shape, arch, threads)}
    else:
        steps = {f"stiv_mask{r}": StivStep(bench_config(shape, arch, mask_ratio=r), shape) for r in mask_ratios}
    conn.send(
        {
            k: dict(flops=s.flops, params=s.num_params, compile_s=getattr(s, "compile_seconds", 0.0))
            for k, s in steps.items()
        }
    )
    while (name := conn.recv()) is not None:
        faults, start = timing.minor_faults(), time.perf_counter()
        steps[name].step()
        conn.send((time.perf_counter() - start, timing.minor_faults() - faults))


class _Workers:
    """The two worker processes (spawned one after the other, so building never overlaps)."""

    def __init__(self, shape: Shape, arch: Arch, mask_ratios: list[float]):
        ctx = multiprocessing.get_context("spawn")
        self.info, self.conns, self.procs = {}, {}, []
        self.faults: dict[str, list[int]] = {}  # minor page faults of each step, per candidate
        for side in ("latte", "stiv"):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(side, shape, arch, mask_ratios, timing.cpu_threads(), child))
            proc.start()
            timing.watch([proc.pid])  # its CPU time (building included) is ours, not the machine's load
            self.procs.append(proc)
            info = parent.recv()
            self.info.update(info)
            self.conns.update(dict.fromkeys(info, parent))

    def step(self, name: str) -> None:
        self.conns[name].send(name)
        _, faults = self.conns[name].recv()
        self.faults.setdefault(name, []).append(faults)

    def close(self) -> None:
        timing.watch().sample()  # the workers' CPU time, while they still run
        for conn in set(self.conns.values()):
            conn.send(None)
        for proc in self.procs:
            proc.join(timeout=60)


def _blocks(fns: dict, repeats: int) -> timing.Timings:
    """Each candidate's ``repeats`` runs back to back (after one warm-up), candidate after candidate."""
    out = {}
    for name, fn in fns.items():
        out[name] = timing.interleaved({name: fn}, repeats=repeats, warmup=1).seconds[name]
    return timing.Timings(out)


def compare(shape: Shape, arch: Arch, mask_ratios: list[float], repeats: int, order: str = "alternate") -> dict:
    """Latte vs stiv_jax (one per mask ratio), each side in its own process; per-ratio results."""
    workers = _Workers(shape, arch, mask_ratios)
    try:
        fns = {name: (lambda n=name: workers.step(n)) for name in workers.info}
        t = timing.interleaved(fns, repeats=repeats, warmup=1) if order == "alternate" else _blocks(fns, repeats)
    finally:
        workers.close()
    lat, info = t.median("latte"), workers.info

    def faults(name: str) -> int:  # median over the timed steps (the warm-up step came first)
        return int(statistics.median(workers.faults[name][-repeats:]))

    print(
        timing.report(
            side="latte",
            step_s=lat,
            spread=t.spread("latte"),
            params=info["latte"]["params"],
            train_flops=info["latte"]["flops"],
            gflop_per_s=info["latte"]["flops"] / lat / 1e9,
            page_faults=faults("latte"),
            threads=timing.cpu_threads(),
        )
    )
    out = {}
    for r in mask_ratios:
        name = f"stiv_mask{r}"
        m, speedup = t.median(name), t.paired_ratio("latte", name)
        out[r] = dict(step_s=m, speedup=speedup, flops=info[name]["flops"], params=info[name]["params"])
        print(
            timing.report(
                side="stiv_jax",
                mask_ratio=r,
                step_s=m,
                spread=t.spread(name),
                params=info[name]["params"],
                train_flops=info[name]["flops"],
                gflop_per_s=info[name]["flops"] / m / 1e9,
                page_faults=faults(name),
                compile_s=info[name]["compile_s"],
                speedup_vs_latte=speedup,
                flop_rate_vs_latte=speedup * info[name]["flops"] / info["latte"]["flops"],
            )
        )
    return out


def main(argv: list[str] | None = None) -> float:
    from stiv_jax.console import flag_utils

    fv = flag_utils.parse(_flag_values(), argv, "stiv-bench latte")
    shape, arch = workload(fv)
    print(timing.machine())
    print("workload:", timing.report(**dataclasses.asdict(shape), **dataclasses.asdict(arch)))
    ratios = [float(r) for r in fv.mask_ratios]
    print("order:", fv.order)
    out = compare(shape, arch, ratios, fv.repeats, fv.order)
    speedup = out[ratios[-1]]["speedup"]
    timing.headline(f"speedup_vs_latte={speedup:.4f}")
    return speedup


if __name__ == "__main__":
    main()
