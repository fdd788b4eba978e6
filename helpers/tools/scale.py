"""Full COCO on several processes, end to end: download, prepare, verify, sharded extraction under torchrun,
DDP training, and both published protocols, each step timed and logged.

    python -m helpers.tools.scale standin [--workdir D] [--keep]     # the whole path on a stand-in, 2 CPU ranks
    python -m helpers.tools.scale full --nproc 8 [--workdir D]        # the same steps on full COCO (COURSE_DATA=karpathy)

`standin` builds a tiny Karpathy-format COCO from the course subset (`tools.standin`: 60 train, 10 val and
25 test images, the published files' layout and archives), serves it on 127.0.0.1 and runs every step of
`full` on it with 2 gloo processes: its 25 test images make five 1K-style folds of 5. Everything it writes
stays in its work dir (default runs/scale-standin); without --keep only logs/ and summary.json stay.
`full` runs the same commands on the published files (`--download-url` for a mirror), on `--nproc` GPUs,
with the "full" budget (`recipes.SCALE_BUDGETS`); every step resumes or reuses what an earlier run left.

Each step's output goes to <workdir>/logs/<n>-<step>.log; a failed step stops the run with a message naming
the step and its log. <workdir>/summary.json (written after every step) holds each step's status and
seconds, the shard counts, the processes, the training history and both protocols.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import torch

from ..atomic import atomic_path, write_json
from ..checkpoints import load_checkpoint
from ..config import PATHS, PROJECT_ROOT
from ..fast.shards import read_index, verify_split
from ..pipeline.shards import protocol_lines, score_protocols
from .standin import build_standin, serve

SPLITS = ("train", "val", "test")
STANDIN = {"n_train": 60, "n_val": 10, "n_test": 25}          # 25 test images: five folds of 5
STANDIN_TRAINING = {"epochs": 3, "batch_size": 12}            # 5 global batches of 12 images an epoch
KEPT = ("logs", "summary.json")                                # what a stand-in run leaves without --keep
ERROR_LINE = re.compile(r"\b\w*(Error|Exception): ")
PROGRESS_BAR = re.compile(r"^\s*$|\d+%\|")                       # blank lines and tqdm's bars: in the logs only


class StepFailed(RuntimeError):
    """A step of the run failed or ran out of time; the message names the step and its log."""


def torchrun(nproc: int) -> list[str]:
    """torchrun of this interpreter (not one on PATH), one machine, `nproc` processes on a free port."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]


