"""The training loop: Adam with linear lr warm-up, EMA, per-sigma-bin loss logging, atomic
checkpoints and exact resume.

Every random draw of step k (batch order, sigma, noise, masks, dropout) is seeded from
(seed, k) (see seeding.py), so a run resumed from a checkpoint ends with the same weights as an
uninterrupted one. Checkpoints:
  * `<ckpt_dir>/resume.pt`       full state (net, EMA, optimizer, sigma distribution, metrics) for resume;
  * `<ckpt_dir>/snapshots/step-XXXXXXXX.pt`  EMA weights at each checkpoint, for later analysis.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from . import distributed
from .ema import EMA
from .fast import compile_model, make_fast
from .io import atomic_torch_save
from .loss import DenoisingLoss
from .precond import Preconditioning
from .seeding import derive_seed, generator

log = logging.getLogger("diffrepro.training")
PROGRESS_EVERY_S = 15.0     # without a terminal, a progress line in the log at most this often


class TrainingDiverged(RuntimeError):
    pass


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    lr_warmup_img: int = 0                 # EDM: 10 Mimg linear warm-up
    adam_betas: tuple = (0.9, 0.999)
    adam_eps: float = 1e-8
    ema_halflife_img: float = 500_000
    ema_rampup_ratio: Optional[float] = 0.05
    checkpoint_every: int = 500
    log_every: int = 50
    seed: int = 0
    sigma_bins: int = 16                   # per-sigma-bin loss logging, uniform in ln(sigma)
    sigma_bin_range: tuple = (0.002, 80.0)
    precision: str = "fp32"                # fp32 | bf16 (autocast)
    fast: bool = False                     # the speed paths (diffrepro.fast.make_fast) and torch.compile
    compile_mode: Optional[str] = None     # with fast: torch.compile's mode, e.g. "reduce-overhead" (CUDA graphs)


@dataclass
class TrainState:
    step: int = 0
    nimg: int = 0
    wall_s: float = 0.0
    metrics: list = field(default_factory=list)       # rows: dict(step, nimg, metric, value, [sigma_bin])


def snapshot_file(ckpt_dir, step: int) -> Path:
    """Where a run keeps the EMA weights of the checkpoint at `step`."""
    return Path(ckpt_dir) / "snapshots" / f"step-{step:08d}.pt"

class Trainer:
    def __init__(self, denoiser: Preconditioning, loss_fn: DenoisingLoss, data: torch.Tensor,
                 cfg: TrainConfig, ckpt_dir: Optional[os.PathLike] = None, labels: Optional[torch.Tensor] = None,
                 device="cpu", progress: bool = True, on_checkpoint: Optional[Callable] = None):
        self.device = torch.device(device)
        self.denoiser = denoiser.to(self.device)
        self.loss_fn = loss_fn
        self.data = data.to(self.device)
        self.labels = None if labels is None else labels.to(self.device)
        self.cfg = cfg
        self.ckpt_dir = None if ckpt_dir is None else Path(ckpt_dir)
        self.progress = progress
        self.on_checkpoint = on_checkpoint
        if cfg.fast:        # in place, before the EMA copy and data parallelism see the parameters
            make_fast(self.denoiser)
        if self.device.type == "cuda":
            # fp32 means full fp32 (no TF32) so that it can serve as the reference for the fast path
            torch.backends.cuda.matmul.allow_tf32 = cfg.precision != "fp32"
            torch.backends.cudnn.allow_tf32 = cfg.precision != "fp32"
            torch.backends.cudnn.benchmark = True   # fixed shapes: let cuDNN pick its fastest kernels
        self.ema = EMA(self.denoiser, cfg.ema_halflife_img, cfg.ema_rampup_ratio)
        # data parallel when launched by torchrun (see distributed.py): cfg.batch_size is the global batch
        self.rank, self.world = distributed.rank_world()
        if cfg.batch_size % self.world:
            raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the number of processes ({self.world})")
        model = distributed.wrap(self.denoiser, self.device) if self.world > 1 else self.denoiser
        # the module the loss calls: compiled on the fast path (weights stay shared with self.denoiser)
        self.model = compile_model(model, cfg.compile_mode) if cfg.fast else model
        fused = self.device.type == "cuda"
        self.opt = torch.optim.Adam(self.denoiser.parameters(), lr=cfg.lr, betas=tuple(cfg.adam_betas),
                                    eps=cfg.adam_eps, fused=fused)
        self.state = TrainState()
        self._step_fn = self._train_step
        self._perms = {}            # epoch -> that epoch's permutation of the data, on the device
        lo, hi = cfg.sigma_bin_range
        self.bin_edges = torch.linspace(math.log(lo), math.log(hi), cfg.sigma_bins + 1, device=self.device)
        self._reset_accumulators()

    # ------------------------------------------------------------------ state
    def _reset_accumulators(self):
        nb = self.cfg.sigma_bins
        self._acc = dict(loss=torch.zeros((), device=self.device, dtype=torch.float64),
                         count=0,
                         bin_loss=torch.zeros(nb, device=self.device, dtype=torch.float64),
                         bin_mse=torch.zeros(nb, device=self.device, dtype=torch.float64),
                         bin_n=torch.zeros(nb, device=self.device, dtype=torch.float64))

    def state_dict(self) -> dict:
        return dict(net=self.denoiser.net.state_dict(), ema=self.ema.state_dict(), opt=self.opt.state_dict(),
                    sigma_dist=self.loss_fn.sigma_dist.state_dict(), step=self.state.step, nimg=self.state.nimg,
                    wall_s=self.state.wall_s, metrics=self.state.metrics, config=asdict(self.cfg))

    def load_state_dict(self, sd: dict):
        self.denoiser.net.load_state_dict(sd["net"])
        self.ema.load_state_dict(sd["ema"])
        self.opt.load_state_dict(sd["opt"])
        self.loss_fn.sigma_dist.load_state_dict(sd["sigma_dist"])
        self.state = TrainState(step=sd["step"], nimg=sd["nimg"], wall_s=sd["wall_s"], metrics=list(sd["metrics"]))

    def resume_path(self) -> Optional[Path]:
        return None if self.ckpt_dir is None else self.ckpt_dir / "resume.pt"

    def try_resume(self) -> bool:
        path = self.resume_path()
        if path is None or not path.exists():
            return False
        try:
            sd = torch.load(path, map_location=self.device, weights_only=False)
        except Exception as exc:  # a truncated file cannot happen with atomic writes, but say so if it does
            raise RuntimeError(f"cannot read checkpoint {path}: {exc}. Delete it to start over.") from exc
        self.load_state_dict(sd)
        return True

    def save_checkpoint(self):
        if self.ckpt_dir is None:
            return
        if self.rank != 0:          # every rank holds the same weights; rank 0 writes, the others wait
            distributed.barrier()
            return
        snap = snapshot_file(self.ckpt_dir, self.state.step)
        atomic_torch_save({"ema": self.ema.state_dict(), "step": self.state.step, "nimg": self.state.nimg}, snap)
        atomic_torch_save(self.state_dict(), self.resume_path())
        if self.on_checkpoint is not None:
            self.on_checkpoint(self)
        if self.world > 1:
            distributed.barrier()

    # ------------------------------------------------------------------ one step
    def _lr(self, nimg: int) -> float:
        if self.cfg.lr_warmup_img <= 0:
            return self.cfg.lr
        return self.cfg.lr * min(nimg / self.cfg.lr_warmup_img, 1.0)

    def _train_step(self, y, labels, gen):
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16")
        with autocast:
            out = self.loss_fn(self.model, y, gen, labels, shard=(self.rank, self.world) if self.world > 1 else None)
            loss = out.reduce()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        return loss.detach(), out

    def _batch_indices(self, step: int) -> torch.Tensor:
        """Indices of step `step`'s batch, on the training device: consecutive slices of per-epoch seeded
        permutations. Each epoch's permutation crosses to the device once: a per-step copy from (pageable)
        host memory would make the host wait for the GPU to finish the previous step before it could
        queue the next one."""
        n, b = self.data.shape[0], self.cfg.batch_size
        start, stop = step * b, (step + 1) * b
        for epoch in [e for e in self._perms if e < start // n]:      # epochs this step has left behind
            del self._perms[epoch]
        parts = []
        for epoch in range(start // n, (stop - 1) // n + 1):
            if epoch not in self._perms:
                perm = torch.randperm(n, generator=generator("cpu", self.cfg.seed, "epoch", epoch))
                self._perms[epoch] = perm.to(self.device)
            parts.append(self._perms[epoch][max(start - epoch * n, 0):min(stop - epoch * n, n)])
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def step(self) -> torch.Tensor:
        cfg, k = self.cfg, self.state.step
        idx = self._batch_indices(k)
        if self.world > 1:          # this rank's slice of the global batch
            b = cfg.batch_size // self.world
            idx = idx[self.rank * b:(self.rank + 1) * b]
        y = self.data[idx]
        labels = None if self.labels is None else self.labels[idx]
        torch.manual_seed(derive_seed(cfg.seed, "dropout", k))
        gen = generator(self.device, cfg.seed, "step", k)
        loss, out = self._step_fn(y, labels, gen)
        for p in self.denoiser.parameters():  # EDM: NaN/inf gradients are zeroed/clamped, not fatal
            if p.grad is not None:
                p.grad.nan_to_num_(nan=0.0, posinf=1e5, neginf=-1e5)
        nimg = self.state.nimg + cfg.batch_size
        for group in self.opt.param_groups:
            group["lr"] = self._lr(nimg)
        self.opt.step()
        self.ema.update(self.denoiser, cfg.batch_size, nimg)
        sigma, mse = out.sigma.detach(), out.mse.detach()
        if self.world > 1:          # adaptive sigma distributions see the whole global batch on every rank
            sigma, mse = distributed.gather_cat(sigma), distributed.gather_cat(mse)
        self.loss_fn.sigma_dist.observe(sigma, mse, k)
        self._accumulate(loss, out)
        self.state.step, self.state.nimg = k + 1, nimg
        return loss

    def _accumulate(self, loss, out):
        a = self._acc
        a["loss"] += loss.double()
        a["count"] += 1
        b = torch.bucketize(out.sigma.detach().log(), self.bin_edges[1:-1])
        a["bin_loss"].index_add_(0, b, out.loss.detach().flatten(1).sum(1).double())
        a["bin_mse"].index_add_(0, b, out.mse.detach().double())
        a["bin_n"].index_add_(0, b, torch.ones_like(b, dtype=torch.float64))

    def _flush_log(self, wall: float):
        a, st = self._acc, self.state
        if a["count"] == 0:
            return None
        if self.world > 1:          # sums over ranks; the loss is a mean of the per-rank means
            for key in ("loss", "bin_loss", "bin_mse", "bin_n"):
                distributed.all_reduce_sum(a[key])
            a["loss"] /= self.world
        mean_loss = float(a["loss"]) / a["count"]
        rows = [dict(step=st.step, nimg=st.nimg, metric="train_loss", value=mean_loss, sigma_bin=-1),
                dict(step=st.step, nimg=st.nimg, metric="lr", value=self._lr(st.nimg), sigma_bin=-1),
                dict(step=st.step, nimg=st.nimg, metric="wall_time_s", value=wall, sigma_bin=-1)]
        n = a["bin_n"].cpu().numpy()
        bl, bm = a["bin_loss"].cpu().numpy(), a["bin_mse"].cpu().numpy()
        for i in np.nonzero(n)[0]:
            rows.append(dict(step=st.step, nimg=st.nimg, metric="bin_loss", value=bl[i] / n[i], sigma_bin=int(i)))
            rows.append(dict(step=st.step, nimg=st.nimg, metric="bin_mse", value=bm[i] / n[i], sigma_bin=int(i)))
        st.metrics.extend(rows)
        self._reset_accumulators()
        return mean_loss

    # ------------------------------------------------------------------ loop
    def run(self) -> TrainState:
        cfg = self.cfg
        if cfg.checkpoint_every % cfg.log_every:
            raise ValueError(f"checkpoint_every ({cfg.checkpoint_every}) must be a multiple of log_every ({cfg.log_every})")
        self.denoiser.train()
        bar = _progress(total=cfg.steps, initial=self.state.step, enabled=self.progress)
        lines = self.progress and isinstance(bar, _NoBar)     # no terminal: progress lines in the log instead
        t0 = time.perf_counter() - self.state.wall_s
        last_good = self.state.step
        t_report, img_report = time.perf_counter(), self.state.nimg
        while self.state.step < cfg.steps:
            self.step()
            k = self.state.step
            if k % cfg.log_every == 0 or k == cfg.steps:
                self.state.wall_s = time.perf_counter() - t0
                mean_loss = self._flush_log(self.state.wall_s)
                if mean_loss is not None and not math.isfinite(mean_loss):
                    where = f"; the last good checkpoint (step {last_good}) is kept in {self.ckpt_dir}" if self.ckpt_dir else ""
                    raise TrainingDiverged(
                        f"training loss became {mean_loss} between steps {k - cfg.log_every} and {k}{where}. "
                        f"Lower the learning rate (lr={cfg.lr}) or check the data.")
                bar.set_postfix(loss=f"{mean_loss:.4f}")
                now = time.perf_counter()
                if lines and mean_loss is not None and (now - t_report >= PROGRESS_EVERY_S or k == cfg.steps):
                    log.info("step %d/%d  loss %.4f  %.1f img/s", k, cfg.steps, mean_loss,
                             (self.state.nimg - img_report) / max(now - t_report, 1e-9))
                    t_report, img_report = now, self.state.nimg
            if k % cfg.checkpoint_every == 0 or k == cfg.steps:
                self.save_checkpoint()
                last_good = k
            bar.update(1)
        bar.close()
        return self.state


class _NoBar:
    def update(self, n=1): pass
    def set_postfix(self, **kw): pass
    def close(self): pass


def _progress(total, initial, enabled):
    """A progress bar on a terminal; otherwise none (the loop logs progress lines instead)."""
    if not enabled or not sys.stderr.isatty():
        return _NoBar()
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True, mininterval=0.5,
                file=sys.stderr)
