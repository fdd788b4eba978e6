"""Notebook 07's tables: what the trained vectors keep of each modality (linear probes against same-size
controls, before and after attention; the modality probe), whether attention points at the named object
and whether the score depends on it (the pointing game and the deletion test), how far one modality reaches
the other's scored vectors (interference), and the verdict table of every claim of the blog beside what the
course measured, each claim's verdicts corrected as one family.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import intervals, metrics, probes
from ..encoders import load_tokenizer
from ..pointing import deletion_game, pointing_game
from .evaluation import CLAIMED_GAIN
from .recipes import OTHER_SEEDS
from .runs import load_runs

KEPT_MARGIN = 2.0   # mAP points a representation may lose against its control and still count as "kept"
CONTROL = "PCA-128 of raw features"   # the same-size control the "kept" verdict compares with
PROBED = ("dual", "decoupled", "joint", "blog")          # one model per flow, and the blog's module
POINTED_ALL = ("decoupled_pooled", "decoupled", "joint", "joint_words", "blog")   # every model whose words attend
INTERFERED = ("dual", "decoupled_pooled", "decoupled", "joint", "joint_words", "blog")
# Flow alone, at one head: (A, B, head). The per-word head first (the primary comparison), the pooled one second.
HEAD_PAIRS = (("decoupled", "joint_words", "per-word head"), ("decoupled_pooled", "joint", "pooled head"))
ZERO = 1e-6        # a change below this (1 - cos) is zero: float rounding of identical vectors


def probe_results(feats, subset, budget: str = "cpu", model_names=PROBED, scored: bool = False) -> pd.DataFrame:
    """Linear-probe mAP (caption-mined categories) of the raw features, of two same-size controls
    (PCA-128 and a random 128-d projection of the raw features, `probes.same_size_controls`), and of
    each model's image and text sides (one caption per image), and the modality-probe accuracy
    (1.0 = image and text vectors separable, 0.5 = mixed), per seed -> DataFrame: representation,
    seed, image mAP, text mAP, modality probe.

    `joint` appears twice: its mixed vectors (what it matches with, text content included) and its
    vectors before mixing; only the latter say what its image side keeps on its own.

    scored=True adds, per model, the vectors its head compares (after attention,
    `probes.scored_representations`): "<model> (scored, own pair)" and, as the leakage control,
    "<model> (scored, other pair)", each vector attended with another image's caption (or image).
    """
    train_fs, test_fs = feats["train"], feats["test"]
    y_train, y_test, names = probes.category_targets(subset, train_fs, test_fs)

    def probe(name, tr, te, seed, modality=True):
        t = probes.probe_table({name: {"train": tr, "test": te}}, train_fs, test_fs, y_train, y_test, names)
        if modality:                                                 # raw features differ in width
            t["modality probe"] = probes.modality_probe(tr["image"], tr["text"], te["image"], te["text"])
        return t.assign(seed=seed).rename_axis("representation").reset_index()

    raw_tr = probes.raw_representations(train_fs, captions="one")
    raw_te = probes.raw_representations(test_fs, captions="one")
    rows = [probe("raw features", raw_tr, raw_te, -1, modality=False)]
    for s in OTHER_SEEDS:                                             # PCA is deterministic: seed 0 only
        for name, reps in probes.same_size_controls(raw_tr, raw_te, seed=s).items():
            if name == CONTROL and s > 0:
                continue
            rows.append(probe(name, reps["train"], reps["test"], s if name != CONTROL else -1))
    for name in model_names:                       # the seeds every model has trained (06 reads seeds 3-4 of
        for s, model in zip(OTHER_SEEDS, load_runs(name, budget, OTHER_SEEDS)):     # four models as ranks only)
            for label, mixed in [(name, True)] + ([("joint (before mixing)", False)] if name == "joint" else []):
                tr, te = (probes.representations(model, fs, captions="one", mixed=mixed) for fs in (train_fs, test_fs))
                rows.append(probe(label, tr, te, s))
            for partner in (probes.PARTNERS if scored else ()):
                tr, te = (probes.scored_representations(model, fs, "one", partner) for fs in (train_fs, test_fs))
                rows.append(probe(f"{name} (scored, {partner} pair)", tr, te, s))
    return pd.concat(rows, ignore_index=True)


def kept_table(probe_df: pd.DataFrame, margin: float = KEPT_MARGIN, control: str = CONTROL,
               level: float = 0.95) -> pd.DataFrame:
    """Per model and modality: probe mAP minus the same-size control's mAP (and minus the raw features'),
    in points (mAP × 100), over seeds (mean, t-interval at `level`) and the verdict on "unimodal performance
    kept" (metrics.verdict_kept against the control: no loss larger than `margin` points is credible)."""
    raw = probe_df[probe_df.representation == "raw features"].iloc[0]
    ref = probe_df[probe_df.representation == control].iloc[0]
    rows = []
    skip = {"raw features", control}
    for name, g in probe_df[~probe_df.representation.isin(skip)].groupby("representation", sort=False):
        for side in ("image mAP", "text mAP"):
            s = intervals.seed_summary(100 * (g[side] - ref[side]), level)
            rows.append({"model": name, "modality": side.split()[0], "raw mAP": 100 * raw[side],
                         "control mAP": 100 * ref[side], "model mAP": 100 * g[side].mean(),
                         "vs raw": 100 * (g[side].mean() - raw[side]),
                         "vs control": s["mean"], "lo": s["lo"], "hi": s["hi"], "seeds": len(g),
                         "verdict (kept)": metrics.verdict_kept(s["lo"], s["hi"], margin)})
    return pd.DataFrame(rows)


