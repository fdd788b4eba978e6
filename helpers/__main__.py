"""The course's command line: `python -m helpers COMMAND ...` (`--help` lists them).

    train       train one run with the course's recipe (or under torchrun: `torchrun ... -m helpers train`)
    search      the learning-rate x temperature search for every model (`make search`)
    reproduce   the whole pipeline without notebooks: every model and seed, the results tables;
                with --ablations, notebook 08's runs instead (`make ablations`)
    splits      06's primary comparison and first secondary on the course's split and two others (`make splits`)
    bench       timings: extract, score, runs, course (`helpers.tools.bench`; course --plan: docs/scale-plan.md)
    student     write the student edition (`make student`)
    clean       strip execution timestamps and widget state from notebooks (`make refresh` runs it)
    summary     the headline results so far (what `make course` prints at the end)

Getting the data is `python -m helpers.data prepare | verify`. Each command imports only what it runs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from .config import PATHS, course_device


def train_command(args) -> int:
    """Train one run: the course's recipe for the model and budget, with any option given here changed."""
    from .features import synthetic_split
    from .pipeline import feature_cache, recipes
    from .pipeline.runs import train_run
    from .train import train

    cfg = recipes.train_config(args.model, args.budget, args.seed, progress=not args.no_progress)
    asked = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "patience": args.patience,
             "loss": args.loss, "device": args.device,
             "model_overrides": None if args.model_overrides is None else {**cfg.model_overrides, **args.model_overrides}}
    cfg = replace(cfg, **{k: v for k, v in asked.items() if v is not None}, amp=not args.no_amp)
    if args.synthetic:
        if args.run_dir is None:
            raise SystemExit("--synthetic needs --run-dir (runs/ holds the course's runs, named by their configuration)")
        from .fast import distributed
        from .fast.scoring import FAST

        train_fs, val_fs = synthetic_split(args.synthetic)
        with distributed.process(cfg.device) as process:
            result = train(cfg, train_fs, val_fs, args.run_dir, scoring=FAST, process=process)
    else:
        feats = feature_cache.load_course_features()
        if args.run_dir is not None:
            raise SystemExit("--run-dir is for --synthetic runs; a course run's folder is named by its "
                             f"configuration: {recipes.run_dir(cfg)}")
        result = train_run(cfg, feats)
    if int(os.environ.get("RANK", "0")) == 0:
        print(result.history.round(4).to_string(index=False))
        print(f"best epoch {result.best['epoch']} (val rsum {result.best['rsum']:.1f}); checkpoints in {result.run_dir}")
    return 0


def search_command(args) -> int:
    from .pipeline import feature_cache, search
    from .pipeline.recipes import grid_table

    table, grid = search.bracketing_search(feature_cache.load_course_features(progress=False), args.models,
                                           args.budget)
    print(table.drop(columns=["recipe"]).to_string(index=False))
    print(f"\nthe final grid: {grid}; every trial is in {grid_table(args.budget)}; the choices:")
    print(search.bracketed(table, grid).to_string())
    return 0


def reproduce_command(args) -> int:
    """Prepare the data, extract the features, train every model (with `--seeds` seeds each, or the course's
    5 for the headline models and 3 for the others), evaluate, write results/."""
    if args.ablations:
        from .pipeline.ablations import reproduce_ablations

        print(reproduce_ablations(args.budget).read_text())
        return 0
    if args.encoders:
        from .pipeline.encoder_prior import chosen_lrs, committed_files, reproduce_encoders
        from .pipeline.splits import committed_course_ranks

        table, _ = reproduce_encoders(args.budget, reuse=committed_course_ranks(args.budget))
        print(chosen_lrs(table, args.budget).to_string(index=False))
        print(f"every trial and run is in {', '.join(str(f) for f in committed_files(args.budget).values())}")
        return 0
    from . import data
    from .pipeline import evaluation, feature_cache, runs, verdicts

    data.prepare()
    feats = feature_cache.load_course_features(progress=True)
    ranks = runs.evaluate_all(feats, tuple(args.models), None if args.seeds is None else tuple(range(args.seeds)),
                              args.budget)
    cap = feats["test"].caption_image
    table = evaluation.write_results(evaluation.results_table(ranks, cap), evaluation.claims_table(ranks, cap),
                                     verdicts.family_table(ranks, cap), budget=args.budget)
    print(table.read_text())
    return 0


def splits_command(args) -> int:
    """Train and rank the split-sensitivity runs (resuming from the committed files), then print the table."""
    from .pipeline import splits

    splits.reproduce_splits(args.budget, tuple(args.orders), tuple(args.seeds))
    files = splits.committed_files(args.budget)
    print(f"recorded in {files['table']} and {files['ranks']}:")
    print(splits.split_table(args.budget).round(2).to_string(index=False))
    return 0


def student_command(args) -> int:
    from .tools.editions import write_student_edition

    out = args.out or PATHS.student
    try:
        written = write_student_edition(out=out)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"student edition: {len(written)} notebooks, {sum(written.values())} exercises to do -> {out}")
    return 0


