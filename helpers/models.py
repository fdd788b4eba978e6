"""The retrieval models over frozen features, with one interface, and the one registry of them (`MODELS`).

Every model encodes each modality on its own (`encode_images`, `encode_texts`: dicts of tensors with
the batch first), then scores every image against every caption (`score`: (Ni, Nt)); `extra_losses`
adds a model's own training terms (08's regularisers). Encodings are what a distributed step gathers.

The factorial (`FactorialModel`): direction of flow {none, text -> image, both ways} x scoring head
{pooled vectors + cosine, per-word cosine}, same projections, widths and attention everywhere:

                    head "pooled"        head "words"
  no flow           dual                 dual_words
  text -> image     decoupled_pooled     decoupled      (the blog's idea, scored as SCAN t->i)
  both ways         joint                joint_words    (co-attention, "traditional joint training")

- `blog`: the blog's module as written (no value, no masks), with a per-word cosine head.
- Notebook 08's variants: `decoupled` with one change each: two of the blog's bugs put back as settings
  (`value=False`, `mask_padding=False`), attention over the raw regions, or an added loss term.

What a model computes is set by its `ModelConfig` (flow, head, value, mask_padding, text_length): the fast
versions in `helpers.fast.scoring` read the same fields. `score_all` scores a whole split with these lines.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .attention import DecoupledAttention, check_mask, masked_mean
from .config import TEXT_MAX_LENGTH
from .losses import local_consistency_loss, masked_reconstruction_loss, word_diversity_loss
from .text_towers import PAD_ID, VOCAB_SIZE, GRUTower, model_features

FLOWS = ("none", "text_to_image", "both")
HEADS = ("pooled", "words")
MASK_RATIO = 0.25                # `masked_reconstruction`: share of regions (and of words) hidden


@dataclass
class ModelConfig:
    """What a model is: its sizes and the settings its scores depend on; defaults fit a 2-core CPU."""

    name: str = "decoupled"
    image_dim: int = 1280        # C of the image backbone (1280 MobileNetV2, 2048 ResNet-50)
    text_dim: int = 384          # D of the text encoder (384 MiniLM, 768 BERT-base)
    dim: int = 128               # joint embedding size (128 keeps a 1K-test evaluation near 40 s on 2 cores)
    flow: str = "text_to_image"  # "none", "text_to_image" or "both"
    head: str = "words"          # "pooled" (cosine of mean vectors) or "words" (mean of per-word cosines)
    value: bool = True           # attend over value(regions); False: over the regions themselves (the blog)
    mask_padding: bool = True    # padded positions are masked; False: every position is a word (the blog)
    text_length: int = 0         # mask_padding=False only: read every caption as exactly this many positions
                                 # (zero-padded, e.g. TEXT_MAX_LENGTH; 0: as the caller padded it), so training
                                 # and test score it alike; a masked model's scores never depend on it
    aux_weight: float = 0.0      # weight of an added loss term (08's regularisers)
    init_temperature: float = 0.07
    text_tower: bool = False     # learn a GRU text tower (`text_towers.GRUTower`) with the model: the text
                                 # "features" are then WordPiece ids, (·, T, 1) (notebook 08's no-prior encoder)


def _proj(i: int, o: int) -> nn.Module:
    return nn.Sequential(nn.Linear(i, o), nn.LayerNorm(o))


class RetrievalModel(nn.Module):
    """Base class: a learnable temperature and the interface described in the module docstring."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if not isinstance(cfg.text_length, int) or cfg.text_length < 0:
            raise ValueError(f"text_length={cfg.text_length!r}; use 0 (the caller's padding) or a positive number "
                             f"of positions, e.g. TEXT_MAX_LENGTH={TEXT_MAX_LENGTH}")
        self.cfg = cfg
        self.logit_scale = nn.Parameter(torch.tensor(1.0 / cfg.init_temperature).log())

    def config_dict(self) -> dict:
        return asdict(self.cfg)

    def encode_images(self, regions: torch.Tensor, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def encode_texts(self, tokens: torch.Tensor, mask: torch.Tensor, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def score(self, img: dict, txt: dict) -> torch.Tensor:
        raise NotImplementedError

    def extra_losses(self, img: dict, txt: dict) -> dict[str, torch.Tensor]:
        return {}


def check_text_length(longest: int, length: int) -> None:
    """Refuse a caption of `longest` positions for a model that reads exactly `length` positions."""
    if longest > length:
        raise ValueError(f"a caption has {longest} tokens but the model reads every caption as exactly "
                         f"text_length={length} positions; build it with text_length >= {longest} (the encoders "
                         f"keep at most TEXT_MAX_LENGTH={TEXT_MAX_LENGTH}), or cut the caption")


def fixed_length(tokens: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, Dt) tokens, (B, T) bool mask -> (B, length, Dt), (B, length): every caption as exactly `length`
    positions whatever T was, every padded position a zero token vector (what the course's features hold there)."""
    check_mask(mask)
    check_text_length(int(mask.sum(1).max()) if len(mask) else 0, length)
    if mask[:, length:].any():
        raise ValueError(f"a caption has a real token past position {length}; real tokens must come first")
    tokens, mask = tokens[:, :length], mask[:, :length]
    extra = length - tokens.shape[1]
    tokens = torch.cat([tokens, tokens.new_zeros(len(tokens), extra, tokens.shape[2])], 1)
    mask = torch.cat([mask, mask.new_zeros(len(mask), extra)], 1)
    return tokens * mask[..., None], mask


class WordRegionModel(RetrievalModel):
    """Regions (B, R, C) and words (B, T, Dt) projected to (·, dim) by Linear + LayerNorm: every model's input."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.image_proj = _proj(cfg.image_dim, cfg.dim)
        self.text_tower = None
        if cfg.text_tower:
            if cfg.text_dim != 1:
                raise ValueError(f"a model with text_tower=True reads WordPiece ids (text_dim 1), got text_dim="
                                 f"{cfg.text_dim}; pass the ids features (`pipeline.feature_cache.encoder_features`)")
            self.text_tower = GRUTower(VOCAB_SIZE, PAD_ID, seed=int(torch.randint(2**31 - 1, ())))  # from cfg.seed
        self.text_proj = _proj(self.text_tower.dim if self.text_tower else cfg.text_dim, cfg.dim)

    def read_words(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, 1) WordPiece ids -> (B, T, Dt) features of the model's text tower, with the (B, T) mask;
        token features (B, T, Dt) as given (a model without a tower, or ids already featurized)."""
        if self.text_tower is None or tokens.shape[-1] != 1:
            return tokens, mask
        return self.text_tower(tokens[..., 0].long(), mask)

    def encode_images(self, regions, pooled):
        return {"regions": self.image_proj(regions)}

    def encode_texts(self, tokens, mask, pooled):
        """With `mask_padding=False` (the blog's text extractor, which drops the mask), every position of the
        padded batch counts as a word: padded ones are zero features, projected like any other."""
        return {"words": self.text_proj(tokens), "mask": mask if self.cfg.mask_padding else torch.ones_like(mask)}

    def read_length(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, Dt), (B, T) -> the captions as the model reads them: `fixed_length` to `cfg.text_length` for a
        model that counts padding and has one, so its scores do not depend on the caller's padding; as given
        otherwise (a masked model's scores never depend on padding, so text_length has no effect on them)."""
        if self.cfg.mask_padding or not self.cfg.text_length:
            return tokens, mask
        return fixed_length(tokens, mask, self.cfg.text_length)

    def pair_word_vectors(self, img: dict, txt: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Matched rows (image b with caption b) -> text_t, image_t (B, T, D): the per-word vectors the head
        compares for each pair, without the other pairs."""
        raise NotImplementedError

    def pair_vectors(self, img: dict, txt: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Matched rows, txt as `encode_texts` gives it -> (B, D) image vector, (B, D) text vector: each pair's
        scored vectors (after attention) pooled over the words its head counts (`txt["mask"]`)."""
        text_t, image_t = self.pair_word_vectors(img, txt)
        return masked_mean(image_t, txt["mask"]), masked_mean(text_t, txt["mask"])

    def pair_scores(self, img: dict, txt: dict) -> torch.Tensor:
        """Matched rows, txt as `encode_texts` gives it -> (B,) each pair's score: the diagonal of `score`."""
        return head_scores(*self.pair_word_vectors(img, txt), txt["mask"], self.cfg.head)


class FactorialModel(WordRegionModel):
    """One model per cell of (direction of flow) x (scoring head); everything else is shared.

    Per word t of a caption and per image, a text vector and an image vector (all (·, dim)):
      flow "none"           text_t = w_t          image_t = mean_r v_r          (uniform attention)
      flow "text_to_image"  text_t = w_t          image_t = a_t = Σ_r α_tr v_r  (the blog's direction)
      flow "both"           text_t = w_t + a_t    image_t = r̄ + mean_r Σ_t β_rt u_t  (co-attention)
    with α = softmax over regions of q(w)·k(r)/√d, β = softmax over real words of the same affinity,
    v = value(r), u = text_value(w). The head turns them into one score per (image, caption):
      head "pooled"  cos(mean_t text_t, mean_t image_t)     (one vector per side, VSE/CLIP style)
      head "words"   mean_t cos(text_t, image_t)            (per-word matching, SCAN t->i)
    means over real words only.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        if cfg.flow not in FLOWS or cfg.head not in HEADS:
            raise ValueError(f"flow must be one of {FLOWS} and head one of {HEADS}; got {cfg.flow!r}, {cfg.head!r}")
        self.attn = DecoupledAttention(cfg.dim, cfg.dim, cfg.dim, use_value=True)   # one head
        if not cfg.value:                      # the blog's bug: `self.value` is defined, then never used
            self.attn.value = nn.Identity()
        self.text_value = nn.Linear(cfg.dim, cfg.dim) if cfg.flow == "both" else None

    def encode_texts(self, tokens, mask, pooled):
        """`WordRegionModel.encode_texts` of the captions as the model reads them (`read_length`). A model that
        counts padding (its "mask" all ones) also keeps its real words as "real" (B, T): every pad is the zero
        token, so the same word, and `fast.scoring.batch_scores` scores it once per caption, not once per pad."""
        tokens, mask = self.read_length(*self.read_words(tokens, mask))
        txt = super().encode_texts(tokens, mask, pooled)
        return txt if self.cfg.mask_padding else {**txt, "real": mask}

    def word_vectors(self, words, mask, regions) -> tuple[torch.Tensor, torch.Tensor]:
        """(Nt, T, D) words, (Nt, T) mask, (Ni, R, D) regions -> text_t, image_t, broadcastable to (Nt, T, Ni, D)."""
        values = self.attn.value(regions)                                                  # (Ni, R, D)
        if self.cfg.flow == "none":
            return words[:, :, None], values.mean(1)[None, None]
        logits = affinity(self.attn, words, regions)                                       # (Nt, T, Ni, R)
        attended = torch.einsum("ntmr,mrd->ntmd", logits.softmax(-1), values)              # a_t: (Nt, T, Ni, D)
        if self.cfg.flow == "text_to_image":
            return words[:, :, None], attended
        beta = logits.masked_fill(~mask[:, :, None, None], float("-inf")).softmax(1)       # over words
        image = regions.mean(1) + torch.einsum("ntm,ntd->nmd", beta.mean(-1), self.text_value(words))
        return words[:, :, None] + attended, image[:, None]                                # (Nt, 1, Ni, D)

    def score(self, img, txt):
        check_mask(txt["mask"])
        text_t, image_t = self.word_vectors(txt["words"], txt["mask"], img["regions"])
        return head_scores(text_t, image_t, txt["mask"], self.cfg.head).t()

    def matched_vectors(self, img: dict, txt: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Matched rows (image i with caption i) of a flow "both" model -> (B, D) image vector, (B, D) text
        vector, pooled over real words: what `word_vectors` gives each pair, without the other pairs."""
        if self.cfg.flow != "both":
            raise ValueError(f"matched_vectors is for flow 'both' models; {self.cfg.name!r} has flow {self.cfg.flow!r}")
        text_t, image_t = self.pair_word_vectors(img, txt)
        return image_t[:, 0], masked_mean(text_t, txt["mask"])

    def pair_word_vectors(self, img, txt):
        words, mask, regions = txt["words"], txt["mask"], img["regions"]          # (B, T, D), (B, T), (B, R, D)
        check_mask(mask)
        values = self.attn.value(regions)                                         # (B, R, D)
        if self.cfg.flow == "none":
            return words, values.mean(1)[:, None].expand_as(words)
        logits = torch.einsum("btd,brd->btr", self.attn.query(words), self.attn.key(regions)) / self.attn.temperature
        attended = torch.bmm(logits.softmax(-1), values)                          # a_t: (B, T, D)
        if self.cfg.flow == "text_to_image":
            return words, attended
        beta_bar = logits.masked_fill(~mask[..., None], float("-inf")).softmax(1).mean(-1)   # (B, T)
        image = regions.mean(1) + torch.einsum("bt,btd->bd", beta_bar, self.text_value(words))
        return words + attended, image[:, None].expand_as(words)


def affinity(attn: DecoupledAttention, words: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """(Nt, T, D) words, (Ni, R, D) regions -> (Nt, T, Ni, R) q(w)·k(r)/√d for every word and region of
    every caption-image pair, as one matrix product."""
    (nt, t, d), (ni, r, _) = words.shape, regions.shape
    logits = attn.query(words).reshape(nt * t, d) @ attn.key(regions).reshape(ni * r, d).t()
    return (logits / attn.temperature).view(nt, t, ni, r)


def head_scores(text_t: torch.Tensor, image_t: torch.Tensor, mask: torch.Tensor, head: str) -> torch.Tensor:
    """text_t, image_t broadcastable to (Nt, T, Ni, D), (Nt, T) mask -> (Nt, Ni) caption-image scores."""
    if head == "pooled":
        return F.cosine_similarity(masked_mean(text_t, mask), masked_mean(image_t, mask), dim=-1)
    return masked_mean(F.cosine_similarity(text_t, image_t, dim=-1), mask)


class BlogModel(WordRegionModel):
    """The blog's `DecoupledAttention` as written, with only the glue needed to train and score it.

    Glue: the course's projections to `dim` (the blog never says how its 1000 logits and 768-d tokens
    meet) and a per-word cosine head. As written: no value projection (the raw projected regions are
    averaged), no masks (padded positions attend, and count in the caption's mean), √dim temperature.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.attn = DecoupledAttention.blog_faithful(cfg.dim)

    def encode_texts(self, tokens, mask, pooled):
        """As `FactorialModel.encode_texts`: the captions as the model reads them, and its real words as "real"."""
        tokens, mask = self.read_length(tokens, mask)
        txt = super().encode_texts(tokens, mask, pooled)
        return txt if self.cfg.mask_padding else {**txt, "real": mask}

    def score(self, img, txt):
        return blog_scores(self.attn, txt["words"], img["regions"]).t()

    def pair_word_vectors(self, img, txt):
        """Matched rows -> words, Σ_r α_tr r_r (B, T, D) over every position (no mask, no value, as `blog_scores`)."""
        words, regions = txt["words"], img["regions"]
        logits = torch.einsum("btd,brd->btr", self.attn.query(words), self.attn.key(regions)) / self.attn.temperature
        return words, torch.bmm(logits.softmax(-1), regions)


def blog_scores(attn: DecoupledAttention, words: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """(Nt, T, D) words, padding included, (Ni, R, D) regions -> (Nt, Ni): mean over all T positions of
    cos(w_t, Σ_r α_tr r_r), α = softmax(q kᵀ/√d) with no mask and no value projection (the blog's forward)."""
    attended = torch.einsum("ntmr,mrd->ntmd", affinity(attn, words, regions).softmax(-1), regions)
    return F.cosine_similarity(words[:, :, None], attended, dim=-1).mean(1)


# ----------------------------------------------------------------------------- 08's variants of `decoupled`

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
        check_mask(mask)
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


# ----------------------------------------------------------------------------- the registry

# name -> (class, its ModelConfig presets). 08's variants are `decoupled` (the class defaults) plus one change.
MODELS = {
    "dual": (FactorialModel, dict(flow="none", head="pooled")),
    "dual_words": (FactorialModel, dict(flow="none", head="words")),
    "decoupled_pooled": (FactorialModel, dict(flow="text_to_image", head="pooled")),
    "decoupled": (FactorialModel, dict(flow="text_to_image", head="words")),
    "joint": (FactorialModel, dict(flow="both", head="pooled")),
    "joint_words": (FactorialModel, dict(flow="both", head="words")),
    "blog": (BlogModel, dict(value=False, mask_padding=False, text_length=TEXT_MAX_LENGTH)),
    "no_value": (FactorialModel, dict(value=False)),
    "counts_padding": (FactorialModel, dict(mask_padding=False, text_length=TEXT_MAX_LENGTH)),
    "raw_regions": (RawRegionsModel, {}),
    "local_consistency": (LocalConsistencyModel, {}),
    "word_diversity": (WordDiversityModel, {}),
    "masked_reconstruction": (MaskedReconstructionModel, {}),
}


def build_model(name: str, **overrides) -> RetrievalModel:
    """Build one of `MODELS` by name; keyword arguments override `ModelConfig` fields."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    cls, presets = MODELS[name]
    return cls(ModelConfig(name=name, **{**presets, **overrides}))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- scoring a whole split

@torch.inference_mode()
def score_all(model: RetrievalModel, features, chunk: int = 64, device: str | torch.device = "cpu",
              image_rows: torch.Tensor | None = None, caption_rows: torch.Tensor | None = None) -> torch.Tensor:
    """Score images against captions of a FeatureSet -> (N_img, N_cap) float32 on the CPU.

    All images and all captions by default, or the given rows. Images are encoded once; captions are
    encoded and scored by `model.score` in chunks of `chunk`, sorted by length so each chunk pads little
    (every chunk pads alike, to the longest caption of the set, for a model that counts padding; one with
    `text_length` reads every caption as that many positions whatever this padding);
    memory per chunk ~ chunk * N_img * T * R floats.
    """
    model.eval().to(device)
    features = model_features(model, features)           # a model with a text tower scores its tower's features
    image_rows = torch.arange(features.n_images) if image_rows is None else torch.as_tensor(image_rows)
    caption_rows = torch.arange(features.n_captions) if caption_rows is None else torch.as_tensor(caption_rows)
    regions, pooled = features.image_batch(image_rows)
    img = model.encode_images(regions.to(device), pooled.to(device))
    order = features.lengths()[caption_rows].argsort()
    out = torch.empty(len(image_rows), len(caption_rows))
    pad_to = int(features.lengths().max())
    for start in range(0, len(order), chunk):
        cols = order[start:start + chunk]
        tokens, mask, tpooled = features.text_batch(caption_rows[cols], pad_to=pad_to)
        txt = model.encode_texts(tokens.to(device), mask.to(device), tpooled.to(device))
        out[:, cols] = model.score(img, txt).float().cpu()
    return out


@dataclass(frozen=True)
class Scoring:
    """How scores are computed: `batch(model, img, txt)` -> (Ni, Nt) for a training batch, with gradients,
    and `all(model, features, device=...)` -> (N_img, N_cap) for a whole split. `READABLE` is this module's
    lines; `helpers.fast.scoring.FAST` gives the same scores up to float rounding, faster."""

    batch: Callable
    all: Callable


def _readable_batch(model: RetrievalModel, img: dict, txt: dict) -> torch.Tensor:
    return model.score(img, txt)


READABLE = Scoring(batch=_readable_batch, all=score_all)
