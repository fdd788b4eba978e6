"""A run folder on disk: checkpoints written so that a killed run resumes where it stopped.

`train.train` keeps `last.pt` (every epoch) and `best.pt` (the best validation epoch) in its run folder,
with `history.csv` and `config.json` beside them for people to read. A run is resumed only with the
configuration it was made with; a damaged or foreign file raises an error that names it and says what
to delete. Reading a finished run's model is `train.load_model` / `train.load_result`.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from .atomic import atomic_path, write_csv, write_json

CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "rng", "epoch", "step", "history", "best",
                   "train_config", "model_config", "data")
UNCHECKED_FIELDS = ("progress",)     # TrainConfig fields that may change when a run is resumed


def save_checkpoint(state: dict, path: Path) -> None:
    """Write `state` to `path` (atomically: `atomic.atomic_path`)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint with torch.load(weights_only=True); a damaged file raises a RuntimeError naming it."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:
        reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200] if str(err).strip() else ''}"
        raise RuntimeError(f"checkpoint {path} is corrupt or unreadable ({reason}); "
                           f"delete it (or its run folder {path.parent}) to train this run from scratch") from err
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise RuntimeError(f"checkpoint {path} is not a training checkpoint (missing {missing}); "
                           f"delete it (or its run folder {path.parent}) to train this run from scratch")
    return state


def rng_state() -> dict:
    """The random state a resumed run restores (CPU, and every CUDA device there is)."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])


def save_epoch(run_dir: Path, state: dict, best: dict) -> dict:
    """Write best.pt (if val rsum improved), then last.pt, history.csv, config.json -> the new best."""
    run_dir.mkdir(parents=True, exist_ok=True)
    row = state["history"][-1]
    if row["rsum"] > best["rsum"]:
        best = {"epoch": row["epoch"], "rsum": row["rsum"]}
        save_checkpoint({**state, "best": best}, run_dir / "best.pt")   # best first: a kill between the
    save_checkpoint({**state, "best": best}, run_dir / "last.pt")       # two only repeats this epoch
    configs = {k: state[k] for k in ("train_config", "model_config", "data")}
    write_csv(pd.DataFrame(state["history"]), run_dir / "history.csv", index=False)   # for people to read:
    write_json(run_dir / "config.json", configs, indent=2)                           # the checkpoints are the truth
    return best


def config_differences(saved: dict, wanted: dict, prefix: str = "") -> list[str]:
    """Two config dicts -> ["field: saved X, asked Y", ...] for the fields that differ."""
    out = []
    for key in sorted(set(saved) | set(wanted)):
        if key in UNCHECKED_FIELDS or saved.get(key) == wanted.get(key):
            continue
        out.append(f"{prefix}{key}: saved {saved.get(key)!r}, asked {wanted.get(key)!r}")
    return out


def resume_state(run_dir: Path, configs: dict, defaults: dict) -> dict | None:
    """run_dir/last.pt if it exists and was made with `configs` ({part: config dict}); None if absent;
    ValueError if it differs. A setting missing from the saved run counts as its value in `defaults`
    ({part: default config dict}): it was added to the course after the run was saved."""
    path = run_dir / "last.pt"
    if not path.exists():
        return None
    state = load_checkpoint(path)
    diffs = [d for key in configs
             for d in config_differences({**{k: v for k, v in defaults.get(key, {}).items() if k != "device"},
                                          **state[key]}, configs[key], f"{key}.")]
    if diffs:
        raise ValueError(f"{run_dir} already holds a run with another configuration: " + "; ".join(diffs)
                         + f". Choose another run_dir, or delete {run_dir} to train this configuration there.")
    return state
