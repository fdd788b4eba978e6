"""Step 06 at scale: the published COCO retrieval protocols, 1K (five folds of the 5K test set) and 5K.

VSE++ and SCAN report "COCO 1K" as the mean over five consecutive 1,000-image folds of the 5,000-image
Karpathy test split (each fold ranked against its own 5,000 captions only), and "COCO 5K" as one ranking
of all 5,000 images against all 25,000 captions. Both reuse `metrics` (the pessimistic tie rule included).
Each fold's recalls are kept with the mean, so the spread between folds is visible (one posted run spans
several R@1 points across folds), and every summary names its numbers by their keys, never by position:
a table whose columns were swapped cannot print under the wrong labels.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .metrics import METRICS, check_caption_image, recall_table


def folds(caption_image, n_folds: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """(N_cap,) caption -> image rows -> per fold, (image rows, caption rows): consecutive equal blocks of
    images, each with all its captions (N_img must split into n_folds equal folds)."""
    cap_img = np.asarray(caption_image.cpu() if isinstance(caption_image, torch.Tensor) else caption_image)
    n_img = int(cap_img.max()) + 1 if cap_img.size else 0
    cap_img = check_caption_image(cap_img, n_img)
    if n_folds < 1 or n_img % n_folds:
        raise ValueError(f"{n_img} images do not split into {n_folds} equal folds; the 1K protocol needs "
                         f"5 x 1,000 images (the 5K test split)")
    size = n_img // n_folds
    return [(np.arange(f * size, (f + 1) * size), np.flatnonzero(cap_img // size == f)) for f in range(n_folds)]


def protocol_1k(scores, caption_image, n_folds: int = 5) -> pd.DataFrame:
    """(N_img, N_cap) scores of the 5K test split -> one row of recalls (percent), rSum and median ranks per
    fold, each fold scored against its own captions only, then the rows "mean" (the published 1K figure)
    and "min", "max" (the spread between folds)."""
    scores = torch.as_tensor(scores)
    cap_img = torch.as_tensor(np.asarray(caption_image.cpu() if isinstance(caption_image, torch.Tensor)
                                         else caption_image))
    rows = {}
    for f, (img_rows, cap_rows) in enumerate(folds(cap_img, n_folds)):
        block = scores[torch.as_tensor(img_rows)][:, torch.as_tensor(cap_rows)]
        rows[f"fold {f + 1}"] = recall_table(block, cap_img[torch.as_tensor(cap_rows)] - int(img_rows[0]))
    table = pd.DataFrame(rows).T
    return pd.concat([table, table.mean().rename("mean").to_frame().T, table.min().rename("min").to_frame().T,
                      table.max().rename("max").to_frame().T])


def protocol_5k(scores, caption_image) -> dict:
    """(N_img, N_cap) scores of the 5K test split -> recalls (percent), rSum and median ranks of one ranking."""
    return recall_table(scores, caption_image)


def summary(row, name: str) -> str:
    """One protocol's recalls (a dict or a row of `protocol_1k`) -> a line that names every number by its key."""
    row = dict(row)
    missing = [m for m in METRICS if m not in row]
    if missing:
        raise ValueError(f"the results lack {missing}; pass a row of protocol_1k or the dict of protocol_5k")
    i2t = " ".join(f"R@{k} {row[f'i2t_R@{k}']:.1f}" for k in (1, 5, 10))
    t2i = " ".join(f"R@{k} {row[f't2i_R@{k}']:.1f}" for k in (1, 5, 10))
    return f"{name}: image→text {i2t} | text→image {t2i} | rSum {row['rsum']:.1f}"