def clean_command(args) -> int:
    from .tools.clean import main as clean

    return clean(args.paths)


def summary_command(args) -> int:
    """Print the executed notebooks (and those missing), the data, and the results so far: when and from
    which commit their table was made, and what is missing (`evaluation.results_report`)."""
    from . import data
    from .pipeline import evaluation

    if args.executed is not None:
        print(f"executed notebooks in {args.executed.resolve()}:")
        executed = sorted(nb.name for nb in args.executed.glob("*.ipynb"))
        for name in executed:
            print(f"  {name}")
        absent = [nb.name for nb in sorted(PATHS.notebooks.glob("[0-9][0-9]_*.ipynb")) if nb.name not in executed]
        if absent:
            print(f"  missing: {', '.join(absent)}")
    subset = data.load_subset()     # `make course` ran `python -m helpers.data verify` already
    print(f"data: {len(subset.image_ids)} images, {len(subset.captions)} captions")
    q = data.label_quality(data.mine_labels(subset.captions), data.instance_labels(subset)).loc["ALL (micro)"]
    print(f"caption-mined labels vs instance labels (258 images): precision {q.precision:.2f}, recall {q.recall:.2f}")
    print("\n" + evaluation.results_report())
    return 0


def main(argv: list[str] | None = None) -> int:
    from .pipeline.recipes import BUDGETS, MODEL_NAMES

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:                          # its own command line, with its own --help
        from .tools import bench

        return bench.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m helpers", description=__doc__.split("\n")[0],
                                     epilog="python -m helpers bench --help: the timings")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one run with the course's recipe (options change it)")
    t.add_argument("--model", default="decoupled", help="a name of helpers.models.MODELS")
    t.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int, help="global batch")
    t.add_argument("--lr", type=float)
    t.add_argument("--patience", type=int, help="early stopping (0: off)")
    t.add_argument("--loss", choices=["infonce", "vse", "pointwise"])
    t.add_argument("--device", help=f"cpu (default: COURSE_DEVICE, now {course_device()!r}), cuda or auto")
    t.add_argument("--model-overrides", type=json.loads, help='JSON, e.g. \'{"dim": 32}\'')
    t.add_argument("--synthetic", type=int, metavar="N_IMAGES", help="train on N random images instead (needs --run-dir)")
    t.add_argument("--run-dir", type=Path, help="with --synthetic: where to keep the run")
    t.add_argument("--no-amp", action="store_true")
    t.add_argument("--no-progress", action="store_true")

    s = sub.add_parser("search", help="the learning-rate x temperature search for every model, grown until every choice "
                                       "is interior (hours on 2 cores; writes notebooks/search-grid-<budget>.csv as it "
                                       "goes and resumes from the rows already there)")
    s.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    s.add_argument("--models", nargs="+", default=list(MODEL_NAMES))

    r = sub.add_parser("reproduce", help="prepare, extract, train every model with N seeds, evaluate, write results/")
    r.add_argument("--seeds", type=int, default=None, help="seeds per model (default: 5 for decoupled and joint, 3 for the others)")
    r.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    r.add_argument("--models", nargs="+", default=list(MODEL_NAMES), help="subset of the models (default: the factorial and blog)")
    r.add_argument("--ablations", action="store_true",
                   help="08's runs instead: the blog's bugs and the readers' proposals (each proposal tuned until its "
                        "choice is interior first, resumable), the data-scale curve")
    r.add_argument("--encoders", action="store_true",
                   help="08's encoder-prior runs instead: the text encoder as a factor (MiniLM, a GRU with no prior, a random MiniLM): "
                        "each encoder's learning-rate search, then 5 models x 5 seeds, resumable")

    sp = sub.add_parser("splits", help="06's primary comparison and first secondary, 5 seeds each, on the course's "
                                       "split and two other splits of the subset")
    sp.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    sp.add_argument("--orders", type=int, nargs="+", default=[0, 1, 2],
                    help="0: the course's split (06's runs); 1, 2, ...: other orders of the same rule")
    sp.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])

    st = sub.add_parser("student", help="write the student edition: exercise solutions replaced by stubs (nbgrader's markers)")
    st.add_argument("--out", type=Path, default=None, help="folder to write to (default: student/, git-ignored)")
    c = sub.add_parser("clean", help="strip execution timestamps and widget state from notebooks, in place")
    c.add_argument("paths", nargs="*", type=Path, help="notebooks or folders (default: the course's notebooks/)")
    su = sub.add_parser("summary", help="headline results so far")
    su.add_argument("--executed", type=Path, help="folder of executed notebooks to list")
    sub.add_parser("bench", help="timings: extract, score, runs, course (python -m helpers bench --help)")

    args = parser.parse_args(argv)
    commands = {"train": train_command, "search": search_command, "reproduce": reproduce_command,
                "splits": splits_command, "student": student_command, "clean": clean_command,
                "summary": summary_command}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
