"""Four retrieval models over frozen features, with one interface.

Every model encodes each modality on its own (`encode_images`, `encode_texts`: dicts of tensors
with the batch first), then scores every image against every caption (`score`: (Ni, Nt)).
Encodings are what a distributed step gathers across processes; `extra_losses` adds the
model's own regularisers (only `decoupled_plus` has any).

- `dual`: pooled features -> MLP -> cosine (VSE/CLIP family); no cross-attention.
- `joint`: words attend to regions *and* regions to words, mixed in residually, then cosine of
  the pooled mixed vectors: each modality's representation carries the other's.
- `decoupled`: the blog's idea; words attend to regions only; score = mean over words of
  cos(word, attended image vector) (SCAN text->image).
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
    heads: int = 1
    use_value: bool = True       # False with attention="blog" reproduces the blog
    attention: str = "corrected"  # "corrected" (value, masks) or "blog" (as the blog wrote it)
    dual_hidden: int = 144       # widens `dual` to about the size of the attention models
    private_dim: int = 64        # `decoupled_plus` private subspace
    diff_weight: float = 0.1
    recon_weight: float = 1.0
    init_temperature: float = 0.07


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


class DualEncoder(RetrievalModel):
    """Global embeddings: (B, C) pooled image, (B, D) pooled text -> cosine, no cross-attention."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        h = cfg.dual_hidden
        self.image_mlp = nn.Sequential(nn.Linear(cfg.image_dim, h), nn.GELU(), nn.Linear(h, cfg.dim))
        self.text_mlp = nn.Sequential(nn.Linear(cfg.text_dim, h), nn.GELU(), nn.Linear(h, cfg.dim))

    def encode_images(self, regions, pooled):
        return {"emb": F.normalize(self.image_mlp(pooled), dim=-1)}

    def encode_texts(self, tokens, mask, pooled):
        return {"emb": F.normalize(self.text_mlp(pooled), dim=-1)}

    def score(self, img, txt):
        return img["emb"] @ txt["emb"].t()


class WordRegionModel(RetrievalModel):
    """Shared by `decoupled` and `joint`: regions (B, R, C) and words (B, T, Dt) projected to (·, dim)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.image_proj = _proj(cfg.image_dim, cfg.dim)
        self.text_proj = _proj(cfg.text_dim, cfg.dim)

    def encode_images(self, regions, pooled):
        return {"regions": self.image_proj(regions)}

    def encode_texts(self, tokens, mask, pooled):
        return {"words": self.text_proj(tokens), "mask": mask}


class DecoupledModel(WordRegionModel):
    """Text -> image attention only; score = mean over words of their similarity to what they attended to."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        if cfg.attention == "blog":
            self.attn = DecoupledAttention.blog_faithful(cfg.dim)
        else:
            self.attn = DecoupledAttention(cfg.dim, cfg.dim, cfg.dim, cfg.heads, cfg.use_value)

    def score(self, img, txt):
        return word_region_scores(self.attn, txt["words"], txt["mask"], img["regions"],
                                  use_mask=self.cfg.attention != "blog").t()


def word_region_scores(attn: DecoupledAttention, words: torch.Tensor, mask: torch.Tensor,
                       regions: torch.Tensor, use_mask: bool = True) -> torch.Tensor:
    """(Nt, T, D) words, (Nt, T) mask, (Ni, R, D) regions -> (Nt, Ni) caption-image scores.

    Per word t: α_t = softmax_r(q_t·k_r / τ) (the decoupled attention), then the similarity of the
    unit word vector with the attended unit region vectors, ⟨ŵ_t, Σ_r α_tr v̂_r⟩ = Σ_r α_tr cos(w_t, v_r);
    the caption's score is the mean over its real words (SCAN text->image with mean pooling). SCAN
    divides by |Σ α v̂| as well (a full cosine); that needs an R×R quadratic form per word and pair,
    which triples the CPU time of a 1K-test evaluation, so the course uses this inner product (≤ 1).
    Every big product is one GEMM laid out (Nt, T, Ni, R), so nothing is permuted or copied.
    """
    (nt, t, d), (ni, r, _) = words.shape, regions.shape
    q, k = attn.query(words), attn.key(regions)
    v = F.normalize(attn.value(regions) if attn.value is not None else regions, dim=-1)
    w = F.normalize(words, dim=-1)
    dh = d // attn.heads
    total = 0
    for h in range(attn.heads):
        sl = slice(h * dh, (h + 1) * dh)
        logits = q[..., sl].reshape(nt * t, dh) @ k[..., sl].reshape(ni * r, dh).t() / attn.temperature
        alpha = logits.view(nt, t, ni, r).softmax(-1)
        sim = (w[..., sl].reshape(nt * t, dh) @ v[..., sl].reshape(ni * r, dh).t()).view(nt, t, ni, r)
        total = total + (alpha * sim).sum(-1)                                    # (Nt, T, Ni)
    m = mask.float() if use_mask else torch.ones(nt, t, device=words.device)
    return (total * m[..., None]).sum(1) / m.sum(1, keepdim=True)


