"""Speed code: score every test image against every test caption near the matrix-multiply limit.

Nothing here changes what a model computes; it changes the order and the memory layout. The lines a
learner reads are `models.FactorialModel.word_vectors` and `models.head_scores`: they build one
(captions, words, images, regions) tensor per chunk of captions, hundreds of MB that stream through
main memory several times (softmax, product, sum), so they run memory-bound at a fraction of the CPU's
arithmetic rate. The versions here

- project keys and values of all images once (the readable path re-projects them per caption chunk);
- walk the (word, region) logits in tiles of a few hundred words × a few dozen images, so each tile's
  logits, softmax and weighted sum stay in cache, and only the (words, images) result is written;
- keep captions packed (no padding) for text -> image models, with each tile laid out (words, images,
  regions): the softmax and the sums over regions run along contiguous memory, and a caption's score is
  the mean of its own words' rows (one row sum per caption);
- pad the captions of a "both" model in length-sorted tiles of about WORD_TILE positions, and score its
  per-word head with sums over the 49 regions (|w + a|² = |w|² + 2α·(Vw) + αᵀGα) instead of over the 128
  dimensions of every attended vector.

`FAST` bundles this module's two entry points (`score_all` for a whole split, `batch_scores` for a
training batch) as a `models.Scoring`, which the course's pipeline hands to `train.train`; both dispatch
on the model's configuration (flow, head, value, mask_padding, text_length), never on its class.
`python -m helpers bench score` times both against the floor (the flops of the big products divided by
the measured peak matrix-multiply rate); `tests/test_fast_scoring.py` checks they agree up to rounding,
and `agreement` lets a notebook show it on a small batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models import Scoring, check_mask, check_text_length
from ..models import score_all as readable_score_all
from ..text_towers import model_features

WORD_TILE = 2048     # word rows per tile (whole captions); with IMAGE_TILE, a tile's logits are ~3 MB
IMAGE_TILE = 8       # images per tile: (2048 x 128) @ (128 x 392) runs at the CPU's peak GEMM rate


def _caption_tiles(lengths: torch.Tensor, words_per_tile: int = WORD_TILE):
    """(N,) caption lengths -> [(first caption, last caption + 1)] so each tile holds ~words_per_tile words."""
    tiles, start, count = [], 0, 0
    for i, n in enumerate(lengths.tolist()):
        if count and count + n > words_per_tile:
            tiles.append((start, i))
            start, count = i, 0
        count += n
    if count:
        tiles.append((start, len(lengths)))
    return tiles


def _padded_tiles(sorted_lengths: torch.Tensor, tokens_per_tile: int = WORD_TILE):
    """(N,) caption lengths in ascending order -> [(first, last + 1)] so each tile, padded to its longest
    caption, holds ~tokens_per_tile positions (at least one caption)."""
    tiles, start = [], 0
    for i, n in enumerate(sorted_lengths.tolist()):
        if i > start and (i - start + 1) * n > tokens_per_tile:
            tiles.append((start, i))
            start = i
    if len(sorted_lengths):
        tiles.append((start, len(sorted_lengths)))
    return tiles


def _mean_matrix(lengths: torch.Tensor) -> torch.Tensor:
    """(C,) words per caption -> (C, W) averaging matrix: row c holds 1/T_c on caption c's packed words."""
    owner = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    mean = torch.zeros(len(lengths), int(lengths.sum()))
    mean[owner, torch.arange(len(owner))] = 1.0 / lengths[owner].float()
    return mean


