"""The exercises of notebook 03 · text features: pad_packed, masked_mean, padding_share."""
from __future__ import annotations

import torch

from .. import models
from ..features import synthetic_featureset
from . import solutions
from .core import Mistake, _call, _compare, _register, _share, _tensor


def _check_pad_packed(fn) -> str:
    fs = synthetic_featureset(n_images=6, captions_per_image=2, regions=2, image_dim=4, text_dim=6, max_len=9, seed=3)
    lengths = fs.lengths()
    shorter = (lengths < lengths.max()).nonzero().squeeze(1)      # so "the longest of all captions" is wrong here
    rows = shorter[torch.randperm(len(shorter), generator=torch.Generator().manual_seed(5))[:4]]
    tokens = fs.tokens.float()
    want_tokens, want_mask, _ = fs.text_batch(rows)               # the course's padding
    out = _call(fn, tokens.clone(), fs.offsets.clone(), rows.clone())
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise Mistake(f"expected two tensors, (padded tokens, mask); got {type(out).__name__}")
    got_tokens, mask = out
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise Mistake(f"the mask must be a bool tensor (True = real token), got "
                      f"{mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__}")
    b, t = want_mask.shape
    first_rows = fs.text_batch(torch.arange(b))[1]
    if mask.shape == first_rows.shape and torch.equal(mask, first_rows) and not torch.equal(mask, want_mask):
        raise Mistake("you padded captions 0..B-1, not the captions in `rows`")
    if tuple(mask.shape) == (b, int(lengths.max())):
        raise Mistake(f"wrong shape: T is the longest caption *of the batch* ({t}), not of all captions "
                      f"({int(lengths.max())})")
    if tuple(mask.shape) != (b, t):
        raise Mistake(f"wrong shape: expected the mask (B, T) = {(b, t)}, got {tuple(mask.shape)}")
    steps = torch.arange(t)
    if torch.equal(mask, steps[None] <= lengths[rows][:, None]):
        raise Mistake("the mask marks one position too many per caption (`<=` instead of `<`)")
    if not torch.equal(mask, want_mask):
        raise Mistake("the mask does not mark each caption's first `length` positions as real")
    got_tokens = _tensor(got_tokens, tuple(want_tokens.shape), "padded tokens (B, T, D)")
    index = (fs.offsets[rows][:, None] + steps[None]).clamp(max=len(tokens) - 1)
    _compare(got_tokens, want_tokens, [
        ("padding not zeroed: the padded rows hold the next caption's tokens; multiply by the mask", tokens[index]),
    ], "the padded tokens")
    return "each caption's tokens, zeros after its end, and a mask that says which are real (as FeatureSet.text_batch)."


pad_packed = _register(
    "pad_packed", "03", "code", "from packed tokens back to a padded batch and its mask", _check_pad_packed,
    "lengths = offsets[rows + 1] - offsets[rows]; T = lengths.max(); position t of caption b is real when "
    "t < lengths[b]; its token row is offsets[rows[b]] + t (clamp it to stay inside `tokens`), and padded rows must be 0.",
    solutions.pad_packed)


def _check_masked_mean(fn) -> str:
    g = torch.Generator().manual_seed(6)
    tokens = torch.randn(4, 7, 5, generator=g)                    # padded positions hold non-zero vectors, as the blog's do
    mask = torch.arange(7)[None, :] < torch.tensor([7, 3, 1, 5])[:, None]
    try:
        out = _call(fn, tokens.clone(), mask.clone())
    except Mistake as m:
        if "must match the size" in str(m):
            raise Mistake(f"the (B, T) mask did not broadcast against the (B, T, D) tokens: give it a last axis, "
                          f"mask.unsqueeze(-1) ({m})") from None
        raise
    out = _tensor(out, (4, 5), "(B, D)")
    m = mask.unsqueeze(-1).float()
    _compare(out, models.masked_mean(tokens, mask), [
        ("padding counted in the mean: average the real tokens only (sum them, divide by their number)",
         tokens.mean(1)),
        ("padded positions summed: multiply the tokens by the mask before summing", tokens.sum(1) / m.sum(1)),
        ("divided by T, every position; divide by each caption's number of real tokens, m.sum(1)",
         (tokens * m).sum(1) / 7),
        ("divided by the real tokens of the whole batch; divide by each caption's own count, m.sum(1)",
         (tokens * m).sum(1) / m.sum()),
    ], "the mean")
    return "the mean of each caption's real tokens, as `models.masked_mean` computes it."


masked_mean = _register(
    "masked_mean", "03", "code", "masked mean pooling: average only the real words", _check_masked_mean,
    "Turn the mask into a (B, T, 1) float (mask.unsqueeze(-1).float()), multiply, sum over T, and divide by the "
    "mask's sum over T: the number of real tokens of each caption.",
    solutions.masked_mean)


_PADDING_SHARE = 1 - 13.8 / 59


def _check_padding_share(answer) -> str:
    share = _share(answer)
    explain = (f"a batch padded to 59 positions per caption whose captions hold 13.8 real tokens on average is "
               f"1 − 13.8 / 59 = {_PADDING_SHARE:.0%} padding")
    if abs(share - _PADDING_SHARE) > 0.08:
        raise Mistake(f"{'far more' if share < _PADDING_SHARE else 'less'} than {share:.0%}: {explain}")
    return (f"{explain}. Without a mask, most of what the blog's attention averages is padding; the course sorts "
            "captions by length and carries the mask.")


padding_share = _register(
    "padding_share", "03", "predict", "what share of a padded batch is padding?", _check_padding_share,
    "Every caption gets 59 positions; on average 13.8 of them are real.",
    f"{_PADDING_SHARE:.2f}: 1 − 13.8 / 59. The longest caption sets T for the whole batch.")
