"""Data-parallel training across processes launched by `torchrun` (one process per GPU, or CPU
processes with the gloo backend).

How each piece of state stays correct across ranks:
  * batches: the global batch of step k is the same seeded index list on every rank; rank r takes
    slice r (cfg.batch_size is the global batch);
  * randomness: sigma, noise and masks are drawn at the global batch size from the step's generator
    on every rank and sliced (DenoisingLoss(shard=...)), so the ranks together reproduce the
    single-process batch, and the STF reference batch (drawn after them) is identical on all ranks;
  * gradients: averaged by DistributedDataParallel (each rank's loss is a mean over its slice);
  * EMA and optimizer: updated identically on every rank from identical weights; rank 0 writes
    checkpoints, the others wait at a barrier; all ranks resume from the same file;
  * InfoNoise statistics: the per-sample sigma and MSE are all-gathered each step, so every rank's
    estimator observes the whole global batch and holds the same state;
  * logged losses: sums all-reduced at each logging step.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env() -> torch.device:
    """Initialise the process group from torchrun's environment; returns this rank's device."""
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return torch.device("cuda", local)
    dist.init_process_group("gloo")
    return torch.device("cpu")


def rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _DDP(torch.nn.parallel.DistributedDataParallel):
    """DDP that still exposes the wrapped preconditioning's methods (loss_weight, sigma, ...)."""

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def wrap(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    ids = [device.index] if device.type == "cuda" else None
    return _DDP(module, device_ids=ids, broadcast_buffers=False)


def gather_cat(x: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def all_reduce_sum(x: torch.Tensor):
    dist.all_reduce(x, op=dist.ReduceOp.SUM)


def barrier():
    if dist.is_initialized():
        dist.barrier()


def is_main() -> bool:
    return rank_world()[0] == 0
