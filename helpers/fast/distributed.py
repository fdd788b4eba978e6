"""Speed code: training on several processes (`torchrun`) with the same update as on one.

Each process encodes its share of the global batch; `gather_encodings` all-gathers the encodings *with
gradient*, so every process computes the contrastive loss on the full (B, B) score matrix and DDP
averages identical gradients. `Distributed` is `train.Process` for one rank of several: `train.train`
runs unchanged with it. `process(device)` gives the right one for how this program was started.
"""
from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_gather

from ..config import get_device
from ..train import Process


@dataclass
class Distributed(Process):
    """One rank of a torchrun job: gathers encodings, wraps the step in DDP, agrees on the best epoch."""

    owns_group: bool = False

    def gather(self, encodings):
        return gather_encodings(encodings)

    def wrap(self, step: nn.Module) -> nn.Module:
        return nn.parallel.DistributedDataParallel(
            step, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def agree(self, best: dict) -> dict:
        """Rank 0's best epoch on every rank, so that all stop early at the same epoch."""
        flag = torch.tensor([best["epoch"]], device=self.device)
        dist.broadcast(flag, 0)
        return {**best, "epoch": int(flag)}

    def barrier(self) -> None:
        dist.barrier()


@contextmanager
def process(device: str) -> Iterator[Process]:
    """The `train.Process` this program runs as: torchrun's WORLD_SIZE/RANK/LOCAL_RANK with more than one
    process (joining the gloo or nccl group, and leaving it after, if this call joined it), else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = get_device(device)
    if world == 1:
        yield Process(dev)
        return
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    try:
        yield Distributed(dev, dist.get_world_size(), dist.get_rank(), owns)
    finally:
        if owns:
            dist.destroy_process_group()


def gather_encodings(enc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{name: (B/W, ...)} on each rank -> {name: (B, ...)} in rank order; gradients flow back to the owners."""
    out = {}
    with warnings.catch_warnings():   # torch 2.14 marks it deprecated; its successor is private API
        warnings.filterwarnings("ignore", "torch.distributed.nn.functional.all_gather", FutureWarning)
        for name, t in enc.items():
            if t.dtype == torch.bool:             # collectives do not all take bool: send as bytes
                out[name] = torch.cat(all_gather(t.to(torch.uint8))).bool()
            else:
                out[name] = torch.cat(all_gather(t))
    return out
