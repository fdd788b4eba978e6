"""Step 08, what matters: the blog's bugs and the readers' proposals, each as one change to `decoupled`.

Every variant is the corrected `decoupled` (text -> image attention, per-word cosine, InfoNCE), trained
with the setting the search chose for `decoupled` in 05, with exactly one thing changed:

  the blog's bugs           `no_value`        attended vector Σ α r of the regions themselves (no value projection)
                            `counts_padding`  no padding mask: padded positions attend and count in the mean
                            `raw_regions`     keys and values from the backbone's raw regions, not the projected ones
                            `logits_features` the blog's image "features": the 1000 ImageNet logits, one per image
  the readers' proposals    `loss_vse`        VSE++ max-violation hinge (margin 0.2) instead of InfoNCE
                            `loss_pointwise`  each pair judged alone (logistic), no competition between candidates
                            `pretrained`      projections pre-trained per modality (SimCLR over two views) first
                            `local_consistency`  image regularizer: neighbouring regions' vectors agree
                            `word_diversity`  text regularizer: a caption's words point in different directions
                            `masked_reconstruction`  masked regions rebuilt from the caption's words, and
                                              masked words from the image's regions, through cross-attention

`subsample` gives the nested training subsets of the data-scale curve.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .attention import DecoupledAttention
from .atomic import atomic_path
from .encoders import TEXT_MAX_LENGTH
from .features import FeatureSet
from .losses import info_nce
from .models import FactorialModel, ModelConfig

T2I_WORDS = dict(flow="text_to_image", head="words")     # the baseline `decoupled`
MASK_RATIO = 0.25                                       # share of regions (and of words) masked


class NoValueModel(FactorialModel):
    """`decoupled` without the value projection: a_t = Σ_r α_tr r_r (the blog defines `self.value`, never uses it)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.attn.value = nn.Identity()


class CountsPaddingModel(FactorialModel):
    """`decoupled` without the padding mask: every position of the padded batch is a word (the blog's
    `last_hidden_state` without its mask). A padded token's features are zeros, projected like any word."""

    counts_padding = True

    def encode_texts(self, tokens, mask, pooled):
        return {"words": self.text_proj(tokens), "mask": torch.ones_like(mask)}


class RawRegionsModel(FactorialModel):
    """`decoupled` with keys and values computed from the backbone's raw regions (C = 1280) rather than
    from the course's projected regions (Linear + LayerNorm to `dim`)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.image_proj = None
        self.attn = DecoupledAttention(cfg.dim, cfg.image_dim, cfg.dim, use_value=True)

    def encode_images(self, regions, pooled):
        return {"regions": regions}


class LocalConsistencyModel(FactorialModel):
    """`decoupled` + aux_weight x (1 - cos) between the projected vectors of neighbouring regions (right and
    below on the square grid of regions): the reader's "image local consistency"."""

    def extra_losses(self, img, txt):
        return {"local_consistency": self.cfg.aux_weight * local_consistency_loss(img["regions"])}


class WordDiversityModel(FactorialModel):
    """`decoupled` + aux_weight x the mean cosine between different real words of a caption: the reader's
    "text semantic diversity"."""

    def extra_losses(self, img, txt):
        return {"word_diversity": self.cfg.aux_weight * word_diversity_loss(txt["words"], txt["mask"])}