def _stop(proc: subprocess.Popen, grace: float = 10) -> None:
    """End the process and everything it started (its own session): SIGTERM, then SIGKILL after `grace` s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            continue


def run_command(name: str, argv: list[str], log: Path, env: dict | None = None, timeout: float | None = None,
                echo: bool = False) -> str:
    """Run `argv` in the project root in a session of its own, its stdout and stderr into `log` (and on
    the console with `echo`) -> its output. StepFailed (the step, the log, the last lines) when it exits
    non-zero or runs past `timeout` s; on any error it is stopped with everything it started."""
    lines: list[str] = []
    with atomic_path(log) as tmp, open(tmp, "w") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.Popen(argv, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, errors="replace", start_new_session=True)

        def relay():
            for line in proc.stdout:
                lines.append(line)
                out.write(line)
                out.flush()
                if echo:
                    print("    " + line, end="", flush=True)

        reader = threading.Thread(target=relay, daemon=True)
        reader.start()
        late = False
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            late = True
        finally:
            _stop(proc)
            reader.join(10)
            proc.stdout.close()
    text = "".join(lines)
    if late or proc.returncode:
        why = f"did not finish in {timeout:g} s and was stopped" if late else f"exited with status {proc.returncode}"
        output = text.rstrip().splitlines()
        first = next((line for line in output if ERROR_LINE.search(line)), None)   # a rank's, above torchrun's report
        tail = "\n".join("    " + line for line in output[-15:])
        cause = f"\n    first error: {first.strip()}" if first and first not in output[-15:] else ""
        raise StepFailed(f"step {name!r} {why}; its log: {log}{cause}\n{tail}")
    return text


class Run:
    """One end-to-end run: numbered steps, each timed, logged to the console and recorded in summary.json."""

    def __init__(self, workdir: Path, mode: str, env: dict, timeout: float | None, echo: bool):
        self.workdir, self.env, self.timeout, self.echo = workdir, env, timeout, echo
        self.start = time.perf_counter()
        self.summary = {"mode": mode, "workdir": str(workdir), "ok": False, "steps": []}

    def record(self) -> Path:
        """summary.json as the run stands now (written atomically)."""
        self.summary["wall_s"] = round(time.perf_counter() - self.start, 1)
        return write_json(self.workdir / "summary.json", self.summary, indent=1)

    def log(self, name: str) -> Path:
        return self.workdir / "logs" / f"{len(self.summary['steps']) + 1:02d}-{name}.log"

    def step(self, name: str, what: str, action, log: Path | None = None) -> object:
        """Run `action()` (-> (result, lines to print)) as the next step; StepFailed names it on an error."""
        entry = {"name": name, "status": "running", **({"log": str(log)} if log else {})}
        self.summary["steps"].append(entry)
        print(f"== [{len(self.summary['steps'])}] {name}: {what}", flush=True)
        t = time.perf_counter()
        try:
            result, lines = action()
        except StepFailed as e:
            entry.update(status="failed", seconds=round(time.perf_counter() - t, 1), error=str(e))
            self.record()
            raise
        except Exception as e:
            entry.update(status="failed", seconds=round(time.perf_counter() - t, 1), error=f"{type(e).__name__}: {e}")
            self.record()
            raise StepFailed(f"step {name!r} failed: {type(e).__name__}: {e}") from e
        entry.update(status="done", seconds=round(time.perf_counter() - t, 1))
        for line in lines:
            print("    " + line, flush=True)
        print(f"   done in {entry['seconds']:.1f} s", flush=True)
        self.record()
        return result

    def command(self, name: str, what: str, argv: list[str], keep=lambda line: True):
        """A step that runs a command -> its output; the lines `keep` keeps (progress bars left out) are printed."""
        log = self.log(name)

        def action():
            text = run_command(name, argv, log, self.env, self.timeout, self.echo)
            return text, [] if self.echo else [line for line in text.rstrip().splitlines()
                                               if keep(line) and not PROGRESS_BAR.search(line)]
        return self.step(name, what, action, log)


def _counts(shards: Path) -> tuple[dict, list[str]]:
    """Every split's shards checked against their index -> counts per split, lines to print."""
    counts, lines = {}, []
    for split in SPLITS:
        problems = verify_split(shards, split)
        if problems:
            raise StepFailed(f"step 'verify-shards' failed: {split!r}: " + "; ".join(problems))
        index = read_index(shards, split)
        counts[split] = {"images": index["images"]["count"], "captions": index["captions"]["count"],
                         "tokens": index["captions"]["tokens"], "shards": index["world"],
                         "bytes": sum(e["bytes"] for k in ("images", "captions") for e in index[k]["shards"])}
        c = counts[split]
        lines.append(f"{split}: {c['images']} images, {c['captions']} captions in {c['shards']} shards per "
                     f"modality, {c['bytes'] / 1e6:.1f} MB, sha256 as in the index")
    return counts, lines


