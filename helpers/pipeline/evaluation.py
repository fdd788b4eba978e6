"""Notebook 06's tables: every model's recalls with honest intervals and the blog's +8.5% under each declared
reading (the declared comparisons and their corrections are `verdicts`); and the results files `python -m helpers reproduce`
writes (results/*.json, results/table.md, and results/provenance.json: when, from which commit, with which
budget and encoders). Each table is a function of the runs' test ranks alone.
"""
from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from .. import intervals, metrics
from ..atomic import md5sum, write_json, write_text
from ..config import PATHS, PROJECT_ROOT, encoder_pair
from .recipes import HEADLINE, MODEL_NAMES, PRIMARY, seeds_for

CLAIMED_GAIN = 8.5            # the blog: "+8.5% cross-modal retrieval accuracy" (metric and baseline unspecified)
# The course's readings of the blog's sentence, declared before any number: the primary test is decoupled vs
# joint_words (recipes.PRIMARY: flow alone) on rSum, relative %; rSum in points and R@1 are the other readings.
# The blog's own pair, decoupled vs joint (recipes.HEADLINE: flow and head both change), is reported under the
# same readings as a reading of its sentence, not a test.
READINGS = [("rsum", "relative %"), ("rsum", "points"), ("i2t_R@1", "relative %"), ("i2t_R@1", "points"),
            ("t2i_R@1", "relative %"), ("t2i_R@1", "points")]
PAIRS = ((PRIMARY, "primary: flow alone"), (HEADLINE, "the blog's sentence: flow and head"))
# The factorial's one-factor comparisons (A, B, what changes), from which `verdicts.COMPARISONS` declares the
# secondary families (no claim was made about them: verdicts say only which way a difference credibly goes).
FACTORIAL = [("decoupled", "dual_words", "flow: text->image vs none (per-word head)"),
             ("decoupled_pooled", "dual", "flow: text->image vs none (pooled head)"),
             ("joint_words", "decoupled", "flow: both vs text->image (per-word head)"),
             ("joint", "decoupled_pooled", "flow: both vs text->image (pooled head)"),
             ("dual_words", "dual", "head: per-word vs pooled (no flow)"),
             ("decoupled", "decoupled_pooled", "head: per-word vs pooled (text->image)"),
             ("joint_words", "joint", "head: per-word vs pooled (both)"),
             ("blog", "decoupled", "the blog's module as written vs corrected")]
ANCHORS = {"VSE++ (ResNet-152, fine-tuned)": 478.6, "SCAN t→i (Faster R-CNN regions)": 500.5}



def _pairs(runs):
    return [(r["img_rank"], r["cap_rank"]) for r in runs]


def results_table(ranks: dict[str, list[dict]], caption_image, n_boot: int = 1000) -> pd.DataFrame:
    """Per model and metric: mean ± std over seeds and a 95% interval (test images resampled with
    their captions, plus a Student-t seed term: `intervals.honest_interval`)."""
    rows = []
    for name, runs in ranks.items():
        t = intervals.honest_interval(_pairs(runs), caption_image, n_boot=n_boot)
        for m in metrics.METRICS:
            rows.append({"model": name, "metric": m, **t.loc[m].to_dict(), "seeds": len(runs)})
    return pd.DataFrame(rows)


def difference(ranks, a: str, b: str, caption_image, n_boot: int = 1000) -> pd.DataFrame:
    """`intervals.honest_difference` of A vs B: metrics x [A, B, diff, lo, hi, rel_%, rel_lo, rel_hi]."""
    return intervals.honest_difference(_pairs(ranks[a]), _pairs(ranks[b]), caption_image, n_boot=n_boot)


