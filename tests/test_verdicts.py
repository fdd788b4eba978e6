"""p-values from the interval's own t statistic, Holm within a family, the declared families of 06
(helpers.pipeline.verdicts) and the primary's power (helpers.intervals)."""
import numpy as np
import pytest
from scipy import stats

from helpers import intervals, metrics
from helpers.pipeline import evaluation, verdicts

RSUM_LEVEL = {600: 0, 400: 3, 200: 7, 0: 20}     # a constant rank whose rSum is the key (R@1, 5, 10 both ways)
CAP_IMG = np.array([3, 0, 2, 1, 5, 2, 0, 4, 1, 3, 2, 5, 0, 2, 1, 3, 2, 5, 2])   # 6 images, ragged


def _constant(rsums, n_img=6, n_cap=len(CAP_IMG)):
    """One run per seed, every query at one rank: no test-sampling variance, rSum as given."""
    return [(np.full(n_img, RSUM_LEVEL[r]), np.full(n_cap, RSUM_LEVEL[r])) for r in rsums]


def _noisy(rng, n_seeds, p_miss, n_img=6, n_cap=len(CAP_IMG)):
    return [(rng.integers(0, 15, n_img) * (rng.random(n_img) < p_miss),
             rng.integers(0, 15, n_cap) * (rng.random(n_cap) < p_miss)) for _ in range(n_seeds)]


def _as_ranks(runs_by_model):
    return {m: [{"img_rank": i, "cap_rank": c} for i, c in runs] for m, runs in runs_by_model.items()}


# --- the p-value: the interval's own t statistic ---------------------------------------------------

def test_p_below_alpha_exactly_when_the_interval_excludes_zero():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        boot = rng.normal(0, rng.uniform(0, 3), rng.integers(5, 50))
        terms = [(rng.uniform(0, 4), int(rng.integers(1, 7))) for _ in range(rng.integers(0, 3))]
        point = rng.normal(0, 5)
        for level in (0.95, 0.9):
            lo, hi = intervals.t_interval(point, boot, terms, level)
            se, df = intervals.se_df(float(np.var(boot, ddof=1)), terms)     # t_interval's own se and df
            assert (hi - lo) / 2 == pytest.approx(stats.t.ppf(0.5 + level / 2, df) * se, rel=1e-12, abs=1e-12)
            p = intervals.t_p_value(point, boot, terms)
            assert (p < 1 - level) == (lo > 0 or hi < 0)
            seen.add(p < 1 - level)
    assert seen == {True, False}                                   # both sides of the line were tried
    # on the line itself: point = the half-width gives p = 1 - level
    boot, terms = rng.normal(0, 1, 40), [(2.0, 3), (0.5, 5)]
    lo, hi = intervals.t_interval(0.0, boot, terms, 0.95)
    assert intervals.t_p_value(hi, boot, terms) == pytest.approx(0.05, rel=1e-9)
    assert intervals.t_p_value(0.0, np.zeros(5), []) == 1 and intervals.t_p_value(1.0, np.zeros(5), []) == 0


def test_honest_test_is_honest_difference_with_its_p():
    for s in range(4):
        rng = np.random.default_rng(s)
        a, b = _noisy(rng, 3, 0.5), _noisy(rng, 5, 0.7)
        d = intervals.honest_difference(a, b, CAP_IMG, n_boot=200, seed=s).loc["rsum"]
        t = intervals.honest_test([(1, a), (-1, b)], CAP_IMG, n_boot=200, seed=s)
        assert (t["estimate"], t["lo"], t["hi"]) == (d["diff"], d["lo"], d["hi"])   # the same numbers, exactly
        assert (t["p"] < 0.05) == (d["lo"] > 0 or d["hi"] < 0)
        assert t["means"] == pytest.approx([d["A"], d["B"]]) and t["seeds"] == [3, 5]
        assert t["se"] ** 2 == pytest.approx(t["test_sd"] ** 2 + t["seed_sd"][0] ** 2 / 3 + t["seed_sd"][1] ** 2 / 5)


