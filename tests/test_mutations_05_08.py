"""Mutation suite of the exercises of notebooks 05-08: every typical wrong answer fails with the message of ITS
mistake, correct answers written unlike the reference pass with the reference's "✓" line, and a predict check
given a wrong type, NaN, infinity, a near miss or a bad table says so in a message (never another exception)."""
import json
import math
import random
import re
import time

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from helpers import exercises
from helpers.config import PROJECT_ROOT
from helpers.exercises import solutions
from helpers.features import FeatureSet
from helpers.pointing import cell_centres
from test_exercises import stop_one_late, stop_ties_as_progress as stop_tie_is_progress, stop_vs_previous

NOTEBOOKS = ("05_joint_training", "06_evaluation", "07_what_the_features_keep", "08_what_matters")
CODE = ("info_nce", "should_stop", "recall_at_k", "bootstrap_interval", "peak_centres", "pointwise_loss", "subsample",
        "interaction_terms")
PREDICT = ("chance_loss", "optimistic_ties", "caption_level", "leakage", "modality_chance", "gap_with_data")


# ----------------------------------------------------------------------------- 05 · info_nce

def _logits(scores, logit_scale):
    return scores * logit_scale.exp(), torch.arange(len(scores))


def nce_image_to_text(scores, logit_scale):
    logits, t = _logits(scores, logit_scale)
    return F.cross_entropy(logits, t)


def nce_text_to_image(scores, logit_scale):
    logits, t = _logits(scores, logit_scale)
    return F.cross_entropy(logits.t(), t)


def nce_summed(scores, logit_scale):
    logits, t = _logits(scores, logit_scale)
    return F.cross_entropy(logits, t) + F.cross_entropy(logits.t(), t)


def nce_no_temperature(scores, logit_scale):
    t = torch.arange(len(scores))
    return (F.cross_entropy(scores, t) + F.cross_entropy(scores.t(), t)) / 2


def nce_scale_not_exp(scores, logit_scale):
    t = torch.arange(len(scores))
    return (F.cross_entropy(scores * logit_scale, t) + F.cross_entropy(scores.t() * logit_scale, t)) / 2


def nce_divided(scores, logit_scale):
    logits, t = scores / logit_scale.exp(), torch.arange(len(scores))
    return (F.cross_entropy(logits, t) + F.cross_entropy(logits.t(), t)) / 2


def nce_zero_targets(scores, logit_scale):
    logits, _ = _logits(scores, logit_scale)
    t = torch.zeros(len(scores), dtype=torch.long)
    return (F.cross_entropy(logits, t) + F.cross_entropy(logits.t(), t)) / 2


def nce_batch_sum(scores, logit_scale):
    logits, t = _logits(scores, logit_scale)
    return (F.cross_entropy(logits, t, reduction="sum") + F.cross_entropy(logits.t(), t, reduction="sum")) / 2


def nce_detached(scores, logit_scale):
    return torch.tensor(solutions.info_nce(scores, logit_scale).item())


def nce_batch_of_six(scores, logit_scale):
    logits, t = scores * logit_scale.exp(), torch.arange(6)
    return (F.cross_entropy(logits, t) + F.cross_entropy(logits.t(), t)) / 2


def nce_log_softmax(scores, logit_scale):
    logits = scores * logit_scale.exp()
    return -(logits.log_softmax(1).diagonal().mean() + logits.log_softmax(0).diagonal().mean()) / 2


def nce_logsumexp(scores, logit_scale):
    logits = logit_scale.exp() * scores
    matched = logits.diagonal()
    return ((logits.logsumexp(1) - matched).mean() + (logits.logsumexp(0) - matched).mean()) * 0.5


# ----------------------------------------------------------------------------- 05 · should_stop

# stop_tie_is_progress, stop_vs_previous and stop_one_late: the mistakes test_exercises.py already writes.


def stop_patience_zero(rsums, patience):
    return len(rsums) - (rsums.index(max(rsums)) + 1) >= patience


def stop_zero_based(rsums, patience):
    return patience > 0 and len(rsums) - rsums.index(max(rsums)) >= patience


def stop_int(rsums, patience):
    return int(patience > 0 and len(rsums) - (rsums.index(max(rsums)) + 1) >= patience)


def stop_list(rsums, patience):
    return [patience > 0 and len(rsums) - (rsums.index(max(rsums)) + 1) >= patience]


def stop_words(rsums, patience):
    return "stop" if patience > 0 and len(rsums) - (rsums.index(max(rsums)) + 1) >= patience else "go on"


def stop_loop(rsums, patience):
    if patience == 0:
        return False
    best, best_epoch = -math.inf, 0
    for epoch, rsum in enumerate(rsums, start=1):
        if rsum > best:
            best, best_epoch = rsum, epoch
    return len(rsums) - best_epoch >= patience


