"""The retrieval models over frozen features, with one interface.

Every model encodes each modality on its own (`encode_images`, `encode_texts`: dicts of tensors
with the batch first), then scores every image against every caption (`score`: (Ni, Nt)).
Encodings are what a distributed step gathers across processes; `extra_losses` adds the
model's own regularisers (only `decoupled_plus` has any).

The factorial (`FactorialModel`): direction of flow {none, text -> image, both ways} x scoring head
{pooled vectors + cosine, per-word cosine}, same projections, widths and attention everywhere:

                    head "pooled"        head "words"
  no flow           dual                 dual_words
  text -> image     decoupled_pooled     decoupled      (the blog's idea, scored as SCAN t->i)
  both ways         joint                joint_words    (co-attention, "traditional joint training")

- `blog`: the blog's module as written (no value, no masks), with a per-word cosine head.
- `decoupled_plus`: shared and private projections per modality; `decoupled` scoring on the shared
  parts, plus a difference (orthogonality) loss and a reconstruction loss (MISA / DSN).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import DecoupledAttention
from .losses import difference_loss, reconstruction_loss


@dataclass
class ModelConfig:
    """Sizes shared by all models; defaults fit a 2-core CPU."""

    name: str = "decoupled"
    image_dim: int = 1280        # C of the image backbone (1280 MobileNetV2, 2048 ResNet-50)
    text_dim: int = 384          # D of the text encoder (384 MiniLM, 768 BERT-base)
    dim: int = 128               # joint embedding size (128 keeps a 1K-test evaluation near 40 s on 2 cores)
    flow: str = "text_to_image"  # FactorialModel: "none", "text_to_image" or "both"
    head: str = "words"          # FactorialModel: "pooled" (cosine of mean vectors) or "words" (mean of cosines)
    private_dim: int = 64        # `decoupled_plus` private subspace
    diff_weight: float = 0.1
    recon_weight: float = 1.0
    aux_weight: float = 0.0      # 08's variants: weight of the added loss term (helpers.ablations)
    init_temperature: float = 0.07


FLOWS = ("none", "text_to_image", "both")
HEADS = ("pooled", "words")


def _proj(i: int, o: int) -> nn.Module:
    return nn.Sequential(nn.Linear(i, o), nn.LayerNorm(o))


class RetrievalModel(nn.Module):
    """Base class: a learnable temperature and the interface described in the module docstring."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
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

    def scoring_parameters(self) -> int:
        """Parameters used to score a pair (decoders that only serve a training loss excluded)."""
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith("decoder"))


