"""Speed code: training on several processes (`torchrun`) with the same update as on one.

Each process encodes its share of the global batch; `gather_encodings` all-gathers the encodings *with
gradient*, so every process computes the contrastive loss on the full (B, B) score matrix and DDP
averages identical gradients. `train.train` calls `setup_distributed` and runs unchanged on one process.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .config import get_device


@dataclass
class Distributed:
    """Where this process stands: world size, rank, its device, and whether it set up the group."""

    world: int
    rank: int
    device: torch.device
    owns_group: bool = False

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def setup_distributed(device: str) -> Distributed:
    """Read torchrun's WORLD_SIZE/RANK/LOCAL_RANK; with more than one process, join the group (gloo/nccl)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = get_device(device)
    if world == 1:
        return Distributed(1, 0, dev)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Distributed(dist.get_world_size(), dist.get_rank(), dev, owns)


def gather_encodings(enc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{name: (B/W, ...)} on each rank -> {name: (B, ...)} in rank order; gradients flow back to the owners."""
    from torch.distributed.nn.functional import all_gather

    out = {}
    with warnings.catch_warnings():   # torch 2.14 marks it deprecated; its successor is private API
        warnings.filterwarnings("ignore", "torch.distributed.nn.functional.all_gather", FutureWarning)
        for name, t in enc.items():
            if t.dtype == torch.bool:             # collectives do not all take bool: send as bytes
                out[name] = torch.cat(all_gather(t.to(torch.uint8))).bool()
            else:
                out[name] = torch.cat(all_gather(t))
    return out


def broadcast_best_epoch(best: dict, ctx: Distributed) -> dict:
    """Rank 0's best epoch on every rank, so that all stop early at the same epoch."""
    if ctx.world == 1:
        return best
    flag = torch.tensor([best["epoch"]], device=ctx.device)
    dist.broadcast(flag, 0)
    return {**best, "epoch": int(flag)}


def finish(ctx: Distributed) -> None:
    """Leave the process group if this process set it up."""
    if ctx.owns_group:
        dist.destroy_process_group()