def pointing_table(pointing: dict[str, list[pd.DataFrame]]) -> pd.DataFrame:
    """Per model: hit rate and the two baselines' rates (uniform attention, centre cell), means over
    seeds, with the number of seeds, cases and images."""
    rows = []
    for name, runs in pointing.items():
        rows.append({"model": name, "seeds": len(runs),
                     "hit_rate": np.mean([df.hit.mean() for df in runs]),
                     "baseline_rate": runs[0].baseline.mean(), "centre_rate": runs[0].centre_hit.mean(),
                     "cases": len(runs[0]), "images": runs[0].image_id.nunique()})
    return pd.DataFrame(rows).set_index("model")


def pointing_verdicts(pointing: dict[str, list[pd.DataFrame]], pairs=HEAD_PAIRS, level: float = 0.95
                      ) -> pd.DataFrame:
    """Pointing-game comparisons (points, interval at `level` from `intervals.honest_rate_difference`: test
    images resampled with their cases, plus a Student-t seed term): each model against the uniform and the
    centre-cell baselines, and per pair of `pairs` present (flow alone, at one head) A against B;
    verdict = metrics.verdict (better or not)."""
    rows = []

    def add(label, a_runs, a_col, b_runs, b_col):
        r = intervals.honest_rate_difference(a_runs, a_col, b_runs, b_col, level=level)
        rows.append({"comparison": label, "difference (points)": 100 * r["diff"], "lo": 100 * r["lo"],
                     "hi": 100 * r["hi"], "verdict": metrics.verdict(r["lo"], r["hi"])})

    for name, runs in pointing.items():
        add(f"{name} vs uniform attention", runs, "hit", None, "baseline")
        add(f"{name} vs centre cell", runs, "hit", None, "centre_hit")
    for a, b, head in pairs:
        if a in pointing and b in pointing:
            add(f"{a} vs {b} ({head})", pointing[a], "hit", pointing[b], "hit")
    return pd.DataFrame(rows)