def stop_numpy(rsums, patience):
    waited = len(rsums) - 1 - np.argmax(rsums)          # np.argmax: the first maximum
    return bool(patience) and waited >= patience


# ----------------------------------------------------------------------------- 06 · recall_at_k

def _ranks(scores, caption_image, ties_for_model=False, first_only=False):
    n_img, n_cap = scores.shape
    own = caption_image[None, :] == torch.arange(n_img)[:, None]
    ahead = (lambda a, b: a > b) if ties_for_model else (lambda a, b: a >= b)
    if first_only:
        best = scores[torch.arange(n_img), own.float().argmax(1)][:, None]
    else:
        best = scores.masked_fill(~own, float("-inf")).amax(1, keepdim=True)
    correct = scores[caption_image, torch.arange(n_cap)]
    return (ahead(scores, best) & ~own).sum(1), (ahead(scores, correct) & ~own).sum(0), own


def _pct(rank, k):
    return 100 * (rank < k).float().mean().item()


def recall_ties_for_model(scores, caption_image, k):
    i2t, t2i, _ = _ranks(scores, caption_image, ties_for_model=True)
    return _pct(i2t, k), _pct(t2i, k)


def recall_first_caption(scores, caption_image, k):
    i2t, t2i, _ = _ranks(scores, caption_image, first_only=True)
    return _pct(i2t, k), _pct(t2i, k)


def recall_own_as_wrong(scores, caption_image, k):
    _, t2i, own = _ranks(scores, caption_image)
    best = scores.masked_fill(~own, float("-inf")).amax(1, keepdim=True)
    return _pct((scores >= best).sum(1) - 1, k), _pct(t2i, k)


def recall_swapped(scores, caption_image, k):
    i2t, t2i, _ = _ranks(scores, caption_image)
    return _pct(t2i, k), _pct(i2t, k)


def recall_fractions(scores, caption_image, k):
    i2t, t2i, _ = _ranks(scores, caption_image)
    return _pct(i2t, k) / 100, _pct(t2i, k) / 100


def recall_rank_at_most_k(scores, caption_image, k):
    i2t, t2i, _ = _ranks(scores, caption_image)
    return 100 * (i2t <= k).float().mean().item(), 100 * (t2i <= k).float().mean().item()


def recall_loops(scores, caption_image, k):
    n_img, n_cap = scores.shape
    hits_i2t = 0
    for i in range(n_img):
        mine = caption_image == i
        hits_i2t += int((scores[i, ~mine] >= scores[i, mine].max()).sum()) < k
    hits_t2i = 0
    for j in range(n_cap):
        others = torch.arange(n_img) != caption_image[j]
        hits_t2i += int((scores[others, j] >= scores[caption_image[j], j]).sum()) < k
    return 100.0 * hits_i2t / n_img, 100.0 * hits_t2i / n_cap


def recall_tensors(scores, caption_image, k):
    own = F.one_hot(caption_image, len(scores)).t().bool()
    best = torch.where(own, scores, torch.full_like(scores, -1e9)).max(1).values
    i2t = torch.where(own, 0, (scores >= best[:, None]).long()).sum(1)
    correct = (scores * own).sum(0)
    t2i = torch.where(own, 0, (scores >= correct).long()).sum(0)
    return (i2t < k).double().mean() * 100, (t2i < k).double().mean() * 100       # 0-dim tensors


# ----------------------------------------------------------------------------- 06 · bootstrap_interval

def _image_rates(hits, caption_image, n_boot, rng, level=(2.5, 97.5), scale=100):
    n_img = caption_image.max() + 1
    captions_of = [np.flatnonzero(caption_image == i) for i in range(n_img)]
    rates = [scale * hits[np.concatenate([captions_of[i] for i in rng.integers(0, n_img, n_img)])].mean()
             for _ in range(n_boot)]
    lo, hi = np.percentile(rates, level)
    return float(lo), float(hi)


def boot_captions_apart(hits, caption_image, n_boot=1000, seed=0):
    rng = np.random.default_rng(seed)
    lo, hi = np.percentile([100 * hits[rng.integers(0, len(hits), len(hits))].mean() for _ in range(n_boot)],
                           [2.5, 97.5])
    return float(lo), float(hi)


def boot_too_many_images(hits, caption_image, n_boot=1000, seed=0):
    rng = np.random.default_rng(seed)
    n_img = caption_image.max() + 1
    captions_of = [np.flatnonzero(caption_image == i) for i in range(n_img)]
    rates = [100 * hits[np.concatenate([captions_of[i] for i in rng.integers(0, n_img, len(hits))])].mean()
             for _ in range(n_boot)]
    return tuple(float(x) for x in np.percentile(rates, [2.5, 97.5]))