def steps(run: Run, *, data_dir: Path, shards: Path, run_dir: Path, nproc: int, device: str, training: dict,
          prepare_args: list[str], decode: bool) -> dict:
    """prepare, verify, extract, verify-shards, train, score: the steps `standin` and `full` share."""
    py, summary = [sys.executable, "-m"], run.summary
    run.command("prepare", f"download and check the archives, extract the images into {data_dir}",
                py + ["helpers.data", "prepare", "--dest", str(data_dir), *prepare_args])
    run.command("verify", "every image against the manifest's md5" + (", and decoded" if decode else ""),
                py + ["helpers.data", "verify", "--dest", str(data_dir)] + (["--decode"] if decode else []))
    run.command("extract", f"features of {', '.join(SPLITS)} in shards, one per process ({nproc} processes)",
                torchrun(nproc) + ["-m", "helpers.pipeline.shards", "extract", "--data", "karpathy", "--data-dir",
                                   str(data_dir), "--split", *SPLITS, "--out", str(shards), "--device", device,
                                   "--no-progress"],
                keep=lambda line: "shard(s)" in line)
    summary["shards"] = run.step("verify-shards", f"every shard in {shards} against the sha256 in its index",
                                 lambda: _counts(shards))
    options = [f"--{k.replace('_', '-')}={v}" for k, v in training.items() if k != "model" and v is not None]
    history = run.command("train", f"{training['model']} under DDP on {nproc} processes, reading the shards",
                          torchrun(nproc) + ["-m", "helpers.pipeline.shards", "train", "--shards", str(shards),
                                             "--run-dir", str(run_dir), "--model", training["model"], "--device",
                                             device, "--no-progress", *options])
    world = [int(w) for w in re.findall(r"trained by (\d+) process", history)]
    last = load_checkpoint(run_dir / "last.pt")
    summary["training"] = {"processes": world[0] if world else None, "run_dir": str(run_dir),
                           "config": last["train_config"], "best": last["best"], "history": last["history"]}
    score_device = "cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"

    def score():
        result = score_protocols(run_dir, shards, "test", score_device)
        return result, protocol_lines(result)
    summary["protocols"] = run.step("score", "the best checkpoint on the test split: 1K (five folds) and 5K", score)
    return summary


def standin(workdir: Path, keep: bool = False, nproc: int = 2, model: str = "decoupled", timeout: float = 300,
            echo: bool = False, **sizes) -> dict:
    """The whole path on a stand-in served on 127.0.0.1 (module docstring) -> the summary."""
    sizes = {**STANDIN, **sizes}
    if sizes["n_test"] % 5:
        raise ValueError(f"n_test={sizes['n_test']}: the 1K protocol needs five equal folds; use a multiple of 5")
    workdir = Path(workdir).resolve()
    if workdir.exists() and any(workdir.iterdir()):
        raise ValueError(f"{workdir} is not empty; a stand-in run starts from nothing: remove it or pass another "
                         "--workdir")
    places = {name: workdir / name for name in ("www", "coco", "shards", "runs", "cache", "results", "tmp")}
    places["tmp"].mkdir(parents=True)
    env = {**os.environ, "COURSE_DATA": "karpathy", "COURSE_KARPATHY_DIR": str(places["coco"]),
           "COURSE_SHARDS_DIR": str(places["shards"]), "COURSE_RUNS_DIR": str(places["runs"]),
           "COURSE_CACHE_DIR": str(places["cache"]), "COURSE_RESULTS_DIR": str(places["results"]),
           "TMPDIR": str(places["tmp"]), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "HF_HUB_OFFLINE": "1", "COURSE_OFFLINE": "1"}
    run = Run(workdir, "standin", env, timeout, echo)
    run.summary["sizes"] = sizes
    try:
        table = run.step("build", f"a Karpathy-format stand-in from the course subset ({sizes['n_train']} train, "
                         f"{sizes['n_val']} val, {sizes['n_test']} test images)",
                         lambda: _built(build_standin(places["www"], **sizes)))
        with ExitStack() as stack:
            url = run.step("serve", f"{places['www']} over HTTP on 127.0.0.1",
                           lambda: _served(stack.enter_context(serve(places["www"]))))
            run.summary["url"] = url
            steps(run, data_dir=places["coco"], shards=places["shards"], run_dir=places["runs"] / model, nproc=nproc,
                  device="cpu", training={"model": model, "budget": "full", **STANDIN_TRAINING},
                  prepare_args=["--download-url", url, "--checksums", str(places["www"] / "checksums.json")],
                  decode=True)
        run.summary["checksums"] = table
        run.summary["ok"] = True
    finally:
        if not keep:
            for path in workdir.iterdir():
                if path.name not in KEPT:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
        run.record()
    return run.summary