class JointModel(WordRegionModel):
    """Co-attention both ways with residual mixing: words += attended regions, regions += attended words.

    One affinity matrix A = q(words)·k(regions)ᵀ/τ serves both directions (softmax over regions for
    words, over words for regions), as in parallel co-attention (Lu et al., 2016); each direction has
    its own value projection. Each pooled representation then carries the other modality's content.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.attn = DecoupledAttention(cfg.dim, cfg.dim, cfg.dim, heads=1, use_value=True)   # words -> regions
        self.text_value = nn.Linear(cfg.dim, cfg.dim)                                          # regions -> words

    def score(self, img, txt):
        words, mask, regions = txt["words"], txt["mask"], img["regions"]
        (nt, t, d), (ni, r, _) = words.shape, regions.shape
        m = mask.float()
        share = m / m.sum(1, keepdim=True)                                               # (Nt, T) word weights
        affinity = (self.attn.query(words).reshape(nt * t, d) @ self.attn.key(regions).reshape(ni * r, d).t())
        affinity = (affinity / self.attn.temperature).view(nt, t, ni, r)
        # words' mixed mean: mean_t (w_t + Σ_r α_tr v_r) = w̄ + (mean_t α_t) V
        alpha_bar = torch.einsum("ntmr,nt->nmr", affinity.softmax(-1), share)            # (Nt, Ni, R)
        w_bar = torch.einsum("ntd,nt->nd", words, share)
        text_mix = w_bar[:, None] + torch.einsum("nmr,mrd->nmd", alpha_bar, self.attn.value(regions))
        # regions' mixed mean: mean_r (r_r + Σ_t β_rt u_t) = r̄ + (mean_r β_r) U, padded words excluded
        beta = affinity.masked_fill(~mask[:, :, None, None], float("-inf")).softmax(1)   # over words
        beta_bar = beta.mean(-1)                                                         # (Nt, T, Ni)
        image_mix = regions.mean(1)[:, None] + torch.einsum("ntm,ntd->mnd", beta_bar, self.text_value(words))
        return F.cosine_similarity(image_mix, text_mix.transpose(0, 1), dim=-1)          # (Ni, Nt)


    def mixed_pair(self, img: dict, txt: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Matched rows (image i with caption i) -> (B, D) image_mix, (B, D) text_mix: `score`'s diagonal."""
        regions, words, mask = img["regions"], txt["words"], txt["mask"]
        share = mask.float() / mask.sum(1, keepdim=True)                                 # (B, T)
        affinity = self.attn.query(words) @ self.attn.key(regions).transpose(1, 2) / self.attn.temperature
        alpha_bar = torch.einsum("btr,bt->br", affinity.softmax(-1), share)              # (B, R)
        text_mix = torch.einsum("btd,bt->bd", words, share) + \
            torch.einsum("br,brd->bd", alpha_bar, self.attn.value(regions))
        beta = affinity.masked_fill(~mask[:, :, None], float("-inf")).softmax(1)         # over words
        image_mix = regions.mean(1) + torch.einsum("bt,btd->bd", beta.mean(-1), self.text_value(words))
        return image_mix, text_mix


class DecoupledPlusModel(RetrievalModel):
    """Shared + private subspaces per modality; decoupled scoring on the shared parts."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        d, p = cfg.dim, cfg.private_dim
        self.image_shared, self.image_private = _proj(cfg.image_dim, d), _proj(cfg.image_dim, p)
        self.text_shared, self.text_private = _proj(cfg.text_dim, d), _proj(cfg.text_dim, p)
        self.attn = DecoupledAttention(d, d, d, cfg.heads, cfg.use_value)
        self.decoder_image = nn.Linear(d + p, cfg.image_dim)
        self.decoder_text = nn.Linear(d + p, cfg.text_dim)

    def encode_images(self, regions, pooled):
        return {"regions": self.image_shared(regions), "private": self.image_private(regions), "input": regions}

    def encode_texts(self, tokens, mask, pooled):
        return {"words": self.text_shared(tokens), "private": self.text_private(tokens), "mask": mask,
                "input": tokens}

    def score(self, img, txt):
        return word_region_scores(self.attn, txt["words"], txt["mask"], img["regions"]).t()

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


MODELS = {"dual": DualEncoder, "joint": JointModel, "decoupled": DecoupledModel, "decoupled_plus": DecoupledPlusModel}


def build_model(name: str, **overrides) -> RetrievalModel:
    """Build one of `MODELS` by name; keyword arguments override `ModelConfig` fields."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](ModelConfig(name=name, **overrides))


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
    for start in range(0, len(order), chunk):
        cols = order[start:start + chunk]
        tokens, mask, tpooled = features.text_batch(caption_rows[cols])
        txt = model.encode_texts(tokens.to(device), mask.to(device), tpooled.to(device))
        out[:, cols] = model.score(img, txt).float().cpu()
    return out