class WordRegionModel(RetrievalModel):
    """Regions (B, R, C) and words (B, T, Dt) projected to (·, dim) by Linear + LayerNorm: every model's input."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.image_proj = _proj(cfg.image_dim, cfg.dim)
        self.text_proj = _proj(cfg.text_dim, cfg.dim)

    def encode_images(self, regions, pooled):
        return {"regions": self.image_proj(regions)}

    def encode_texts(self, tokens, mask, pooled):
        return {"words": self.text_proj(tokens), "mask": mask}


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Mean of `x` over its word axis `dim`, real words only; mask (Nt, T) broadcasts against x."""
    m = mask.float().reshape(*mask.shape, *[1] * (x.dim() - mask.dim()))
    return (x * m).sum(dim) / m.sum(dim)


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
        self.text_value = nn.Linear(cfg.dim, cfg.dim) if cfg.flow == "both" else None

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
        text_t, image_t = self.word_vectors(txt["words"], txt["mask"], img["regions"])
        return head_scores(text_t, image_t, txt["mask"], self.cfg.head).t()

    def mixed_pair(self, img: dict, txt: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Matched rows (image i with caption i) -> (B, D) pooled image vector, (B, D) pooled text vector."""
        image, text = [], []
        for i in range(len(img["regions"])):                   # pair by pair: all B x B pairs would be O(B²)
            words, mask = txt["words"][i:i + 1], txt["mask"][i:i + 1]
            text_t, image_t = self.word_vectors(words, mask, img["regions"][i:i + 1])      # (1, T or 1, 1, D)
            image.append(masked_mean(image_t.expand_as(text_t)[:, :, 0], mask))
            text.append(masked_mean(text_t[:, :, 0], mask))
        return torch.cat(image), torch.cat(text)


def affinity(attn: DecoupledAttention, words: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """(Nt, T, D) words, (Ni, R, D) regions -> (Nt, T, Ni, R) q(w)·k(r)/√d for every word and region of
    every caption-image pair, as one matrix product."""
    (nt, t, d), (ni, r, _) = words.shape, regions.shape
    logits = attn.query(words).reshape(nt * t, d) @ attn.key(regions).reshape(ni * r, d).t()
    return (logits / attn.temperature).view(nt, t, ni, r)


def attend(attn: DecoupledAttention, words: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """(Nt, T, D) words, (Ni, R, D) regions -> (Nt, T, Ni, D) a_t = Σ_r softmax_r(q·k/√d) v_r for every pair."""
    return torch.einsum("ntmr,mrd->ntmd", affinity(attn, words, regions).softmax(-1), attn.value(regions))


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

    def score(self, img, txt):
        return blog_scores(self.attn, txt["words"], img["regions"]).t()


def blog_scores(attn: DecoupledAttention, words: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """(Nt, T, D) words, padding included, (Ni, R, D) regions -> (Nt, Ni): mean over all T positions of
    cos(w_t, Σ_r α_tr r_r), α = softmax(q kᵀ/√d) with no mask and no value projection (the blog's forward)."""
    attended = torch.einsum("ntmr,mrd->ntmd", affinity(attn, words, regions).softmax(-1), regions)
    return F.cosine_similarity(words[:, :, None], attended, dim=-1).mean(1)


class DecoupledPlusModel(RetrievalModel):
    """Shared + private subspaces per modality; decoupled scoring on the shared parts."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        d, p = cfg.dim, cfg.private_dim
        self.image_shared, self.image_private = _proj(cfg.image_dim, d), _proj(cfg.image_dim, p)
        self.text_shared, self.text_private = _proj(cfg.text_dim, d), _proj(cfg.text_dim, p)
        self.attn = DecoupledAttention(d, d, d)
        self.decoder_image = nn.Linear(d + p, cfg.image_dim)
        self.decoder_text = nn.Linear(d + p, cfg.text_dim)

    def encode_images(self, regions, pooled):
        return {"regions": self.image_shared(regions), "private": self.image_private(regions), "input": regions}

    def encode_texts(self, tokens, mask, pooled):
        return {"words": self.text_shared(tokens), "private": self.text_private(tokens), "mask": mask,
                "input": tokens}

    def score(self, img, txt):
        words, mask, regions = txt["words"], txt["mask"], img["regions"]
        return head_scores(words[:, :, None], attend(self.attn, words, regions), mask, "words").t()

    def extra_losses(self, img, txt):
        mask = txt["mask"]
        diff = difference_loss(img["regions"].mean(1), img["private"].mean(1)) + \
            difference_loss(txt["words"][mask], txt["private"][mask])
        rec_img = self.decoder_image(torch.cat([img["regions"], img["private"]], -1))
        rec_txt = self.decoder_text(torch.cat([txt["words"], txt["private"]], -1))[mask]
        recon = reconstruction_loss(rec_img, img["input"]) + reconstruction_loss(rec_txt, txt["input"][mask])
        return {"difference": self.cfg.diff_weight * diff, "reconstruction": self.cfg.recon_weight * recon}

    def shared_private_correlation(self, img: dict, txt: dict) -> dict[str, float]:
        """Mean |cosine| between shared and private directions per modality (0 = orthogonal)."""
        out = {}
        for name, s, p in [("image", img["regions"].mean(1), img["private"].mean(1)),
                           ("text", txt["words"][txt["mask"]], txt["private"][txt["mask"]])]:
            s = F.normalize(s - s.mean(0), dim=0)
            p = F.normalize(p - p.mean(0), dim=0)
            out[name] = float((s.t() @ p).abs().mean())
        return out


# name -> (class, its ModelConfig presets)
MODELS = {
    "dual": (FactorialModel, dict(flow="none", head="pooled")),
    "dual_words": (FactorialModel, dict(flow="none", head="words")),
    "decoupled_pooled": (FactorialModel, dict(flow="text_to_image", head="pooled")),
    "decoupled": (FactorialModel, dict(flow="text_to_image", head="words")),
    "joint": (FactorialModel, dict(flow="both", head="pooled")),
    "joint_words": (FactorialModel, dict(flow="both", head="words")),
    "blog": (BlogModel, {}),
    "decoupled_plus": (DecoupledPlusModel, dict(flow="text_to_image", head="words")),
}


def build_model(name: str, **overrides) -> RetrievalModel:
    """Build one of `MODELS` by name; keyword arguments override `ModelConfig` fields."""
    from .ablations import ABLATION_MODELS          # 08's one-change variants of `decoupled`

    known = {**MODELS, **ABLATION_MODELS}
    if name not in known:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(known)}")
    cls, presets = known[name]
    return cls(ModelConfig(name=name, **{**presets, **overrides}))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.inference_mode()
def score_all(model: RetrievalModel, features, chunk: int = 64, device: str | torch.device = "cpu",
              image_rows: torch.Tensor | None = None, caption_rows: torch.Tensor | None = None,
              fast: bool = True) -> torch.Tensor:
    """Score images against captions of a FeatureSet -> (N_img, N_cap) float32 on the CPU.

    All images and all captions by default, or the given rows. With `fast` (the default) the attention
    models run the tiled, cache-sized versions in `helpers.fast_scoring` (same scores up to rounding).
    Otherwise images are encoded once, and captions are encoded and scored by `model.score` in chunks
    of `chunk`, sorted by length so each chunk pads little; memory per chunk ~ chunk * N_img * T * R floats.
    """
    model.eval().to(device)
    image_rows = torch.arange(features.n_images) if image_rows is None else torch.as_tensor(image_rows)
    caption_rows = torch.arange(features.n_captions) if caption_rows is None else torch.as_tensor(caption_rows)
    if fast:
        from .fast_scoring import fast_score_all

        out = fast_score_all(model, features, device, image_rows, caption_rows)
        if out is not None:
            return out
    regions, pooled = features.image_batch(image_rows)
    img = model.encode_images(regions.to(device), pooled.to(device))
    order = features.lengths()[caption_rows].argsort()
    out = torch.empty(len(image_rows), len(caption_rows))
    pad_to = int(features.lengths().max())          # the blog counts padding: pad every chunk alike
    for start in range(0, len(order), chunk):
        cols = order[start:start + chunk]
        tokens, mask, tpooled = features.text_batch(caption_rows[cols], pad_to=pad_to)
        txt = model.encode_texts(tokens.to(device), mask.to(device), tpooled.to(device))
        out[:, cols] = model.score(img, txt).float().cpu()
    return out
