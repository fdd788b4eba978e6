"""Step 08, the readers' proposal (2): self-supervised pre-training of each modality first.

Before any cross-modal training, each modality's projection learns on its own data with SimCLR: two random
halves of an image's regions (or of a caption's words), pooled and projected, must find each other among
the batch's other views (`losses.simclr_loss`). A run then starts from those weights (`TrainConfig.init_from`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .features import FeatureSet
from .losses import simclr_loss


def two_views(x: torch.Tensor, mask: torch.Tensor, keep: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L, C) positions, (B, L) mask -> two masks that each keep a random `keep` share of the real
    positions (at least one), drawn independently: the two views of SimCLR over sets."""
    views = []
    for _ in range(2):
        pick = (torch.rand(mask.shape, generator=generator) < keep) & mask
        first = mask.float().argmax(1)                                        # keep one real position
        pick[torch.arange(len(mask)), first] |= ~pick.any(1)
        views.append(pick)
    return views[0], views[1]


def view_embedding(proj: nn.Module, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(B, L, C) positions, (B, L) kept -> (B, D) unit mean of the kept positions' projections."""
    k = keep.float()[..., None]
    return F.normalize((proj(x) * k).sum(1) / k.sum(1), dim=-1)


def pretrain_projections(model: nn.Module, fs: FeatureSet, epochs: int = 5, batch_size: int = 256,
                         lr: float = 1e-3, keep: float = 0.5, seed: int = 0) -> dict[str, list[float]]:
    """Pre-train `model.image_proj` on the images' regions alone and `model.text_proj` on the captions'
    words alone, each with SimCLR over two random halves of the same image / caption. In place;
    -> {"image": [mean loss per epoch], "text": [...]}."""
    g = torch.Generator().manual_seed(seed)
    history = {}
    for name, proj, n in [("image", model.image_proj, fs.n_images), ("text", model.text_proj, fs.n_captions)]:
        optimizer = torch.optim.AdamW(proj.parameters(), lr=lr)
        history[name] = []
        for _ in range(epochs):
            order, total = torch.randperm(n, generator=g), 0.0
            batches = [order[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]
            for rows in batches:
                if name == "image":
                    x, _ = fs.image_batch(rows)
                    mask = torch.ones(x.shape[:2], dtype=torch.bool)
                else:
                    x, mask, _ = fs.text_batch(rows)
                v1, v2 = two_views(x, mask, keep, g)
                loss = simclr_loss(view_embedding(proj, x, v1), view_embedding(proj, x, v2))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item()
            history[name].append(total / max(1, len(batches)))
    return history