class MaskedReconstructionModel(FactorialModel):
    """`decoupled` + aux_weight x masked reconstruction through cross-attention, for matched pairs:
    MASK_RATIO of the regions are hidden and rebuilt (their raw features) from the caption's words,
    and MASK_RATIO of the words from the image's regions. A hidden position asks with a learned mask
    vector plus its position; only the other modality answers. Scoring is `decoupled`'s, unchanged."""

    def __init__(self, cfg: ModelConfig, n_regions: int = 49, max_words: int = TEXT_MAX_LENGTH):
        super().__init__(cfg)
        d = cfg.dim
        self.region_query = nn.Parameter(torch.randn(n_regions, d) * 0.02)      # mask vector + position
        self.word_query = nn.Parameter(torch.randn(max_words, d) * 0.02)
        self.from_words = DecoupledAttention(d, d, d)
        self.from_regions = DecoupledAttention(d, d, d)
        self.decoder_image = nn.Linear(d, cfg.image_dim)
        self.decoder_text = nn.Linear(d, cfg.text_dim)

    def encode_images(self, regions, pooled):
        return {"regions": self.image_proj(regions), "input": regions}

    def encode_texts(self, tokens, mask, pooled):
        return {"words": self.text_proj(tokens), "mask": mask, "input": tokens}

    def rebuild(self, img: dict, txt: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Matched rows -> (B, R, C_image) every region rebuilt from the caption's real words alone,
        (B, T, C_text) every word position rebuilt from the image's regions alone."""
        words, mask, regions = txt["words"], txt["mask"], img["regions"]
        (b, r, _), t = regions.shape, words.shape[1]
        q_r = self.region_query[:r].expand(b, -1, -1)
        q_w = self.word_query[:t].expand(b, -1, -1)
        return (self.decoder_image(self.from_words(q_r, words, image_mask=mask)[0]),
                self.decoder_text(self.from_regions(q_w, regions)[0]))

    def extra_losses(self, img, txt):
        (b, r), mask = img["regions"].shape[:2], txt["mask"]
        hide_regions = torch.rand(b, r, device=mask.device) < MASK_RATIO
        hide_words = (torch.rand(mask.shape, device=mask.device) < MASK_RATIO) & mask
        rebuilt_regions, rebuilt_words = self.rebuild(img, txt)
        loss = masked_reconstruction_loss(rebuilt_regions, img["input"], hide_regions) + \
            masked_reconstruction_loss(rebuilt_words, txt["input"], hide_words)
        return {"masked_reconstruction": self.cfg.aux_weight * loss}


# name -> (class, ModelConfig presets): looked up by `models.build_model`
ABLATION_MODELS = {
    "no_value": (NoValueModel, T2I_WORDS),
    "counts_padding": (CountsPaddingModel, T2I_WORDS),
    "raw_regions": (RawRegionsModel, T2I_WORDS),
    "local_consistency": (LocalConsistencyModel, T2I_WORDS),
    "word_diversity": (WordDiversityModel, T2I_WORDS),
    "masked_reconstruction": (MaskedReconstructionModel, T2I_WORDS),
}


# ----------------------------------------------------------------------------- the added losses

def local_consistency_loss(regions: torch.Tensor) -> torch.Tensor:
    """(B, R, D) regions of a square grid (R = h*h) -> mean (1 - cos) over horizontally and vertically
    adjacent regions; 0 when neighbours point the same way."""
    b, r, d = regions.shape
    h = int(round(r ** 0.5))
    if h * h != r:
        raise ValueError(f"local consistency needs a square grid of regions; got R={r}")
    grid = F.normalize(regions, dim=-1).view(b, h, h, d)
    right = (grid[:, :, 1:] * grid[:, :, :-1]).sum(-1)
    below = (grid[:, 1:] * grid[:, :-1]).sum(-1)
    return 1 - torch.cat([right.flatten(1), below.flatten(1)], 1).mean()


def word_diversity_loss(words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, D) words, (B, T) mask -> mean cosine between different real words of the same caption."""
    unit = F.normalize(words, dim=-1) * mask[..., None]
    gram = unit @ unit.transpose(1, 2)                                        # (B, T, T)
    n = mask.sum(1).float()
    pairs = (n * (n - 1)).clamp_min(1)
    off_diagonal = gram.sum((1, 2)) - (unit * unit).sum((1, 2))
    return (off_diagonal / pairs).mean()


def masked_reconstruction_loss(rebuilt: torch.Tensor, target: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """(B, L, C) rebuilt, (B, L, C) original features, (B, L) bool hidden -> mean squared error over the
    hidden positions only (0 when nothing is hidden)."""
    if not hidden.any():
        return rebuilt.sum() * 0.0
    return F.mse_loss(rebuilt[hidden], target[hidden])


# ----------------------------------------------------------------------------- self-supervised pre-training

def two_views(x: torch.Tensor, mask: torch.Tensor, keep: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L, C) positions, (B, L) mask -> two masks that each keep a random `keep` share of the real
    positions (at least one), drawn independently: the two views of SimCLR over sets."""
    views = []
    for _ in range(2):
        pick = (torch.rand(mask.shape, generator=generator) < keep) & mask
        first = mask.float().argmax(1)                                        # keep one real position
        pick[torch.arange(len(mask)), first] |= ~pick.any(1)
        views.append(pick)
    return views[0], views[1]


def view_embedding(proj: nn.Module, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(B, L, C) positions, (B, L) kept -> (B, D) unit mean of the kept positions' projections."""
    k = keep.float()[..., None]
    return F.normalize((proj(x) * k).sum(1) / k.sum(1), dim=-1)


def simclr_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """(B, D), (B, D) unit embeddings of two views -> symmetric InfoNCE: each view finds its twin."""
    return info_nce(z1 @ z2.t(), torch.tensor(1.0 / temperature).log())


def pretrain_projections(model: FactorialModel, fs: FeatureSet, epochs: int = 5, batch_size: int = 256,
                         lr: float = 1e-3, keep: float = 0.5, seed: int = 0) -> dict[str, list[float]]:
    """Pre-train `model.image_proj` on the images' regions alone and `model.text_proj` on the captions'
    words alone, each with SimCLR over two random halves of the same image / caption. In place;
    -> {"image": [mean loss per epoch], "text": [...]}."""
    g = torch.Generator().manual_seed(seed)
    history = {}
    for name, proj, n in [("image", model.image_proj, fs.n_images), ("text", model.text_proj, fs.n_captions)]:
        optimizer = torch.optim.AdamW(proj.parameters(), lr=lr)
        history[name] = []
        for _ in range(epochs):
            order, total = torch.randperm(n, generator=g), 0.0
            batches = [order[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]
            for rows in batches:
                if name == "image":
                    x, _ = fs.image_batch(rows)
                    mask = torch.ones(x.shape[:2], dtype=torch.bool)
                else:
                    x, mask, _ = fs.text_batch(rows)
                v1, v2 = two_views(x, mask, keep, g)
                loss = simclr_loss(view_embedding(proj, x, v1), view_embedding(proj, x, v2))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item()
            history[name].append(total / max(1, len(batches)))
    return history


# ----------------------------------------------------------------------------- features and data

def logits_features(fs: FeatureSet, classifier: nn.Module) -> FeatureSet:
    """The blog's image "features": each image's pooled vector through the backbone's ImageNet classifier
    -> a FeatureSet whose regions are (N_img, 1, 1000) logits (one region per image); text unchanged."""
    with torch.inference_mode():
        logits = classifier(fs.pooled.float()).to(fs.regions.dtype)
    return FeatureSet(fs.image_ids, logits[:, None].clone(), logits.clone(), fs.caption_ids, fs.caption_image,
                      fs.tokens, fs.offsets, fs.text_pooled, f"{fs.source}|imagenet-logits")


def subsample(fs: FeatureSet, fraction: float, seed: int = 0) -> FeatureSet:
    """The first `fraction` of the training images in one fixed random order, with all their captions:
    smaller fractions are subsets of larger ones, so the curve adds data and changes nothing else."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    order = torch.randperm(fs.n_images, generator=torch.Generator().manual_seed(seed))
    return fs.select_images(order[:max(1, round(fraction * fs.n_images))].sort().values)


# ----------------------------------------------------------------------------- the runs of 08
# Plumbing: run folders, the weight sweep, the tables. `python -m helpers reproduce --ablations` and
# notebook 08 call these; finished runs are reused from runs/ like every other run of the course.

BASELINE = "decoupled"
# variant -> (group, what changes against `decoupled`, the training changes)
VARIANTS = {
    "no_value": ("the blog's bugs", "no value projection", dict(model="no_value")),
    "counts_padding": ("the blog's bugs", "no padding mask", dict(model="counts_padding")),
    "raw_regions": ("the blog's bugs", "attention over raw, not projected, regions", dict(model="raw_regions")),
    "logits_features": ("the blog's bugs", "1000 ImageNet logits instead of regions", dict(features="logits")),
    "loss_vse": ("readers' proposals", "VSE++ max-violation hinge instead of InfoNCE", dict(loss="vse")),
    "loss_pointwise": ("readers' proposals", "per-pair logistic loss instead of InfoNCE", dict(loss="pointwise")),
    "pretrained": ("readers' proposals", "projections pre-trained per modality (SimCLR)", dict(pretrain=True)),
    "local_consistency": ("readers' proposals", "+ image local-consistency term", dict(model="local_consistency")),
    "word_diversity": ("readers' proposals", "+ text word-diversity term", dict(model="word_diversity")),
    "masked_reconstruction": ("readers' proposals", "+ masked cross-modal reconstruction",
                              dict(model="masked_reconstruction")),
}
AUX_WEIGHTS = (0.1, 1.0, 10.0)            # the sweep of each added term's weight (seed 0, validation rSum)
SEEDS = (0, 1, 2)
SCALE_MODELS = ("dual", "decoupled", "joint")
SCALE_FRACTIONS = (0.25, 0.5, 1.0)        # 1.0 is notebook 06's runs


def swept(variant: str) -> bool:
    return VARIANTS[variant][2].get("model") in ("local_consistency", "word_diversity", "masked_reconstruction")


def variant_features(variant: str, feats: dict[str, FeatureSet]) -> dict[str, FeatureSet]:
    """The course's features, or for `logits_features` every split's images as their ImageNet logits."""
    if VARIANTS.get(variant, ("", "", {}))[2].get("features") != "logits":
        return feats
    classifier = imagenet_classifier()
    return {split: logits_features(fs, classifier) for split, fs in feats.items()}


def imagenet_classifier() -> nn.Module:
    """The image backbone's own ImageNet head: (B, C) pooled -> (B, 1000) logits."""
    from .encoders import load_image_encoder

    encoder, _ = load_image_encoder()
    return encoder.head.eval()


def variant_dir(variant: str, budget: str, seed: int, aux_weight: float | None = None):
    from .config import PATHS

    tag = "" if aux_weight is None else f"-w{aux_weight:g}"
    # "07-": the notebook's number when these runs were first made; kept so that finished runs stay reusable
    return PATHS.runs / f"07-{variant}{tag}-{budget}-seed{seed}"


def variant_config(variant: str, budget: str = "cpu", seed: int = 0, aux_weight: float | None = None,
                   init_from: str = ""):
    """`decoupled`'s training configuration (the setting chosen in 05) with the variant's one change."""
    from .reproduce import train_config

    change = VARIANTS[variant][2]
    cfg = train_config(BASELINE, budget, seed)
    overrides = dict(cfg.model_overrides)
    if swept(variant):
        if aux_weight is None:
            raise ValueError(f"{variant} needs aux_weight (the sweep's choice: `chosen_weight`)")
        overrides["aux_weight"] = aux_weight
    return dataclasses.replace(cfg, model=change.get("model", BASELINE), loss=change.get("loss", cfg.loss),
                               model_overrides=overrides, init_from=init_from)


def train_variant(variant: str, feats: dict[str, FeatureSet], budget: str = "cpu", seed: int = 0,
                  aux_weight: float | None = None):
    """Train (or reuse) one run of a variant; `pretrained` pre-trains its projections first (once per seed)."""
    from .checkpoints import save_checkpoint
    from .train import make_model, train

    folder = variant_dir(variant, budget, seed, aux_weight)
    init_from = ""
    if VARIANTS[variant][2].get("pretrain"):
        path = folder.parent / f"07-pretrained-projections-{budget}-seed{seed}.pt"
        if not path.is_file():
            model = make_model(variant_config(variant, budget, seed), feats["train"])
            pretrain_projections(model, feats["train"], seed=seed)
            weights = {k: v for k, v in model.state_dict().items() if k.startswith(("image_proj", "text_proj"))}
            path.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(weights, path)
        init_from = str(path)
    cfg = variant_config(variant, budget, seed, aux_weight, init_from)
    return train(cfg, feats["train"], feats["val"], folder)


def sweep(variant: str, feats, budget: str = "cpu") -> pd.DataFrame:
    """Seed 0 of a swept variant at every AUX_WEIGHTS -> weight, best val rSum, the term's share of the
    training loss at the best epoch (%), best epoch."""
    rows = []
    for w in AUX_WEIGHTS:
        result = train_variant(variant, feats, budget, 0, w)
        best = result.history.loc[result.history.epoch == result.best["epoch"]].iloc[0]
        rows.append({"variant": variant, "weight": w, "val rsum": best["rsum"],
                     "share of loss %": 100 * best[variant] / best["train_loss"], "best epoch": result.best["epoch"],
                     "epochs": len(result.history)})
    return pd.DataFrame(rows)


def chosen_weight(table: pd.DataFrame, variant: str) -> float:
    """The sweep's weight with the best validation rSum."""
    rows = table[table.variant == variant]
    return float(rows.loc[rows["val rsum"].idxmax(), "weight"])


def one_change(sweep_table: pd.DataFrame, budget: str = "cpu") -> pd.DataFrame:
    """Per variant: what differs from `decoupled`'s training configuration (seed 0), field by field."""
    from .reproduce import train_config

    base = dataclasses.asdict(train_config(BASELINE, budget, 0))
    rows = []
    for name, (group, change, how) in VARIANTS.items():
        weight = chosen_weight(sweep_table, name) if swept(name) else None
        cfg = dataclasses.asdict(variant_config(name, budget, 0, weight,
                                                "runs/07-pretrained-projections-..." if how.get("pretrain") else ""))
        diffs = {k: v for k, v in cfg.items() if v != base[k]}
        if "model_overrides" in diffs:
            diffs["model_overrides"] = {k: v for k, v in diffs["model_overrides"].items()
                                        if base["model_overrides"].get(k) != v}
        if how.get("features"):
            diffs["features"] = "test/val/train images as (N, 1, 1000) ImageNet logits"
        rows.append({"group": group, "variant": name, "change": change,
                     "differs from decoupled in": "; ".join(f"{k} = {v}" for k, v in diffs.items())})
    return pd.DataFrame(rows)


def scale_dir(model: str, fraction: float, budget: str, seed: int):
    """Runs of the data-scale curve; the full training set is notebook 06's run of the model."""
    from .config import PATHS
    from .reproduce import run_dir

    if fraction == 1.0:
        return run_dir(model, budget, seed)
    return PATHS.runs / f"07-scale-{model}-{round(100 * fraction)}pct-{budget}-seed{seed}"


def train_scaled(model: str, fraction: float, feats: dict[str, FeatureSet], budget: str = "cpu", seed: int = 0):
    """Train (or reuse) `model` with its chosen setting on the first `fraction` of the training images;
    validation and test stay whole."""
    from .reproduce import train_config
    from .train import train

    return train(train_config(model, budget, seed), subsample(feats["train"], fraction), feats["val"],
                 scale_dir(model, fraction, budget, seed))


def all_ranks(feats: dict[str, FeatureSet], budget: str = "cpu", seeds=SEEDS, sweep_table: pd.DataFrame | None = None
              ) -> tuple[dict[str, list[dict]], dict[tuple[str, float], list[dict]]]:
    """Train (or reuse) every variant (swept ones at their chosen weight) and every point of the data-scale
    curve, and rank the 1K test set -> ({variant: [ranks per seed]}, {(model, fraction): [ranks per seed]})."""
    from .reproduce import rank_folder

    variants = {}
    for name in VARIANTS:
        fs = variant_features(name, feats)
        weight = chosen_weight(sweep_table, name) if swept(name) else None
        variants[name] = []
        for s in seeds:
            train_variant(name, fs, budget, s, weight)
            variants[name].append(rank_folder(variant_dir(name, budget, s, weight), fs["test"]))
    scale = {}
    for model in SCALE_MODELS:
        for f in SCALE_FRACTIONS:
            scale[model, f] = []
            for s in seeds:
                train_scaled(model, f, feats, budget, s)
                scale[model, f].append(rank_folder(scale_dir(model, f, budget, s), feats["test"]))
    return variants, scale


def ablation_table(variants: dict[str, list[dict]], baseline: list[dict], caption_image, n_boot: int = 1000
                   ) -> pd.DataFrame:
    """Every variant against `decoupled` on test rSum: points with a 95% interval (`metrics.honest_difference`:
    test images resampled with their captions, plus a Student-t seed term) and the verdict."""
    from . import metrics

    rows, order = [], list(VARIANTS)
    for name, runs in sorted(variants.items(), key=lambda kv: order.index(kv[0])):   # the course's order
        d = metrics.honest_difference([(r["img_rank"], r["cap_rank"]) for r in runs],
                                      [(r["img_rank"], r["cap_rank"]) for r in baseline], caption_image,
                                      n_boot=n_boot).loc["rsum"]
        group, change, _ = VARIANTS[name]
        rows.append({"group": group, "variant": name, "change": change, "seeds": len(runs), "rsum": d["A"],
                     "baseline rsum": d["B"], "difference": d["diff"], "lo": d["lo"], "hi": d["hi"],
                     "verdict": metrics.verdict(d["lo"], d["hi"]).replace("A ", "")})
    return pd.DataFrame(rows)


def scale_table(scale: dict[tuple[str, float], list[dict]], caption_image, n_boot: int = 1000) -> pd.DataFrame:
    """Per training fraction: each model's test rSum with its interval, and the gaps `joint` - `decoupled`
    and `dual` - `decoupled` with theirs."""
    from . import metrics

    def pairs(key):
        return [(r["img_rank"], r["cap_rank"]) for r in scale[key]]

    rows = []
    for f in sorted({f for _, f in scale}):
        for model in SCALE_MODELS:
            t = metrics.honest_interval(pairs((model, f)), caption_image, n_boot=n_boot).loc["rsum"]
            rows.append({"fraction": f, "what": model, "value": t["mean"], "lo": t["lo"], "hi": t["hi"]})
        for other in ("joint", "dual"):
            d = metrics.honest_difference(pairs((other, f)), pairs((BASELINE, f)), caption_image, n_boot=n_boot).loc["rsum"]
            rows.append({"fraction": f, "what": f"{other} - {BASELINE}", "value": d["diff"], "lo": d["lo"], "hi": d["hi"]})
    return pd.DataFrame(rows)


def gap_table(scale: dict[tuple[str, float], list[dict]], caption_image, n_boot: int = 1000) -> pd.DataFrame:
    """How each gap to `decoupled` moves from the smallest to the largest training fraction: the change
    of (other - decoupled) in rSum points, with a 95% interval (`metrics.honest_contrast`, four sets of
    independent runs on the same resampled test images), and the word for it. The gap "narrows" when it
    credibly moves toward zero from a credible starting gap, "widens" when it credibly moves away from
    it (or opens where there was no credible gap), else "holds (no credible change)"."""
    from . import metrics

    small, large = min(f for _, f in scale), max(f for _, f in scale)
    pairs = {key: [(r["img_rank"], r["cap_rank"]) for r in runs] for key, runs in scale.items()}
    rows = []
    for other in ("joint", "dual"):
        before, b_lo, b_hi = metrics.honest_contrast([(1, pairs[other, small]), (-1, pairs[BASELINE, small])],
                                                     caption_image, n_boot=n_boot)
        change, lo, hi = metrics.honest_contrast([(1, pairs[other, large]), (-1, pairs[BASELINE, large]),
                                                  (-1, pairs[other, small]), (1, pairs[BASELINE, small])],
                                                 caption_image, n_boot=n_boot)
        if b_lo > 0 or b_hi < 0:                        # a credible gap to start from
            toward_zero = -np.sign(before)
            word = ("narrows" if min(toward_zero * lo, toward_zero * hi) > 0 else
                    "widens" if max(toward_zero * lo, toward_zero * hi) < 0 else "holds (no credible change)")
        else:
            word = "widens (opens from no credible gap)" if lo > 0 or hi < 0 else "holds (no credible change)"
        rows.append({"gap": f"{other} - {BASELINE}", f"at {small:.0%}": before, f"at {large:.0%}": before + change,
                     "change": change, "lo": lo, "hi": hi, "the gap": word})
    return pd.DataFrame(rows)


def sweep_path(budget: str):
    from .tuning import SEARCH_DIR

    return SEARCH_DIR / f"ablations-sweep-{budget}.csv"


def ranks_path(budget: str):
    from .tuning import SEARCH_DIR

    return SEARCH_DIR / f"ablations-ranks-{budget}.npz"


def save_ranks(variants: dict, scale: dict, path) -> None:
    """Every run's test ranks in one .npz: 'variant|name|seed|img' / '|cap', 'scale|model|fraction|seed|...'."""
    arrays = {}
    for name, runs in variants.items():
        for s, r in zip(SEEDS, runs):
            arrays[f"variant|{name}|{s}|img"], arrays[f"variant|{name}|{s}|cap"] = r["img_rank"], r["cap_rank"]
    for (model, f), runs in scale.items():
        for s, r in zip(SEEDS, runs):
            arrays[f"scale|{model}|{f:g}|{s}|img"], arrays[f"scale|{model}|{f:g}|{s}|cap"] = r["img_rank"], r["cap_rank"]
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **{k: v.astype(np.int16) for k, v in arrays.items()})


def load_ranks(path) -> tuple[dict[str, list[dict]], dict[tuple[str, float], list[dict]]]:
    """`save_ranks`'s file -> the (variants, scale) dicts of `all_ranks`."""
    z = np.load(path)
    variants, scale = {}, {}
    for key in sorted(k for k in z.files if k.endswith("|img")):
        parts, run = key.split("|"), {"img_rank": z[key].astype(np.int64), "cap_rank": z[key[:-3] + "cap"].astype(np.int64)}
        if parts[0] == "variant":
            variants.setdefault(parts[1], {})[int(parts[2])] = run
        else:
            scale.setdefault((parts[1], float(parts[2])), {})[int(parts[3])] = run
    return ({k: [v[s] for s in sorted(v)] for k, v in variants.items()},
            {k: [v[s] for s in sorted(v)] for k, v in scale.items()})


def runs_path(budget: str):
    from .tuning import SEARCH_DIR

    return SEARCH_DIR / f"ablations-runs-{budget}.csv"


def run_log(sweep_table: pd.DataFrame, budget: str = "cpu") -> pd.DataFrame:
    """One row per run of `make ablations` (sweep, variants, the scale curve's new points), from its
    history.csv: epochs trained, best epoch, training seconds (validation included), whether it
    its best epoch came before its last (converged by the course's rule), and how much its
    best validation rSum gained in its last 3 epochs (0 when it stopped early)."""
    import re

    from .config import PATHS

    rows = []
    for folder in sorted(PATHS.runs.glob(f"07-*-{budget}-seed*")):
        history = folder / "history.csv"
        if not history.is_file():
            continue
        h = pd.read_csv(history)
        name = folder.name[3:].rsplit(f"-{budget}-seed", 1)[0]
        scale = re.fullmatch(r"scale-(\w+)-(\d+)pct", name)
        weight = re.fullmatch(r"(\w+)-w([\d.]+)", name)
        kind = "scale" if scale else "sweep" if weight and int(folder.name.rsplit("seed", 1)[1]) == 0 else "variant"
        rows.append({"kind": kind, "run": scale.group(1) if scale else weight.group(1) if weight else name,
                     "weight": float(weight.group(2)) if weight else np.nan,
                     "fraction": int(scale.group(2)) / 100 if scale else 1.0,
                     "seed": int(folder.name.rsplit("seed", 1)[1]), "epochs": len(h),
                     "best epoch": int(h.loc[h.rsum.idxmax(), "epoch"]), "training s": float(h.seconds.sum()),
                     "gain in last 3 epochs": float(h.rsum.max() - h.rsum.iloc[:-3].max()) if len(h) > 3 else np.nan})
    log = pd.DataFrame(rows)
    if len(log):   # a swept variant's seed-0 run at its chosen weight is both a sweep run and a variant run
        chosen = {v: chosen_weight(sweep_table, v) for v in sweep_table.variant.unique()}
        log.loc[(log.kind == "sweep") & (log.weight == log.run.map(chosen)), "kind"] = "sweep + variant"
        log["best before last"] = log["best epoch"] < log["epochs"]
    return log


def load_committed(budget: str = "cpu") -> tuple[pd.DataFrame, pd.DataFrame, dict, dict]:
    """The committed outputs of `make ablations` -> (sweep table, run log, {variant: ranks per seed},
    {(model, fraction): ranks per seed}); a clear error when one is missing."""
    sweep_file, ranks_file = sweep_path(budget), ranks_path(budget)
    for f in (sweep_file, ranks_file, runs_path(budget)):
        if not f.is_file():
            raise FileNotFoundError(f"{f} is missing: it is committed with the course, so restore it "
                                    f"(`git checkout -- {f.parent.name}/{f.name}`) or recompute it with "
                                    f"`make ablations` (54 runs: about 1.2 h of training on a 2-core CPU, plus ranking each on the test set)")
    variants, scale = load_ranks(ranks_file)
    return pd.read_csv(sweep_file), pd.read_csv(runs_path(budget)), variants, scale


def write_tables(tables: dict[str, pd.DataFrame]):
    """{title: table} -> results/ablations.md (each table as text, 2 decimals); -> its path."""
    from .config import PATHS

    PATHS.results.mkdir(parents=True, exist_ok=True)
    out = PATHS.results / "ablations.md"
    with atomic_path(out) as tmp:
        tmp.write_text("".join(f"## {title}\n```\n{t.round(2).to_string(index=False)}\n```\n\n"
                               for title, t in tables.items()))
    return out


def tables(sweep_table: pd.DataFrame, variants: dict, scale: dict, baseline: list[dict], caption_image) -> dict:
    """The three tables of 08 (and of results/ablations.md), from the runs' test ranks."""
    return {"Sweeps (seed 0, validation)": sweep_table,
            f"Variants vs {BASELINE} (test rSum)": ablation_table(variants, baseline, caption_image),
            "Data scale (test rSum)": scale_table(scale, caption_image),
            "How the gaps move with data (test rSum)": gap_table(scale, caption_image)}


def reproduce_ablations(budget: str = "cpu"):
    """Everything 08 shows, outside the tests: the weight sweeps, every variant and every point of the
    data-scale curve with 3 seeds, ranked on the 1K test set. Writes the sweep table and the ranks to
    notebooks/ (committed, read by 08) and the tables to results/ablations.md."""
    from .features import load_course_features
    from .reproduce import rank_on_test, seeds_for, train_run

    feats = load_course_features(progress=True)
    table = pd.concat([sweep(v, feats, budget) for v in VARIANTS if swept(v)], ignore_index=True)
    table.to_csv(sweep_path(budget), index=False)
    variants, scale = all_ranks(feats, budget, SEEDS, table)
    save_ranks(variants, scale, ranks_path(budget))
    run_log(table, budget).to_csv(runs_path(budget), index=False)
    baseline = []
    for s in seeds_for(BASELINE):
        train_run(BASELINE, feats, budget, s)
        baseline.append(rank_on_test(BASELINE, feats, budget, s))
    return write_tables(tables(table, variants, scale, baseline, feats["test"].caption_image))
