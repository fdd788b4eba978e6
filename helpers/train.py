"""Step 05: one training loop for every retrieval model: data order, loss, schedule, early stopping.

`train(cfg, train_fs, val_fs, run_dir)` trains `models.build_model(cfg.model)` on cached features,
validates every epoch and keeps `last.pt` / `best.pt` in `run_dir` (written by `checkpoints`). Called
again on the same `run_dir`, it resumes an interrupted run, or returns a finished one without training.

Read it top down: `TrainConfig` (everything that defines a run; its defaults are the course's CPU recipe),
`epoch_order` and `local_batch` (the data), `ContrastiveStep` (encode, score the (B, B) batch, the loss),
`lr_factor` (the schedule), `train_epoch` (one pass over the data), `finished` (early stopping), `train`.

Two things come from outside, with readable defaults. `scoring` says how scores are computed:
`models.READABLE` by default; the course's pipeline passes `helpers.fast.scoring.FAST`, the same scores
faster. `process` says where this process stands: one process by default; under `torchrun`,
`helpers.fast.distributed` gives each rank one that gathers the batch and averages the gradients.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from . import losses, metrics, models
from .checkpoints import load_checkpoint, resume_state, rng_state, save_epoch, set_rng_state
from .config import PATHS, course_device, get_device, seed_everything
from .features import FeatureSet, subsample

MAX_LOGIT_SCALE = math.log(100.0)   # CLIP's cap on the learned inverse temperature
LOSSES = ("infonce", "vse", "pointwise")
IMAGE_FEATURES = ("regions", "imagenet_logits")
# The text side (notebook 08's encoder prior): the course's frozen MiniLM features, a GRU tower learnt from scratch with the
# model (`text_towers.GRUTower` over WordPiece ids), or the features of a frozen MiniLM with random weights.
TEXT_FEATURES = ("minilm", "gru", "random_minilm")


@dataclass
class TrainConfig:
    """Everything that defines a training run; the defaults are the course's CPU recipe (2 cores).

    The course's pipeline builds these (`helpers.pipeline.recipes.train_config`: the budget, and the
    learning rate and temperature its search chose per model) and names each run's folder after one.
    """

    model: str = "decoupled"                              # a key of `models.MODELS`
    model_overrides: dict = field(default_factory=dict)   # `models.ModelConfig` fields, e.g. {"dim": 64}
    epochs: int = 20               # the most epochs (the schedule spans them); early stopping may end sooner
    patience: int = 3              # stop when validation rsum has not improved for this many epochs (0: never)
    batch_size: int = 64           # global batch: split over the processes under torchrun
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.1   # linear warm-up over this share of the steps, then cosine to 0
    clip_norm: float = 2.0
    loss: str = "infonce"          # "infonce" (learned temperature), "vse" (hardest-negative triplet) or
                                   # "pointwise" (each pair judged alone, `losses.pointwise`)
    seed: int = 0
    device: str = field(default_factory=course_device)   # "cpu" unless COURSE_DEVICE says otherwise
    amp: bool = True               # bf16 autocast; only takes effect on CUDA
    progress: bool = True
    init_from: str = ""            # pre-trained weights (some of the model's) to start from; relative to runs/
    train_fraction: float = 1.0    # train on this share of the training images (`features.subsample`)
    image_features: str = "regions"   # or "imagenet_logits": the blog's 1000 logits (`features.logits_features`)
    text_features: str = "minilm"     # or "gru", "random_minilm": the text encoder (`TEXT_FEATURES`)

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.image_features not in IMAGE_FEATURES:
            raise ValueError(f"image_features must be one of {IMAGE_FEATURES}, got {self.image_features!r}")
        if self.text_features not in TEXT_FEATURES:
            raise ValueError(f"text_features must be one of {TEXT_FEATURES}, got {self.text_features!r}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"train_fraction must be in (0, 1], got {self.train_fraction}")


@dataclass
class TrainResult:
    """A trained model (best validation weights, eval mode), its per-epoch history, the best epoch.

    history columns: epoch (1-based), step (optimiser steps so far), train_loss (mean over the
    epoch, extra losses included), one column per extra loss (e.g. local_consistency),
    lr (of the epoch's last step), the validation i2t/t2i_R@1/5/10 and rsum (percent), seconds (the
    epoch's training and validation) and val_seconds (validation alone).
    """

    model: models.RetrievalModel
    history: pd.DataFrame
    best: dict
    run_dir: Path | None = None


@dataclass
class Process:
    """Where this process stands while it trains: here, the only process, on `device`.

    `helpers.fast.distributed.Distributed` is the same for one rank of several under torchrun: there
    `gather` all-gathers the batch's encodings, `wrap` averages gradients (DDP), `agree` sends rank 0's
    best epoch to every rank and `barrier` waits for all of them.
    """

    device: torch.device
    world: int = 1
    rank: int = 0

    def gather(self, encodings: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return encodings

    def wrap(self, step: nn.Module) -> nn.Module:
        return step

    def agree(self, best: dict) -> dict:
        return best

    def barrier(self) -> None:
        pass


# ----------------------------------------------------------------------------- data order

def epoch_order(caption_image: torch.Tensor, n_images: int, seed: int, epoch: int):
    """(N_cap,) caption -> image row -> (N_img,) shuffled image rows, (N_img,) one random caption of each.

    Depends only on (seed, epoch), so a resumed run sees exactly the batches it would have seen.
    """
    counts = torch.bincount(caption_image, minlength=n_images)
    if (counts == 0).any():
        raise ValueError("every training image needs at least one caption; "
                         f"{int((counts == 0).sum())} have none")
    g = torch.Generator().manual_seed(1_000_003 * seed + epoch)
    images = torch.randperm(n_images, generator=g)
    by_image = caption_image.argsort(stable=True)               # caption rows grouped by image
    first = counts.cumsum(0) - counts                           # where each image's group starts
    pick = first + (torch.rand(n_images, generator=g) * counts).long()
    return images, by_image[pick][images]


def global_batches(images: torch.Tensor, captions: torch.Tensor, batch_size: int):
    """(N,) image rows, (N,) caption rows -> consecutive (B,), (B,) slices; the incomplete last one dropped."""
    for start in range(0, len(images) - batch_size + 1, batch_size):
        yield images[start:start + batch_size], captions[start:start + batch_size]


def local_batch(fs: FeatureSet, images: torch.Tensor, captions: torch.Tensor, rank: int, world: int):
    """(B,) global image and caption rows -> this rank's (B/W, ...) regions, pooled, tokens, mask, text pooled.

    Tokens are padded to the longest caption of the *global* batch so all ranks' tensors gather.
    """
    share = len(images) // world
    mine = slice(rank * share, (rank + 1) * share)
    pad_to = int(fs.lengths()[captions].max())
    return (*fs.image_batch(images[mine]), *fs.text_batch(captions[mine], pad_to=pad_to))


# ----------------------------------------------------------------------------- loss and schedule

class ContrastiveStep(nn.Module):
    """A batch (this process's share) -> loss on the global (B, B) score matrix; the module DDP wraps."""

    def __init__(self, model: models.RetrievalModel, loss: str, scoring: models.Scoring = models.READABLE,
                 process: Process | None = None):
        super().__init__()
        self.model, self.loss, self.scoring = model, loss, scoring
        self.process = process or Process(torch.device("cpu"))

    def forward(self, regions, pooled, tokens, mask, text_pooled) -> tuple[torch.Tensor, dict]:
        """(b, R, C), (b, C), (b, T, D), (b, T), (b, D) local tensors -> total loss, {part: loss}."""
        img = self.process.gather(self.model.encode_images(regions, pooled))
        txt = self.process.gather(self.model.encode_texts(tokens, mask, text_pooled))
        scores = self.scoring.batch(self.model, img, txt).float()                 # (B, B), diagonal = pairs
        if self.loss == "infonce":
            retrieval = losses.info_nce(scores, self.model.logit_scale)
        elif self.loss == "pointwise":
            retrieval = losses.pointwise(scores, self.model.logit_scale)
        else:
            retrieval = losses.vse_triplet(scores, margin=0.2)
        extra = {k: v.float() for k, v in self.model.extra_losses(img, txt).items()}
        return retrieval + sum(extra.values()), extra


def lr_factor(step: int, total: int, warmup: int) -> float:
    """0-based step -> multiplier of the base lr: linear warm-up over `warmup` steps, then cosine to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def make_optimizer(cfg: TrainConfig, model: nn.Module, total_steps: int):
    """AdamW over all parameters and its per-step schedule: linear warm-up, then cosine decay to 0."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = int(cfg.warmup_fraction * total_steps)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, warmup))


# ----------------------------------------------------------------------------- model and data of a run

def model_overrides(cfg: TrainConfig, fs: FeatureSet) -> dict:
    """ModelConfig overrides: the feature sizes of `fs`, then `cfg.model_overrides`; mismatches raise."""
    sizes = {"image_dim": fs.regions.shape[-1], "text_dim": fs.tokens.shape[-1]}
    if cfg.text_features == "gru":
        sizes["text_tower"] = True                   # the features are WordPiece ids; the model learns the tower
    for name, size in sizes.items():
        if cfg.model_overrides.get(name, size) != size:
            raise ValueError(f"model_overrides[{name!r}]={cfg.model_overrides[name]} but the features have "
                             f"{size}; drop it from model_overrides (it is read from the features)")
    known = {f.name for f in fields(models.ModelConfig)} - {"name"}
    unknown = set(cfg.model_overrides) - known
    if unknown:
        raise ValueError(f"unknown model_overrides {sorted(unknown)}; ModelConfig fields are {sorted(known)}")
    return {**sizes, **cfg.model_overrides}


def make_model(cfg: TrainConfig, fs: FeatureSet) -> models.RetrievalModel:
    """The untrained model of a run: seeded with cfg.seed, sized for the features of `fs`."""
    seed_everything(cfg.seed)
    model = models.build_model(cfg.model, **model_overrides(cfg, fs))
    if cfg.init_from:
        start_from(model, cfg.init_from)
    if cfg.loss == "vse":
        model.logit_scale.requires_grad_(False)   # VSE++ has no temperature; DDP rejects unused parameters
    return model


def start_from(model: nn.Module, path: str | Path) -> None:
    """Load the pre-trained weights in `path` (a state dict covering some of `model`'s parameters; a relative
    path is inside runs/) into `model`; a name or shape `model` does not have is an error, not a silent skip."""
    path = PATHS.runs / path
    if not path.is_file():
        raise FileNotFoundError(f"init_from={str(path)!r} does not exist; pre-train first "
                                f"(`helpers.pretraining.pretrain_projections`) or clear init_from")
    weights, own = torch.load(path, map_location="cpu", weights_only=True), model.state_dict()
    wrong = [k for k, v in weights.items() if k not in own or own[k].shape != v.shape]
    if wrong or not weights:
        raise ValueError(f"{path} does not fit model {type(model).__name__}: unknown or misshaped {wrong[:5]}")
    model.load_state_dict(weights, strict=False)


def text_mark(text_features: str) -> str:
    """What a FeatureSet's `source` carries when its text side is not the course's MiniLM: '|text-<encoder>'."""
    return "" if text_features == "minilm" else f"|text-{text_features}"


def check_features(cfg: TrainConfig, fs: FeatureSet) -> None:
    """Raise unless `fs` holds the image features `cfg.image_features` names (logits are one 1000-d region)
    and the text features `cfg.text_features` names (its `text_mark`)."""
    logits = fs.source.endswith("|imagenet-logits")
    if logits != (cfg.image_features == "imagenet_logits"):
        raise ValueError(f"the run asks for image_features={cfg.image_features!r} but was given "
                         f"{'ImageNet logits' if logits else 'region features'}; pass "
                         + ("features.logits_features(fs, classifier)" if not logits else "the course's features"))
    have = next((t for t in TEXT_FEATURES if t != "minilm" and text_mark(t) in fs.source), "minilm")
    if have != cfg.text_features:
        raise ValueError(f"the run asks for text_features={cfg.text_features!r} but was given {have!r} text "
                         "features; pass pipeline.feature_cache.encoder_features(text_features, feats)")


def data_summary(train_fs: FeatureSet, val_fs: FeatureSet) -> dict:
    """What a run was trained and validated on: sizes and the features' fingerprint (a run is only
    reused on the same; rebuilt features, say from another backbone or kernels, make it stale)."""
    return {"train_images": train_fs.n_images, "train_captions": train_fs.n_captions,
            "val_images": val_fs.n_images, "val_captions": val_fs.n_captions,
            "features": train_fs.source}


# ----------------------------------------------------------------------------- a finished run

def load_model(run_dir: str | Path, which: str = "best") -> models.RetrievalModel:
    """A run folder -> its model with the weights of `best.pt` (or `last.pt`), in eval mode on the CPU."""
    state = load_checkpoint(Path(run_dir) / f"{which}.pt")
    cfg = dict(state["model_config"])
    stale = set(cfg) - {f.name for f in fields(models.ModelConfig)}
    if stale:
        raise RuntimeError(f"{run_dir} was made by an earlier version of the course (its model settings "
                           f"{sorted(stale)} no longer exist); delete {run_dir} to train this run again")
    model = models.build_model(cfg.pop("name"), **cfg)
    model.load_state_dict(state["model"])
    return model.eval()


def load_result(run_dir: str | Path, device: torch.device | str = "cpu") -> TrainResult:
    """A run folder -> TrainResult: best weights, the history and best epoch recorded in last.pt."""
    run_dir = Path(run_dir)
    last = load_checkpoint(run_dir / "last.pt")
    if not (run_dir / "best.pt").exists():
        raise FileNotFoundError(f"{run_dir / 'best.pt'} is missing although last.pt exists; "
                                f"delete {run_dir} to train this run again")
    return TrainResult(load_model(run_dir, "best").to(device), pd.DataFrame(last["history"]),
                       dict(last["best"]), run_dir)


# ----------------------------------------------------------------------------- training

def validate(model: models.RetrievalModel, val_fs: FeatureSet, device,
             scoring: models.Scoring = models.READABLE) -> dict:
    """Recall@1/5/10 both ways and rsum (percent) of `model` on `val_fs`."""
    table = metrics.recall_table(scoring.all(model, val_fs, device=device), val_fs.caption_image)
    model.train()
    return {k: table[k] for k in metrics.METRICS}


def train_epoch(step_fn: nn.Module, model, optimizer, scheduler, cfg: TrainConfig, fs: FeatureSet,
                epoch: int, step: int, process: Process, bar, on_step=None) -> tuple[dict, int]:
    """One pass over the shuffled training images -> {train_loss, extra parts..., lr} means, last step."""
    amp = cfg.amp and process.device.type == "cuda"
    sums, n, lr = {}, 0, 0.0
    for images, captions in global_batches(*epoch_order(fs.caption_image, fs.n_images, cfg.seed, epoch),
                                           cfg.batch_size):
        batch = [t.to(process.device) for t in local_batch(fs, images, captions, process.rank, process.world)]
        with torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext():
            loss, parts = step_fn(*batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(max=MAX_LOGIT_SCALE)
        step, n = step + 1, n + 1
        for k, v in {"train_loss": loss, **parts}.items():
            sums[k] = sums.get(k, 0.0) + v.detach()
        bar.update(1)
        if not bar.disable:
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.4f}")
        if on_step is not None:
            on_step(step)
    return {**{k: float(v) / n for k, v in sums.items()}, "lr": lr}, step


def finished(cfg: TrainConfig, epoch: int, best_epoch: int) -> bool:
    """After `epoch` epochs with the best validation at `best_epoch`: is the run over?"""
    return epoch >= cfg.epochs or (cfg.patience > 0 and epoch - best_epoch >= cfg.patience)


def steps_per_epoch(cfg: TrainConfig, fs: FeatureSet, world: int) -> int:
    """Full global batches per epoch; ValueError if the batch cannot be split or filled."""
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} must be divisible by the {world} processes")
    if fs.n_images < cfg.batch_size:
        raise ValueError(f"batch_size={cfg.batch_size} is larger than the {fs.n_images} training images; lower it")
    return fs.n_images // cfg.batch_size


def train(cfg: TrainConfig, train_fs: FeatureSet, val_fs: FeatureSet, run_dir: str | Path,
          scoring: models.Scoring = models.READABLE, process: Process | None = None,
          on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train (or resume, or reuse) the run in `run_dir`; -> best model, per-epoch history, best epoch.

    `on_step(step)` is called after every optimiser step (1-based global step count).
    """
    run_dir, process = Path(run_dir), process or Process(get_device(cfg.device))
    check_features(cfg, train_fs)
    if cfg.train_fraction < 1:
        train_fs = subsample(train_fs, cfg.train_fraction)
    total = cfg.epochs * steps_per_epoch(cfg, train_fs, process.world)
    model = make_model(cfg, train_fs).to(process.device)
    configs = {"train_config": asdict(cfg), "model_config": model.config_dict(),
               "data": data_summary(train_fs, val_fs)}
    defaults = {"train_config": asdict(TrainConfig(device="cpu")), "model_config": asdict(models.ModelConfig())}
    state = resume_state(run_dir, configs, defaults)
    if state is not None and finished(cfg, state["epoch"], state["best"]["epoch"]):
        return load_result(run_dir, process.device)      # finished earlier: reuse, no training
    optimizer, scheduler = make_optimizer(cfg, model, total)
    done, step, history, best = 0, 0, [], {"epoch": 0, "rsum": float("-inf")}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        done, step, history, best = state["epoch"], state["step"], list(state["history"]), dict(state["best"])

    step_fn = process.wrap(ContrastiveStep(model, cfg.loss, scoring, process))
    model.train()
    with tqdm(total=total, initial=step, disable=not cfg.progress or process.rank != 0,
              desc=f"{cfg.model} {run_dir.name}") as bar:
        for epoch in range(done + 1, cfg.epochs + 1):
            if finished(cfg, epoch - 1, best["epoch"]):
                break
            start = time.perf_counter()
            row, step = train_epoch(step_fn, model, optimizer, scheduler, cfg, train_fs, epoch, step,
                                    process, bar, on_step)
            if process.rank == 0:                        # the others wait at the barrier
                trained = time.perf_counter()
                row = {"epoch": epoch, "step": step, **row, **validate(model, val_fs, process.device, scoring),
                       "seconds": time.perf_counter() - start, "val_seconds": time.perf_counter() - trained}
                history.append(row)
                state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "rng": rng_state(), "epoch": epoch,
                         "step": step, "history": history, **configs}
                best = save_epoch(run_dir, state, best)
            best = process.agree(best)                   # every rank must stop at the same epoch
            process.barrier()
    return load_result(run_dir, process.device)
