"""Checks that let a notebook be a test on anyone's machine.

nbval compares a cell's stored output exactly. That is right for text, shapes, counts and tables of
deterministic values, and wrong for numbers that come out of float kernels (a recall, a loss, an
interval): another CPU rounds differently, and the last digit moves. So the course shows those
numbers for reading (the cell's output is not compared: it carries the `nbval-ignore-output` tag)
and checks them in code, here, against a committed reference with a stated tolerance:

    expect(rsum, "06.rsum_mean", "rsum_mean")     # prints one deterministic line, or raises

The reference values live in `notebooks/references.json`; `make refresh` rewrites them
(COURSE_RECORD_REFERENCES=1) when the notebooks are re-executed on purpose. Each tolerance below
says why it is as wide as it is, and each is far narrower than what a real change of method moves
(dropping the text mask, counting ties in the model's favour: see the README's "What `make test`
promises").

The references are for the tested course: the pinned encoder pair on the CPU with the CPU budget.
Under another pair, device or budget the check says so and compares nothing.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .atomic import write_json
from .config import PATHS, course_device, encoder_pair

REFERENCE_FILE = PATHS.references


@dataclass(frozen=True)
class Tolerance:
    """An absolute tolerance and the reason for its size."""

    abs: float
    why: str


TOLERANCES = {
    "inference": Tolerance(0.01, "a frozen network on fixed inputs: float32 kernels differ by ~1e-5 and the "
                                 "float16 feature cache by one step (~1e-3 relative); a wrong weight file or "
                                 "preprocessing moves these by more than 0.1"),
    "random_init": Tolerance(0.02, "untrained modules on seeded random tensors: the generator's vectorised "
                                   "path and the products round differently per CPU (~1e-6)"),
    "percent_of_items": Tolerance(0.6, "a share of images or captions (percent) from float16 features: one "
                                       "nearest neighbour flipping by rounding moves it by 0.03-0.1 points"),
    "val_recall": Tolerance(1.5, "one training seed scored on 250 validation images: generic vs AVX2 kernels and "
                                 "Intel AMX vs AMD AVX2 machines gave the same recalls to 0.05 points; one image "
                                 "is 0.4 points of i2t, so a few images may move"),
    "test_recall": Tolerance(1.0, "recalls on the 1K test, averaged over seeds, and their interval bounds: an Intel "
                                  "AMX and an AMD AVX2 machine differed by at most 0.1 points; seed std is 0.1-2.5"),
    "test_rsum": Tolerance(2.0, "rSum (six recalls summed) on the 1K test, averaged over seeds, and its interval "
                                "bounds: Intel AMX vs AMD AVX2 differed by at most 0.1; seed std of rSum is ~4"),
    "relative_pct": Tolerance(1.5, "a relative rSum difference in percent and its bounds (1 rSum point is ~0.6%)"),
    "loss": Tolerance(0.05, "a training loss averaged over an epoch: float rounding over hundreds of steps"),
    "exact": Tolerance(0.0, "counts and verdict words: the same on every machine, or the science changed"),
    "val_rsum": Tolerance(2.5, "rSum of one training seed on 250 validation images: generic vs AVX2 kernels gave "
                               "the same value to 0.05, and Intel vs AMD the same to 0.1; switching the text mask "
                               "off moves joint's by 6.6"),
    "trained_score": Tolerance(0.02, "a trained model's similarity scores (-1..1): its weights differ a little "
                                     "per CPU after hundreds of steps"),
    "correlation": Tolerance(0.01, "a mean |correlation| (0-1) of trained vectors: shuffled rows give 0.003-0.03"),
    "pointing_points": Tolerance(3.0, "pointing-game differences in points over 3 seeds of ~1,500 cases: a few "
                                      "words whose attention peak moves to a neighbouring cell"),
    "probe": Tolerance(1.0, "linear-probe mAP in points on model vectors: the model's weights differ a little "
                            "per CPU (Intel vs AMD: 0.1 points); a probe refit amplifies that"),
    "single_run_rsum": Tolerance(3.0, "one run retrained from scratch and ranked on the 1K test, against the same "
                                      "run committed from another machine: float rounding over a few hundred steps "
                                      "can move early stopping by an epoch (neighbouring epochs differ by 1-3 "
                                      "points); the wrong image features move it by tens of points"),
    "rate": Tolerance(0.03, "a hit rate or accuracy (0-1) over ~1,000-1,500 cases from trained models"),
}


def references_apply() -> str | None:
    """None when the committed references describe this run; else why they do not."""
    pair = encoder_pair()["pair"]
    if pair != "course":
        return f"the references are for the course's encoder pair, not COURSE_ENCODERS={pair}"
    if course_device() != "cpu":
        return f"the references are CPU results, not COURSE_DEVICE={course_device()}"
    return None


def _load() -> dict:
    return json.loads(REFERENCE_FILE.read_text()) if REFERENCE_FILE.is_file() else {}


def _flatten(values) -> dict[str, float | str]:
    """A number, string, dict, Series or DataFrame -> {"row|column": value} of its cells."""
    if isinstance(values, pd.DataFrame):
        return {f"{r}|{c}": v for r, row in values.iterrows() for c, v in row.items()}
    if isinstance(values, (pd.Series, dict)):
        return {str(k): v for k, v in values.items()}
    return {"": values}


def _plain(v):
    if isinstance(v, (np.floating, float)):
        return float(v)
    if isinstance(v, (np.integer, int)) and not isinstance(v, bool):
        return int(v)
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    return str(v)


def _record(ref: str, flat: dict) -> None:
    data = _load()
    data[ref] = {k: _plain(v) for k, v in flat.items()}
    write_json(REFERENCE_FILE, dict(sorted(data.items())), indent=1, ensure_ascii=False)


def expect(values, ref: str, tolerance: str, budget: str = "cpu") -> None:
    """Check numbers shown in a cell against the committed reference `ref`; raise AssertionError naming
    each value that moved by more than TOLERANCES[tolerance]. Strings and booleans must be equal.

    `values`: a number, a string, a dict, a Series or a DataFrame (its numeric and text cells).
    Prints one line that is the same on every machine (so nbval can compare it).
    """
    tol = TOLERANCES[tolerance]
    flat = _flatten(values)
    n = len(flat)
    skip = references_apply() or (None if budget == "cpu" else f"the references are for the CPU budget, not {budget!r}")
    if skip:
        print(f"not checked: {skip}")
        return
    if os.environ.get("COURSE_RECORD_REFERENCES") == "1":
        _record(ref, flat)
    stored = _load().get(ref)
    if stored is None:
        raise AssertionError(f"no committed reference {ref!r} in {REFERENCE_FILE.name}; a maintainer records it "
                             "with `make refresh` (COURSE_RECORD_REFERENCES=1) and commits it")
    problems = []
    if set(stored) != set(flat):
        problems.append(f"entries differ: reference has {sorted(stored)[:6]}, computed {sorted(flat)[:6]}")
    for key in sorted(set(stored) & set(flat)):
        got, want = _plain(flat[key]), stored[key]
        label = f"{ref}[{key}]" if key else ref
        if isinstance(want, (int, float)) and not isinstance(want, bool) and isinstance(got, (int, float)):
            if not (abs(got - want) <= tol.abs or (math.isnan(got) and math.isnan(want))):
                problems.append(f"{label} = {got:.4g}, reference {want:.4g} (tolerance ±{tol.abs:g})")
        elif got != want:
            problems.append(f"{label} = {got!r}, reference {want!r} (must be equal)")
    if problems:
        raise AssertionError(f"{len(problems)} value(s) moved beyond the tolerance '{tolerance}' "
                             f"({tol.why}):\n  " + "\n  ".join(problems))
    what = "value" if n == 1 else f"{n} values"
    bound = "equal to" if tol.abs == 0 else f"within ±{tol.abs:g} of"
    print(f"checked: {what} {bound} the committed reference '{ref}'")


def agree(computed, committed, tolerance: str, what: str, budget: str = "cpu",
          fix: str = "rerun `make ablations` and commit its files") -> None:
    """Check numbers computed here against the same numbers committed from a maintainer's run (a number,
    dict or Series, matched by key); raise AssertionError naming each one that differs by more than
    TOLERANCES[tolerance], ending with `fix` (what to rerun when helpers changed on purpose). Prints one line
    that is the same on every machine."""
    tol = TOLERANCES[tolerance]
    skip = references_apply() or (None if budget == "cpu" else f"the committed runs are for the CPU budget, not {budget!r}")
    if skip:
        print(f"not checked: {skip}")
        return
    got, want = _flatten(computed), _flatten(committed)
    if set(got) != set(want):
        raise AssertionError(f"{what}: computed {sorted(got)} but committed {sorted(want)}")
    problems = [f"{k or what} = {float(got[k]):.4g} here, {float(want[k]):.4g} committed" for k in sorted(got)
                if not abs(float(got[k]) - float(want[k])) <= tol.abs]
    if problems:
        raise AssertionError(f"{what}: {len(problems)} value(s) differ beyond the tolerance '{tolerance}' ({tol.why}):\n  "
                             + "\n  ".join(problems) + f"\nIf helpers changed on purpose, {fix}.")
    print(f"checked: {what}, {len(got)} value(s) within ±{tol.abs:g} of the committed run")
