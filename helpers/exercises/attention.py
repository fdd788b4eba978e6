"""The exercises of notebook 04 · decoupled attention: uniform_keys, drop_scaling, region_attention."""
from __future__ import annotations

import math

import torch

from .. import attention
from . import solutions
from .core import Mistake, _call, _choice, _compare, _register, _share, _tensor


def _check_uniform_keys(answer) -> str:
    share = _share(answer)
    r, d = 49, 8
    attn = attention.DecoupledAttention(d, d, d)
    g = torch.Generator().manual_seed(7)
    one_region = torch.randn(1, 1, d, generator=g).expand(1, r, d)        # every region alike: every key alike
    _, weights = attn(torch.randn(1, 5, d, generator=g), one_region)
    if not torch.allclose(weights, torch.full_like(weights, 1 / r)):      # what the course's module gives
        raise RuntimeError("attention.DecoupledAttention no longer gives uniform weights for identical keys")
    if abs(share - 1 / r) > 0.003:
        why = ("1 would put all the weight on one region; with equal keys no region can stand out"
               if share > 0.5 else "1/7 is one over the side of the 7 × 7 grid; the weights spread over all 49 "
               "regions" if abs(share - 1 / 7) < 0.01 else "the weights of each word still sum to 1 over the 49 "
               "regions")
        raise Mistake(f"not {share:g}: {why}. Equal keys give equal logits q·k/√d, and a softmax of equal logits "
                      f"is uniform: 1/49 ≈ {1 / r:.4f}")
    return "equal keys give equal logits, and the softmax of equal logits is uniform: 1/49 ≈ 0.0204 per region."


uniform_keys = _register(
    "uniform_keys", "04", "predict", "what weights do identical keys give?", _check_uniform_keys,
    ["If every region has the same key, every logit q·k/√d of a word is the same number.",
     "A softmax of R equal numbers gives each the same weight, and the weights sum to 1: how many regions are "
     "there?"],
    "1/49 ≈ 0.0204: equal logits, and a softmax of equal numbers is uniform over the 49 regions.")

_SCALING_CHOICES = {
    "a": "about 1/49: the weights stay spread over the regions",
    "b": "close to 1: each word puts nearly all its weight on a single region",
    "c": "close to 0: the weights vanish",
}


def _check_drop_scaling(answer) -> str:
    return _choice(answer, "b", {
        "a": "that is what the division by √d buys; without it the logits of width 1024 spread far wider "
             "(standard deviation about √1024 times larger) and one region wins",
        "b": "undivided, the logits' spread grows like √d; at d = 1024 the softmax saturates, one region takes "
             "nearly all of each word's weight, and the gradient through the others vanishes",
        "c": "the weights of a word always sum to 1: they cannot all vanish",
    })


drop_scaling = _register(
    "drop_scaling", "04", "change", "remove the division by √d at d = 1024", _check_drop_scaling,
    ["The logits are sums of d products: their spread grows with d. What does a softmax do to widely spread numbers?",
     "A softmax of numbers far apart gives almost all the weight to the largest; the weights still sum to 1."],
    "(b): without / √d the logits' standard deviation grows like √d, the softmax saturates and each word looks "
    "at one region (the table below: 0.96 at d = 1024).")


def _check_region_attention(fn) -> str:
    g = torch.Generator().manual_seed(8)
    b, t, r, d = 3, 5, 7, 16
    q, k = torch.randn(b, t, d, generator=g), torch.randn(b, r, d, generator=g)
    mask = torch.rand(b, r, generator=g) < 0.6
    mask[:, 0] = True                                                       # every image keeps a region
    module = attention.DecoupledAttention(d, d, d, use_value=False)        # the course's module, projections
    with torch.no_grad():                                                  # set to the identity: its softmax alone
        for lin in (module.query, module.key):
            lin.weight.copy_(torch.eye(d))
            lin.bias.zero_()
        expected = module(q, k, image_mask=mask)[1][:, 0]                  # (B, T, R)
    try:
        out = _call(fn, q.clone(), k.clone(), mask.clone())
    except Mistake as m:
        if "must match the size" in str(m):
            raise Mistake("the (B, R) mask did not line up with the (B, T, R) logits: the regions are the last axis, "
                          f"so index it as region_mask[:, None, :] ({m})") from None
        raise
    out = _tensor(out, (b, t, r), "weights (B, T, R)")
    logits = q @ k.transpose(-2, -1)
    blocked = ~mask[:, None, :]
    scaled = (logits / math.sqrt(d)).masked_fill(blocked, float("-inf"))
    after = (logits / math.sqrt(d)).softmax(-1).masked_fill(blocked, 0)
    _compare(out, expected, [
        ("no 1/√d scaling: divide the logits by √d (d = q.shape[-1]) before the softmax",
         logits.masked_fill(blocked, float("-inf")).softmax(-1)),
        ("divided by d, not by √d", (logits / d).masked_fill(blocked, float("-inf")).softmax(-1)),
        ("divided by √T (q.shape[1], the number of words), not by √d (q.shape[-1], the width)",
         (logits / math.sqrt(t)).masked_fill(blocked, float("-inf")).softmax(-1)),
        ("masked logits set to 0, not -inf: a masked region still gets weight; masked_fill them with float('-inf')",
         (logits / math.sqrt(d)).masked_fill(blocked, 0).softmax(-1)),
        ("softmax over the wrong axis: each word's weights over the regions must sum to 1 (softmax(dim=-1))",
         scaled.softmax(1)),
        ("softmax over the wrong axis: each word's weights over the regions must sum to 1 (softmax(dim=-1))",
         (logits / math.sqrt(d)).softmax(1)),
        ("mask ignored: masked regions got weight; fill their logits with -inf before the softmax",
         (logits / math.sqrt(d)).softmax(-1)),
        ("mask inverted: True marks a region that may be attended to",
         (logits / math.sqrt(d)).masked_fill(mask[:, None, :], float("-inf")).softmax(-1)),
        ("masked regions zeroed after the softmax: the weights no longer sum to 1; fill their logits with -inf "
         "before it", after),
    ], "the weight tensor")
    return "softmax over the regions of q·k/√d, masked regions at exactly 0, as `attention.DecoupledAttention`."


region_attention = _register(
    "region_attention", "04", "code", "masked, scaled dot-product attention over the regions", _check_region_attention,
    ["Each word's weights over the regions: a softmax over the regions of the scaled logits q·k/√d, where a "
     "masked region must get exactly 0.",
     "logits = q @ k.transpose(-2, -1) / math.sqrt(d): (B, T, R). A weight is exactly 0 when its logit is -inf "
     "before the softmax; the mask lines up with the last axis.",
     "logits.masked_fill(~region_mask[:, None, :], float(\"-inf\")).softmax(dim=-1)"],
    solutions.region_attention)