def claims_table(ranks: dict[str, list[dict]], caption_image, n_boot: int = 1000,
                 claimed: float = CLAIMED_GAIN) -> pd.DataFrame:
    """Each pair of `PAIRS` (the primary, then the blog's sentence) under every reading of "+8.5%" in
    `READINGS`: the difference with its 95% interval and the verdict on the claim (`metrics.verdict`);
    `primary` marks the one declared test (the primary pair, rSum, relative %). A pair with a model absent
    from `ranks` is left out."""
    rows = []
    for (a, b), pair in [(p, label) for p, label in PAIRS if p[0] in ranks and p[1] in ranks]:
        d = difference(ranks, a, b, caption_image, n_boot)
        for m, reading in READINGS:
            r = d.loc[m]
            value, lo, hi = ((r["rel_%"], r["rel_lo"], r["rel_hi"]) if reading == "relative %" else
                             (r["diff"], r["lo"], r["hi"]))
            rows.append({"pair": pair, "A": a, "B": b, "metric": m, "reading": reading,
                         "A mean": r["A"], "B mean": r["B"], "difference": value, "lo": lo, "hi": hi,
                         "primary": (a, b) == PRIMARY and (m, reading) == READINGS[0],
                         "verdict": metrics.verdict(lo, hi, claimed)})
    return pd.DataFrame(rows)


def with_interval(value: float, lo: float, hi: float, fmt: str = "{:+.1f}") -> str:
    """'value [lo, hi]', all three in one number format (signed by default, for differences)."""
    return f"{fmt.format(value)} [{fmt.format(lo)}, {fmt.format(hi)}]"


def results_for_reading(results: pd.DataFrame) -> pd.DataFrame:
    """`results_table` -> models x metrics of 'mean ± std  [lo, hi]' strings."""
    cells = [f"{r['mean']:.1f} ± {r['std']:.1f}  [{r['lo']:.1f}, {r['hi']:.1f}]" for _, r in results.iterrows()]
    table = results.assign(value=cells).pivot(index="model", columns="metric", values="value")
    return table.loc[[m for m in MODEL_NAMES if m in table.index], [m for m in metrics.METRICS if m in table.columns]]


def claims_for_reading(claims: pd.DataFrame) -> pd.DataFrame:
    """`claims_table` with each difference and its interval as one 'x [lo, hi]' column."""
    cells = [with_interval(*t) for t in zip(claims["difference"], claims["lo"], claims["hi"])]
    return claims.assign(**{"difference [95%]": cells})[
        ["pair", "metric", "reading", "primary", "A mean", "B mean", "difference [95%]", "verdict"]]


def markdown_table(results: pd.DataFrame, claims: pd.DataFrame, comparisons: pd.DataFrame) -> str:
    """The rSum per model, the claim under each reading of both pairs and the declared comparisons
    (`verdicts.family_table`, or any table with its comparison/changes/difference/lo/hi/verdict), as markdown."""
    lines = ["| model | rSum (mean ± std over seeds) | 95% interval | seeds |", "|---|---|---|---|"]
    for r in results[results.metric == "rsum"].itertuples():
        lines.append(f"| {r.model} | {r.mean:.1f} ± {r.std:.1f} | [{r.lo:.1f}, {r.hi:.1f}] | {r.seeds} |")
    lines += ["", f"| claim: A beats B by +{CLAIMED_GAIN}% (pair, reading) | difference | 95% interval | verdict |",
              "|---|---|---|---|"]
    for _, r in claims.iterrows():
        tag = " (the primary test)" if r["primary"] else ""
        lines.append(f"| {r['A']} vs {r['B']}, {r['metric']}, {r['reading']}{tag} | {r['difference']:+.1f} "
                     f"| [{r['lo']:+.1f}, {r['hi']:+.1f}] | {r['verdict']} |")
    extra = [c for c in ("role", "correction") if c in comparisons.columns]
    lines += ["", "| comparison (rSum points) | changes | " + "".join(f"{c} | " for c in extra)
              + "difference | 95% interval | verdict |", "|---|---|" + "---|" * len(extra) + "---|---|---|"]
    for _, r in comparisons.iterrows():
        lines.append(f"| {r['comparison']} | {r['changes']} | " + "".join(f"{r[c]} | " for c in extra)
                     + f"{r['difference']:+.1f} | [{r['lo']:+.1f}, {r['hi']:+.1f}] | {r['verdict']} |")
    return "\n".join(lines)


RESULT_FILES = ("retrieval.json", "claims.json", "comparisons.json", "table.md", "provenance.json")


