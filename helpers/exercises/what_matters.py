"""The exercises of notebook 08 · what matters: pointwise_loss, subsample, gap_with_data, interaction_terms."""
from __future__ import annotations

import math

import pandas as pd
import torch
import torch.nn.functional as F

from .. import features, losses
from ..features import FeatureSet, synthetic_featureset
from . import solutions
from .core import Mistake, _call, _check_loss_on, _choice, _letter, _loss_inputs, _register


def _pointwise_inputs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The notebook's 6 × 6 input first, then two where the wrap-around pair (the last image with caption 0) scores
    high, so a loss without it is far off, at another batch size and temperature."""
    g = torch.Generator().manual_seed(23)
    wrap5 = torch.rand(5, 5, generator=g) * 2 - 1 + torch.eye(5) * 0.5
    wrap5[-1, 0] = 0.9
    wrap8 = torch.rand(8, 8, generator=g) * 2 - 1
    wrap8[-1, 0] = 0.8
    return [_loss_inputs(13), (wrap5, torch.tensor(math.log(10.0))), (wrap8, torch.tensor(math.log(1 / 0.07)))]


def _check_pointwise_loss(fn) -> str:
    def mistakes(scores, scale):
        b = len(scores)
        z = scores * scale.exp()
        pos, neg = z.diag(), z.roll(-1, dims=1).diag()
        no_wrap = z[:-1, 1:].diag()                                   # image i with caption i + 1, for i < B - 1
        off = ~torch.eye(b, dtype=torch.bool)
        sp = F.softplus
        wrap = ("the last image's negative is missing: image B − 1's negative wraps around to caption 0, which "
                "z.roll(-1, dims=1).diag() gives (slicing z[:-1, 1:] drops it)")
        return [("candidates compete: that is InfoNCE (a softmax over the batch); the pointwise loss judges each pair "
                 "alone with a logistic (softplus) loss", losses.info_nce(scores, scale)),
                ("every mismatched pair used as a negative: the course's loss takes one per image, caption i + 1 "
                 "(z.roll(-1, dims=1).diag())", sp(-pos).mean() + sp(z[off]).mean()),
                ("the negative is caption i − 1; the course's is caption i + 1: z.roll(-1, dims=1).diag()",
                 (sp(-pos) + sp(z.roll(1, dims=1).diag())).mean()),
                ("signs swapped: a matched pair costs softplus(−z) (high z is good), a mismatched one softplus(z)",
                 (sp(pos) + sp(-neg)).mean()),
                ("temperature ignored: multiply the scores by logit_scale.exp()",
                 (sp(-scores.diag()) + sp(scores.roll(-1, dims=1).diag())).mean()),
                ("logit_scale is a log: multiply by logit_scale.exp(), not by logit_scale",
                 (sp(-scores.diag() * scale) + sp(scores.roll(-1, dims=1).diag() * scale)).mean()),
                ("summed over the batch: take the mean over the B images", (sp(-pos) + sp(neg)).sum()),
                ("averaged over all 2B pairs, which halves the loss: the course's loss averages softplus(−positive) + "
                 "softplus(negative) over the B images", torch.cat([sp(-pos), sp(neg)]).mean()),
                (wrap, sp(-pos).mean() + sp(no_wrap).mean()),
                (wrap, (sp(-pos[:-1]) + sp(no_wrap)).mean()),
                (wrap, (sp(-pos).sum() + sp(no_wrap).sum()) / b)]

    _check_loss_on(fn, losses.pointwise, mistakes, _pointwise_inputs())
    return "each matched pair and one mismatched pair per image judged alone, as `losses.pointwise`."


pointwise_loss = _register(
    "pointwise_loss", "08", "code", "the per-pair logistic loss that judges each pair alone", _check_pointwise_loss,
    ["Judge each pair on its own: a matched pair should score high, a mismatched one low, each through a logistic "
     "loss (F.softplus). Every image has one matched caption and one mismatched one, the next caption.",
     "z = scores * logit_scale.exp(); positives z.diag(), negatives z.roll(-1, dims=1).diag() (image i with caption "
     "i + 1; the last image's wraps around to caption 0).",
     "return (F.softplus(-positive) + F.softplus(negative)).mean(), with positive = z.diag() and negative = "
     "z.roll(-1, dims=1).diag()."],
    solutions.pointwise_loss)


def _check_subsample(fn) -> str:
    fs = synthetic_featureset(n_images=20, captions_per_image=3, regions=2, image_dim=4, text_dim=4, max_len=5, seed=14)
    captions_of = {int(fs.image_ids[i]): set(fs.caption_ids[fs.caption_image == i].tolist()) for i in range(fs.n_images)}

    def run(fraction, seed):
        out = _call(fn, fs, fraction, seed)
        if not isinstance(out, FeatureSet):
            raise Mistake(f"expected a FeatureSet (fs.select_images(rows) makes one), got {type(out).__name__}")
        images = [int(i) for i in out.image_ids]
        if len(set(images)) < len(images):
            raise Mistake(f"an image kept twice ({len(images) - len(set(images))} repeats for fraction {fraction}): a "
                          "subset draws images without replacement, so take the first ones of one random order "
                          "(torch.randperm)")
        n = fraction * fs.n_images
        want = features.subsample(fs, fraction, seed).n_images
        if not images:
            raise Mistake(f"no image kept for fraction {fraction}: round({fraction} × {fs.n_images}) = {round(n)}, "
                          "so keep at least one image: max(1, round(fraction * N))")
        for i in images:
            kept = set(out.caption_ids[out.caption_image == images.index(i)].tolist())
            if kept != captions_of[i]:
                raise Mistake(f"captions resampled apart from their images: image {i} kept {len(kept)} of its "
                              f"{len(captions_of[i])} captions; keep images, each with all its captions "
                              "(fs.select_images)")
        if set(out.caption_ids.tolist()) - set().union(*(captions_of[i] for i in images)):
            raise Mistake("captions of images that were not kept: select images, and their captions follow")
        if len(images) != want:
            if len(images) == int(n) != round(n):
                raise Mistake(f"{len(images)} images for fraction {fraction}: int() cuts {n:g} down to {int(n)}; "
                              f"round it: round({fraction} × {fs.n_images}) = {want}")
            if len(images) == math.ceil(n) != round(n):
                raise Mistake(f"{len(images)} images for fraction {fraction}: math.ceil rounds {n:g} up to "
                              f"{math.ceil(n)}; round it: round({fraction} × {fs.n_images}) = {want}")
            counted = " (you counted captions, not images)" if len(images) == round(fraction * fs.n_captions) else ""
            raise Mistake(f"{len(images)} images for fraction {fraction}; expected round({fraction} × {fs.n_images}) "
                          f"= {want}{counted}")
        return set(images)

    quarter = run(0.25, 0)
    if run(0.25, 0) != quarter:
        raise Mistake("not seeded: two calls with seed 0 gave different images; use torch.Generator().manual_seed(seed)")
    half, whole = run(0.5, 0), run(1.0, 0)
    if not quarter <= half <= whole:
        raise Mistake("not nested: the 25% subset is not inside the 50% one, so the curve would change the images as "
                      "well as their number; draw one order per seed and take its first images")
    if run(0.5, 1) == half:
        raise Mistake("the seed is ignored: seeds 0 and 1 gave the same images")
    small, third, tiny = run(0.12, 0), run(0.33, 0), run(0.01, 0)     # 2.4, 6.6 and 0.2 images: rounding shows
    if not tiny <= small <= quarter <= third <= half:
        raise Mistake("not nested: a smaller fraction's images are not all in a larger one's; draw one order per "
                      "seed and take its first images")
    return "nested subsets of images with all their captions, as `features.subsample` draws them."


subsample = _register(
    "subsample", "08", "code", "nested training subsets that keep captions with their images", _check_subsample,
    ["Draw images, not captions, and keep each with all its captions; the same seed must give the same images, "
     "and a smaller fraction's images must sit inside a larger one's.",
     "One random order of the images per seed (torch.randperm with torch.Generator().manual_seed(seed)); keep "
     "its first round(fraction × N) images, at least one: the same order for every fraction makes them nested.",
     "order = torch.randperm(fs.n_images, generator=torch.Generator().manual_seed(seed)); return "
     "fs.select_images(order[:max(1, round(fraction * fs.n_images))].sort().values)."],
    solutions.subsample)


_GAP_CHOICES = {"a": "joint's lead over decoupled grows", "b": "it shrinks",
                "c": "no credible change"}


_CALL = "exercises.gap_with_data.check(prediction, gaps)"


def _gap_word(gaps) -> str:
    """The gap table's word for joint - decoupled, or a Mistake saying what is wrong with the table passed."""
    if gaps is None:
        raise Mistake(f"the gap table is missing: pass it after your letter, {_CALL}, with `gaps` from the cell "
                      "that builds the gap table (run that cell first)")
    if not isinstance(gaps, pd.DataFrame):
        raise Mistake(f"expected the gap table (a pandas DataFrame) after your letter, got {type(gaps).__name__}: "
                      f"call {_CALL}")
    if gaps.empty:
        raise Mistake("the gap table is empty: rerun the cell that builds `gaps` (it needs the data-scale runs), "
                      f"then {_CALL}")
    missing = [column for column in ("gap", "the gap") if column not in gaps.columns]
    if missing:
        raise Mistake(f"the table passed has no column {', '.join(repr(c) for c in missing)}: pass the gap table "
                      f"`gaps` (ablations.gap_table), {_CALL}")
    rows = gaps.loc[gaps["gap"] == "joint - decoupled", "the gap"]
    if rows.empty:
        raise Mistake("the gap table has no row 'joint - decoupled': pass the gap table of the data-scale runs, "
                      f"{_CALL}")
    word = rows.iloc[0]
    if not isinstance(word, str) or not word.startswith(("widens", "narrows", "holds")):
        raise Mistake(f"the gap table's word for joint - decoupled is {word!r}, not widens, narrows or holds: rebuild "
                      f"`gaps` with ablations.gap_table, then {_CALL}")
    return word


