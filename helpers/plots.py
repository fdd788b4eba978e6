"""Figures: images with captions and credits, preprocessing side by side, attention maps, curves."""
from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from .encoders import IMAGENET_MEAN, IMAGENET_STD


# COCO's licence ids (captions.json "licenses"). Shown: the licence lets anyone redistribute the image (CC BY,
# CC BY-SA, no known copyright restrictions, US Government work). Drawn: it also lets a derivative (a heatmap,
# boxes, a crop) be published without share-alike terms binding the figure (BY-SA would).
SHOWN_LICENCES = {4, 5, 7, 8}
DRAWN_LICENCES = {4, 7, 8}


def licensed(subset, image_ids, drawn: bool = False) -> list[int]:
    """The ids among image_ids whose licence lets the course show them (drawn=True: draw over them)."""
    allowed = DRAWN_LICENCES if drawn else SHOWN_LICENCES
    return [int(i) for i in image_ids if int(subset.images.loc[int(i), "license"]) in allowed]


def _licence(subset, image_id: int) -> str:
    return subset.licenses[int(subset.images.loc[image_id, "license"])]["name"]


def _credit(subset, image_id: int) -> str:
    return f"id {image_id} · {_licence(subset, image_id).replace('Attribution', 'CC BY')}"


def _credit_lines(subset, image_ids, drawn: bool = False) -> list[int]:
    """Print one credit line per image: 'shown: COCO id · licence · source', or 'not shown: ...' where the
    licence forbids it. Returns the ids that may be shown."""
    ok = licensed(subset, image_ids, drawn)
    for i in image_ids:
        print(("shown: " + subset.credit(i)) if i in ok else
              f"not shown: COCO {i} · {_licence(subset, i)} (its licence does not allow "
              f"{'a figure drawn over it' if drawn else 'redistribution'})")
    return ok


def _require_drawable(subset, image_id: int) -> None:
    if int(image_id) not in licensed(subset, [image_id], drawn=True):
        raise ValueError(f"image {image_id} is licensed '{_licence(subset, image_id)}', which does not allow "
                         f"publishing a figure drawn over it; pick one of plots.licensed(subset, ids, drawn=True) "
                         f"(licence ids {sorted(DRAWN_LICENCES)})")


def _placeholder(ax, subset, image_id: int) -> None:
    ax.set_facecolor("0.9"); ax.set_xticks([]); ax.set_yticks([])
    ax.text(0.5, 0.5, f"COCO {image_id}\nnot shown:\nits licence\nforbids it", ha="center", va="center",
            fontsize=8, transform=ax.transAxes)


def show_images(subset, image_ids, ncols: int = 3, n_captions: int = 2, marks: dict | None = None,
                width: float = 4.2):
    """Grid of images, each titled with its first captions and credited (licence inside the image, Flickr
    URL in the printed credit lines); an image whose licence forbids showing it is a grey placeholder."""
    ok = _credit_lines(subset, image_ids)
    nrows = -(-len(image_ids) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, width * nrows * 0.95), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, image_ids):
        caps = subset.captions_of(i)[:n_captions]                 # captions are CC BY 4.0: always shown
        ax.set_title("\n".join(textwrap.fill(c, 44) for c in caps), fontsize=8)
        if i not in ok:
            ax.axis("on"); _placeholder(ax, subset, i)
            continue
        ax.imshow(subset.load_image(i))
        ax.text(0.01, 0.01, _credit(subset, i), transform=ax.transAxes, fontsize=7, va="bottom",   # inside the
                bbox=dict(facecolor="white", alpha=0.75, lw=0, pad=1.5))                          # image: no overlap
        if marks and i in marks:
            for s in ax.spines.values():
                s.set_visible(True); s.set_color(marks[i]); s.set_linewidth(4)
            ax.axis("on"); ax.set_xticks([]); ax.set_yticks([])
    fig.tight_layout()
    return fig