def test_p_without_test_variance_is_welchs():
    a, b = [600, 600, 400, 400], [400, 200, 200, 0]
    t = intervals.honest_test([(1, _constant(a)), (-1, _constant(b))], CAP_IMG, n_boot=100)
    welch = stats.ttest_ind(a, b, equal_var=False)
    assert t["p"] == pytest.approx(welch.pvalue) and t["df"] == pytest.approx(welch.df)
    assert t["test_sd"] == pytest.approx(0, abs=1e-9) and t["seed_sd"] == pytest.approx([np.std(a, ddof=1),
                                                                                        np.std(b, ddof=1)])


# --- Holm -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("p, adjusted, rejected", [
    ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02], [True, False, False, True]),  # R: p.adjust(, "holm")
    ([0.01, 0.01, 0.04], [0.03, 0.03, 0.04], [True, True, True]),                       # ties share a value
    ([0.03, 0.03], [0.06, 0.06], [False, False]),
    ([0.04], [0.04], [True]),                                                            # one: unchanged
    ([0.001, 0.002, 0.003], [0.003, 0.004, 0.004], [True, True, True]),                 # all significant
    ([0.2, 0.5, 0.9], [0.6, 1.0, 1.0], [False, False, False]),                          # none, capped at 1
])
def test_holm_known_answers(p, adjusted, rejected):
    adj, rej = intervals.holm(p)
    assert adj == pytest.approx(adjusted) and rej.tolist() == rejected


def test_holm_alpha_and_bad_input():
    assert intervals.holm([0.01, 0.04, 0.03, 0.005], alpha=0.1)[1].tolist() == [True, True, True, True]
    assert intervals.holm([0.05])[1].tolist() == [True]             # p <= alpha / (m - j + 1) rejects
    for bad, match in [([], "non-empty"), ([[0.1, 0.2]], "1-D"), ([0.1, np.nan], "NaN"), ([0.1, 1.2], r"\[0, 1\]"),
                       ([-0.01], r"\[0, 1\]")]:
        with pytest.raises(ValueError, match=match):
            intervals.holm(bad)
    with pytest.raises(ValueError, match="alpha"):
        intervals.holm([0.1], alpha=0)


# --- the declared families --------------------------------------------------------------------------

def test_comparisons_declare_one_primary_the_flow_families_and_the_blogs_reading():
    verdicts.check_comparisons(verdicts.COMPARISONS)
    by_role = {}
    for c in verdicts.COMPARISONS:
        by_role.setdefault(c.role, []).append((c.a, c.b))
    assert by_role["primary"] == [("decoupled", "joint_words")]
    assert by_role["reading"] == [evaluation.HEADLINE]
    assert by_role["secondary"][0] == ("decoupled_pooled", "joint")
    pairs = {frozenset((c.a, c.b)) for c in verdicts.COMPARISONS}
    assert all(frozenset((a, b)) in pairs for a, b, _ in evaluation.FACTORIAL)   # every one-factor row kept
    assert len(pairs) == len(verdicts.COMPARISONS)                                # and none twice


def test_bad_declarations_are_rejected():
    C = verdicts.Comparison
    primary = C("a", "b", "x", "P", "primary")
    for comps, match in [([C("a", "b", "x", "F", "tertiary"), primary], "unknown role"),
                         ([C("a", "b", "x", "F", "secondary")], "exactly one primary"),
                         ([primary, C("c", "d", "x", "P2", "primary")], "exactly one primary"),
                         ([primary, C("c", "d", "x", "P", "primary")], "exactly one primary"),
                         ([primary, C("c", "d", "x", "P", "secondary")], "mixes roles"),
                         ([primary, C("c", "d", "x", "F", "secondary"), C("e", "f", "y", "F", "exploratory")],
                          "mixes roles")]:
        with pytest.raises(ValueError, match=match):
            verdicts.check_comparisons(comps)


