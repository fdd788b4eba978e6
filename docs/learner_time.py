"""Estimated learner time per notebook, from counted reading and exercise load (not timed with learners).

Run from anywhere with the course's environment:

    .venv/bin/python docs/learner_time.py            # a markdown table, as pasted in docs/instructor-guide.md
    .venv/bin/python docs/learner_time.py --detail   # also every shown helper and every exercise, per notebook
    .venv/bin/python docs/learner_time.py --sections # also the minutes of each `## ` section (for planning)
    .venv/bin/python docs/learner_time.py --write-guide   # rewrite those tables in docs/instructor-guide.md

It reads the committed notebooks with nbformat (nothing is executed) and counts, per notebook:
- the words of its markdown cells;
- the code lines a learner reads: the non-blank lines of every code cell as the *student edition* shows them
  (exercise solutions replaced by the stub, via `helpers.tools.editions.clear_solutions`), except the
  lines that only call `show_source(...)`; for those, the non-blank lines of the source they display
  (`inspect.getsource` of the named helper, after importing `helpers`);
- the words a learner reads in printed and generated output (stdout and display(Markdown) text);
- figures (each image/png output) and tables (each text/html output that holds a <table>; the HTML that
  `show_source` displays is code, already counted above);
- the exercises by kind (`code`, `predict`, `change`, from `helpers.exercises.EXERCISES`), one per cell
  that calls `exercises.<name>.check(`, and each code exercise's size: the non-blank lines of its solution
  (between `### BEGIN SOLUTION` and `### END SOLUTION`), which the learner writes.

Then it applies the reading model below and adds the notebook's compute time, both as when run live on a
2-core laptop and with the feature cache and training runs pre-staged (docs/instructor-guide.md, "Pre-staging").
"""
from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "instructor-guide.md"
sys.path.insert(0, str(ROOT))      # this checkout's helpers, whatever the environment has installed

from helpers.atomic import write_text  # noqa: E402  (after the path is set)
from helpers.exercises import EXERCISES  # noqa: E402
from helpers.tools.editions import clear_solutions  # noqa: E402

# ------------------------------------------------------------------------------ the reading model
# Every constant is an ASSUMPTION, chosen from the ranges below, not measured with this course's learners.
WORDS_PER_MINUTE = 150     # technical prose read to learn it. Adults read English non-fiction silently at 238
                           # words/min on average, most between 175 and 300, and more slowly in a second language
                           # (Brysbaert 2019, "How many words do we read per minute?", J. Memory and Language
                           # 109:104047). Dense technical text read for understanding is commonly put at roughly
                           # 100-200 words/min. We take the middle of that range: an assumption.
OUTPUT_WORDS_PER_MINUTE = 150   # printed results and generated verdict sentences: read like the prose
SECONDS_PER_CODE_LINE = 10      # reading a line of code well enough to say what it does (an assumption)
MINUTES_PER_FIGURE = 1.0        # look at a figure or a table and find what the prose says it shows
# Doing an exercise, hint included, from reading its task to the green check (the task's words are counted
# with the prose). A code exercise takes longer the more there is to write: CODE_BASE_MINUTES to run the check
# and fix one mistake, plus MINUTES_PER_SOLUTION_LINE for each non-blank line of the reference solution
# (thinking it out, typing it, checking it): 3 + 1.5 x lines, so 4.5 min for one line, 18 min for ten.
# Predict and change exercises write no code: a fixed small time each.
CODE_BASE_MINUTES = 3.0
MINUTES_PER_SOLUTION_LINE = 1.5
MINUTES_PER_EXERCISE = {        # predict and change: a fixed time whatever their size
    "predict": 2.0,             # think, write a number or a letter, run, read the explanation
    "change": 4.0,              # edit one thing in a cell, rerun, compare, answer, restore
}

