"""The exercises of notebook 03 · text features: pad_packed, masked_mean, padding_share."""
from __future__ import annotations

import torch

from .. import models
from ..features import FeatureSet
from . import solutions
from .core import Mistake, _call, _compare, _register, _share, _tensor


# Packed captions of these lengths; the batches below pad to several T (none to the longest caption of all,
# 12, but the last), one holds the last caption (its padding runs past the end of `tokens`), one needs no padding.
_PAD_LENGTHS = [5, 9, 3, 7, 4, 12, 6, 2, 8]
_PAD_BATCHES = [[6, 4, 0], [3, 0, 8, 2], [8, 1, 7], [4, 4], [2], [5, 7, 1]]


def _check_pad_packed(fn) -> str:
    g = torch.Generator().manual_seed(5)
    lengths = torch.tensor(_PAD_LENGTHS)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    tokens = torch.randn(int(offsets[-1]), 6, generator=g)
    longest = int(lengths.max())
    for batch in _PAD_BATCHES:
        rows = torch.tensor(batch)
        _pad_batch(fn, tokens, offsets, rows, longest)
    return "each caption's tokens, zeros after its end, and a mask that says which are real (as FeatureSet.text_batch)."


def _pad_batch(fn, tokens: torch.Tensor, offsets: torch.Tensor, rows: torch.Tensor, longest: int) -> None:
    fs = FeatureSet(image_ids=torch.arange(1), regions=torch.zeros(1, 1, 1), pooled=torch.zeros(1, 1),
                    caption_ids=torch.arange(len(offsets) - 1), caption_image=torch.zeros(len(offsets) - 1, dtype=torch.long),
                    tokens=tokens, offsets=offsets, text_pooled=torch.zeros(len(offsets) - 1, tokens.shape[1]))
    want_tokens, want_mask, _ = fs.text_batch(rows)                   # the course's padding
    lengths = fs.lengths()[rows]
    last = bool((rows == len(offsets) - 2).any()) and int(lengths[rows == len(offsets) - 2][0]) < int(lengths.max())
    try:
        out = _call(fn, tokens.clone(), offsets.clone(), rows.clone())
    except Mistake as m:
        if last and "IndexError" in str(m):
            raise Mistake(f"an index past the end of `tokens` for rows {rows.tolist()}, which hold the last caption: "
                          "its padded positions run past the last token; clamp the index "
                          "(.clamp(max=len(tokens) - 1)) and let the mask zero them") from None
        raise
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
    if mask.dim() == 2 and mask.shape[0] == b and mask.shape[1] in (t - 1, t + 1):
        s = mask.shape[1]
        if torch.equal(mask, torch.arange(s)[None] < (lengths + s - t)[:, None]):
            raise Mistake(f"off by one: each caption has {'one token too many' if s > t else 'one token too few'} "
                          f"(T = {s} for rows {rows.tolist()}, whose longest caption has {t} tokens); caption r's "
                          "tokens are offsets[r] up to, not including, offsets[r + 1]")
    if tuple(mask.shape) == (b, longest) and t != longest:
        raise Mistake(f"wrong shape: T is the longest caption *of the batch* ({t}), not of all captions ({longest})")
    if tuple(mask.shape) != (b, t):
        raise Mistake(f"wrong shape: expected the mask (B, T) = {(b, t)} for rows {rows.tolist()}, got "
                      f"{tuple(mask.shape)}")
    steps = torch.arange(t)
    if not torch.equal(mask, want_mask):
        if torch.equal(mask, steps[None] <= lengths[:, None]):
            raise Mistake("the mask marks one position too many per caption (`<=` instead of `<`)")
        if torch.equal(mask, steps[None] < lengths[:, None] - 1):
            raise Mistake("the mask marks one position too few per caption: position t is real when t < length")
        raise Mistake("the mask does not mark each caption's first `length` positions as real")
    got_tokens = _tensor(got_tokens, tuple(want_tokens.shape), "padded tokens (B, T, D)")
    index = (offsets[rows][:, None] + steps[None]).clamp(max=len(tokens) - 1)
    shifted = (index + 1).clamp(max=len(tokens) - 1)
    _compare(got_tokens, want_tokens, [
        ("padding not zeroed: the padded rows hold the next caption's tokens; multiply by the mask", tokens[index]),
        ("tokens shifted by one position: caption r starts at offsets[r], its first token included",
         tokens[shifted] * mask[..., None]),
        ("tokens shifted by one position: caption r starts at offsets[r], its first token included",
         tokens[(index - 1).clamp(min=0)] * mask[..., None]),
    ], "the padded batch")


