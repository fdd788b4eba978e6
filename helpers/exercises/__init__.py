"""Exercises with automatic checks, Kaggle Learn's pattern: `exercises.<name>.check(answer)`, `.hint()`, `.solution()`.

Three kinds, placed in notebooks 01-08 where each idea is taught:
- "code": write the core lines of a function yourself. `check(your_function)` runs it on fresh random
  inputs (seeded, so every message is the same on every run) and compares it with the course's own
  reference (`models.masked_mean`, `metrics.ranks`, `losses.info_nce`, ...). When the answer is wrong, the
  message names the mistake ("padding counted in the mean", "ties counted in the model's favour", "wrong
  shape: expected (B, D), got ...") rather than only saying that something is.
- "predict": predict a number or pick a letter first, then run; `check(prediction)` explains the answer.
- "change": change one thing in a cell, rerun it, and say what happened; `check(letter)` explains why.

A wrong answer raises AssertionError carrying that message, so a broken solution in the instructor
notebooks fails nbval and the tests, and a learner's "Run all" stops at the first exercise left to do.
A right answer prints one fixed line that starts with "✓" (nbval compares it exactly). A check never
touches the global random state: the cells after an exercise draw the same numbers with it or without it.

The reference solutions, which `.solution()` prints, are in `helpers.exercises.solutions`. The machinery every
exercise shares is `core`; each notebook's exercises and their checks are in a module of their own, named for it.
"""
from .core import EXERCISES, Exercise, Mistake
from .preprocessing import mentions, normalise, split_by_image
from .image_features import regions_from_map, n_regions, nearest_neighbours
from .text_features import pad_packed, masked_mean, padding_share
from .attention import uniform_keys, drop_scaling, region_attention
from .training import info_nce, chance_loss, should_stop
from .evaluation import optimistic_ties, recall_at_k, bootstrap_interval, caption_level
from .features_kept import peak_centres, leakage, modality_chance
from .what_matters import pointwise_loss, subsample, gap_with_data, interaction_terms

__all__ = [
    "EXERCISES", "Exercise", "Mistake", "mentions", "normalise", "split_by_image", "regions_from_map",
    "n_regions", "nearest_neighbours", "pad_packed", "masked_mean", "padding_share", "uniform_keys",
    "drop_scaling", "region_attention", "info_nce", "chance_loss", "should_stop", "optimistic_ties",
    "recall_at_k", "bootstrap_interval", "caption_level", "peak_centres", "leakage",
    "modality_chance", "pointwise_loss", "subsample", "gap_with_data", "interaction_terms"]