def test_family_table_corrects_within_families_and_says_which_row_is_what():
    C = verdicts.Comparison
    comps = [C("good", "bad", "primary change", "P", "primary"),
             C("a1", "b1", "one", "F", "secondary"), C("a2", "b2", "two", "F", "secondary"),  # raw p .030, .027
             C("good", "bad", "same, alone", "G", "secondary"),
             C("b1", "a1", "the other way", "R", "reading"),
             C("a1", "b2", "looked at", "E", "exploratory"), C("a1", "absent", "no runs", "E", "exploratory")]
    ranks = _as_ranks({"good": _constant([600, 600, 600, 600]), "bad": _constant([200, 0, 200, 0]),
                       "a1": _constant([600, 600, 600, 400]), "b1": _constant([400, 400, 400, 200]),
                       "a2": _constant([600, 600, 400, 400]), "b2": _constant([400, 200, 200, 0])})
    table = verdicts.family_table(ranks, CAP_IMG, n_boot=100, comparisons=comps)
    t = table.set_index("changes")
    assert list(table.columns) == ["comparison", "changes", "role", "family", "correction", "A", "B",
                                             "difference", "lo", "hi", "p", "p_holm", "verdict"]
    assert "no runs" not in t.index and len(t) == 6
    f = t.loc[["one", "two"]]
    assert (f["p"] < 0.05).all() and ((f["lo"] > 0) | (f["hi"] < 0)).all()       # each alone would be credible
    assert f["p_holm"].tolist() == pytest.approx(intervals.holm(f["p"])[0]) and (f["p_holm"] > 0.05).all()
    assert f["verdict"].tolist() == ["not credible after Holm"] * 2
    assert f["correction"].iloc[0] == "Holm within the family (2 comparisons)"
    assert t.loc["same, alone", "verdict"] == "A better" and t.loc["same, alone", "p_holm"] == t.loc["same, alone", "p"]
    assert t.loc["primary change", ["role", "correction"]].tolist() == ["primary", "none: the one primary"]
    assert t.loc["primary change", "p_holm"] == t.loc["primary change", "p"]
    assert t.loc["primary change", "verdict"] == "A better"
    assert t.loc["the other way", "verdict"] == "A credibly worse" and np.isnan(t.loc["the other way", "p_holm"])
    assert t.loc["looked at", "verdict"] == "exploratory" and np.isnan(t.loc["looked at", "p_holm"])


def test_family_table_on_the_course_models():
    rng = np.random.default_rng(0)
    cap_img = np.repeat(np.arange(100), 5)
    miss = dict(dual=0.7, dual_words=0.5, decoupled_pooled=0.6, decoupled=0.3, joint=0.6, joint_words=0.5)
    ranks = _as_ranks({m: _noisy(rng, 3, p, 100, 500) for m, p in miss.items()})
    t = verdicts.family_table(ranks, cap_img, n_boot=200)
    assert len(t) == len(verdicts.COMPARISONS) - 1                            # no blog runs: its row is left out
    assert t.groupby("family")["role"].nunique().eq(1).all()
    primary = t[t.role == "primary"].iloc[0]
    d = evaluation.difference(ranks, "decoupled", "joint_words", cap_img, n_boot=200).loc["rsum"]
    assert (primary["difference"], primary["lo"], primary["hi"]) == (d["diff"], d["lo"], d["hi"])
    assert primary["verdict"] == metrics.verdict(d["lo"], d["hi"])
    for family, part in t[t.role == "secondary"].groupby("family"):
        assert part["p_holm"].tolist() == pytest.approx(intervals.holm(part["p"])[0])
        assert (part["p_holm"] >= part["p"]).all()


# --- power --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("d, n", [(0.5, 64), (0.8, 26), (1.0, 17)])
def test_zero_test_sd_is_the_two_sample_t_power(d, n):
    """Cohen's (1988) table, two-sided alpha 0.05, power 0.8: seeds per group for standardised effect d."""
    assert intervals.seeds_needed(d, 1.0, 1.0, 0.0) == n
    assert intervals.detectable_difference(1.0, 1.0, 0.0, n, n) <= d < intervals.detectable_difference(1, 1, 0, n - 1, n - 1)


def test_power_known_values():
    assert intervals.t_power(0.5, np.sqrt(2 / 64), 126) == pytest.approx(0.80146, abs=1e-5)   # G*Power: 0.8014596
    assert intervals.t_power(0.0, 1.0, 10) == pytest.approx(0.05)
    # no seed spread: a normal test, effect = (z_.975 + z_.8) * se (the far tail adds < 1e-6)
    assert intervals.detectable_difference(0, 0, 2.0, 3, 3) == pytest.approx(2 * (1.959964 + 0.841621), rel=1e-5)
    assert intervals.detectable_difference(0, 0, 0, 3, 3) == 0