def boot_without_replacement(hits, caption_image, n_boot=1000, seed=0):
    rng = np.random.default_rng(seed)
    lo, hi = np.percentile([100 * hits[rng.permutation(len(hits))].mean() for _ in range(n_boot)], [2.5, 97.5])
    return float(lo), float(hi)


def boot_90(hits, caption_image, n_boot=1000, seed=0):
    return _image_rates(hits, caption_image, n_boot, np.random.default_rng(seed), level=(5, 95))


def boot_99(hits, caption_image, n_boot=1000, seed=0):
    return _image_rates(hits, caption_image, n_boot, np.random.default_rng(seed), level=(0.5, 99.5))


def boot_shifted(hits, caption_image, n_boot=1000, seed=0):
    lo, hi = _image_rates(hits, caption_image, n_boot, np.random.default_rng(seed))
    return lo + 3, hi + 3


def boot_fractions(hits, caption_image, n_boot=1000, seed=0):
    return _image_rates(hits, caption_image, n_boot, np.random.default_rng(seed), scale=1)


def boot_percentile_fractions(hits, caption_image, n_boot=1000, seed=0):
    return _image_rates(hits, caption_image, n_boot, np.random.default_rng(seed), level=(0.025, 0.975))


def boot_not_seeded(hits, caption_image, n_boot=1000, seed=0):
    return _image_rates(hits, caption_image, n_boot, np.random.default_rng())


def boot_seed_ignored(hits, caption_image, n_boot=1000, seed=0):
    return _image_rates(hits, caption_image, n_boot, np.random.default_rng(0))


def boot_nan(hits, caption_image, n_boot=1000, seed=0):
    return float("nan"), float("nan")


def boot_reversed(hits, caption_image, n_boot=1000, seed=0):
    lo, hi = _image_rates(hits, caption_image, n_boot, np.random.default_rng(seed))
    return hi, lo


def boot_global_numpy(hits, caption_image, n_boot=1000, seed=0):
    np.random.seed(seed)                                  # the legacy global generator: the check restores it
    n_img = caption_image.max() + 1
    counts = np.bincount(caption_image, minlength=n_img)
    per_image = np.bincount(caption_image, hits, n_img)
    drawn = np.random.randint(0, n_img, (n_boot, n_img))
    rates = 100 * per_image[drawn].sum(1) / counts[drawn].sum(1)
    return tuple(np.percentile(rates, [2.5, 97.5]))


def boot_choice(hits, caption_image, n_boot=1000, seed=0):
    rng = np.random.default_rng(seed)
    images = np.unique(caption_image)
    rates = []
    for _ in range(n_boot):
        rows = np.concatenate([np.nonzero(caption_image == i)[0] for i in rng.choice(images, len(images))])
        rates.append(hits[rows].sum() / len(rows) * 100)
    return np.percentile(rates, [2.5, 97.5])              # an array of two


# ----------------------------------------------------------------------------- 07 · peak_centres

def _row_col(weights, side=None):
    side = side or math.isqrt(weights.shape[-1])
    peak = weights.argmax(-1)
    return peak // side, peak % side, side


def peaks_rows_cols(weights, width, height):
    row, col, s = _row_col(weights)
    return torch.stack([(row + 0.5) / s * width, (col + 0.5) / s * height], -1)


def peaks_x_y(weights, width, height):
    row, col, s = _row_col(weights)
    return torch.stack([(col + 0.5) / s * height, (row + 0.5) / s * width], -1)


def peaks_corner(weights, width, height):
    row, col, s = _row_col(weights)
    return torch.stack([col / s * width, row / s * height], -1)


def peaks_far_corner(weights, width, height):
    row, col, s = _row_col(weights)
    return torch.stack([(col + 1) / s * width, (row + 1) / s * height], -1)


def peaks_cells(weights, width, height):
    row, col, _ = _row_col(weights)
    return torch.stack([col + 0.5, row + 0.5], -1).float()


def peaks_fractions(weights, width, height):
    row, col, s = _row_col(weights)
    return torch.stack([(col + 0.5) / s, (row + 0.5) / s], -1)


def peaks_side_seven(weights, width, height):
    row, col, s = _row_col(weights, side=7)
    return torch.stack([(col + 0.5) / s * width, (row + 0.5) / s * height], -1)