def _check_gap_with_data(answer, gaps: pd.DataFrame = None) -> str:
    """`gaps`: 08's gap table (`helpers.pipeline.ablations.gap_table`); its word for joint - decoupled
    ("widens", "narrows", "holds") comes from the 95% interval of the gap's change between the smallest
    and the largest training set."""
    _letter(answer, "".join(_GAP_CHOICES))
    word = _gap_word(gaps)
    right = "a" if word.startswith("widens") else "b" if word.startswith("narrows") else "c"
    why = {
        "a": "the change of joint − decoupled from the smallest to the largest training set has a 95% interval "
             "wholly on the side that makes the gap larger: the gap grew",
        "b": "the change of joint − decoupled from the smallest to the largest training set has a 95% interval "
             "wholly on the side that makes the gap smaller: the gap shrank",
        "c": "the 95% interval of the change of joint − decoupled from the smallest to the largest training set "
             "includes zero: more data did not credibly change the gap",
    }
    wrong = {letter: f"{why[right]}; so the answer is ({right})" for letter in _GAP_CHOICES if letter != right}
    return _choice(answer, right, {**wrong, right: why[right]})


gap_with_data = _register(
    "gap_with_data", "08", "predict", "what happens to the gap with 4× the data", _check_gap_with_data,
    ["Look at the row `joint - decoupled` of the gap table: the change from the smallest to the largest training "
     "set and its 95% interval.",
     "An interval that includes zero is no credible change; one wholly on one side says the gap moved that way. "
     "The table's last column puts it in a word."],
    "Read it off the gap table's last column: (a) if the gap widens, (b) if it narrows, (c) if it holds.")


