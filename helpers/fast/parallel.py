"""Speed code: independent jobs (the course's training runs) side by side in processes, one thread each.

A course run is small: its matrix products keep two CPU threads only partly busy, so two runs in two
processes with one thread each finish sooner than the same runs one after another on two threads
(`python -m helpers bench runs` measures both in one go). Nothing here changes what a job computes:
each worker calls the same function the caller would (`helpers.pipeline.runs` hands it the training
and ranking of one run), and a run trained with one thread agrees with a two-thread run up to float
rounding, as another CPU's would. On a GPU, with one job, or with COURSE_WORKERS=1, nothing runs here.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Callable

import torch

from ..config import get_device

MAX_WORKERS = 8         # each worker holds the course's features (~0.6 GB)
_FEATURES = None        # a worker's own copy of the features, loaded once


class OtherFeatures(RuntimeError):
    """The features a worker loaded are not the ones the jobs were asked for."""


def workers(n_jobs: int, device: str | torch.device = "cpu") -> int:
    """How many processes to use for `n_jobs` jobs: one per CPU thread torch would use (at most
    MAX_WORKERS, at most n_jobs); 1 on a GPU. COURSE_WORKERS overrides the count."""
    if n_jobs < 2 or get_device(device).type != "cpu":
        return 1
    wanted = os.environ.get("COURSE_WORKERS", "").strip()
    if wanted and not wanted.isdigit():
        raise ValueError(f"COURSE_WORKERS={wanted!r}: set it to a whole number of processes (1 = no parallel runs)")
    n = int(wanted) if wanted else min(torch.get_num_threads(), MAX_WORKERS)
    return max(1, min(n, n_jobs))


def _one_thread() -> None:
    torch.set_num_threads(1)


def _run(work: Callable, job: tuple, source: str, load: Callable) -> None:
    """In a worker: `work(features, *job)` on `load()`'s features, loaded once per worker."""
    global _FEATURES
    if _FEATURES is None:
        _FEATURES = load()
    if _FEATURES["train"].source != source:
        raise OtherFeatures(f"the jobs' features ({source!r}) are not those {load.__name__} gives "
                            f"({_FEATURES['train'].source!r})")
    work(_FEATURES, *job)


def side_by_side(work: Callable, jobs: list[tuple], feats: dict, load: Callable, device: str = "cpu",
                 done: Callable | None = None) -> int:
    """Call `work(features, *job)` for every job in worker processes, one thread each -> how many ran here.

    `work` and `load` are module-level functions (workers are spawned, so they are pickled by name). Jobs
    start in the given order (put the long ones first). Each worker calls `load()` once for its features;
    if those are not `feats`, or one worker would do (`workers`), nothing runs here (0) and the caller
    runs the jobs itself. `done(*job)`, if given, is called in this process as each job finishes.
    """
    n = workers(len(jobs), device)
    source = feats["train"].source
    if n < 2 or not source:
        return 0
    pool = ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("spawn"), initializer=_one_thread)
    futures = {pool.submit(_run, work, job, source, load): job for job in jobs}
    try:
        for f in futures if done is None else as_completed(futures):
            f.result()
            if done is not None:
                done(*futures[f])
    except OtherFeatures as err:
        warnings.warn(f"runs trained one after another: {err}", stacklevel=2)
        return 0
    except BrokenProcessPool as err:
        raise RuntimeError("a worker training the runs side by side stopped abruptly (out of memory, or "
                           "killed); finished epochs are kept in their run folders. Run again, or set "
                           "COURSE_WORKERS=1 to train one run at a time in this process") from err
    except BaseException:              # an error or an interrupt: stop the other runs too (they resume later)
        for worker in list((getattr(pool, "_processes", None) or {}).values()):
            worker.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return len(jobs)