def peaks_wrong_axis(weights, width, height):
    peak = weights.argmax(0)
    side = math.isqrt(weights.shape[-1])
    return torch.stack([(peak % side + 0.5) / side * width, (peak // side + 0.5) / side * height], -1)


def peaks_divmod(weights, width, height):
    side = int(weights.shape[1] ** 0.5)
    row, col = np.divmod(weights.argmax(dim=1).numpy(), side)
    cell_w, cell_h = width / side, height / side
    return torch.tensor(np.stack([col * cell_w + cell_w / 2, row * cell_h + cell_h / 2], 1))


def peaks_lookup(weights, width, height):
    centres = cell_centres(width, height, math.isqrt(weights.shape[-1]))
    return torch.from_numpy(centres[weights.argmax(-1).numpy()])


# ----------------------------------------------------------------------------- 08 · pointwise_loss

def _z(scores, logit_scale):
    z = scores * logit_scale.exp()
    return z, z.diag(), z.roll(-1, dims=1).diag()


def pw_info_nce(scores, logit_scale):
    return solutions.info_nce(scores, logit_scale)


def pw_all_negatives(scores, logit_scale):
    z, pos, _ = _z(scores, logit_scale)
    return F.softplus(-pos).mean() + F.softplus(z[~torch.eye(len(z), dtype=torch.bool)]).mean()


def pw_previous_caption(scores, logit_scale):
    z, pos, _ = _z(scores, logit_scale)
    return (F.softplus(-pos) + F.softplus(z.roll(1, dims=1).diag())).mean()


def pw_signs(scores, logit_scale):
    _, pos, neg = _z(scores, logit_scale)
    return (F.softplus(pos) + F.softplus(-neg)).mean()


def pw_no_temperature(scores, logit_scale):
    return (F.softplus(-scores.diag()) + F.softplus(scores.roll(-1, dims=1).diag())).mean()


def pw_scale_not_exp(scores, logit_scale):
    z = scores * logit_scale
    return (F.softplus(-z.diag()) + F.softplus(z.roll(-1, dims=1).diag())).mean()


def pw_summed(scores, logit_scale):
    _, pos, neg = _z(scores, logit_scale)
    return (F.softplus(-pos) + F.softplus(neg)).sum()


def pw_all_pairs_mean(scores, logit_scale):
    _, pos, neg = _z(scores, logit_scale)
    return torch.cat([F.softplus(-pos), F.softplus(neg)]).mean()


def pw_no_wrap_around(scores, logit_scale):
    z, pos, _ = _z(scores, logit_scale)
    return F.softplus(-pos).mean() + F.softplus(z[:-1, 1:].diag()).mean()


def pw_no_wrap_around_sum(scores, logit_scale):
    z, pos, _ = _z(scores, logit_scale)
    return (F.softplus(-pos).sum() + F.softplus(z[:-1, 1:].diag()).sum()) / len(z)


def pw_detached(scores, logit_scale):
    return torch.tensor(solutions.pointwise_loss(scores, logit_scale).item())


def pw_bce(scores, logit_scale):
    z = logit_scale.exp() * scores
    nxt = (torch.arange(len(z)) + 1) % len(z)
    pos, neg = z[torch.arange(len(z)), torch.arange(len(z))], z[torch.arange(len(z)), nxt]
    return (F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos))
            + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg)))


def pw_logsigmoid(scores, logit_scale):
    _, pos, neg = _z(scores, logit_scale)
    return -(F.logsigmoid(pos) + F.logsigmoid(-neg)).mean()


# ----------------------------------------------------------------------------- 08 · subsample

def _take(fs, order, fraction, size=round):
    return fs.select_images(torch.as_tensor(order[:max(1, size(fraction * fs.n_images))]).sort().values)


def sub_not_nested(fs, fraction, seed=0):
    g = torch.Generator().manual_seed(seed + int(100 * fraction))
    return _take(fs, torch.randperm(fs.n_images, generator=g), fraction)


def sub_captions(fs, fraction, seed=0):
    """Captions drawn one by one, then their images with only the drawn captions."""
    g = torch.Generator().manual_seed(seed)
    caps = torch.randperm(fs.n_captions, generator=g)[:round(fraction * fs.n_captions)].sort().values
    images = fs.caption_image[caps].unique()
    remap = torch.full((fs.n_images,), -1, dtype=torch.long)
    remap[images] = torch.arange(len(images))
    tokens = torch.cat([fs.tokens[fs.offsets[c]:fs.offsets[c + 1]] for c in caps.tolist()])
    return FeatureSet(fs.image_ids[images], fs.regions[images], fs.pooled[images], fs.caption_ids[caps],
                      remap[fs.caption_image[caps]], tokens,
                      torch.cat([torch.zeros(1, dtype=torch.long), fs.lengths()[caps].cumsum(0)]), fs.text_pooled[caps])


def sub_int(fs, fraction, seed=0):
    g = torch.Generator().manual_seed(seed)
    return _take(fs, torch.randperm(fs.n_images, generator=g), fraction, size=int)