# Compute time per notebook on a 2-core laptop, quoted from each notebook's "**Time:**" line (the script checks
# that the quoted phrase is still there). "live": run from a fresh clone (features and runs built in the room);
# "staged": with data/cache/ and runs/ pre-staged, the header's "once cached" / "reruns" figure where it gives one.
COMPUTE = {  # notebook: (live s, quoted phrase, staged s, quoted phrase or None when the header gives one time)
    "00": (10, "about 10 s", 10, None),
    "01": (15, "about 15 s", 15, None),
    "02": (60, "about 1 min on a 2-core machine the first time", 25, "about 25 s once cached"),
    "03": (45, "about 45 s on a 2-core machine the first time", 15, "about 15 s once cached"),
    "04": (10, "about 10 s", 10, None),
    "05": (450, "about 7.5 min", 20, "take about 20 s"),
    "06": (1380, "about 23 min", 120, "about 2 min when the runs and their rankings are already in `runs/`"),
    "07": (110, "about 2 min", 110, None),
    "08": (150, "about 2.5 min on a 2-core machine the first time", 35, "about 35 s when its runs are in `runs/`"),
}

SOLUTION = re.compile(r"###\s*(BEGIN|END) SOLUTION")
CHECK = re.compile(r"exercises\.(\w+)\.check\(")
WORD = re.compile(r"[A-Za-z0-9√][\w'’.,:/×→−+-]*")


def words(text: str) -> int:
    return len(WORD.findall(text))


def nonblank(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip())


def solution_lines(source: str) -> int:
    """The non-blank lines between the BEGIN and END SOLUTION markers of a cell: what the learner writes."""
    inside, n = False, 0
    for line in source.splitlines():
        if SOLUTION.search(line):
            inside = "BEGIN" in line
        elif inside and line.strip():
            n += 1
    return n


def exercise_estimate(kind: str, lines: int) -> float:
    """Minutes to do one exercise: 3 + 1.5 per solution line for code, a fixed time for predict and change."""
    if kind == "code":
        return CODE_BASE_MINUTES + MINUTES_PER_SOLUTION_LINE * lines
    return MINUTES_PER_EXERCISE[kind]


def resolve(dotted: str):
    """'encoders.ImageEncoder.forward' -> the object, found in helpers.<first part> (or in one of its folders,
    helpers.fast, helpers.pipeline, helpers.tools, as a notebook imports it: `from helpers.fast import extraction`)."""
    first, *rest = dotted.split(".")
    for package in ("helpers", "helpers.fast", "helpers.pipeline", "helpers.tools"):
        if importlib.util.find_spec(f"{package}.{first}") is not None:
            break
    obj = importlib.import_module(f"{package}.{first}")
    for part in rest:
        obj = getattr(obj, part)
    return obj


def shown_sources(source: str) -> tuple[list[str], set[int]]:
    """A code cell -> (the dotted names its show_source calls display, the line numbers of those calls)."""
    tree = ast.parse(source)
    names, lines = [], set()

    def is_show(stmt) -> bool:
        return (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
                and getattr(stmt.value.func, "id", None) == "show_source")

    for stmt in tree.body:
        if is_show(stmt):
            names.append(ast.unparse(stmt.value.args[0]))
            lines.update(range(stmt.lineno, stmt.end_lineno + 1))
        elif (isinstance(stmt, ast.For) and all(is_show(s) for s in stmt.body)
              and isinstance(stmt.iter, (ast.Tuple, ast.List))):      # for part in (a, b): show_source(part)
            names += [ast.unparse(e) for e in stmt.iter.elts]
            lines.update(range(stmt.lineno, stmt.end_lineno + 1))
    return names, lines


FIELDS = ("md_words", "code_lines", "shown_lines", "output_words", "figures", "tables", "code", "predict", "change")


def new_counts() -> dict:
    return {**{k: 0 for k in FIELDS}, "shown": [], "exercises": []}