_TERM_CASES = ((("decoupled", "joint_words"), "gru", "minilm"),
               (("decoupled", "decoupled_pooled"), "random_minilm", "minilm"),
               (("joint", "dual"), "random_minilm", "gru"))      # another base and other models: nothing hard-coded


def _term_weights(out) -> dict[tuple[str, str], float]:
    """The learner's terms -> {(encoder, model): summed weight}, zero weights dropped; a Mistake for a bad shape."""
    if not isinstance(out, (list, tuple)):
        raise Mistake(f"expected a list of (weight, (encoder, model)) terms, got {type(out).__name__}")
    if not out:
        raise Mistake("an empty list: the change of A − B needs the runs of A and B on both encoders")
    weights: dict[tuple[str, str], float] = {}
    for i, term in enumerate(out):
        if not isinstance(term, (list, tuple)) or len(term) != 2:
            raise Mistake(f"term {i} is {term!r:.60}: each term is a pair (weight, (encoder, model)), "
                          "e.g. (1, ('gru', 'decoupled'))")
        weight, run = term
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise Mistake(f"term {i}'s weight is {weight!r:.40} ({type(weight).__name__}): a plain number, +1 or −1")
        if not math.isfinite(weight):
            raise Mistake(f"term {i}'s weight is {weight}: weights must be finite numbers (+1 or −1)")
        if not isinstance(run, (list, tuple)) or len(run) != 2 or not all(isinstance(k, str) for k in run):
            raise Mistake(f"term {i}'s runs are {run!r:.60}: name them as (encoder, model), e.g. ('gru', 'decoupled')")
        weights[tuple(run)] = weights.get(tuple(run), 0.0) + float(weight)
    return {run: w for run, w in weights.items() if w != 0}