pad_packed = _register(
    "pad_packed", "03", "code", "from packed tokens back to a padded batch and its mask", _check_pad_packed,
    ["Caption r is tokens[offsets[r]:offsets[r + 1]]; the batch is as long as its own longest caption, and "
     "positions after a caption's end are zeros, marked False in the mask.",
     "lengths = offsets[rows + 1] - offsets[rows]; T = lengths.max(); position t of caption b is real when "
     "t < lengths[b], and its token row is offsets[rows[b]] + t.",
     "steps = torch.arange(T); mask = steps[None, :] < lengths[:, None]; index = (offsets[rows][:, None] + "
     "steps[None, :]).clamp(max=len(tokens) - 1); return tokens[index] * mask[..., None], mask"],
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
    if isinstance(out, torch.Tensor) and tuple(out.shape) == (4, 7):
        raise Mistake("averaged over the features, the last axis, giving (B, T): average over the tokens, axis 1")
    if isinstance(out, torch.Tensor) and tuple(out.shape) == (5,):
        raise Mistake("one vector for the whole batch (tokens[mask].mean(0)?): average each caption on its own, "
                      "giving (B, D)")
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
        ("the sum of the real tokens, not their mean: divide by each caption's number of real tokens, m.sum(1)",
         (tokens * m).sum(1)),
    ], "the mean")
    return "the mean of each caption's real tokens, as `models.masked_mean` computes it."


masked_mean = _register(
    "masked_mean", "03", "code", "masked mean pooling: average only the real words", _check_masked_mean,
    ["The mean of a caption is the sum of its real tokens over their number; padded positions count in neither.",
     "A (B, T) mask does not broadcast against (B, T, D) tokens: give it a last axis and make it a float, "
     "mask.unsqueeze(-1).float(), then multiply, and sum over T (axis 1).",
     "m = mask.unsqueeze(-1).float(); return (tokens * m).sum(1) / m.sum(1)"],
    solutions.masked_mean)


_PADDING_SHARE = 1 - 13.8 / 59


def _check_padding_share(answer) -> str:
    share = _share(answer)
    explain = (f"a batch padded to 59 positions per caption whose captions hold 13.8 real tokens on average is "
               f"1 − 13.8 / 59 = {_PADDING_SHARE:.0%} padding")
    if abs(share - 13.8 / 59) < 0.03:
        raise Mistake(f"not {share:.0%}: 13.8 / 59 ≈ {13.8 / 59:.0%} is the share of *real* tokens; {explain}")
    if abs(share - _PADDING_SHARE) > 0.08:
        raise Mistake(f"{'far more' if share < _PADDING_SHARE else 'less'} than {share:.0%}: {explain}")
    return (f"{explain}. Without a mask, most of what the blog's attention averages is padding; the course sorts "
            "captions by length and carries the mask.")


padding_share = _register(
    "padding_share", "03", "predict", "what share of a padded batch is padding?", _check_padding_share,
    ["Every caption gets 59 positions; on average 13.8 of them are real.",
     "Padding is every position that is not real: the share is 1 minus the real positions over all positions."],
    f"{_PADDING_SHARE:.2f}: 1 − 13.8 / 59. The longest caption sets T for the whole batch.")