def add(total: dict, part: dict) -> None:
    for k in FIELDS:
        total[k] += part[k]
    total["shown"] += part["shown"]
    total["exercises"] += part["exercises"]


def sections(path: Path, registry: dict) -> list[tuple[str, dict]]:
    """A notebook -> [(section heading, its counts)] in order; the first is the title and its header lines.
    A section starts at a markdown line `## ...` (the exercises' `### ...` stay in their section)."""
    nb = nbformat.read(path, as_version=4)
    out = [("(title and header)", new_counts())]
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("## "):
                    out.append((line[3:].strip(), new_counts()))
                out[-1][1]["md_words"] += words(line)
            continue
        if cell.cell_type != "code":
            continue
        c = out[-1][1]
        source = clear_solutions(cell.source) if SOLUTION.search(cell.source) else cell.source
        names, show_lines = shown_sources(source)
        c["code_lines"] += sum(1 for n, line in enumerate(source.splitlines(), 1)
                               if line.strip() and n not in show_lines)
        for name in names:
            n = nonblank(inspect.getsource(resolve(name)))
            c["shown_lines"] += n
            c["shown"].append((name, n))
        for name in CHECK.findall(cell.source):
            kind = registry[name].kind
            lines = solution_lines(cell.source) if kind == "code" else 0
            c[kind] += 1
            c["exercises"].append((name, kind, lines, exercise_estimate(kind, lines)))
        for out_ in cell.get("outputs", []):
            if out_.output_type == "stream" and out_.name == "stdout":
                c["output_words"] += words(out_.text)
            elif out_.output_type in ("display_data", "execute_result"):
                data = out_.get("data", {})
                if "image/png" in data:
                    c["figures"] += 1
                elif "<table" in data.get("text/html", ""):
                    c["tables"] += 1
                elif "text/markdown" in data:
                    c["output_words"] += words(data["text/markdown"])
    return out


def count(path: Path, registry: dict) -> dict:
    """A notebook -> its counts, all sections together."""
    total = new_counts()
    for _, part in sections(path, registry):
        add(total, part)
    return total


def reading_minutes(c: dict) -> float:
    return (c["md_words"] / WORDS_PER_MINUTE + c["output_words"] / OUTPUT_WORDS_PER_MINUTE
            + (c["code_lines"] + c["shown_lines"]) * SECONDS_PER_CODE_LINE / 60
            + (c["figures"] + c["tables"]) * MINUTES_PER_FIGURE)


def exercise_minutes(c: dict) -> float:
    return sum(minutes for *_, minutes in c["exercises"])


def minutes(c: dict, key: str) -> dict:
    reading, doing = reading_minutes(c), exercise_minutes(c)
    live, _, staged, _ = COMPUTE[key]
    return {"reading": reading, "exercises": doing, "live": reading + doing + live / 60,
            "staged": reading + doing + staged / 60}


def check_quotes(path: Path, key: str) -> None:
    """Fail loudly when a notebook's Time line no longer says what COMPUTE quotes from it."""
    first = nbformat.read(path, as_version=4).cells[0].source
    time_line = next((line for line in first.splitlines() if line.startswith("**Time:**")), "")
    _, live_quote, _, staged_quote = COMPUTE[key]
    for quote in filter(None, (live_quote, staged_quote)):
        if quote not in time_line:
            raise SystemExit(f"{path.name}: its Time line no longer says {quote!r}; update COMPUTE in {__file__}\n"
                             f"  Time line: {time_line}")