def sub_ceil(fs, fraction, seed=0):
    g = torch.Generator().manual_seed(seed)
    return _take(fs, torch.randperm(fs.n_images, generator=g), fraction, size=math.ceil)


def sub_with_replacement(fs, fraction, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, fs.n_images, (max(1, round(fraction * fs.n_images)),), generator=g)
    return fs.select_images(rows)


def sub_not_seeded(fs, fraction, seed=0):
    return _take(fs, torch.randperm(fs.n_images), fraction)


def sub_seed_ignored(fs, fraction, seed=0):
    return _take(fs, torch.randperm(fs.n_images, generator=torch.Generator().manual_seed(0)), fraction)


def sub_none_kept(fs, fraction, seed=0):
    order = torch.randperm(fs.n_images, generator=torch.Generator().manual_seed(seed))
    return fs.select_images(order[:round(fraction * fs.n_images)].sort().values)


def sub_numpy(fs, fraction, seed=0):
    order = np.random.default_rng(seed).permutation(fs.n_images)
    n = max(1, int(round(fraction * fs.n_images)))
    return fs.select_images(torch.from_numpy(np.sort(order[:n])))


def sub_python(fs, fraction, seed=0):
    order = list(range(fs.n_images))
    random.Random(seed).shuffle(order)
    keep = torch.zeros(fs.n_images, dtype=torch.bool)
    keep[order[:max(1, round(fs.n_images * fraction))]] = True
    return fs.select_images(keep.nonzero().squeeze(1))


# ----------------------------------------------------------------------------- the suite

# exercise -> ([(wrong answer, a regex for the message of ITS mistake)], [correct answers unlike the reference])
# ----------------------------------------------------------------------------- 08 · interaction_terms

def it_only_encoder(contrast, encoder, base="minilm"):
    a, b = contrast
    return [(1, (encoder, a)), (-1, (encoder, b))]


def it_flipped(contrast, encoder, base="minilm"):
    a, b = contrast
    return [(1, (base, a)), (-1, (base, b)), (-1, (encoder, a)), (1, (encoder, b))]


def it_sums(contrast, encoder, base="minilm"):
    a, b = contrast
    return [(1, (encoder, a)), (1, (encoder, b)), (-1, (base, a)), (-1, (base, b))]


def it_crossed(contrast, encoder, base="minilm"):
    a, b = contrast
    return [(1, (encoder, a)), (-1, (base, b))]


def it_halves(contrast, encoder, base="minilm"):
    a, b = contrast
    return [(0.5, (encoder, a)), (-0.5, (encoder, b)), (-0.5, (base, a)), (0.5, (base, b))]


def it_minilm_hard_coded(contrast, encoder, base="minilm"):
    a, b = contrast
    return [(1, (encoder, a)), (-1, (encoder, b)), (-1, ("minilm", a)), (1, ("minilm", b))]


def it_models_hard_coded(contrast, encoder, base="minilm"):
    return [(1, (encoder, "decoupled")), (-1, (encoder, "joint_words")), (-1, (base, "decoupled")),
            (1, (base, "joint_words"))]


def it_dict(contrast, encoder, base="minilm"):
    a, b = contrast
    return {(encoder, a): 1, (encoder, b): -1, (base, a): -1, (base, b): 1}


def it_nan_weight(contrast, encoder, base="minilm"):
    a, b = contrast
    return [(float("nan"), (encoder, a)), (-1, (encoder, b)), (-1, (base, a)), (1, (base, b))]


def it_bare_models(contrast, encoder, base="minilm"):
    a, b = contrast
    return [(1, a), (-1, b), (-1, a), (1, b)]


def it_reordered_floats(contrast, encoder, base="minilm"):
    a, b = contrast
    return [[1.0, [base, b]], [-1.0, [base, a]], [-1.0, [encoder, b]], [1.0, [encoder, a]]]


def it_two_differences(contrast, encoder, base="minilm"):
    def difference(e, sign):
        return [(sign, (e, contrast[0])), (-sign, (e, contrast[1]))]
    return difference(encoder, 1) + difference(base, -1)