def test_more_seeds_never_increase_the_detectable_difference():
    for sd_a, sd_b, test_sd in [(4.0, 3.0, 2.0), (1.0, 5.0, 0.0), (0.0, 2.0, 1.0)]:
        d = [intervals.detectable_difference(sd_a, sd_b, test_sd, n, n) for n in range(2, 41)]
        assert all(x >= y for x, y in zip(d, d[1:])) and d[0] > d[-1]
        floor = intervals.detectable_difference(sd_a, sd_b, test_sd, np.inf, np.inf)
        assert d[-1] >= floor == pytest.approx(2.801585 * test_sd, rel=1e-5)
    assert intervals.seeds_needed(5.0, 4.0, 3.0, 2.0) is None                # below the test-sampling floor 5.6
    n = intervals.seeds_needed(8.0, 4.0, 3.0, 2.0)
    assert intervals.detectable_difference(4, 3, 2, n, n) <= 8 < intervals.detectable_difference(4, 3, 2, n - 1, n - 1)


def test_power_matches_a_simulated_welch_test():
    rng = np.random.default_rng(1)
    n, sd_a, sd_b = 5, 1.0, 2.0
    effect = intervals.detectable_difference(sd_a, sd_b, 0.0, n, n)
    a = rng.normal(effect, sd_a, (20000, n))
    b = rng.normal(0.0, sd_b, (20000, n))
    rejected = stats.ttest_ind(a, b, axis=1, equal_var=False).pvalue < 0.05
    assert rejected.mean() == pytest.approx(0.8, abs=0.03)   # MC se 0.003; Welch's df is estimated, not fixed


def test_power_rejects_what_it_cannot_use():
    with pytest.raises(ValueError, match="one seed"):
        intervals.detectable_difference(np.nan, 1.0, 1.0, 3, 3)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        intervals.detectable_difference(1.0, 1.0, 1.0, 1, 3)
    with pytest.raises(ValueError, match="alpha < power"):
        intervals.seeds_needed(1.0, 1.0, 1.0, 0.0, power=0.04)
    with pytest.raises(ValueError, match="se must be > 0"):
        intervals.t_power(1.0, 0.0, 5)


def test_primary_power_and_its_sentence():
    rng = np.random.default_rng(2)
    cap_img = np.repeat(np.arange(100), 5)
    ranks = _as_ranks({"decoupled": _noisy(rng, 5, 0.4, 100, 500), "joint_words": _noisy(rng, 3, 0.5, 100, 500)})
    p = verdicts.primary_power(ranks, cap_img, n_boot=200)
    t = intervals.honest_test([(1, [(r["img_rank"], r["cap_rank"]) for r in ranks["decoupled"]]),
                               (-1, [(r["img_rank"], r["cap_rank"]) for r in ranks["joint_words"]])], cap_img, n_boot=200)
    assert (p["a"], p["b"], p["seeds_a"], p["seeds_b"]) == ("decoupled", "joint_words", 5, 3)
    assert (p["seed_sd_a"], p["seed_sd_b"], p["test_sd"]) == (*t["seed_sd"], t["test_sd"])
    assert p["claimed_points"] == pytest.approx(evaluation.CLAIMED_GAIN / 100 * t["means"][1])
    assert p["detectable"] == intervals.detectable_difference(*t["seed_sd"], t["test_sd"], 5, 3)
    assert p["seeds_needed"] == intervals.seeds_needed(p["claimed_points"], *t["seed_sd"], t["test_sd"])
    s = verdicts.power_sentence(p)
    for number in (p["detectable"], p["claimed_points"], p["baseline"], p["test_sd"]):
        assert f"{number:.1f}" in s
    assert s.startswith("With 5 seeds of decoupled and 3 of joint_words")
    assert s.endswith(f"each model needs {p['seeds_needed']} seeds to resolve it.")
    unreachable = verdicts.power_sentence({**p, "seeds_needed": None, "floor": 12.345})
    assert unreachable.endswith("limits the interval to 12.3 points; it takes a larger test set.")
    with pytest.raises(ValueError, match="no runs of \\['joint_words'\\]"):
        verdicts.primary_power({"decoupled": ranks["decoupled"]}, cap_img, n_boot=50)