def credits_table(subset, image_ids) -> pd.DataFrame:
    """Image id, licence and Flickr source of each shown image (the attribution the licences ask for)."""
    rows = subset.images.loc[list(image_ids)]
    return pd.DataFrame({"licence": [subset.licenses[lic]["name"] for lic in rows.license],
                         "flickr_url": rows.flickr_url.values}, index=pd.Index(list(image_ids), name="image_id"))


def unnormalize(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) ImageNet-normalised tensor -> (H, W, 3) array in [0, 1] for imshow."""
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return (x * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def compare_preprocessing(subset, image_id: int, transforms: dict, width: float = 3.6):
    """The original image beside what each named transform hands the network (crops: a derivative)."""
    _require_drawable(subset, image_id)
    _credit_lines(subset, [image_id], drawn=True)
    image = subset.load_image(image_id)
    fig, axes = plt.subplots(1, len(transforms) + 1, figsize=(width * (len(transforms) + 1), width))
    axes[0].imshow(image); axes[0].set_title(f"original {image.width}×{image.height}")
    for ax, (name, t) in zip(axes[1:], transforms.items()):
        x = t(image)
        ax.imshow(unnormalize(x)); ax.set_title(f"{name}\n{tuple(x.shape)}")
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig


def attention_maps(subset, image_id: int, weights: torch.Tensor, words: list[str], grid: int = 7, ncols: int = 4,
                   width: float = 3.0, boxes: list | None = None):
    """(T, R) attention of each word over a grid×grid map, drawn over the 224×224 image the model saw;
    refused for an image whose licence does not allow a derivative.

    boxes: per word, None or (B, 4) COCO boxes (x, y, w, h) in the original image's pixels (for example
    the instances of the category the word names, `pointing.word_boxes`), drawn in cyan.
    """
    _require_drawable(subset, image_id)
    _credit_lines(subset, [image_id], drawn=True)
    image = subset.load_image(image_id)
    img = np.asarray(image.resize((224, 224)))
    sx, sy = 224 / image.width, 224 / image.height
    n = len(words)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, width * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    vmax = float(weights.max())                          # one colour scale for all words
    for k, (ax, w, word) in enumerate(zip(axes.flat, weights, words)):
        ax.imshow(img)
        ax.imshow(w.reshape(grid, grid).numpy(), cmap="magma", alpha=0.55, extent=(0, 224, 224, 0),
                  interpolation="nearest", vmin=0, vmax=vmax)
        ax.set_title(f"'{word}'  max {w.max():.2f}", fontsize=9)
        for (x, y, bw, bh) in (boxes[k] if boxes is not None and boxes[k] is not None else []):
            ax.add_patch(plt.Rectangle((x * sx, y * sy), bw * sx, bh * sy, fill=False, color="cyan", lw=1.5))
    fig.tight_layout()
    return fig


def training_curves(histories: dict[str, pd.DataFrame]):
    """Training loss and validation rSum per epoch, one line per model; a star at each run's best epoch."""
    df = pd.concat([h.assign(model=name) for name, h in histories.items()], ignore_index=True)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    sns.lineplot(df, x="epoch", y="train_loss", hue="model", marker="o", ax=axes[0])
    axes[0].set(title="training loss (InfoNCE + model's own terms)", ylabel="loss per batch")
    sns.lineplot(df, x="epoch", y="rsum", hue="model", marker="o", ax=axes[1], legend=False)
    best = df.loc[df.groupby("model", sort=False).rsum.idxmax()]
    axes[1].scatter(best.epoch, best.rsum, marker="*", s=180, color="black", zorder=3, label="best epoch (kept)")
    axes[1].legend(loc="lower right", fontsize=8)
    axes[1].set(title="validation rSum (250 images, 6 recalls summed)", ylabel="rSum (max 600)")
    axes[0].legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def text_query(subset, caption: str, ranked_ids: list[int], correct_id: int, width: float = 2.6):
    """One caption's top-k images, the correct one framed green (others red), each credited; an image whose
    licence forbids showing it is a grey placeholder."""
    ok = _credit_lines(subset, ranked_ids)
    fig, axes = plt.subplots(1, len(ranked_ids), figsize=(width * len(ranked_ids), width * 1.05))
    for rank, (ax, i) in enumerate(zip(axes, ranked_ids), 1):
        if i in ok:
            ax.imshow(subset.load_image(i).resize((224, 224)))
        else:
            _placeholder(ax, subset, i)
        ax.set_xticks([]); ax.set_yticks([])
        for s in ax.spines.values():
            s.set_color("green" if i == correct_id else "red"); s.set_linewidth(4 if i == correct_id else 1)
        ax.set_title(f"#{rank}" + (" ✓" if i == correct_id else ""), fontsize=9)
        ax.set_xlabel(_credit(subset, i), fontsize=6)
    fig.suptitle(textwrap.fill(f"query: “{caption}”", 100), fontsize=10)
    fig.tight_layout()
    return fig


