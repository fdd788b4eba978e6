"""Training losses: InfoNCE, VSE++ hardest-negative triplet, a pointwise logistic loss, difference
(orthogonality), reconstruction.

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


def difference_loss(shared: torch.Tensor, private: torch.Tensor) -> torch.Tensor:
    """(N, D) shared, (N, D) private -> squared Frobenius norm of their correlation (MISA / DSN).

    Both are centred and L2-normalised per row; 0 when every shared direction is orthogonal
    to every private direction across the batch.
    """
    s = F.normalize(shared - shared.mean(0), dim=1)
    p = F.normalize(private - private.mean(0), dim=1)
    return (s.t() @ p).pow(2).sum() / len(shared) ** 2


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(..., C) reconstruction, (..., C) original features -> mean squared error."""
    return F.mse_loss(reconstruction, target)
