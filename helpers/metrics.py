"""Step 06: cross-modal retrieval metrics for the COCO 1K protocol, and the words a verdict uses.

Conventions: `scores` is (N_img, N_cap), higher = more similar; `caption_image` is (N_cap,) long,
the row of each caption's image (5 captions per image, a few have 6). Torch or numpy accepted.

Ranks are 0-based: the number of *wrong* items scored at least as high as the correct one.
Image->text (i2t) ranks the best of the image's own captions among all captions;
text->image (t2i) ranks the caption's image among all images.
Tie rule (pessimistic): a wrong item whose score *equals* the correct one counts as ranked ahead,
so a constant score matrix gets the worst possible rank, never a lucky R@1.

How sure a number is, over test images and training seeds, is `helpers.intervals`; `verdict` and
`verdict_kept` turn an interval into a word.
"""
from __future__ import annotations

import numpy as np
import torch

KS = (1, 5, 10)
METRICS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "rsum")


def check_caption_image(caption_image, n_img: int) -> np.ndarray:
    """(N_cap,) caption -> image rows as an int64 array; ValueError unless they are integers, every caption
    has an image row in [0, n_img) and every image has at least one caption."""
    cap_img = caption_image.cpu().numpy() if isinstance(caption_image, torch.Tensor) else np.asarray(caption_image)
    if cap_img.ndim != 1 or cap_img.size == 0:
        raise ValueError(f"caption_image must be a non-empty (N_cap,) array, got shape {cap_img.shape}")
    if cap_img.dtype.kind not in "iu":
        raise ValueError(f"caption_image must hold integer image rows, got dtype {cap_img.dtype}; "
                         "pass the FeatureSet's caption_image, or round your indices and convert them with .long()")
    if cap_img.min() < 0 or cap_img.max() >= n_img:
        raise ValueError(f"caption_image must give each caption an image row in [0, {n_img}) (and every image "
                         f"needs at least one caption), got rows from "
                         f"{cap_img.min()} to {cap_img.max()}; score every image the captions name (one row each)")
    missing = np.flatnonzero(np.bincount(cap_img, minlength=n_img) == 0)
    if missing.size:
        raise ValueError(f"every image needs at least one caption; image rows {missing[:5].tolist()} have none "
                         f"({missing.size} in all): score only the images your captions belong to")
    return cap_img.astype(np.int64)


def check_ranking_inputs(scores: torch.Tensor, cap_img: torch.Tensor) -> None:
    """Raise ValueError if the scores are not a finite (N_img, N_cap) tensor, or the caption -> image rows
    do not fit them (see `check_caption_image`)."""
    if scores.ndim != 2 or cap_img.shape != (scores.shape[1],):
        raise ValueError(f"scores must be (N_img, N_cap) and caption_image (N_cap,); "
                         f"got {tuple(scores.shape)} and {tuple(cap_img.shape)}")
    if not torch.isfinite(scores).all():
        raise ValueError(f"scores contain {(~torch.isfinite(scores)).sum().item()} NaN or infinite values, which "
                         "would rank as hits or misses by accident; find where the model produced them (an empty "
                         "mask, a division by zero) and score again")
    check_caption_image(cap_img, scores.shape[0])