def deletion_results(feats, subset, budget: str = "cpu", model_names=POINTED_ALL) -> dict[str, list[pd.DataFrame]]:
    """Pointing game with the deletion test (`pointing.deletion_game`) per model and seed on the
    instance-labelled test images -> {model: [cases per seed]}: plausibility and faithfulness together."""
    tokenizer = load_tokenizer()
    return {name: [deletion_game(m, feats["test"], subset, tokenizer) for m in load_runs(name, budget, OTHER_SEEDS)]
            for name in model_names}


def _comparison(kind, label, a_runs, a_col, b_runs, b_col, scale=100.0, level: float = 0.95) -> dict:
    r = intervals.honest_rate_difference(a_runs, a_col, b_runs, b_col, level=level)
    return {"kind": kind, "comparison": label, "difference (points)": scale * r["diff"], "lo": scale * r["lo"],
            "hi": scale * r["hi"], "verdict": metrics.verdict(r["lo"], r["hi"])}


def _check_pairs(found, pairs, what):
    missing = sorted({n for a, b, _ in pairs for n in (a, b)} - set(found))
    if missing:
        raise ValueError(f"{what} lacks {missing}: run it with model_names covering every model of the pairs "
                         f"({', '.join(f'{a} vs {b}' for a, b, _ in pairs)})")


def interpretability_verdicts(deletion: dict[str, list[pd.DataFrame]], pairs=HEAD_PAIRS, level: float = 0.95
                              ) -> pd.DataFrame:
    """`deletion_results` -> DataFrame kind ('plausibility' | 'faithfulness'), comparison, difference (points),
    lo, hi, verdict (intervals at `level` of `intervals.honest_rate_difference`; metrics.verdict).

    Per model: the hit rate against uniform attention and against the centre cell (plausibility), deleting
    the peak region against a random one and against the centre one (faithfulness, score drops x 100). Per
    pair at one head (flow alone; `pairs`, the per-word head first): hit rate and deletion effect of A against B.
    """
    _check_pairs(deletion, pairs, "the deletion results")
    rows = []
    for name, runs in deletion.items():
        rows.append(_comparison("plausibility", f"{name}: hit rate vs uniform attention", runs, "hit", None,
                                "baseline", level=level))
        rows.append(_comparison("plausibility", f"{name}: hit rate vs centre cell", runs, "hit", None, "centre_hit",
                                level=level))
        rows.append(_comparison("faithfulness", f"{name}: zeroing the peak vs a random region", runs, "drop_peak",
                                None, "drop_random", level=level))
        rows.append(_comparison("faithfulness", f"{name}: zeroing the peak vs the centre region", runs, "drop_peak",
                                None, "drop_centre", level=level))
    for a, b, head in pairs:
        rows.append(_comparison("plausibility", f"{a} vs {b} ({head}): hit rate", deletion[a], "hit", deletion[b], "hit",
                                level=level))
        rows.append(_comparison("faithfulness", f"{a} vs {b} ({head}): deletion effect", deletion[a], "effect",
                                deletion[b], "effect", level=level))
    return pd.DataFrame(rows)


def interpretability_rows(verdicts: pd.DataFrame, pairs=HEAD_PAIRS) -> pd.DataFrame:
    """`interpretability_verdicts` -> rows in `verdict_table`'s columns: per head pair, "better
    interpretability than joint training" as plausibility (hit rate) and as faithfulness (deletion effect),
    each with A's own result against its baseline beside it."""
    v = verdicts.set_index("comparison")
    rows = []
    for a, b, head in pairs:
        for kind, what, own in (("plausibility", "hit rate", f"{a}: hit rate vs centre cell"),
                                ("faithfulness", "deletion effect", f"{a}: zeroing the peak vs a random region")):
            r, o = v.loc[f"{a} vs {b} ({head}): {what}"], v.loc[own]
            rows.append((f"better interpretability than joint training ({kind}, {head})",
                         f"{a} vs {b}, {what}: {r['difference (points)']:+.1f} points [{r['lo']:+.1f}, {r['hi']:+.1f}]; "
                         f"{own}: {o['difference (points)']:+.1f} [{o['lo']:+.1f}, {o['hi']:+.1f}]", r["verdict"]))
    return pd.DataFrame(rows, columns=["the blog claims", "the course measures (95% interval)", "verdict"])