def rsum_with_intervals(results: pd.DataFrame, anchors: dict[str, float] | None = None):
    """rSum per model (mean over seeds, 95% interval bars), with published anchors as lines named in a legend."""
    r = results[results.metric == "rsum"].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.bar(r.model, r["mean"], color=sns.color_palette()[: len(r)])
    ax.errorbar(r.model, r["mean"], yerr=[r["mean"] - r.lo, r.hi - r["mean"]], fmt="none", color="black", capsize=6)
    for (name, value), style in zip((anchors or {}).items(), ["--", ":", "-."]):
        ax.axhline(value, ls=style, color="dimgrey", label=f"{name}: {value}")
    if anchors:
        ax.legend(loc="center right", fontsize=8, title="published, COCO 1K test", title_fontsize=8)
        ax.set_ylim(0, 1.1 * max(anchors.values()))
    ax.set(ylabel="rSum on the 1K test (max 600)", title="retrieval, mean over seeds with 95% intervals")
    ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    return fig


def forest(table: pd.DataFrame, label: str = "variant", group: str = "group"):
    """One row per comparison: the difference (dot) and its 95% interval (bar), zero dashed; rows grouped,
    coloured by the table's corrected `verdict` where it has one (e.g. `ablations.ablation_table`'s, after Holm),
    else by whether the interval excludes zero."""
    t = table.iloc[::-1].reset_index(drop=True)                  # first row on top
    if "verdict" in t:
        worse, better = t.verdict.str.contains("credibly worse"), t.verdict.isin(["better", "A better"])
    else:
        worse, better = t.hi < 0, t.lo > 0
    colour = np.where(better, "tab:green", np.where(worse, "tab:red", "dimgrey"))
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(t) + 1.2))
    ax.hlines(t.index, t.lo, t.hi, color=colour, lw=2.5)
    ax.scatter(t.difference, t.index, color=colour, zorder=3)
    ax.axvline(0, ls="--", color="grey")
    ax.set_yticks(t.index, [f"{v}  ({g.split()[-1].rstrip('s')})" if group else v
                            for v, g in zip(t[label], t[group] if group else t[label])])
    ax.set(xlabel="change of rSum vs decoupled (points; 95% interval)",
           title="one change at a time: green credibly better, red credibly worse, grey neither (after any correction)")
    ax.title.set_fontsize(9)
    fig.tight_layout()
    return fig


def scale_curve(table: pd.DataFrame, n_train: dict[float, int]):
    """rSum against the number of training images, one line per model with 95% interval bars."""
    models = table[~table.what.str.contains(" - ")]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for k, (name, rows) in enumerate(models.groupby("what", sort=False)):
        x = np.array([n_train[f] for f in rows.fraction]) * (1 + 0.015 * (k - 1))   # a nudge keeps bars apart
        ax.errorbar(x, rows.value, yerr=[rows.value - rows.lo, rows.hi - rows.value], marker="o", capsize=4,
                    label=name)
    ax.set_xscale("log")
    ax.set_xticks(sorted(n_train.values()), [str(n) for n in sorted(n_train.values())])
    ax.minorticks_off()
    ax.set(xlabel="training images (log scale; captions come with them)", ylabel="rSum on the 1K test (max 600)",
           title="more data, same validation and test: mean over 3 seeds, 95% intervals")
    ax.title.set_fontsize(9)
    ax.legend()
    fig.tight_layout()
    return fig