def i2t_ranks(scores: torch.Tensor, cap_img: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """(N_img, N_cap) scores, (N_cap,) caption images -> (N_img,) rank of each image's best own caption:
    how many *other* captions score at least as high (ties count against the model), 0 = first."""
    check_ranking_inputs(scores, cap_img)
    out = []
    for start in range(0, scores.shape[0], chunk):
        rows = torch.arange(start, min(start + chunk, scores.shape[0]), device=scores.device)
        s = scores[rows]                                              # (c, N_cap)
        own = cap_img[None, :] == rows[:, None]                       # (c, N_cap)
        best = s.masked_fill(~own, float("-inf")).amax(1, keepdim=True)
        out.append(((s >= best) & ~own).sum(1).cpu())
    return torch.cat(out)


def t2i_ranks(scores: torch.Tensor, cap_img: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """(N_img, N_cap) scores, (N_cap,) caption images -> (N_cap,) rank of each caption's image: how many
    *other* images score at least as high with the caption (ties count against the model), 0 = first."""
    check_ranking_inputs(scores, cap_img)
    out, images = [], torch.arange(scores.shape[0], device=scores.device)
    for start in range(0, scores.shape[1], chunk):
        s = scores[:, start:start + chunk]                            # (N_img, c)
        img = cap_img[start:start + chunk]                            # (c,)
        correct = s[img, torch.arange(len(img), device=s.device)]     # (c,)
        out.append(((s >= correct) & (images[:, None] != img)).sum(0).cpu())
    return torch.cat(out)


def ranks(scores, caption_image, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(N_img, N_cap) scores, (N_cap,) caption images -> (N_img,) i2t, (N_cap,) t2i 0-based ranks."""
    scores = torch.as_tensor(scores).float()
    cap_img = torch.as_tensor(caption_image).to(scores.device)
    return i2t_ranks(scores, cap_img, chunk).numpy(), t2i_ranks(scores, cap_img, chunk).numpy()


def recalls_from_ranks(img_rank, cap_rank, ks=KS) -> dict:
    """(..., N_img), (..., N_cap) ranks -> {"i2t_R@k", "t2i_R@k", "rsum"}, percent, shape (...)."""
    out = {}
    for direction, r in (("i2t", np.asarray(img_rank)), ("t2i", np.asarray(cap_rank))):
        for k in ks:
            out[f"{direction}_R@{k}"] = (r < k).sum(axis=-1) * 100.0 / r.shape[-1]
    out["rsum"] = sum(out.values())
    return out


def median_rank(rank) -> float:
    """(N,) 0-based ranks -> 1-based median rank, floor(median) + 1 as in the VSE++/SCAN code."""
    return float(np.floor(np.median(np.asarray(rank))) + 1)


def recall_table(scores, caption_image, ks=KS) -> dict:
    """(N_img, N_cap) scores, (N_cap,) caption images -> R@k (percent), rsum, i2t/t2i medr (1-based)."""
    img_rank, cap_rank = ranks(scores, caption_image)
    table = {name: float(v) for name, v in recalls_from_ranks(img_rank, cap_rank, ks).items()}
    table["i2t_medr"], table["t2i_medr"] = median_rank(img_rank), median_rank(cap_rank)
    return table


def verdict(lo: float, hi: float, claimed: float | None = None) -> str:
    """95% interval [lo, hi] for A - B -> "supported" / "not supported" / "inconclusive".

    With a claimed improvement c > 0: supported if lo > 0 and hi >= c (a real gain, and c is
    plausible); not supported if hi < c (the whole interval is below c: the true gain is credibly
    smaller than claimed, or absent); otherwise inconclusive.
    "not supported: credibly worse" when the whole interval is below zero.
    Without a claimed size: "A better" if lo > 0, "A credibly worse" if hi < 0, else "no credible difference".
    """
    if claimed is not None and claimed <= 0:
        raise ValueError(f"claimed must be a positive improvement, got {claimed}; "
                         "for 'no loss' claims use verdict_kept(lo, hi, margin)")
    if claimed is None:
        return "A better" if lo > 0 else "A credibly worse" if hi < 0 else "no credible difference"
    if hi < 0:
        return "not supported: credibly worse"
    return "supported" if lo > 0 and hi >= claimed else "not supported" if hi < claimed else "inconclusive"


def verdict_kept(lo: float, hi: float, margin: float) -> str:
    """95% interval [lo, hi] for A - B, margin >= 0 -> verdict on "A keeps B's performance".

    Non-inferiority: supported if lo > -margin (no credible loss larger than the margin);
    not supported if hi < -margin (a loss larger than the margin is credible); otherwise inconclusive.
    """
    if margin < 0:
        raise ValueError(f"margin is a tolerated loss in points and must be >= 0, got {margin}")
    return "supported" if lo > -margin else "not supported" if hi < -margin else "inconclusive"