def fmt_s(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def notebook_table() -> tuple[str, list[str]]:
    """The notebook-level markdown table (as in the guide's section 2) and one detail line per notebook."""
    header = ("| notebook | prose words | code lines (own + shown) | output words | figures + tables | "
              "exercises code/predict/change | reading min | exercise min | compute live / staged | "
              "**total min, live** | **total min, staged** |")
    rows, totals = [header, "|" + "---|" * 11], {"reading": 0.0, "exercises": 0.0, "live": 0.0, "staged": 0.0}
    details = []
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        key = path.name[:2]
        check_quotes(path, key)
        c = count(path, EXERCISES)
        m = minutes(c, key)
        for k in totals:
            totals[k] += m[k]
        rows.append(f"| {path.stem} | {c['md_words']} | {c['code_lines']} + {c['shown_lines']} | {c['output_words']} | "
                    f"{c['figures']} + {c['tables']} | {c['code']}/{c['predict']}/{c['change']} | {m['reading']:.0f} | "
                    f"{m['exercises']:.0f} | {fmt_s(COMPUTE[key][0])} / {fmt_s(COMPUTE[key][2])} | "
                    f"**{m['live']:.0f}** | **{m['staged']:.0f}** |")
        details.append(f"{path.stem}: shown {c['shown']}; exercises "
                       + ", ".join(f"{n} ({k}{f', {lines} line' + 's' * (lines != 1) if k == 'code' else ''}: {m:g} min)"
                                   for n, k, lines, m in c["exercises"]))
    rows.append(f"| all {len(details)} notebooks | | | | | | {totals['reading']:.0f} | {totals['exercises']:.0f} | | "
                f"**{totals['live']:.0f}** | **{totals['staged']:.0f}** |")
    return "\n".join(rows), details


def section_table(path: Path) -> str:
    """One notebook's per-section markdown table (as in the guide's appendix)."""
    rows = ["| § | section | reading min | exercises (kind, min) | exercise min |", "|---|---|---|---|---|"]
    for number, (title, c) in enumerate(sections(path, EXERCISES)):
        names = ", ".join(f"{n} ({k}, {m:g})" for n, k, _, m in c["exercises"]) or "-"
        rows.append(f"| {number} | {title} | {reading_minutes(c):.1f} | {names} | {exercise_minutes(c):g} |")
    return "\n".join(rows)


def guide_with_tables(text: str) -> str:
    """The guide's text with its generated tables (section 2's and the appendix's) replaced by today's."""
    table, _ = notebook_table()
    text = re.sub(r"^\| notebook \| prose words \|.*?^\| all \d+ notebooks \|[^\n]*$", lambda _: table, text,
                  count=1, flags=re.M | re.S)
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        text = re.sub(rf"^(\*\*{re.escape(path.stem)}\*\*\n\n)\| § \|.*?(?=\n\n|\n?\Z)",
                      lambda m, path=path: m.group(1) + section_table(path), text, count=1, flags=re.M | re.S)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--detail", action="store_true", help="list the shown helpers and exercises per notebook")
    parser.add_argument("--sections", action="store_true",
                        help="also one table per notebook: reading and exercise minutes of each `## ` section")
    parser.add_argument("--write-guide", action="store_true",
                        help=f"rewrite the generated tables of {GUIDE.relative_to(ROOT)} (section 2 and the appendix)")
    args = parser.parse_args(argv)
    if args.write_guide:
        write_text(GUIDE, guide_with_tables(GUIDE.read_text(encoding="utf-8")))
        print(f"updated the tables of {GUIDE}; check the plans of section 3 against the new appendix")
        return 0
    table, details = notebook_table()
    print(table)
    print(f"\nModel: {WORDS_PER_MINUTE} words/min prose and output, {SECONDS_PER_CODE_LINE} s per code line, "
          f"{MINUTES_PER_FIGURE:g} min per figure or table, exercises per exercise: code "
          f"{CODE_BASE_MINUTES:g} + {MINUTES_PER_SOLUTION_LINE:g} min per solution line, "
          + ", ".join(f"{k} {v:g} min" for k, v in MINUTES_PER_EXERCISE.items())
          + "; compute from each notebook's Time line. Estimated, not timed with learners.")
    if args.detail:
        print("\n" + "\n".join(details))
    if args.sections:
        for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
            print(f"\n{path.stem} (compute not included: see the table above)\n\n{section_table(path)}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
