"""Check, on a learner's machine, that pre-staged features and training runs will be reused, not rebuilt.

    .venv/bin/python docs/check_staging.py            # the CPU budget (the course's default)
    .venv/bin/python docs/check_staging.py --budget gpu

It calls the course's own functions, exactly as notebooks 05 and 06 do, with the expensive steps switched
off: where a notebook would extract features, train a run or rank the test set again, this script stops
or says so instead. It never trains, never extracts and writes nothing. It reads the places the course reads
(`data/coco-subset`, `data/cache`, `runs/`, or what COURSE_DATA_DIR, COURSE_CACHE_DIR, COURSE_RUNS_DIR name).
Exit status 0 when everything will be reused, 1 otherwise. See docs/instructor-guide.md, "Pre-staging".
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # this checkout's helpers


class WouldRebuild(Exception):
    """Raised where the course would start an expensive step."""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", choices=["cpu", "gpu"], default="cpu")
    args = parser.parse_args(argv)

    from helpers import train
    from helpers.config import PATHS
    from helpers.pipeline import ablations, encoder_prior, feature_cache, recipes, runs

    def refuse(what):
        def stop(*_, **__):
            raise WouldRebuild(what)
        return stop

    # The three expensive steps, switched off: what would run them is reported instead.
    feature_cache.extract_image_features = refuse("image features")
    feature_cache.extract_text_features = refuse("text features")
    train.make_optimizer = refuse("training")      # called by train.train only when a run is not finished

    print(f"data {PATHS.subset}\ncache {PATHS.cache}\nruns {PATHS.runs}")
    start = time.perf_counter()
    try:
        feats = feature_cache.load_course_features(progress=False)
    except WouldRebuild as what:
        print(f"✗ the {what} are not in {PATHS.cache}, or were built with other settings, so notebook 02/03 would "
              "build them again, and every pre-staged run would then be refused (it was trained on other features). "
              "Copy data/cache/ again from the staging machine, together with runs/.")
        return 1
    print(f"✓ features read from the cache in {time.perf_counter() - start:.0f} s "
          f"(fingerprint {feats['train'].source})")

    problems = 0
    for name in recipes.MODEL_NAMES:
        for seed in recipes.seeds_for(name):
            cfg = recipes.train_config(name, args.budget, seed)
            folder = recipes.run_dir(cfg)
            try:
                runs.train_run(cfg, feats)
            except WouldRebuild:
                print(f"✗ {folder.name}: missing or unfinished; notebook 05/06 would train it")
                problems += 1
                continue
            except (ValueError, RuntimeError, FileNotFoundError) as err:   # another configuration, corrupt file
                print(f"✗ {folder.name}: {err}")
                problems += 1
                continue
            if not runs.ranking_is_fresh(folder):
                print(f"✗ {folder.name}: reused, but its test ranking is missing or older than best.pt, so notebook 06 "
                      "would score it again (2 to 52 s per run on 2 cores); copy with timestamps kept (tar, cp -a, "
                      "rsync -a)")
                problems += 1
                continue
            print(f"✓ {folder.name}: finished run and test ranking will be reused")
    variant = recipes.run_dir(ablations.variant_config("logits_features", args.budget, 0))
    print(f"{'✓' if (variant / 'last.pt').is_file() else '·'} {variant.name}: "
          + ("present (notebook 08 reuses it)" if (variant / "last.pt").is_file()
             else "absent (notebook 08 trains it, about 10 s)"))
    model, seed = encoder_prior.RECHECK                    # 08's encoder prior retrains one run per encoder
    table = encoder_prior.read_search(encoder_prior.committed_files(args.budget)["search"])
    for encoder in encoder_prior.ENCODERS:
        if encoder == encoder_prior.BASE:
            continue                                       # MiniLM's is 06's run, checked above
        try:
            lr = encoder_prior.choose(table, encoder, model, args.budget)[0]
        except encoder_prior._Untrained:
            print(f"· {encoder}: the committed search is incomplete; run `make encoders` (notebook 08 stops without it)")
            continue
        folder = recipes.run_dir(encoder_prior.config(encoder, model, seed, lr, args.budget))
        there = (folder / "last.pt").is_file()
        print(f"{'✓' if there else '·'} {folder.name}: " + ("present (notebook 08 reuses it)" if there else
                                                          "absent (notebook 08 trains it, about a minute)"))
    try:
        feature_cache.cached_random_text_features(feature_cache.load_subset().captions.caption.tolist())
        print("✓ the random MiniLM's text features will be read from the cache")
    except WouldRebuild:
        print("· the random MiniLM's text features are not cached (notebook 08 extracts them, about a minute)")
    print("all pre-staged: nobody waits on training" if problems == 0 else
          f"{problems} run(s) would be trained or ranked in the room; see docs/instructor-guide.md, 'Pre-staging'")
    return 0 if problems == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