def _check_interaction_terms(fn) -> str:
    def as_weights(terms):
        return _term_weights(terms)

    for contrast, encoder, base in _TERM_CASES:
        (a, b), e = contrast, encoder
        got = _term_weights(_call(fn, contrast, encoder, base))
        want = as_weights(solutions.interaction_terms(contrast, encoder, base))
        if _same_weights(got, want):
            continue
        minus = {run: -w for run, w in want.items()}
        mistakes = [
            (f"only the contrast on {e}: the interaction is how A − B *changes* when the encoder changes, so "
             f"subtract the same contrast on `base`", {(e, a): 1, (e, b): -1}),
            ("every sign flipped: that is (A − B on base) − (A − B on encoder), or B − A on both; keep A − B, "
             "the encoder's contrast first", minus),
            ("B added instead of subtracted: that is how the encoder moves A + B (its own effect on both models), "
             "not how it moves the contrast A − B", {(e, a): 1, (e, b): 1, (base, a): -1, (base, b): -1}),
            ("A on one encoder against B on the other: two things change at once; take A − B on each encoder, "
             "then their difference", {(e, a): 1, (base, b): -1}),
            ("weights of ±0.5 average the two contrasts; their change is a plain difference of differences, "
             "weights ±1", {run: w / 2 for run, w in want.items()}),
        ]
        if base != "minilm":
            mistakes.append((f"'minilm' hard-coded where the call passed base={base!r}: use the `base` argument",
                             as_weights(solutions.interaction_terms(contrast, encoder, "minilm"))))
        if contrast != _TERM_CASES[0][0]:
            mistakes.append(("the models are hard-coded (decoupled, joint_words) where the call passed "
                             f"contrast={contrast}: take A and B from the `contrast` argument",
                             as_weights(solutions.interaction_terms(_TERM_CASES[0][0], encoder, base))))
        for message, wrong in mistakes:
            if _same_weights(got, wrong):
                raise Mistake(message)
        raise Mistake(f"for contrast={contrast}, encoder={encoder!r}, base={base!r} the terms are not the change of "
                      f"A − B: each of the four runs (A and B on each encoder) should weigh +1 or −1 so that the sum "
                      f"is (A − B on the encoder) − (A − B on the base); got {got}")
    return "(A − B on the encoder) − (A − B on the base): four runs, weights ±1, as `encoder_prior.interaction_terms`."


def _same_weights(got: dict, want: dict) -> bool:
    return got.keys() == want.keys() and all(math.isclose(got[k], want[k]) for k in got)


interaction_terms = _register(
    "interaction_terms", "08", "code", "the change of a contrast when the text encoder changes",
    _check_interaction_terms,
    ["An interaction is a difference of differences: first the contrast A − B on each encoder, then how much "
     "it moved from the base encoder to the other one.",
     "Four runs take part: A and B on `encoder`, A and B on `base`. Each enters once, with weight +1 or −1; write "
     "the sum out as (A_enc − B_enc) − (A_base − B_base) and read the signs off it.",
     "a, b = contrast; return [(1, (encoder, a)), (-1, (encoder, b)), (-1, (base, a)), (1, (base, b))]"],
    solutions.interaction_terms)