def interference_results(feats, budget: str = "cpu", model_names=INTERFERED) -> dict[str, list[pd.DataFrame]]:
    """How much each side's scored vector changes with the other modality (`probes.interference_cases`)
    per model and seed on the test split -> {model: [cases per seed]}."""
    return {name: [probes.interference_cases(m, feats["test"]) for m in load_runs(name, budget, OTHER_SEEDS)]
            for name in model_names}


def interference_table(interference: dict[str, list[pd.DataFrame]]) -> pd.DataFrame:
    """Per model: mean image_change and text_change (1 - cos, own vs another image's partner) over
    seeds, the largest change seen per side, and the number of seeds and images."""
    rows = []
    for name, runs in interference.items():
        rows.append({"model": name, "seeds": len(runs), "images": len(runs[0]),
                     **{f"{side}_change": np.mean([df[f"{side}_change"].mean() for df in runs]) for side in ("image", "text")},
                     **{f"{side}_max": max(df[f"{side}_change"].max() for df in runs) for side in ("image", "text")}})
    return pd.DataFrame(rows).set_index("model")


def interference_verdict(lo: float, hi: float, a_zero: bool, b_zero: bool) -> str:
    """95% interval of A - B for a change (lower = less interference), and whether each side is zero
    throughout -> "A less", "A more", "no credible difference", or "none in either (no flow)";
    "by construction" is added when A's side is zero because nothing flows into it."""
    if a_zero and b_zero:
        return "none in either (no flow)"
    if a_zero:
        return "A less (zero by construction: no flow into this side)"
    return "A less" if hi < 0 else "A more" if lo > 0 else "no credible difference"


def interference_rows(interference: dict[str, list[pd.DataFrame]], pairs=HEAD_PAIRS, level: float = 0.95
                      ) -> pd.DataFrame:
    """`interference_results` -> rows in `verdict_table`'s columns: "less interference between the
    modalities", per head pair and side, as the change of a side's scored vector when the other modality
    is swapped (1 - cos x 100; 95% interval as for the pointing game: images resampled, seeds as seeds).

    The encoders are frozen, so the design cannot test interference *inside* them (they compute the same
    features whatever the model); it can test whether the trained vectors a model scores with let the
    other modality in. The rows say which side is zero by construction.
    """
    _check_pairs(interference, pairs, "the interference results")
    rows, article = [], {"text": "a", "image": "an"}
    for a, b, head in pairs:
        for side, partner in (("text", "image"), ("image", "caption")):
            col = f"{side}_change"
            r = intervals.honest_rate_difference(interference[a], col, interference[b], col, level=level)
            za, zb = (all(df[col].abs().max() < ZERO for df in interference[n]) for n in (a, b))
            ma, mb = (100 * np.mean([df[col].mean() for df in interference[n]]) for n in (a, b))
            rows.append((f"less interference between the modalities ({side} side, {head})",
                         f"change of {article[side]} {side} vector when paired with another {partner} (1 - cos, x100): "
                         f"{a} {ma:.2f}, "
                         f"{b} {mb:.2f}; {a} - {b} {100 * r['diff']:+.2f} [{100 * r['lo']:+.2f}, {100 * r['hi']:+.2f}] "
                         "(encoders frozen: only the trained vectors can change)",
                         interference_verdict(r["lo"], r["hi"], za, zb)))
    return pd.DataFrame(rows, columns=["the blog claims", "the course measures (95% interval)", "verdict"])


ALPHA = 0.05          # each claim's family of verdicts keeps its chance of any false verdict at 5% (Bonferroni)
# "unimodal performance kept" for the blog's model: its image side before and after attention, its text side
KEPT_ROWS = (("decoupled", "image"), ("decoupled", "text"), ("decoupled (scored, own pair)", "image"))
VERDICT_COLUMNS = ["the blog claims", "role", "correction", "the course measures (interval)", "verdict"]