def _segment_means(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(W, ...) rows of packed words, (C,) words per caption -> (C, ...) each caption's mean row."""
    owner = torch.repeat_interleave(torch.arange(len(lengths), device=x.device), lengths.to(x.device))
    sums = x.new_zeros(len(lengths), *x.shape[1:]).index_add_(0, owner, x)
    return sums / lengths.to(x).view((-1,) + (1,) * (x.dim() - 1))


@torch.inference_mode()
def packed_t2i_scores(attn, words: torch.Tensor, lengths: torch.Tensor, regions: torch.Tensor,
                      head: str = "words", use_value: bool = True,
                      word_tile: int | None = None, image_tile: int | None = None) -> torch.Tensor:
    """(N_tok, D) packed real words, (N_cap,) words per caption, (N_img, R, D) regions -> (N_cap, N_img).

    The text -> image scores of `models.FactorialModel` tile by tile, a_t = Σ_r softmax_r(q·k/τ) v_r:
    head "words" = mean_t cos(w_t, a_t); head "pooled" = cos(mean_t w_t, mean_t a_t).
    `use_value=False` attends over the regions themselves (the blog). One attention head.
    Each tile is laid out (words, images, regions), so the softmax and the sums over regions run
    along contiguous memory, and a caption's mean is a sum of whole rows.
    """
    word_tile, image_tile = word_tile or WORD_TILE, image_tile or IMAGE_TILE
    n_img, r = regions.shape[:2]
    q = attn.query(words) / attn.temperature                                   # (N_tok, D)
    k = attn.key(regions).flatten(0, 1)                                        # (N_img * R, D)
    v = attn.value(regions) if use_value else regions                          # (N_img, R, D)
    gram = v @ v.transpose(1, 2)                                               # (N_img, R, R): |a|² = αᵀGα
    v_flat = v.flatten(0, 1)
    offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
    out = torch.empty(len(lengths), n_img)
    for c0, c1 in _caption_tiles(lengths, word_tile):
        t0, t1 = int(offsets[c0]), int(offsets[c1])
        w, n = words[t0:t1], lengths[c0:c1]
        w_norm = w.norm(dim=-1).clamp_min(1e-8)[:, None]                       # (W, 1)
        w_bar = _segment_means(w, n)                                           # (C, D)
        for i0 in range(0, n_img, image_tile):
            i1 = min(i0 + image_tile, n_img)
            rows = slice(i0 * r, i1 * r)
            alpha = (q[t0:t1] @ k[rows].t()).view(t1 - t0, i1 - i0, r).softmax(-1)       # (W, m, R)
            if head == "words":                                                # cos(w, a) = α·(V w) / (|w| √(αᵀGα))
                num = torch.linalg.vecdot(alpha, (w @ v_flat[rows].t()).view_as(alpha))   # (W, m)
                a_g = torch.bmm(alpha.transpose(0, 1), gram[i0:i1]).transpose(0, 1)      # (W, m, R)
                a_norm = torch.linalg.vecdot(alpha, a_g).clamp_min(1e-16).sqrt()
                out[c0:c1, i0:i1] = _segment_means(num / (a_norm * w_norm).clamp_min(1e-8), n)
            else:
                a_bar = torch.einsum("cmr,mrd->cmd", _segment_means(alpha, n), v[i0:i1])  # (C, m, D)
                out[c0:c1, i0:i1] = F.cosine_similarity(a_bar, w_bar[:, None], dim=-1)
    return out


@torch.inference_mode()
def joint_scores(model, words: torch.Tensor, mask: torch.Tensor, prepared: dict, head: str = "pooled",
                 image_tile: int | None = None) -> torch.Tensor:
    """(Nt, T, D) words, (Nt, T) mask, `prepare_joint_images` of Ni images -> (Ni, Nt): the scores of
    `models.FactorialModel` with flow "both" (`joint` with head "pooled", `joint_words` with "words").

    Both softmaxes (over regions for the words, over words for the regions) share one exponential:
    E = exp(affinity - c) with c the largest affinity of the (caption, image) pair, so each tile is
    exponentiated once. A tile where some row's sum falls below 1e-20 (logits spread over more than ~46,
    where float32 would start losing digits) is recomputed with two separate softmaxes.
    """
    check_mask(mask)
    image_tile = image_tile or IMAGE_TILE
    attn = model.attn
    keys, values, mean = prepared["keys"], prepared["values"], prepared["mean"]
    (nt, t, d), (ni, r, _) = words.shape, keys.shape
    m = mask.float()
    share = m / m.sum(1, keepdim=True)                                         # (Nt, T)
    # One extra column carries the padding mask into the product: a padded word's logits get -1e4.
    q = torch.cat([attn.query(words) / attn.temperature, (m[..., None] - 1) * 1e4], -1).reshape(nt * t, d + 1)
    k1 = torch.cat([keys, keys.new_ones(ni, r, 1)], -1)                        # (Ni, R, D + 1)
    w_bar = torch.einsum("ntd,nt->nd", words, share)                           # (Nt, D)
    u = model.text_value(words)                                                # (Nt, T, D)
    w_sq = (words * words).sum(-1)                                             # (Nt, T)
    out = torch.empty(ni, nt)
    for i0 in range(0, ni, image_tile):
        i1 = min(i0 + image_tile, ni)
        aff = (q @ k1[i0:i1].reshape(-1, d + 1).t()).view(nt, t, i1 - i0, r)
        e = aff.sub_(aff.amax(dim=(1, 3), keepdim=True)).exp_()              # (Nt, T, m, R), pads ~0
        z_regions = e.sum(-1)                                                  # (Nt, T, m)
        z_words = e.sum(1)                                                     # (Nt, m, R)
        if (z_regions.masked_fill(~mask[:, :, None], 1.0) < 1e-20).any() or (z_words < 1e-20).any():
            aff = (q @ k1[i0:i1].reshape(-1, d + 1).t()).view(nt, t, i1 - i0, r)
            alpha = torch.softmax(aff, -1)
            beta_bar = torch.softmax(aff, 1).mean(-1)
        else:
            alpha = e / z_regions.clamp_min(1e-30)[..., None]                 # (Nt, T, m, R)
            beta_bar = torch.linalg.vecdot(e, (1 / (r * z_words))[:, None], dim=-1)              # (Nt, T, m)
        image_mix = mean[i0:i1, None] + torch.bmm(beta_bar.transpose(1, 2), u).transpose(0, 1)   # (m, Nt, D)
        if head == "pooled":
            alpha_bar = torch.linalg.vecdot(alpha, share[..., None, None], dim=1)                # (Nt, m, R)
            text_mix = w_bar[:, None] + torch.bmm(alpha_bar.transpose(0, 1), values[i0:i1]).transpose(0, 1)
            out[i0:i1] = F.cosine_similarity(image_mix, text_mix.transpose(0, 1), dim=-1)
        else:   # cos(w + a, g) from (w + a)·g = w·g + α·(V g) and |w + a|² = |w|² + 2 α·(V w) + αᵀGα
            mt, vals = i1 - i0, values[i0:i1]                                                   # (m, R, D)
            sim = (words.reshape(nt * t, d) @ vals.reshape(-1, d).t()).view(nt, t, mt, r)       # v_r·w
            alpha_gram = torch.bmm(alpha.view(nt * t, mt, r).transpose(0, 1), prepared["gram"][i0:i1])
            a_sq = torch.linalg.vecdot(alpha, alpha_gram.transpose(0, 1).view(nt, t, mt, r))    # (Nt, T, m)
            a_g = torch.linalg.vecdot(alpha, torch.bmm(image_mix, vals.transpose(1, 2)).transpose(0, 1)[:, None])
            w_g = torch.bmm(words, image_mix.permute(1, 2, 0))                                  # (Nt, T, m)
            text_sq = w_sq[..., None] + 2 * torch.linalg.vecdot(alpha, sim) + a_sq
            norms = text_sq.clamp_min(1e-16).sqrt() * image_mix.norm(dim=-1).t()[:, None]
            out[i0:i1] = torch.linalg.vecdot((w_g + a_g) / norms.clamp_min(1e-8), share[..., None], dim=1).t()
    return out


def prepare_joint_images(model, regions: torch.Tensor) -> dict:
    """(Ni, R, D) projected regions -> keys, values (Ni, R, D), their Gram matrices (Ni, R, R) and mean
    region (Ni, D) of a "both" model."""
    values = model.attn.value(regions)
    return {"keys": model.attn.key(regions), "values": values, "gram": values @ values.transpose(1, 2),
            "mean": regions.mean(1)}


def packed_tokens(features, caption_rows: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (N_tok, Dt) the captions' real token features, packed in caption order, and (N_cap,) their lengths."""
    lengths = features.lengths()[caption_rows]
    starts = features.offsets[caption_rows]                                 # the captions' packed token rows
    rows = torch.repeat_interleave(starts - torch.cat([starts.new_zeros(1), lengths.cumsum(0)[:-1]]), lengths)
    return features.tokens[rows + torch.arange(int(lengths.sum()))].float().to(device), lengths


def packed_words(model, features, caption_rows: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (N_tok, D) the captions' projected real words, packed in caption order, and (N_cap,) their lengths."""
    tokens, lengths = packed_tokens(features, caption_rows, device)
    mask = torch.ones(len(tokens), 1, dtype=torch.bool, device=device)
    return model.encode_texts(tokens[:, None], mask, None)["words"][:, 0], lengths


@torch.inference_mode()
def score_all(model, features, device="cpu", image_rows: torch.Tensor | None = None,
              caption_rows: torch.Tensor | None = None) -> torch.Tensor:
    """`models.score_all`, tiled -> (N_img, N_cap) float32 on the CPU: the same scores up to float rounding.

    Dispatches on the model's configuration: a model that counts padding (`mask_padding=False`: the blog's
    module, `counts_padding`) scores every caption padded to its `text_length` or, with text_length=0, to the
    longest of the set, as one batch would be (without building the padded tensor); otherwise flow "none",
    "text_to_image" (over the value projection or, with `value=False`, over the regions themselves) or
    "both" (`joint_scores`). A masked model packs or tiles its captions as it likes: padding never moves its scores.
    """
    cfg = model.cfg
    model.eval().to(device)
    features = model_features(model, features)           # a model with a text tower scores its tower's features
    image_rows = torch.arange(features.n_images) if image_rows is None else torch.as_tensor(image_rows)
    caption_rows = torch.arange(features.n_captions) if caption_rows is None else torch.as_tensor(caption_rows)
    regions, pooled = features.image_batch(image_rows)
    regions = model.encode_images(regions.to(device), pooled.to(device))["regions"]
    if not cfg.mask_padding:
        if (cfg.flow, cfg.head) != ("text_to_image", "words"):
            raise ValueError(f"{cfg.name}: counting padding is scored here for text -> image, per-word models "
                             f"only, not flow {cfg.flow!r} with head {cfg.head!r}; use models.score_all")
        # Every caption is padded to P positions (text_length, or the longest, as one batch would be), and
        # the mean runs over all of them. A pad token is the zero vector, so every pad is the same word p:
        # its cosine is computed once per image and added (P - T_c) times to caption c's sum over its real words.
        tokens, lengths = packed_tokens(features, caption_rows, device)
        p = cfg.text_length or int(features.lengths().max())
        if cfg.text_length:
            check_text_length(int(lengths.max()) if len(lengths) else 0, cfg.text_length)
        words = model.text_proj(tokens[:, None])[:, 0]                # (N_tok, D), one word at a time: no pads
        pad = model.text_proj(torch.zeros(1, cfg.text_dim, device=device))                # (1, D)
        real = packed_t2i_scores(model.attn, words, lengths, regions, use_value=cfg.value)  # (N_cap, N_img)
        pad_cos = packed_t2i_scores(model.attn, pad, lengths.new_ones(1), regions, use_value=cfg.value)
        return ((real * lengths[:, None] + (p - lengths)[:, None] * pad_cos) / p).t().contiguous()
    if cfg.flow == "none":
        words, lengths = packed_words(model, features, caption_rows, device)
        mean = _mean_matrix(lengths)
        image = F.normalize(model.attn.value(regions).mean(1), dim=-1)                     # (N_img, D)
        text = mean @ (F.normalize(words, dim=-1) if cfg.head == "words" else words)       # (N_cap, D)
        return image @ (text if cfg.head == "words" else F.normalize(text, dim=-1)).t()
    if cfg.flow == "text_to_image":
        words, lengths = packed_words(model, features, caption_rows, device)
        return packed_t2i_scores(model.attn, words, lengths, regions, cfg.head, use_value=cfg.value).t().contiguous()
    prepared = prepare_joint_images(model, regions)
    lengths = features.lengths()[caption_rows]
    order = lengths.argsort()
    out = torch.empty(len(image_rows), len(caption_rows))
    for c0, c1 in _padded_tiles(lengths[order], WORD_TILE):
        cols = order[c0:c1]                           # sorted by length: each chunk pads little
        tokens, mask, tpooled = features.text_batch(caption_rows[cols])
        txt = model.encode_texts(tokens.to(device), mask.to(device), tpooled.to(device))
        out[:, cols] = joint_scores(model, txt["words"], txt["mask"], prepared, cfg.head).float().cpu()
    return out


def scoring_flops_for(cfg, n_tok: int, n_cap: int, n_img: int, r: int) -> float:
    """Floating-point operations of the big products of scoring n_img images of r regions against n_cap
    captions of n_tok real words in all, for a model of configuration `cfg` (a `models.ModelConfig`).

    Every attention model: the word-region logits, 2·N_tok·N_img·R·D. Per-word text -> image heads
    (decoupled, blog) add the word-region similarities (2·N_tok·N_img·R·D) and αᵀGα
    (2·N_tok·N_img·R²); the pooled one adds the attended regions per caption (2·N_cap·N_img·R·D).
    Both ways (joint) adds the attended regions per caption (2·N_cap·N_img·R·D; per word with the
    per-word head, 2·N_tok·N_img·R·D) and the attended words per image (2·N_tok·N_img·D).
    """
    d = cfg.dim
    logits = 2.0 * n_tok * n_img * r * d
    flow, head = cfg.flow, cfg.head
    if flow == "none":
        return 2.0 * n_tok * d + 2.0 * n_cap * n_img * d
    if flow == "both":
        attended = (n_tok if head == "words" else n_cap) * 2.0 * n_img * r * d
        return logits + attended + 2.0 * n_tok * n_img * d
    if head == "pooled":
        return logits + 2.0 * n_cap * n_img * r * d
    return 2 * logits + 2.0 * n_tok * n_img * r * r


# ------------------------------------------------------------------------- training batches
# The same scores as `FactorialModel.score` / `BlogModel.score` for a (B, B) training batch, with
# gradients, but without the (captions, words, images, D) tensor of attended vectors: with a_t = Σ_r α_r v_r,
#   w·a_t = Σ_r α_r (w·v_r)   and   |a_t|² = αᵀ G α,  G = V Vᵀ (R x R per image),
# so every big tensor is (images, R, words): 2.6x smaller than (images, D, words) at R = 49, D = 128,
# and laid out so each product is a batched GEMM with no permuted copies (fwd + bwd ~4x faster).

def _attention_and_sims(attn, words, regions, values):
    """-> α (Ni, R, W) softmax over regions, sim (Ni, R, W) = v_r·w, |a|² (Ni, W), for W = Nt*T flat words."""
    nt, t, d = words.shape
    w = words.reshape(nt * t, d)
    alpha = (torch.matmul(attn.key(regions), attn.query(w).t()) / attn.temperature).softmax(1)
    sim = torch.matmul(values, w.t())
    gram = values @ values.transpose(1, 2)                                      # (Ni, R, R)
    a_sq = (alpha * (gram @ alpha)).sum(1)                                     # (Ni, W)
    return alpha, sim, a_sq


def _counting_padding_scores(attn, words, real, regions, values) -> torch.Tensor:
    """(Nt, T, D) words, (Nt, T) bool `real` (the real words; the rest are pads) -> (Ni, Nt) mean over all T
    positions of cos(w_t, a_t), as `batch_scores` for a model that counts padding. The caller has checked that every
    pad is the same word p (the zero token, projected): its cosine is computed once per image and counts (T - T_c)
    times in caption c's sum over its T_c real words."""
    (nt, t, _), ni = words.shape, len(regions)
    lengths = real.sum(1)                                                       # (Nt,)
    packed = torch.cat([words[real], words[~real][:1]])                         # (W + 1 or W, D): real words, one pad
    alpha, sim, a_sq = _attention_and_sims(attn, packed[None], regions, values)
    cos = (alpha * sim).sum(1) / (a_sq.clamp_min(1e-16).sqrt() * packed.norm(dim=-1)[None]).clamp_min(1e-8)
    owner = torch.arange(nt, device=words.device).repeat_interleave(lengths)   # caption of each real word
    sums = cos.new_zeros(ni, nt).index_add(1, owner, cos[:, :len(owner)])      # (Ni, Nt) sums over real words
    if len(packed) > len(owner):                                                # some caption has pads
        sums = sums + cos[:, -1:] * (t - lengths)[None]
    return sums / t


def batch_scores(model, img: dict, txt: dict) -> torch.Tensor:
    """(Ni, Nt) differentiable scores of a training batch: `model.score` up to float rounding, dispatched on
    the model's configuration (flow, head, value, mask_padding). `txt` is `model.encode_texts`'s, so a model
    with `text_length` has its captions at that length already."""
    cfg = model.cfg
    words, mask, regions = txt["words"], txt["mask"], img["regions"]
    check_mask(mask)
    (nt, t, d), ni = words.shape, len(regions)
    w_norm = words.norm(dim=-1).reshape(1, nt * t)
    if cfg.flow == "none":                                                      # image_t = v̄ for every word
        image = F.normalize(model.attn.value(regions).mean(1), dim=-1)         # (Ni, D)
        share = mask.float() / mask.float().sum(1, keepdim=True)
        if cfg.head == "words":                                                 # mean_t cos(w_t, v̄) = (mean_t ŵ_t)·v̂
            return image @ torch.einsum("ntd,nt->nd", F.normalize(words, dim=-1), share).t()
        return image @ F.normalize(torch.einsum("ntd,nt->nd", words, share), dim=-1).t()
    share = (mask.float() / mask.float().sum(1, keepdim=True))                  # (Nt, T)
    values = model.attn.value(regions) if cfg.value else regions
    if cfg.head != "words":
        # pooled: mean_t a_t = Σ_r ᾱ_r v_r with ᾱ = mean_t α_t, so no per-word attended vector is needed
        affinity = (torch.matmul(model.attn.key(regions), model.attn.query(words.reshape(nt * t, d)).t())
                    / model.attn.temperature)                                   # (Ni, R, Nt*T)
        alpha_bar = (affinity.softmax(1).view(ni, -1, nt, t) * share).sum(-1)   # (Ni, R, Nt)
        a_bar = torch.bmm(values.transpose(1, 2), alpha_bar)                    # (Ni, D, Nt)
        w_bar = torch.einsum("ntd,nt->dn", words, share)                        # (D, Nt)
        if cfg.flow == "text_to_image":
            return F.cosine_similarity(a_bar, w_bar[None], dim=1)
        # both ways: (w̄ + ā) against r̄ + Σ_t β̄_t u_t, β softmax over real words
        beta_bar = affinity.view(ni, -1, nt, t).masked_fill(~mask, float("-inf")).softmax(-1).mean(1)
        image = regions.mean(1)[:, None] + torch.einsum("mnt,ntd->mnd", beta_bar, model.text_value(words))
        return F.cosine_similarity(image, (w_bar[None] + a_bar).transpose(1, 2), dim=-1)
    real = txt.get("real")
    if not cfg.mask_padding and cfg.flow == "text_to_image" and real is not None and real.shape == mask.shape and \
            bool((words[~real] == words[~real][:1]).all()):               # every pad the same word (zero tokens)
        return _counting_padding_scores(model.attn, words, real, regions, values)
    alpha, sim, a_sq = _attention_and_sims(model.attn, words, regions, values)
    if cfg.flow == "text_to_image":
        cos = ((alpha * sim).sum(1) / (a_sq.clamp_min(1e-16).sqrt() * w_norm).clamp_min(1e-8)).view(ni, nt, t)
        return (cos * share).sum(-1) if cfg.mask_padding else cos.mean(-1)     # the blog: every position counts
    # both ways: text_t = w_t + a_t against g = r̄ + Σ_t β̄_t u_t (one vector per caption and image)
    r = regions.shape[1]
    affinity = torch.matmul(model.attn.key(regions), model.attn.query(words.reshape(nt * t, d)).t())
    affinity = (affinity / model.attn.temperature).view(ni, r, nt, t)
    beta_bar = affinity.masked_fill(~mask, float("-inf")).softmax(-1).mean(1)  # (Ni, Nt, T)
    g = regions.mean(1)[:, None] + torch.einsum("mnt,ntd->mnd", beta_bar, model.text_value(words))
    vg = torch.bmm(values, g.transpose(1, 2))                                   # (Ni, R, Nt)
    a_g = (alpha.view(ni, r, nt, t) * vg[..., None]).sum(1)                    # (Ni, Nt, T)
    w_g = torch.einsum("ntd,mnd->mnt", words, g)
    text_sq = (w_norm ** 2 + 2 * (alpha * sim).sum(1) + a_sq).view(ni, nt, t)
    cos = (w_g + a_g) / (text_sq.clamp_min(1e-16).sqrt() * g.norm(dim=-1)[..., None]).clamp_min(1e-8)
    return (cos * share).sum(-1)


FAST = Scoring(batch=batch_scores, all=score_all)


def agreement(model, features, n_images: int = 16) -> float:
    """The largest difference between this module's scores and the readable ones (`models.READABLE`) of
    `model` on the first `n_images` images of `features` and one caption of each: for that training batch
    (square, gradients off) and for all their captions. What a notebook prints beside the code it shows."""
    small = features.select_images(torch.arange(min(n_images, features.n_images)))
    first = torch.stack([(small.caption_image == i).nonzero()[0, 0] for i in range(small.n_images)])
    with torch.no_grad():
        img = model.eval().encode_images(*small.image_batch(torch.arange(small.n_images)))
        txt = model.encode_texts(*small.text_batch(first))
        batch = (batch_scores(model, img, txt) - model.score(img, txt)).abs().max()
    whole = (score_all(model, small) - readable_score_all(model, small)).abs().max()
    return float(max(batch, whole))
