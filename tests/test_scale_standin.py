"""The whole full-COCO path on the stand-in (helpers.tools.scale standin): built from the subset, served on
127.0.0.1, prepared and verified, extracted by 2 gloo processes, trained under DDP on 2, scored both ways;
then a failing step, a step past its time and bad arguments, one at a time."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers.atomic import write_json
from helpers.config import PROJECT_ROOT
from helpers.metrics import METRICS
from helpers.tools import scale

STEPS = ["build", "serve", "prepare", "verify", "extract", "verify-shards", "train", "score"]
LIMIT = 230                     # seconds for the whole run (about 60-90 s on a busy 2-core machine)


def run_driver(args, timeout):
    """`python -m helpers.tools.scale ARGS` in a session of its own -> (exit status, stdout + stderr);
    past `timeout` it and its children are stopped and the test fails."""
    proc = subprocess.Popen([sys.executable, "-m", "helpers.tools.scale", *args], cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the stand-in run took more than {timeout} s:\n{out[-4000:]}")
    return proc.returncode, out


def test_the_standin_runs_end_to_end_on_two_processes(tmp_path):
    before = {p: sorted(os.listdir(PROJECT_ROOT / p)) for p in ("runs", "data") if (PROJECT_ROOT / p).is_dir()}
    start = time.perf_counter()
    status, out = run_driver(["standin", "--workdir", str(tmp_path / "w"), "--timeout", "200"], LIMIT)
    wall = time.perf_counter() - start
    assert status == 0, out[-4000:]
    print(f"stand-in run: {wall:.0f} s\n{out}")
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("== [")] == \
        [f"== [{i}] {name}" for i, name in enumerate(STEPS, 1)]
    assert "all 8 steps done" in out and "downloaded and checked 3 files, extracted 95 images" in out

    summary = json.loads((tmp_path / "w" / "summary.json").read_text())
    assert summary["ok"] and [s["name"] for s in summary["steps"]] == STEPS
    assert all(s["status"] == "done" and s["seconds"] >= 0 for s in summary["steps"])
    assert summary["url"].startswith("http://127.0.0.1:")
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["logs", "summary.json"]    # no --keep
    assert sorted(p.name for p in (tmp_path / "w" / "logs").iterdir()) == [
        "03-prepare.log", "04-verify.log", "05-extract.log", "07-train.log"]
    assert before == {p: sorted(os.listdir(PROJECT_ROOT / p)) for p in before}             # nothing outside

    shards = summary["shards"]
    assert {s: shards[s]["images"] for s in shards} == {"train": 60, "val": 10, "test": 25}
    assert all(shards[s]["shards"] == 2 and 5 * shards[s]["images"] <= shards[s]["captions"] for s in shards)
    training = summary["training"]
    assert training["processes"] == 2 and len(training["history"]) == 3
    assert (training["config"]["batch_size"], training["config"]["epochs"]) == (12, 3)

    p = summary["protocols"]
    assert (p["split"], p["images"], p["captions"], p["n_folds"]) == ("test", 25, shards["test"]["captions"], 5)
    one_k, five_k = p["1k"], p["5k"]
    assert len(one_k["folds"]) == 5
    for m in METRICS:
        per_fold = [f[m] for f in one_k["folds"]]
        assert all(math.isfinite(v) and 0 <= v <= 600 for v in per_fold + [five_k[m]]), m
        assert one_k["mean"][m] == pytest.approx(np.mean(per_fold)), m
        assert (one_k["min"][m], one_k["max"][m]) == (min(per_fold), max(per_fold)), m
        assert one_k["std"][m] == pytest.approx(np.std(per_fold, ddof=1)), m
        lo, hi = p["5k_interval"][m]
        assert lo <= five_k[m] + 1e-9 and five_k[m] <= hi + 1e-9, m
    for row in one_k["folds"] + [one_k["mean"], five_k]:
        assert row["rsum"] == pytest.approx(sum(row[m] for m in METRICS[:6]))
    assert five_k["rsum"] <= one_k["mean"]["rsum"]         # 25 images are harder to tell apart than 5
    assert f"1K (mean of 5 folds): image→text R@1 {one_k['mean']['i2t_R@1']:.1f}" in out


# ----------------------------------------------------------------------------- faults

def test_a_failing_command_names_its_step_and_log(tmp_path):
    log = tmp_path / "logs" / "03-prepare.log"
    argv = [sys.executable, "-c", "import sys; print('the archive is not the pinned one'); sys.exit(3)"]
    with pytest.raises(scale.StepFailed, match=rf"step 'prepare' exited with status 3; its log: {log}\n"
                                               r"    the archive is not the pinned one"):
        scale.run_command("prepare", argv, log)
    assert log.read_text().splitlines()[1:] == ["the archive is not the pinned one"]


def test_a_step_past_its_time_is_stopped_with_the_processes_it_started(tmp_path):
    child = "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; " \
            "time.sleep(120)']); print(p.pid, flush=True); time.sleep(120)"
    log = tmp_path / "train.log"
    start = time.perf_counter()
    with pytest.raises(scale.StepFailed, match=rf"step 'train' did not finish in 3 s and was stopped; its log: {log}"):
        scale.run_command("train", [sys.executable, "-c", child], log, timeout=3)
    assert time.perf_counter() - start < 30
    grandchild = int(log.read_text().splitlines()[1])
    time.sleep(0.5)
    try:
        state = open(f"/proc/{grandchild}/stat").read().split(")")[1].split()[0]
    except FileNotFoundError:
        state = "gone"
    assert state in ("gone", "Z"), f"the process the step started is still {state}"


def test_a_failed_step_of_the_run_stops_it_and_is_recorded(tmp_path, monkeypatch):
    """The stand-in's checksum table made wrong: prepare fails (the run's own commands), nothing after runs."""
    def wrong_table(out_dir, **sizes):
        table = build(out_dir, **sizes)
        write_json(out_dir / "checksums.json", {**table, "val2014.zip": {**table["val2014.zip"], "md5": "0" * 32}})
        return table
    build = scale.build_standin
    monkeypatch.setattr(scale, "build_standin", wrong_table)
    work = tmp_path / "w"
    with pytest.raises(scale.StepFailed, match=rf"step 'prepare' exited with status 1; its log: "
                                               rf"{work}/logs/03-prepare.log\n(.|\n)*not the pinned one"):
        scale.standin(work, n_train=4, n_val=1, n_test=5, timeout=120)
    summary = json.loads((work / "summary.json").read_text())
    assert [(s["name"], s["status"]) for s in summary["steps"]] == [("build", "done"), ("serve", "done"),
                                                                    ("prepare", "failed")]
    assert "not the pinned one" in summary["steps"][-1]["error"] and not summary["ok"]
    assert sorted(p.name for p in work.iterdir()) == ["logs", "summary.json"]


def test_bad_arguments_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match=r"n_test=23: the 1K protocol needs five equal folds"):
        scale.standin(tmp_path / "a", n_test=23)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "old.txt").write_text("x")
    with pytest.raises(ValueError, match=r"is not empty; a stand-in run starts from nothing"):
        scale.standin(tmp_path / "b")
    assert not (tmp_path / "a").exists() and os.listdir(tmp_path / "b") == ["old.txt"]