CODE_CASES = {
    "info_nce": ([(nce_image_to_text, r"only one direction of InfoNCE \(image → text\)"),
                  (nce_text_to_image, r"only one direction of InfoNCE \(text → image\)"),
                  (nce_summed, r"the two directions summed"), (nce_no_temperature, r"temperature ignored"),
                  (nce_scale_not_exp, r"logit_scale is a log"), (nce_divided, r"divided by the scale"),
                  (nce_zero_targets, r"wrong targets"), (nce_batch_sum, r"the loss summed over the batch"),
                  (nce_detached, r"cut from the graph"),
                  (nce_batch_of_six, r"your function raised \w+Error: .*batch_size")],
                 [nce_log_softmax, nce_logsumexp]),
    "should_stop": ([(stop_tie_is_progress, r"a tie counted as progress"),
                     (stop_vs_previous, r"each epoch compared with the one before"),
                     (stop_one_late, r"one epoch late"), (stop_patience_zero, r"patience 0 means early stopping is off"),
                     (stop_zero_based, r"one epoch early: epochs count from 1"),
                     (stop_int, r"returned int [01]: return True or False"),
                     (stop_list, r"returned list \[(True|False)\]: return True or False"),
                     (stop_words, r"returned str '(stop|go on)': return True or False")],
                    [stop_loop, stop_numpy]),
    "recall_at_k": ([(recall_ties_for_model, r"ties counted in the model's favour"),
                     (recall_first_caption, r"i2t counted only each image's first caption"),
                     (recall_own_as_wrong, r"i2t ranked the image's other captions as wrong ones"),
                     (recall_swapped, r"i2t and t2i swapped"), (recall_fractions, r"fractions, not percent"),
                     (recall_rank_at_most_k, r"one place too generous: .*rank < k, not rank <= k")],
                    [recall_loops, recall_tensors]),
    "bootstrap_interval": ([(boot_captions_apart, r"captions resampled apart from their images"),
                            (boot_too_many_images, r"too many images per replicate"),
                            (boot_without_replacement, r"draw \*with\* replacement"),
                            (boot_90, r"a 90% interval, not a 95% one"), (boot_99, r"a 99% interval, not a 95% one"),
                            (boot_shifted, r"right width but is shifted by \+[23]\.\d points"),
                            (boot_fractions, r"fractions, not percent"),
                            (boot_percentile_fractions, r"np\.percentile takes percents"),
                            (boot_not_seeded, r"not seeded: two calls with seed 0"),
                            (boot_seed_ignored, r"the seed is ignored"),
                            (boot_nan, r"expected an interval bound as a finite number, got nan"),
                            (boot_reversed, r"lo > hi")],
                           [boot_global_numpy, boot_choice]),
    "peak_centres": ([(peaks_rows_cols, r"rows and columns swapped"), (peaks_x_y, r"x and y swapped"),
                      (peaks_corner, r"the cell's corner, not its centre"),
                      (peaks_far_corner, r"the cell's far corner, not its centre"),
                      (peaks_cells, r"in grid cells, not pixels"), (peaks_fractions, r"in fractions of the image"),
                      (peaks_side_seven, r"the grid's side written as 7: .*math\.isqrt\(16\) = 4"),
                      (peaks_wrong_axis, r"argmax over the wrong axis")],
                     [peaks_divmod, peaks_lookup]),
    "pointwise_loss": ([(pw_info_nce, r"candidates compete"),
                        (pw_all_negatives, r"every mismatched pair used as a negative"),
                        (pw_previous_caption, r"the negative is caption i − 1"), (pw_signs, r"signs swapped"),
                        (pw_no_temperature, r"temperature ignored"), (pw_scale_not_exp, r"logit_scale is a log"),
                        (pw_summed, r"summed over the batch: take the mean"),
                        (pw_all_pairs_mean, r"averaged over all 2B pairs"),
                        (pw_no_wrap_around, r"the last image's negative is missing: .*wraps around to caption 0"),
                        (pw_no_wrap_around_sum, r"the last image's negative is missing: .*wraps around to caption 0"),
                        (pw_detached, r"cut from the graph")],
                       [pw_bce, pw_logsigmoid]),
    "subsample": ([(sub_not_nested, r"not nested"), (sub_captions, r"captions resampled apart from their images"),
                   (sub_int, r"int\(\) cuts 6\.6 down to 6; round it"),
                   (sub_ceil, r"math\.ceil rounds 2\.4 up to 3; round it"),
                   (sub_with_replacement, r"an image kept twice .*without replacement"),
                   (sub_not_seeded, r"not seeded: two calls with seed 0"), (sub_seed_ignored, r"the seed is ignored"),
                   (sub_none_kept, r"no image kept for fraction 0\.01: .*max\(1, round")],
                  [sub_numpy, sub_python]),
    "interaction_terms": ([(it_only_encoder, r"only the contrast on gru"), (it_flipped, r"every sign flipped"),
                           (it_sums, r"B added instead of subtracted"),
                           (it_crossed, r"A on one encoder against B on the other"),
                           (it_halves, r"weights of ±0\.5 average"),
                           (it_minilm_hard_coded, r"'minilm' hard-coded where the call passed base='gru'"),
                           (it_models_hard_coded, r"the models are hard-coded"),
                           (it_dict, r"expected a list of \(weight, \(encoder, model\)\) terms, got dict"),
                           (it_nan_weight, r"term 0's weight is nan: weights must be finite"),
                           (it_bare_models, r"term 0's runs are 'decoupled': name them as \(encoder, model\)")],
                          [it_reordered_floats, it_two_differences]),
}

