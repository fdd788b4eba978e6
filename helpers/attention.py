"""Decoupled (text -> image) attention: the corrected, general module.

The blog's version lives in `helpers.blog.DecoupledAttention`; `DecoupledAttention.blog_faithful`
configures this module to compute exactly what the blog's module computes.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def check_mask(mask: torch.Tensor, name: str = "mask") -> None:
    """ValueError unless `mask` is a bool tensor with at least one True (a real word or region) in every row."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool tensor (True = a real word or region), got "
                         f"{getattr(mask, 'dtype', type(mask).__name__)}; convert it with `{name} > 0` or `.bool()`")
    if mask.numel() and not mask.any(-1).all():
        raise ValueError(f"{name} has a row with no True: that caption or image has nothing to attend over or "
                         f"average (the result would be NaN); drop it, or mark at least one position as real")


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Mean of `x` over its word axis `dim`, real words only; mask (Nt, T) bool broadcasts against x."""
    check_mask(mask)
    m = mask.float().reshape(*mask.shape, *[1] * (x.dim() - mask.dim()))
    return (x * m).sum(dim) / m.sum(dim)


class DecoupledAttention(nn.Module):
    """Each word (query) attends over the image regions (keys); nothing flows from text to image.

    Fixes over the blog: an optional value projection (the blog defines one and never uses it),
    padding masks for words and regions, several heads, and a settable temperature.
    """

    def __init__(self, text_dim: int, image_dim: int, dim: int, heads: int = 1,
                 use_value: bool = True, temperature: float | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        if not use_value and image_dim != dim:
            raise ValueError(f"use_value=False returns image features themselves, so image_dim ({image_dim}) "
                             f"must equal dim ({dim})")
        self.heads, self.dim = heads, dim
        self.query = nn.Linear(text_dim, dim)
        self.key = nn.Linear(image_dim, dim)
        self.value = nn.Linear(image_dim, dim) if use_value else None
        self.temperature = temperature if temperature is not None else math.sqrt(dim // heads)

    @classmethod
    def blog_faithful(cls, dim: int) -> "DecoupledAttention":
        """The blog's computation: one head, no value projection, √dim temperature (masks optional)."""
        return cls(dim, dim, dim, heads=1, use_value=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """(..., L, D) -> (..., H, L, D/H)."""
        return x.unflatten(-1, (self.heads, -1)).transpose(-3, -2)

    def values(self, image: torch.Tensor) -> torch.Tensor:
        """(N, R, Di) image regions -> (N, H, R, D/H) per-head values."""
        return self._split(self.value(image) if self.value is not None else image)

    def forward(self, text: torch.Tensor, image: torch.Tensor, text_mask: torch.Tensor | None = None,
                image_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, Dt) words, (B, R, Di) regions, (B, T)/(B, R) bool masks -> (B, T, D) attended, (B, H, T, R) weights."""
        q, k = self._split(self.query(text)), self._split(self.key(image))      # (B, H, T, d), (B, H, R, d)
        logits = q @ k.transpose(-2, -1) / self.temperature                     # (B, H, T, R)
        weights = self._softmax(logits, text_mask, image_mask)
        attended = weights @ self.values(image)                                 # (B, H, T, d)
        return attended.transpose(1, 2).flatten(2), weights

    @staticmethod
    def _softmax(logits, text_mask, image_mask):
        """Softmax over regions; masked regions get weight 0, padded words get all-zero weights."""
        for mask, name, size in ((text_mask, "text_mask", logits.shape[-2]), (image_mask, "image_mask", logits.shape[-1])):
            if mask is not None:
                check_mask(mask, name)
                if mask.shape != (logits.shape[0], size):
                    raise ValueError(f"{name} must be (B, {size}), got {tuple(mask.shape)}")
        if image_mask is not None:
            logits = logits.masked_fill(~image_mask[..., None, None, :], float("-inf"))
        weights = logits.softmax(dim=-1)
        if text_mask is not None:
            weights = weights * text_mask[..., None, :, None]
        return weights
