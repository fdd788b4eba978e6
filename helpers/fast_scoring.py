"""Speed code: score every test image against every test caption near the matrix-multiply limit.

Nothing here changes what a model computes; it changes the order and the memory layout. The lines a
learner reads are `models.word_region_scores` and `JointModel.score`: they build one
(captions, words, images, regions) tensor per chunk of captions, hundreds of MB that stream through
main memory several times (softmax, product, sum), so they run memory-bound at a fraction of the CPU's
arithmetic rate. The versions here

- project keys and values of all images once (the readable path re-projects them per caption chunk);
- walk the (word, region) logits in tiles of a few hundred words × a few dozen images, so each tile's
  logits, softmax and weighted sum stay in cache, and only the (words, images) result is written;
- keep captions packed (no padding) for per-word models: a caption's score is the mean of its own
  words' rows, taken with one small product per tile.

`python -m helpers.bench score` times both against the floor (the flops of the big products divided by
the measured peak matrix-multiply rate); `tests/test_fast_scoring.py` checks they agree up to rounding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

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


@torch.inference_mode()
def packed_word_region_scores(attn, words: torch.Tensor, lengths: torch.Tensor, regions: torch.Tensor,
                              word_tile: int | None = None, image_tile: int | None = None) -> torch.Tensor:
    """(N_tok, D) packed real words, (N_cap,) words per caption, (N_img, R, D) regions -> (N_cap, N_img).

    The same score as `models.word_region_scores` (mean over a caption's real words of
    Σ_r softmax_r(q·k/τ) cos(w, v_r)), tile by tile.
    """
    word_tile, image_tile = word_tile or WORD_TILE, image_tile or IMAGE_TILE
    n_img, r, d = regions.shape
    dh = d // attn.heads
    q = attn.query(words) / attn.temperature                                   # (N_tok, D)
    w = F.normalize(words, dim=-1)
    k = attn.key(regions)                                                      # (N_img, R, D)
    v = F.normalize(attn.value(regions) if attn.value is not None else regions, dim=-1)
    offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
    out = torch.empty(len(lengths), n_img)
    for c0, c1 in _caption_tiles(lengths, word_tile):
        t0, t1 = int(offsets[c0]), int(offsets[c1])
        # (captions, words) averaging matrix: row c holds 1/T_c on caption c's words
        owner = torch.repeat_interleave(torch.arange(c1 - c0), lengths[c0:c1])
        mean = torch.zeros(c1 - c0, t1 - t0)
        mean[owner, torch.arange(t1 - t0)] = 1.0 / lengths[c0:c1][owner].float()
        for i0 in range(0, n_img, image_tile):
            i1 = min(i0 + image_tile, n_img)
            per_word = 0
            for h in range(attn.heads):
                sl = slice(h * dh, (h + 1) * dh)
                kh = k[i0:i1, :, sl].reshape(-1, dh)
                vh = v[i0:i1, :, sl].reshape(-1, dh)
                alpha = torch.softmax((q[t0:t1, sl] @ kh.t()).view(t1 - t0, i1 - i0, r), dim=-1)
                sim = (w[t0:t1, sl] @ vh.t()).view(t1 - t0, i1 - i0, r)
                per_word = per_word + torch.linalg.vecdot(alpha, sim)            # (words, images)
            out[c0:c1, i0:i1] = mean @ per_word
    return out


@torch.inference_mode()
def joint_scores(model, words: torch.Tensor, mask: torch.Tensor, prepared: dict,
                 image_tile: int | None = None) -> torch.Tensor:
    """(Nt, T, D) words, (Nt, T) mask, `prepare_joint_images` of Ni images -> (Ni, Nt): `JointModel.score`.

    Both softmaxes (over regions for the words, over words for the regions) share one exponential:
    E = exp(affinity - c) with c the largest affinity of the (caption, image) pair, so each tile is
    exponentiated once. A tile where some row's sum falls below 1e-20 (logits spread over more than ~46,
    where float32 would start losing digits) is recomputed with two separate softmaxes.
    """
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
    out = torch.empty(ni, nt)
    for i0 in range(0, ni, image_tile):
        i1 = min(i0 + image_tile, ni)
        aff = (q @ k1[i0:i1].reshape(-1, d + 1).t()).view(nt, t, i1 - i0, r)
        e = aff.sub_(aff.amax(dim=(1, 3), keepdim=True)).exp_()              # (Nt, T, m, R), pads ~0
        z_regions = e.sum(-1)                                                  # (Nt, T, m)
        z_words = e.sum(1)                                                     # (Nt, m, R)
        if (z_regions.masked_fill(~mask[:, :, None], 1.0) < 1e-20).any() or (z_words < 1e-20).any():
            aff = (q @ k1[i0:i1].reshape(-1, d + 1).t()).view(nt, t, i1 - i0, r)
            alpha_bar = torch.einsum("ntmr,nt->nmr", torch.softmax(aff, -1), share)
            beta_bar = torch.softmax(aff, 1).mean(-1)
        else:
            # alpha_bar = Σ_t share_t e / z_regions;  beta_bar = mean_r e / z_words
            alpha_bar = torch.linalg.vecdot(e, (share[..., None] / z_regions.clamp_min(1e-30))[..., None], dim=1)   # (Nt, m, R)
            beta_bar = torch.linalg.vecdot(e, (1 / (r * z_words))[:, None], dim=-1)              # (Nt, T, m)
        text_mix = w_bar[:, None] + torch.bmm(alpha_bar.transpose(0, 1), values[i0:i1]).transpose(0, 1)
        image_mix = mean[i0:i1, None] + torch.bmm(beta_bar.transpose(1, 2), u).transpose(0, 1)
        out[i0:i1] = F.cosine_similarity(image_mix, text_mix.transpose(0, 1), dim=-1)
    return out


def prepare_joint_images(model, regions: torch.Tensor) -> dict:
    """(Ni, R, D) projected regions -> keys, values (Ni, R, D) and mean region (Ni, D) of `JointModel`."""
    return {"keys": model.attn.key(regions), "values": model.attn.value(regions), "mean": regions.mean(1)}


@torch.inference_mode()
def fast_score_all(model, features, device, image_rows: torch.Tensor, caption_rows: torch.Tensor
                   ) -> torch.Tensor | None:
    """`models.score_all` for the models this module knows (-> (N_img, N_cap)), else None."""
    from .models import DecoupledModel, DecoupledPlusModel, JointModel

    if not isinstance(model, (DecoupledModel, DecoupledPlusModel, JointModel)):
        return None                                                             # dual: one GEMM already
    regions, pooled = features.image_batch(image_rows)
    img = model.encode_images(regions.to(device), pooled.to(device))
    if isinstance(model, (DecoupledModel, DecoupledPlusModel)):
        if isinstance(model, DecoupledModel) and model.cfg.attention == "blog":
            return None                                                         # padding counts there
        lengths = features.lengths()[caption_rows]
        starts = features.offsets[caption_rows]                                 # the captions' packed token rows
        rows = torch.repeat_interleave(starts - torch.cat([starts.new_zeros(1), lengths.cumsum(0)[:-1]]), lengths)
        tokens = features.tokens[rows + torch.arange(int(lengths.sum()))].float().to(device)
        mask = torch.ones(len(tokens), 1, dtype=torch.bool, device=device)
        words = model.encode_texts(tokens[:, None], mask, None)["words"][:, 0]  # (N_tok, D): per token
        return packed_word_region_scores(model.attn, words, lengths, img["regions"]).t().contiguous()
    if isinstance(model, JointModel):
        prepared = prepare_joint_images(model, img["regions"])
        lengths = features.lengths()[caption_rows]
        order = lengths.argsort()
        out = torch.empty(len(image_rows), len(caption_rows))
        for c0, c1 in _caption_tiles(lengths[order].max().expand(len(order)), WORD_TILE):
            cols = order[c0:c1]                           # sorted by length: each chunk pads little
            tokens, mask, tpooled = features.text_batch(caption_rows[cols])
            txt = model.encode_texts(tokens.to(device), mask.to(device), tpooled.to(device))
            out[:, cols] = joint_scores(model, txt["words"], txt["mask"], prepared).float().cpu()
        return out
    return None
