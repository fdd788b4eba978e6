"""Speed code: train (and rank) the course's independent runs side by side, one thread each.

A course run is small: its matrix products keep two CPU threads only partly busy, so two runs in two
processes with one thread each finish sooner than the same runs one after another on two threads
(`python -m helpers.bench runs` measures both in one go). Nothing here changes what a run computes:
each worker calls `train.train` and `reproduce.rank_folder`, and writes the same run folder. A run
trained with one thread agrees with a two-thread run up to float rounding, as another CPU's would.

`reproduce.evaluate_all` and `reproduce.train_all` call `run_missing` first; the readable loop after it
then finds every run finished. On a GPU, with one job, or with COURSE_WORKERS=1, nothing runs here.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import torch

MAX_WORKERS = 8         # each worker holds the course's features (~0.6 GB)
_FEATURES = None        # a worker's own copy of the features, loaded once


class OtherFeatures(RuntimeError):
    """The features a worker loaded are not the ones the runs were asked for."""


def course_features() -> dict:
    """What a worker trains on by default: the course's features, read from data/cache."""
    from .features import load_course_features

    return load_course_features(progress=False)


def workers(n_jobs: int, device: str | torch.device = "cpu") -> int:
    """How many processes to use for `n_jobs` runs: one per CPU thread torch would use (at most
    MAX_WORKERS, at most n_jobs); 1 on a GPU. COURSE_WORKERS overrides the count."""
    from .config import get_device

    if n_jobs < 2 or get_device(device).type != "cpu":
        return 1
    wanted = os.environ.get("COURSE_WORKERS", "").strip()
    if wanted and not wanted.isdigit():
        raise ValueError(f"COURSE_WORKERS={wanted!r}: set it to a whole number of processes (1 = no parallel runs)")
    n = int(wanted) if wanted else min(torch.get_num_threads(), MAX_WORKERS)
    return max(1, min(n, n_jobs))


def _one_thread() -> None:
    torch.set_num_threads(1)


def _run(cfg, folder: str, rank: bool, source: str, load) -> str:
    """In a worker: train (or finish) the run in `folder` on `load()`'s features, and rank its test set."""
    global _FEATURES
    from .reproduce import rank_folder
    from .train import train

    if _FEATURES is None:
        _FEATURES = load()
    if _FEATURES["train"].source != source:
        raise OtherFeatures(f"the runs' features ({source!r}) are not those {load.__name__} gives "
                            f"({_FEATURES['train'].source!r})")
    train(cfg, _FEATURES["train"], _FEATURES["val"], folder)
    if rank:
        rank_folder(Path(folder), _FEATURES["test"])
    return folder


def run_missing(jobs: list[tuple], feats: dict, rank: bool = True, load=course_features) -> int:
    """jobs: [(TrainConfig, run folder)], of which `reproduce.needs_work` picks the unfinished ones;
    train them (and with `rank`, rank their test set) in parallel worker processes -> how many ran here.

    Jobs start in the given order (put the long ones first). Each worker calls `load()` (a module-level
    function) once for its features; if those are not `feats`, nothing runs here and the caller trains
    the runs itself.
    """
    from .reproduce import needs_work

    todo = [(cfg, folder) for cfg, folder in jobs if needs_work(cfg, folder, rank)]
    n = workers(len(todo), todo[0][0].device if todo else "cpu")
    source = feats["train"].source
    if n < 2 or not source:
        return 0
    pool = ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("spawn"), initializer=_one_thread)
    futures = [pool.submit(_run, cfg, str(folder), rank, source, load) for cfg, folder in todo]
    try:
        for f in futures:
            f.result()
    except OtherFeatures as err:
        warnings.warn(f"runs trained one after another: {err}", stacklevel=2)
        return 0
    except BrokenProcessPool as err:
        raise RuntimeError(f"a worker training the runs side by side stopped abruptly (out of memory, or "
                           f"killed); finished epochs are kept in their run folders. Run again, or set "
                           f"COURSE_WORKERS=1 to train one run at a time in this process") from err
    except BaseException:              # an error or an interrupt: stop the other runs too (they resume later)
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return len(todo)