WRONG = [(name, wrong, message) for name, (wrongs, _) in CODE_CASES.items() for wrong, message in wrongs]
RIGHT = [(name, right) for name, (_, rights) in CODE_CASES.items() for right in rights]


def _verdict(name, answer, *context):
    """The check's line: "✓ ..." when it passes, else the AssertionError's message (no other exception)."""
    try:
        exercises.EXERCISES[name].check(answer, *context)
    except AssertionError as err:
        return str(err)
    return "passed"


def test_every_exercise_of_05_08_has_its_mutation_cases():
    assert sorted(CODE_CASES) == sorted(CODE)
    for name, (wrongs, rights) in CODE_CASES.items():
        assert len({message for _, message in wrongs}) >= 5 and len(rights) >= 2, name   # 5 mistakes, 5 messages
    assert {ex.name for ex in exercises.EXERCISES.values() if ex.notebook in ("05", "06", "07", "08")} == \
        set(CODE) | set(PREDICT)


@pytest.mark.parametrize("name, wrong, message", WRONG, ids=lambda x: getattr(x, "__name__", None))
def test_a_typical_mistake_fails_with_its_own_message(name, wrong, message, capsys):
    verdict = _verdict(name, wrong)
    assert verdict.startswith(f"✗ {name}: "), f"{wrong.__name__} was not failed: {verdict!r} {capsys.readouterr().out}"
    assert re.search(message, verdict), f"{wrong.__name__} blamed on another mistake: {verdict!r}"
    others = {m for n, _, m in WRONG if n == name and m != message}          # the other mistakes' messages
    assert not [m for m in others if re.search(m, verdict)], f"{wrong.__name__}: {verdict!r} names another mistake too"


@pytest.mark.parametrize("name, right", RIGHT, ids=lambda x: getattr(x, "__name__", None))
def test_a_correct_answer_unlike_the_reference_passes(name, right, capsys):
    exercises.EXERCISES[name].check(getattr(solutions, name))
    reference = capsys.readouterr().out
    exercises.EXERCISES[name].check(right)
    assert capsys.readouterr().out == reference


def test_the_bootstrap_check_leaves_numpys_global_generator_alone():
    np.random.seed(3)
    expected = np.random.rand(3)
    np.random.seed(3)
    exercises.bootstrap_interval.check(boot_global_numpy)
    assert np.array_equal(np.random.rand(3), expected)


def test_every_check_of_05_08_is_fast():
    for name in CODE:
        start = time.perf_counter()
        exercises.EXERCISES[name].check(getattr(solutions, name))
        assert time.perf_counter() - start < 3, name          # well under 1 s on an idle machine; shared CPUs here


# ----------------------------------------------------------------------------- predict exercises

def gap_table(word):
    return pd.DataFrame([{"gap": "joint - decoupled", "the gap": word}, {"gap": "dual - decoupled", "the gap": "narrows"}])


HOLDS = gap_table("holds (no credible change)")
NUMBER = r"as a number, got"
FINITE = r"as a finite number, got"
LETTER = r"answer with one of the letters .* as a string, like \"a\""
# predict -> (right answers, context, [(wrong answer, regex)])
PREDICT_CASES = {
    "chance_loss": ([4.16, math.log(64), np.float32(4.2)], (), [
        (0, r"not 0: 0 would mean every match is certain"), (64, r"64 is the number of candidates"),
        (6, r"log₂ 64"), (-1, r"never negative"), (1 / 64, r"each candidate's probability"),
        (4.0, r"not 4\. With equal scores"), (2.08, r"not 2\.08\.")]),
    "optimistic_ties": ([100, 100.0, torch.tensor(100)], (), [
        (0, r"pessimistic rule"), (50, r"not a coin flip"), (1, r"in percent, please"), (99, r"not 99%\. Every item")]),
    "caption_level": (["b", "(b)", " B "], (), [("a", r"not \(a\)"), ("c", r"not \(c\)"), ("d", r"not \(d\)")]),
    "leakage": (["b", "(B)"], (), [("a", r"not \(a\)"), ("c", r"not \(c\): .*chance")]),
    "modality_chance": ([0.5, 1 / 2, np.float64(0.5)], (), [
        (1.0, r"unmixed"), (0, r"always wrong"), (0.45, r"not 0\.45: .*can only guess"), (50, r"between 0 and 1")]),
    "gap_with_data": (["c", "(c)"], (HOLDS,), [("a", r"includes zero.*the answer is \(c\)"),
                                               ("b", r"the answer is \(c\)")]),
}
NUMERIC = ("chance_loss", "optimistic_ties", "modality_chance")
BAD_TYPES = [("4.16", NUMBER + r" str"), ([4.16], NUMBER + r" list"), (True, NUMBER + r" bool"),
             ({"answer": 1}, NUMBER + r" dict"), (float("nan"), FINITE + r" nan"), (float("inf"), FINITE + r" inf"),
             (-math.inf, FINITE + r" -inf"), (10 ** 400, r"too large for a float")]