def family_level(m: int, alpha: float = ALPHA) -> float:
    """The interval coverage of each of m verdicts in one family under Bonferroni: 1 - alpha / m."""
    return 1 - alpha / m


def verdict_table(claims: pd.DataFrame, probe_df: pd.DataFrame, deletion: dict[str, list[pd.DataFrame]],
                  interference: dict[str, list[pd.DataFrame]], pairs=HEAD_PAIRS) -> pd.DataFrame:
    """Every claim of the blog beside what the course measured and the computed verdict, one family per claim
    -> VERDICT_COLUMNS.

    Retrieval (06's `claims_table`): the primary is the one test, at 95%; the primary pair's other readings and
    the blog's own sentence (flow and head both change) are shown, labelled, with no verdict. Unimodal
    performance kept (`KEPT_ROWS` of `probe_df`), interpretability (the blog's model against the two
    pointing baselines; flow alone at each head of `pairs`, as plausibility and faithfulness) and less
    interference (each side at each head): m verdicts per claim, each interval at `family_level(m)`
    (Bonferroni within the claim's family), intervals and verdicts recomputed here at that level.
    """
    rows = []
    for _, c in claims.iterrows():
        unit = "%" if c["reading"] == "relative %" else " points"
        measured = f"{c['A']} vs {c['B']} {c['difference']:+.1f}{unit} [{c['lo']:+.1f}, {c['hi']:+.1f}] (95%)"
        label = f"+{CLAIMED_GAIN}% retrieval over joint training ({c['metric']}, {c['reading']})"
        if c["primary"]:
            rows.append((label, "primary: the one test (flow alone)", "none: the one primary", measured, c["verdict"]))
        else:
            role = ("another reading of the primary pair" if c["pair"] == claims[claims.primary].pair.iloc[0] else
                    "the blog's sentence as written (flow and head both change)")
            rows.append((label, role, "not a test", measured, "not tested (a reading)"))
    level = family_level(len(KEPT_ROWS))
    kept = kept_table(probe_df, level=level).set_index(["model", "modality"])
    for model, side in KEPT_ROWS:
        k = kept.loc[(model, side)]
        rows.append((f"unimodal performance kept ({side}, {model})", f"secondary: {len(KEPT_ROWS)} in the family",
                     f"Bonferroni: {100 * level:.1f}% intervals",
                     f"probe mAP vs {CONTROL} {k['vs control']:+.1f} points [{k['lo']:+.1f}, {k['hi']:+.1f}] "
                     f"(margin {KEPT_MARGIN}; encoders frozen)", k["verdict (kept)"]))
    m = 2 + 2 * len(pairs)
    level = family_level(m)
    v = interpretability_verdicts(deletion, pairs, level).set_index("comparison")
    blog_model = pairs[0][0]
    for label, key in [("attention points at the named object", f"{blog_model}: hit rate vs uniform attention"),
                       ("... better than always pointing at the centre", f"{blog_model}: hit rate vs centre cell")]:
        r = v.loc[key]
        rows.append((label, f"secondary: {m} in the family", f"Bonferroni: {100 * level:.1f}% intervals",
                     f"pointing game, {key}: {r['difference (points)']:+.1f} points [{r['lo']:+.1f}, {r['hi']:+.1f}]",
                     r["verdict"]))
    for label, measured, verdict in interpretability_rows(v.reset_index(), pairs).itertuples(index=False):
        rows.append((label, f"secondary: {m} in the family", f"Bonferroni: {100 * level:.1f}% intervals", measured,
                     verdict))
    m = 2 * len(pairs)
    level = family_level(m)
    for label, measured, verdict in interference_rows(interference, pairs, level).itertuples(index=False):
        rows.append((label, f"secondary: {m} in the family", f"Bonferroni: {100 * level:.1f}% intervals", measured,
                     verdict))
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)
