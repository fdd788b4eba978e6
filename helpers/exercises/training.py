"""The exercises of notebook 05 · joint training: info_nce, chance_loss, should_stop."""
from __future__ import annotations

import math
import random

import numpy as np
import torch
import torch.nn.functional as F

from .. import losses
from ..train import TrainConfig, finished
from . import solutions
from .core import Mistake, _call, _check_loss_on, _loss_inputs, _number, _register


def _info_nce_inputs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The notebook's 6 × 6 input first (its messages stay the same), then a 5 × 5 batch at another temperature
    (a batch size written as 6 fails) and an 8 × 8 one whose off-diagonal scores are often the highest."""
    g = torch.Generator().manual_seed(19)
    return [_loss_inputs(9),
            (torch.rand(5, 5, generator=g) * 2 - 1 + torch.eye(5) * 0.3, torch.tensor(math.log(10.0))),
            (torch.rand(8, 8, generator=g) * 2 - 1, torch.tensor(math.log(30.0)))]


def _check_info_nce(fn) -> str:
    def mistakes(scores, scale):
        b = len(scores)
        t, logits = torch.arange(b), scores * scale.exp()
        zeros = torch.zeros(b, dtype=torch.long)
        ce = F.cross_entropy
        return [("only one direction of InfoNCE (image → text): average it with text → image, on logits.t()",
                 ce(logits, t)),
                ("only one direction of InfoNCE (text → image): average it with image → text", ce(logits.t(), t)),
                ("the two directions summed: take their mean", ce(logits, t) + ce(logits.t(), t)),
                ("temperature ignored: multiply the scores by logit_scale.exp()", (ce(scores, t) + ce(scores.t(), t)) / 2),
                ("logit_scale is a log: multiply by logit_scale.exp(), not by logit_scale",
                 (ce(scores * scale, t) + ce(scores.t() * scale, t)) / 2),
                ("divided by the scale: logit_scale.exp() is 1 / temperature, so multiply",
                 (ce(scores / scale.exp(), t) + ce(scores.t() / scale.exp(), t)) / 2),
                ("wrong targets: image i's match is caption i, so the targets are torch.arange(B)",
                 (ce(logits, zeros) + ce(logits.t(), zeros)) / 2),
                ("the loss summed over the batch: F.cross_entropy already averages, so keep its mean",
                 (ce(logits, t, reduction="sum") + ce(logits.t(), t, reduction="sum")) / 2)]

    _check_loss_on(fn, losses.info_nce, mistakes, _info_nce_inputs())
    return "symmetric InfoNCE with a learnable temperature, value and gradient as `losses.info_nce`."


info_nce = _register(
    "info_nce", "05", "code", "the symmetric InfoNCE loss with a learnable temperature", _check_info_nce,
    ["Turn the scores into logits with the temperature, then score each row (image → text) and each column "
     "(text → image) as a classification whose right answer is the matching pair.",
     "logits = scores * logit_scale.exp(); the right answer for row i is column i, so the targets are "
     "torch.arange(B); F.cross_entropy(logits, targets) is image → text.",
     "loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2, with "
     "logits = scores * logit_scale.exp() and targets = torch.arange(len(scores))."],
    solutions.info_nce)


def _check_chance_loss(answer) -> str:
    loss = _number(answer, "a loss")
    chance = math.log(64)
    if abs(loss - chance) > 0.15:
        why = {0: "0 would mean every match is certain",
               64: "64 is the number of candidates; the loss is the natural log of it",
               6: "6 is log₂ 64; cross-entropy uses the natural log"}.get(round(loss), "")
        if loss < 0:
            why = "a cross-entropy is never negative"
        elif 0 < loss < 0.05:
            why = "1/64 is each candidate's probability; the loss is −ln of it"
        raise Mistake(f"not {loss:g}{': ' + why if why else ''}. With equal scores the softmax gives each of the 64 "
                      f"candidates 1/64, at any temperature: the loss is −ln(1/64) = ln 64 ≈ {chance:.2f}")
    return ("equal scores give each of the 64 candidates 1/64 at any temperature: ln 64 ≈ 4.16, both directions. "
            "A curve that starts there and stays there has learned nothing.")


chance_loss = _register(
    "chance_loss", "05", "predict", "InfoNCE when every pair scores the same", _check_chance_loss,
    ["With equal scores, what probability does the softmax give the right caption among 64 candidates?",
     "Each of the 64 candidates gets 1/64, at any temperature; cross-entropy is −ln of the right one's probability "
     "(the natural log)."],
    "ln 64 ≈ 4.16, whatever the temperature: equal logits stay equal when multiplied by any scale.")


def _best_epoch(rsums: list, first: bool = True) -> int:
    """1-based epoch of the best rSum: the first that reached it (training keeps only strict improvements)."""
    best = max(rsums)
    return (rsums.index(best) if first else len(rsums) - 1 - rsums[::-1].index(best)) + 1


def _stop_cases(seed: int = 10) -> list[tuple[list, int]]:
    rng = random.Random(seed)
    return [([float(rng.randint(300, 304)) for _ in range(rng.randint(1, 9))], rng.randint(0, 4)) for _ in range(300)]


def _check_should_stop(fn) -> str:
    cases = _stop_cases()
    got = []
    for rsums, patience in cases:
        out = _call(fn, list(rsums), patience)
        if not isinstance(out, (bool, np.bool_)):
            raise Mistake(f"should_stop({rsums}, patience={patience}) returned {type(out).__name__} {out!r}: "
                          "return True or False (a comparison such as `len(rsums) - best_epoch >= patience` is one)")
        got.append(bool(out))
    want = [finished(TrainConfig(epochs=100, patience=p, device="cpu"), len(r), _best_epoch(r)) for r, p in cases]
    if got == want:
        return "stop once `patience` epochs have passed since the best rSum, never with patience 0 (as `train.finished`)."

    def since_improvement(r):                              # epochs since the last one that beat its predecessor
        return next((len(r) - 1 - i for i in range(len(r) - 1, 0, -1) if r[i] > r[i - 1]), len(r) - 1)

    variants = {
        "a tie counted as progress: only a strictly higher rSum is progress, so the best epoch is the first one that "
        "reached the best rSum": [p > 0 and len(r) - _best_epoch(r, first=False) >= p for r, p in cases],
        "each epoch compared with the one before; compare with the best rSum so far":
            [p > 0 and since_improvement(r) >= p for r, p in cases],
        "one epoch late: stop as soon as `patience` epochs have passed without progress (>=, not >)":
            [p > 0 and len(r) - _best_epoch(r) > p for r, p in cases],
        "patience 0 means early stopping is off: never stop for lack of progress":
            [len(r) - _best_epoch(r) >= p for r, p in cases],
        "one epoch early: epochs count from 1, so the best epoch is rsums.index(max(rsums)) + 1":
            [p > 0 and len(r) - (_best_epoch(r) - 1) >= p for r, p in cases],
    }
    for message, answers in variants.items():
        if got == answers:
            raise Mistake(message)
    (rsums, patience), g, w = next((c, g, w) for c, g, w in zip(cases, got, want) if g != w)
    raise Mistake(f"should_stop({rsums}, patience={patience}) returned {g}; the course's rule (train.finished) says {w}")


should_stop = _register(
    "should_stop", "05", "code", "early stopping with patience", _check_should_stop,
    ["Count the epochs since the best rSum so far, and compare that count with the patience; patience 0 "
     "switches early stopping off.",
     "Only a strictly higher rSum is progress, so the best epoch is the first that reached max(rsums), counted "
     "from 1: rsums.index(max(rsums)) + 1. Return True or False.",
     "best_epoch = rsums.index(max(rsums)) + 1; return patience > 0 and len(rsums) - best_epoch >= patience."],
    solutions.should_stop)