BAD_LETTERS = [(2, LETTER + r"; got int 2"), (["b"], LETTER + r"; got list"), (True, LETTER + r"; got bool"),
               ({"b": 1}, LETTER + r"; got dict"), (float("nan"), LETTER + r"; got float nan"),
               (float("inf"), LETTER + r"; got float inf"), ("bb", r"answer with one of the letters .*; got 'bb'")]
PREDICT_WRONG = [(name, wrong, message, context) for name, (_, context, wrongs) in PREDICT_CASES.items()
                 for wrong, message in wrongs + (BAD_TYPES if name in NUMERIC else BAD_LETTERS)]


@pytest.mark.parametrize("name, wrong, message, context", PREDICT_WRONG, ids=repr)
def test_a_wrong_prediction_fails_with_a_message(name, wrong, message, context):
    verdict = _verdict(name, wrong, *context)
    assert verdict.startswith(f"✗ {name}: ") and re.search(message, verdict), verdict


@pytest.mark.parametrize("name", PREDICT)
def test_a_right_prediction_passes_however_it_is_written(name, capsys):
    rights, context, _ = PREDICT_CASES[name]
    lines = set()
    for right in rights:
        exercises.EXERCISES[name].check(right, *context)
        lines.add(capsys.readouterr().out)
    assert len(lines) == 1 and lines.pop().startswith("✓ Correct: ")


@pytest.mark.parametrize("tables, message", [
    ((), r"the gap table is missing: pass it after your letter"),
    ((None,), r"the gap table is missing"),
    ((pd.DataFrame(),), r"the gap table is empty"),
    ((pd.DataFrame(columns=["gap", "the gap"]),), r"the gap table is empty"),
    (([["joint - decoupled", "holds"]],), r"expected the gap table \(a pandas DataFrame\).*got list"),
    (("holds",), r"expected the gap table \(a pandas DataFrame\).*got str"),
    ((pd.DataFrame({"gap": ["joint - decoupled"], "change": [1.0]}),), r"no column 'the gap'"),
    ((pd.DataFrame({"model": ["joint"], "R@1": [1.0]}),), r"no column 'gap', 'the gap'"),
    ((gap_table("holds").iloc[1:],), r"no row 'joint - decoupled'"),
    ((gap_table(float("nan")),), r"not widens, narrows or holds"),
    ((HOLDS, HOLDS), r"the check was called the wrong way"),
], ids=repr)
def test_gap_with_data_says_what_is_wrong_with_the_table(tables, message):
    for letter in ("a", "c"):
        verdict = _verdict("gap_with_data", letter, *tables)
        assert verdict.startswith("✗ gap_with_data: ") and re.search(message, verdict), verdict


def test_a_bad_letter_is_named_before_a_bad_table():
    assert re.search(LETTER, _verdict("gap_with_data", 3, None))


# ----------------------------------------------------------------------------- hints and the stored lines

@pytest.mark.parametrize("name", CODE + PREDICT)
def test_every_exercise_of_05_08_has_tiered_hints(name, capsys):
    ex = exercises.EXERCISES[name]
    ex.hint()
    first = capsys.readouterr().out
    ex.hint(2)
    second = capsys.readouterr().out
    assert first.startswith("Hint 1/") and second.startswith("Hint 2/") and first[9:] != second[9:]
    assert f"exercises.{name}.hint(2)" in first


def test_the_checks_print_the_lines_the_notebooks_store(capsys):
    stored = set()
    for notebook in NOTEBOOKS:
        cells = json.loads((PROJECT_ROOT / "notebooks" / f"{notebook}.ipynb").read_text())["cells"]
        stored |= {line for cell in cells for out in cell.get("outputs", []) for line in "".join(out.get("text", "")).splitlines()
                   if line.startswith("✓ Correct")}
    for name in CODE:
        exercises.EXERCISES[name].check(getattr(solutions, name))
    for name in PREDICT:
        rights, context, _ = PREDICT_CASES[name]
        exercises.EXERCISES[name].check(rights[0], *context)
    printed = set(capsys.readouterr().out.splitlines())
    assert printed == stored