def _built(table: dict) -> tuple[dict, list[str]]:
    return table, [f"{name}: {v['bytes'] / 1e6:.2f} MB, md5 {v['md5']}" for name, v in table.items()]


def _served(url: str) -> tuple[str, list[str]]:
    return url, [url]


def full(workdir: Path, nproc: int, data_dir: Path | None = None, shards: Path | None = None,
         model: str = "decoupled", budget: str = "full", device: str = "auto", download_url: str | None = None,
         checksums: Path | None = None, decode: bool = False, echo: bool = True, **training) -> dict:
    """The same steps on full COCO with Karpathy's split, on `nproc` processes (GPUs) -> the summary."""
    workdir = Path(workdir).resolve()
    data_dir, shards = Path(data_dir or PATHS.karpathy), Path(shards or PATHS.shards / "karpathy")
    env = {**os.environ, "COURSE_DATA": "karpathy", "COURSE_KARPATHY_DIR": str(data_dir), "PYTHONUNBUFFERED": "1",
           "TQDM_MININTERVAL": "30"}                                          # a progress line every 30 s
    run = Run(workdir, "full", env, None, echo)
    prepare = (["--download-url", download_url] if download_url else []) + \
        (["--checksums", str(checksums)] if checksums else [])
    try:
        steps(run, data_dir=data_dir, shards=shards, run_dir=workdir / "runs" / f"{model}-{budget}", nproc=nproc,
              device=device, training={"model": model, "budget": budget, **training}, prepare_args=prepare,
              decode=decode)
        run.summary["ok"] = True
    finally:
        run.record()
    return run.summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.tools.scale", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("standin", help="the whole path on a stand-in served on 127.0.0.1, 2 CPU processes")
    s.add_argument("--workdir", type=Path, default=PATHS.runs / "scale-standin")
    s.add_argument("--keep", action="store_true", help="keep the stand-in, its data, shards and run")
    s.add_argument("--nproc", type=int, default=2)
    s.add_argument("--timeout", type=float, default=300, help="seconds each step may take")
    f = sub.add_parser("full", help="full COCO (Karpathy split) on this machine's GPUs")
    f.add_argument("--workdir", type=Path, default=PATHS.runs / "scale-full", help="logs, summary.json, the run")
    f.add_argument("--nproc", type=int, default=max(1, torch.cuda.device_count()))
    f.add_argument("--data-dir", type=Path, help="default: COURSE_KARPATHY_DIR or data/coco-karpathy")
    f.add_argument("--shards", type=Path, help="default: data/shards/karpathy")
    f.add_argument("--download-url", help="a mirror with the published files' paths")
    f.add_argument("--checksums", type=Path, help="a JSON table {file: {md5, bytes}} for that mirror")
    f.add_argument("--decode", action="store_true", help="also decode every image when verifying (~20 min)")
    f.add_argument("--device", default="auto")
    f.add_argument("--budget", default="full")
    f.add_argument("--epochs", type=int)
    f.add_argument("--batch-size", type=int, help="global batch")
    for p in (s, f):
        p.add_argument("--model", default="decoupled")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))      # stop the children on the way out
    try:
        if args.mode == "standin":
            summary = standin(args.workdir, args.keep, args.nproc, args.model, args.timeout)
        else:
            summary = full(args.workdir, args.nproc, args.data_dir, args.shards, args.model, args.budget,
                           args.device, args.download_url, args.checksums, args.decode, epochs=args.epochs,
                           batch_size=args.batch_size)
    except (StepFailed, ValueError) as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    print(f"all {len(summary['steps'])} steps done in {summary['wall_s']:.0f} s; summary: "
          f"{Path(summary['workdir']) / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
