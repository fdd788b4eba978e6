"""Training losses: the retrieval losses (InfoNCE, the VSE++ hardest-negative hinge, a pointwise logistic
loss) and the terms notebook 08's variants add (image local consistency, word diversity, masked
reconstruction) or pre-train with (SimCLR).

Every retrieval loss takes a square score matrix `scores` (B, B) whose diagonal holds the
matching pairs: row i is image i, column j is caption j.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(scores: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """(B, B) similarities, scalar log-temperature -> symmetric InfoNCE (image->text and text->image)."""
    logits = scores * logit_scale.exp()
    target = torch.arange(len(scores), device=scores.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def vse_triplet(scores: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """(B, B) similarities -> VSE++ hinge loss on the hardest negative of each image and each caption."""
    positive = scores.diag()
    eye = torch.eye(len(scores), dtype=torch.bool, device=scores.device)
    negatives = scores.masked_fill(eye, float("-inf"))
    cost_caption = (margin + negatives.max(dim=1).values - positive).clamp(min=0)  # image -> hardest caption
    cost_image = (margin + negatives.max(dim=0).values - positive).clamp(min=0)    # caption -> hardest image
    return (cost_caption + cost_image).mean()


def pointwise(scores: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """(B, B) similarities, scalar log-temperature -> logistic loss on each matched pair and on one
    mismatched pair per image (image i with caption i + 1), each judged alone: no candidate competes."""
    z = scores * logit_scale.exp()
    positive, negative = z.diag(), z.roll(-1, dims=1).diag()
    return (F.softplus(-positive) + F.softplus(negative)).mean()


# ----------------------------------------------------------------------------- 08's added terms

def local_consistency_loss(regions: torch.Tensor) -> torch.Tensor:
    """(B, R, D) regions of a square grid (R = h*h) -> mean (1 - cos) over horizontally and vertically
    adjacent regions; 0 when neighbours point the same way."""
    b, r, d = regions.shape
    h = int(round(r ** 0.5))
    if h * h != r:
        raise ValueError(f"local consistency needs a square grid of regions; got R={r}")
    grid = F.normalize(regions, dim=-1).view(b, h, h, d)
    right = (grid[:, :, 1:] * grid[:, :, :-1]).sum(-1)
    below = (grid[:, 1:] * grid[:, :-1]).sum(-1)
    return 1 - torch.cat([right.flatten(1), below.flatten(1)], 1).mean()


def word_diversity_loss(words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, D) words, (B, T) mask -> mean cosine between different real words of the same caption."""
    unit = F.normalize(words, dim=-1) * mask[..., None]
    gram = unit @ unit.transpose(1, 2)                                        # (B, T, T)
    n = mask.sum(1).float()
    pairs = (n * (n - 1)).clamp_min(1)
    off_diagonal = gram.sum((1, 2)) - (unit * unit).sum((1, 2))
    return (off_diagonal / pairs).mean()


def masked_reconstruction_loss(rebuilt: torch.Tensor, target: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """(B, L, C) rebuilt, (B, L, C) original features, (B, L) bool hidden -> mean squared error over the
    hidden positions only (0 when nothing is hidden)."""
    if not hidden.any():
        return rebuilt.sum() * 0.0
    return F.mse_loss(rebuilt[hidden], target[hidden])


def simclr_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """(B, D), (B, D) unit embeddings of two views -> symmetric InfoNCE: each view finds its twin."""
    return info_nce(z1 @ z2.t(), torch.tensor(1.0 / temperature).log())
