"""06's declared comparisons: one primary, families of secondaries corrected by Holm within each family, the
blog's sentence as a labelled reading, and the primary's power. Declared here before any number is read;
each table is a function of the runs' test ranks alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import intervals, metrics
from .evaluation import CLAIMED_GAIN, FACTORIAL, _pairs

ROLES = ("primary", "secondary", "reading", "exploratory")


@dataclass(frozen=True)
class Comparison:
    """A - B on rSum, in `family`, with a `role` from ROLES; `label` says what changes between A and B."""
    a: str
    b: str
    label: str
    family: str
    role: str


_CHANGES = {(a, b): label for a, b, label in FACTORIAL}
# The primary changes only the direction of flow at one head (per-word); the first secondary family is the
# same contrast at the pooled head; the other one-factor rows of FACTORIAL form further families; the blog's
# "decoupled vs joint" changes flow and head at once, so it is kept as a reading of its sentence, not a test.
COMPARISONS = (
    Comparison("decoupled", "joint_words", "flow: text->image vs both (per-word head)", "primary", "primary"),
    Comparison("decoupled_pooled", "joint", "flow: text->image vs both (pooled head)",
               "S1 flow direction, pooled head", "secondary"),
    *(Comparison(a, b, _CHANGES[a, b], "S2 flow vs none", "secondary")
      for a, b in [("decoupled", "dual_words"), ("decoupled_pooled", "dual")]),
    *(Comparison(a, b, _CHANGES[a, b], "S3 head: per-word vs pooled", "secondary")
      for a, b in [("dual_words", "dual"), ("decoupled", "decoupled_pooled"), ("joint_words", "joint")]),
    Comparison("blog", "decoupled", _CHANGES["blog", "decoupled"], "S4 the blog's module", "secondary"),
    Comparison("decoupled", "joint", "the blog's sentence: flow and head both change", "reading", "reading"),
)


def check_comparisons(comparisons) -> None:
    """Raise ValueError unless every role is in ROLES, there is exactly one primary, alone in its family,
    and each family holds one role."""
    bad = [c for c in comparisons if c.role not in ROLES]
    if bad:
        raise ValueError(f"unknown role {bad[0].role!r} for {bad[0].a} vs {bad[0].b}; use one of {ROLES}")
    primaries = [c for c in comparisons if c.role == "primary"]
    if len(primaries) != 1:
        raise ValueError(f"declare exactly one primary comparison; got {len(primaries)}")
    for family in {c.family for c in comparisons}:
        roles = {c.role for c in comparisons if c.family == family}
        members = [c for c in comparisons if c.family == family]
        if len(roles) > 1 or ("primary" in roles and len(members) > 1):
            raise ValueError(f"family {family!r} mixes roles {sorted(roles)} or puts another comparison beside "
                             "the primary; give each its own family")


def family_table(ranks: dict[str, list[dict]], caption_image, n_boot: int = 1000, comparisons=COMPARISONS,
                 alpha: float = 0.05) -> pd.DataFrame:
    """Every declared comparison present in `ranks` (both models) on rSum points -> one row each:
    [comparison, changes, role, family, correction, A, B, difference, lo, hi, p, p_holm, verdict].

    difference, lo, hi: `intervals.honest_difference`'s (1 - alpha) interval; p: its two-sided p
    (`intervals.honest_test`, p < alpha exactly when the interval excludes 0). p_holm: Holm-adjusted
    within the family among its rows present (the primary alone, so p_holm = p; NaN for readings and
    exploratory rows). verdict: primary and reading from the interval (`metrics.verdict`); secondary from
    Holm ("A better" / "A credibly worse" when rejected, "not credible after Holm" when the raw interval
    excludes 0 but Holm does not reject, else "no credible difference"); exploratory rows "exploratory".
    """
    check_comparisons(comparisons)
    rows = []
    for c in comparisons:
        if c.a in ranks and c.b in ranks:
            t = intervals.honest_test([(1, _pairs(ranks[c.a])), (-1, _pairs(ranks[c.b]))], caption_image,
                                      n_boot=n_boot, level=1 - alpha)
            rows.append({"comparison": f"{c.a} vs {c.b}", "changes": c.label, "role": c.role, "family": c.family,
                         "A": t["means"][0], "B": t["means"][1], "difference": t["estimate"], "lo": t["lo"],
                         "hi": t["hi"], "p": t["p"]})
    table = pd.DataFrame(rows, columns=["comparison", "changes", "role", "family", "A", "B", "difference", "lo",
                                        "hi", "p"])
    table.insert(4, "correction", "")
    table["p_holm"], table["verdict"] = np.nan, ""
    for family, idx in table.groupby("family", sort=False).groups.items():
        part = table.loc[idx]
        role = part["role"].iloc[0]
        if role == "secondary":
            adjusted, reject = intervals.holm(part["p"], alpha)
            table.loc[idx, "p_holm"] = adjusted
            table.loc[idx, "correction"] = (f"Holm within the family ({len(idx)} comparisons)" if len(idx) > 1 else
                                            "Holm within the family (1 comparison: unchanged)")
            table.loc[idx, "verdict"] = [
                ("A better" if d > 0 else "A credibly worse") if r else
                "not credible after Holm" if lo > 0 or hi < 0 else "no credible difference"
                for d, lo, hi, r in zip(part["difference"], part["lo"], part["hi"], reject)]
        elif role == "exploratory":
            table.loc[idx, "correction"] = "none: exploratory, no verdict"
            table.loc[idx, "verdict"] = "exploratory"
        else:
            table.loc[idx, "correction"] = ("none: the one primary" if role == "primary" else
                                            "none: a reading of the blog's sentence, not a test")
            if role == "primary":
                table.loc[idx, "p_holm"] = part["p"]
            table.loc[idx, "verdict"] = [metrics.verdict(lo, hi) for lo, hi in zip(part["lo"], part["hi"])]
    return table


def primary_power(ranks: dict[str, list[dict]], caption_image, n_boot: int = 1000, comparisons=COMPARISONS,
                  claimed: float = CLAIMED_GAIN, alpha: float = 0.05, power: float = 0.8) -> dict:
    """The primary's power, from its per-seed ranks: seed SDs of A and B and the test-sampling SD of A - B
    (`intervals.honest_test`), the smallest difference its interval resolves with the seeds it has
    (`intervals.detectable_difference`), the blog's `claimed` % of B's rSum in points, and the seeds each
    model needs to resolve that (`intervals.seeds_needed`, the test-sampling SD held at its measured value;
    None when no number of seeds does). -> dict of those (and `floor`: the detectable difference with
    unlimited seeds, set by test sampling alone)."""
    check_comparisons(comparisons)
    c = next(c for c in comparisons if c.role == "primary")
    missing = [m for m in (c.a, c.b) if m not in ranks]
    if missing:
        raise ValueError(f"the primary compares {c.a} and {c.b}; no runs of {missing}: train them first")
    t = intervals.honest_test([(1, _pairs(ranks[c.a])), (-1, _pairs(ranks[c.b]))], caption_image, n_boot=n_boot,
                              level=1 - alpha)
    (sd_a, sd_b), (n_a, n_b), test_sd = t["seed_sd"], t["seeds"], t["test_sd"]
    claimed_points = claimed / 100 * t["means"][1]
    return {"a": c.a, "b": c.b, "seeds_a": n_a, "seeds_b": n_b, "seed_sd_a": sd_a, "seed_sd_b": sd_b,
            "test_sd": test_sd, "alpha": alpha, "power": power,
            "detectable": intervals.detectable_difference(sd_a, sd_b, test_sd, n_a, n_b, alpha, power),
            "floor": intervals.detectable_difference(sd_a, sd_b, test_sd, np.inf, np.inf, alpha, power),
            "baseline": t["means"][1],
            "claimed_%": claimed, "claimed_points": claimed_points,
            "seeds_needed": intervals.seeds_needed(claimed_points, sd_a, sd_b, test_sd, alpha, power)}


def power_sentence(p: dict) -> str:
    """`primary_power`'s dict -> the notebook's sentence on what the primary can resolve."""
    head = (f"With {p['seeds_a']} seeds of {p['a']} and {p['seeds_b']} of {p['b']} (seed SDs {p['seed_sd_a']:.1f} "
            f"and {p['seed_sd_b']:.1f} rSum, test-sampling SD of the difference {p['test_sd']:.1f}), the primary's "
            f"{100 * (1 - p['alpha']):.0f}% interval resolves a difference of {p['detectable']:.1f} rSum points "
            f"(power {p['power']:.0%}, two-sided alpha {p['alpha']:g}). The blog's +{p['claimed_%']:g}% is "
            f"{p['claimed_points']:.1f} points on {p['b']}'s rSum of {p['baseline']:.1f}: ")
    if p["seeds_needed"] is None:
        return head + (f"no number of seeds resolves it, since test sampling alone limits the interval to "
                       f"{p['floor']:.1f} points; it takes a larger test set.")
    return head + f"each model needs {p['seeds_needed']} seeds to resolve it."