def write_results(results: pd.DataFrame, claims: pd.DataFrame, comparisons: pd.DataFrame,
                  folder: Path | None = None, budget: str | None = None) -> Path:
    """results/retrieval.json, claims.json, comparisons.json (`verdicts.family_table`), table.md and, last,
    provenance.json (`provenance`) -> the path of table.md."""
    folder = Path(folder or PATHS.results)
    for name, table in (("retrieval", results), ("claims", claims), ("comparisons", comparisons)):
        write_text(folder / f"{name}.json", table.to_json(orient="records", indent=1))
    path = write_text(folder / "table.md", markdown_table(results, claims, comparisons) + "\n")
    write_json(folder / "provenance.json", provenance(budget, md5sum(path)), indent=1)
    return path


def git_state(root: Path = PROJECT_ROOT) -> dict:
    """{'commit': the checkout's HEAD, 'uncommitted_changes': whether a tracked file differs from it}; both
    None where `root` is no git checkout of its own (a downloaded zip) or git is missing."""
    try:
        if Path(_git(root, "rev-parse", "--show-toplevel")).resolve() != Path(root).resolve():
            return {"commit": None, "uncommitted_changes": None}
        return {"commit": _git(root, "rev-parse", "HEAD"),
                "uncommitted_changes": bool(_git(root, "status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "uncommitted_changes": None}


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


def provenance(budget: str | None, table_md5: str) -> dict:
    """What results/provenance.json records: the time (UTC), the checkout's `git_state`, the budget (None where
    the writer did not say), the encoders (`config.encoder_pair`) and the md5 of the table.md it describes."""
    return {"written_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), **git_state(),
            "budget": budget, "encoders": encoder_pair(), "table_md5": table_md5}


def provenance_line(folder: Path | None = None) -> str:
    """One line: when, from which commit, with which budget and encoders results/table.md was made."""
    folder = Path(folder or PATHS.results)
    path = folder / "provenance.json"
    if not path.is_file():
        return (f"made: unknown (no {path}: an older version of the course wrote this table); run "
                "`python -m helpers reproduce` again to know")
    p = json.loads(path.read_text(encoding="utf-8"))
    if (folder / "table.md").is_file() and p.get("table_md5") != md5sum(folder / "table.md"):
        return (f"made: unknown ({path} describes another table.md, so table.md was written by something else "
                "since): run `python -m helpers reproduce` again to know")
    commit = ("an unknown commit (not a git checkout)" if p["commit"] is None else
              f"commit {p['commit'][:10]}" + (" with uncommitted changes" if p["uncommitted_changes"] else ""))
    enc = p["encoders"]
    budget = "budget not recorded" if p["budget"] is None else f"budget {p['budget']}"
    return (f"made {p['written_utc'].replace('T', ' ').replace('Z', ' UTC')} from {commit}; {budget}, "
            f"encoders {enc['pair']} ({enc['image']} + {enc['text']})")


def missing_results(folder: Path | None = None) -> list[str]:
    """The expected results not in `folder`: files of `RESULT_FILES`, models of `MODEL_NAMES` and seeds of
    `recipes.seeds_for` absent from retrieval.json -> one phrase each ([] when nothing is missing)."""
    folder = Path(folder or PATHS.results)
    missing = [f"{name} (no file)" for name in RESULT_FILES if not (folder / name).is_file()]
    if (folder / "retrieval.json").is_file():
        seeds = {r["model"]: r["seeds"] for r in json.loads((folder / "retrieval.json").read_text(encoding="utf-8"))}
        missing += [f"{m} (not in retrieval.json)" if m not in seeds else f"{m}: {seeds[m]} of {len(seeds_for(m))} seeds"
                    for m in MODEL_NAMES if seeds.get(m, 0) < len(seeds_for(m))]
    return missing


def results_report(folder: Path | None = None) -> str:
    """What `python -m helpers summary` says of results/: when and from which commit the table was made,
    the table, and what is missing."""
    folder = Path(folder or PATHS.results)
    table = folder / "table.md"
    if not table.is_file():
        return f"no results yet in {folder}: run `python -m helpers reproduce` (or notebook 06)"
    missing = missing_results(folder)
    tail = ("missing: " + "; ".join(missing) + "\n(`python -m helpers reproduce` makes every model with "
            "the course's seeds)") if missing else "missing: nothing (every model with the course's seeds)"
    return f"results ({table}), {provenance_line(folder)}:\n{table.read_text(encoding='utf-8')}\n{tail}"
