"""Step 07: where does each word look? Word-over-region attention maps and the pointing game.

The blog says decoupled attention gives "better interpretability". Attention maps are easy to
show and easy to over-read, so this module also measures them: in the *pointing game* a word that
names a COCO category (say "dog") scores a hit when its attention peak falls inside a box of that
category in the image, and is compared with a uniform-attention baseline (a random cell).

Geometry: the image was squashed to 224x224 before the CNN, so the 7x7 grid of regions (row-major:
region r is row r // 7, column r % 7) spans the whole image whatever its aspect ratio, and cell
(i, j) has its centre at x = (j + 0.5) / 7 * width, y = (i + 0.5) / 7 * height.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from .config import TEXT_MAX_LENGTH
from .data import NOT_AFTER, SYNONYMS, TWO_WORD, _plurals, load_subset, rows_without_people
from .encoders import load_tokenizer  # noqa: F401 - word pieces for the maps, without the text model
from .features import FeatureSet

SPECIAL = ("[CLS]", "[SEP]", "[PAD]")


# ------------------------------------------------------------------------------- tokens

def caption_tokens(tokenizer, caption: str) -> list[str]:
    """A caption -> its word pieces as the text encoder saw them: [CLS] ... [SEP], truncated like the features."""
    ids = tokenizer(caption, truncation=True, max_length=TEXT_MAX_LENGTH)["input_ids"]
    return tokenizer.convert_ids_to_tokens(ids)


# ---------------------------------------------------------------------------- attention

def _check_attention_model(model) -> None:
    if model.cfg.flow == "none":
        raise ValueError(f"{model.cfg.name} has no word -> region attention to look at (its flow is 'none'); "
                         "use 'decoupled', 'blog' (or 'joint', whose words attend too)")


@torch.inference_mode()
def attention_maps(model, fs: FeatureSet, image_rows: torch.Tensor, caption_rows: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) image rows, (B,) caption rows -> (B, T, R) attention of each word over its image's regions
    (heads averaged; rows of padded words are 0), (B, T) bool mask of real tokens.

    Works for every model whose words attend over regions (decoupled, the blog's module, and joint's
    word -> region direction)."""
    _check_attention_model(model)
    model.eval()
    img = model.encode_images(*fs.image_batch(torch.as_tensor(image_rows)))
    tokens, mask, pooled = fs.text_batch(torch.as_tensor(caption_rows))
    words = model.encode_texts(tokens, mask, pooled)["words"][:, :mask.shape[1]]     # text_length's pads cut
    _, weights = model.attn(words, img["regions"], text_mask=mask)                      # (B, H, T, R)
    return weights.mean(1), mask


def caption_text(subset, caption_id: int) -> str:
    """A caption id -> its text."""
    caps = subset.captions
    return caps.caption[caps.caption_id == int(caption_id)].iloc[0]


def word_attention(model, fs: FeatureSet, image_row: int, caption_row: int, subset=None, tokenizer=None
                   ) -> tuple[torch.Tensor, list[str]]:
    """One image and one caption -> (T, R) attention of each real token over the R regions, the T tokens."""
    subset = subset if subset is not None else load_subset()
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer()
    tokens = caption_tokens(tokenizer, caption_text(subset, fs.caption_ids[caption_row]))
    check_lengths(tokens, int(fs.lengths()[caption_row]), int(fs.caption_ids[caption_row]))
    weights, _ = attention_maps(model, fs, torch.tensor([image_row]), torch.tensor([caption_row]))
    return weights[0, : len(tokens)], tokens


def check_lengths(tokens: list[str], stored: int, caption_id: int) -> None:
    """Raise if the tokenizer's pieces do not line up with the stored features of a caption."""
    if len(tokens) != stored:
        raise ValueError(f"caption {caption_id}: the tokenizer gives {len(tokens)} tokens but the cached "
                         f"features hold {stored}; the features were built with another text encoder. "
                         "Pass the matching tokenizer (load_tokenizer(<its name>)).")


def as_grid(weights: torch.Tensor) -> torch.Tensor:
    """(..., R) weights over regions -> (..., h, w) on the image grid (row-major, R = h * w square)."""
    side = math.isqrt(weights.shape[-1])
    return weights.unflatten(-1, (side, side))


# ---------------------------------------------------------------------- words -> categories

def word_category_tables() -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """-> {word form: category} for one-word names (plurals included), {(previous, last word): category}
    for two-word names such as ('traffic', 'lights') -> 'traffic light'."""
    single, pairs = {}, {}
    for cat, words in SYNONYMS.items():
        phrases = [p for p in TWO_WORD if p in words]
        for p in phrases:
            first, last = p.rsplit(" ", 1)
            pairs.update({(first, form): cat for form in _plurals(last)})
        for w in words.split():
            if not any(w in p.split() for p in phrases):
                single.update({form: cat for form in _plurals(w)})
    return single, pairs


def token_categories(tokens: list[str], tables=None) -> list[str | None]:
    """T word pieces -> T categories (None where a token names none).

    A token counts only as a whole word: word pieces ('##s') and words split into pieces (a token
    followed by a '##' piece) are skipped, as are [CLS]/[SEP]. A two-word name is matched on its last
    word when the previous token is its first word ('traffic light' -> the token 'light'); a word
    after its veto in `data.NOT_AFTER` names nothing ('hot dog' is food, not a dog; 'teddy bear' a toy).
    """
    single, pairs = tables or word_category_tables()
    out = []
    for t, tok in enumerate(tokens):
        nxt = tokens[t + 1] if t + 1 < len(tokens) else ""
        prev = tokens[t - 1] if t > 0 else ""
        if tok in SPECIAL or tok.startswith("##") or nxt.startswith("##"):
            out.append(None)
            continue
        cat = pairs.get((prev, tok)) or single.get(tok)
        out.append(None if cat in NOT_AFTER and NOT_AFTER[cat] == prev else cat)
    return out


# ------------------------------------------------------------------------- pointing game

def cell_centres(width: float, height: float, side: int = 7) -> np.ndarray:
    """-> (side*side, 2) x, y of each grid cell's centre in image pixels, row-major like the regions."""
    i, j = np.divmod(np.arange(side * side), side)
    return np.stack([(j + 0.5) / side * width, (i + 0.5) / side * height], 1)


def inside_any(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(P, 2) x, y points, (B, 4) COCO boxes (x, y, w, h) -> (P,) bool: inside at least one box (edges count)."""
    p, b = np.asarray(points, float)[:, None, :], np.asarray(boxes, float).reshape(-1, 4)[None]
    inside = (p[..., 0] >= b[..., 0]) & (p[..., 0] <= b[..., 0] + b[..., 2]) & \
             (p[..., 1] >= b[..., 1]) & (p[..., 1] <= b[..., 1] + b[..., 3])
    return inside.any(1)


def category_boxes(subset, image_id: int) -> dict[str, np.ndarray]:
    """An instance-labelled image -> {category name: (B, 4) boxes}, crowd boxes left out."""
    inst = subset.instances
    out: dict[str, list] = {}
    for a in inst.imgToAnns[int(image_id)]:
        if not a.get("iscrowd", 0):
            out.setdefault(inst.cats[a["category_id"]]["name"], []).append(a["bbox"])
    return {c: np.array(b, float) for c, b in out.items()}


def word_boxes(subset, image_id: int, tokens: list[str]) -> list[np.ndarray | None]:
    """T word pieces of a caption of an instance-labelled image -> per token, the (B, 4) boxes of the
    category it names when that category is boxed in the image (what the pointing game scores), else None."""
    boxes = category_boxes(subset, image_id)
    return [boxes.get(cat) if cat else None for cat in token_categories(tokens)]


def pointing_examples(fs: FeatureSet, subset, tokenizer=None, n: int = 2, min_words: int = 2,
                      allowed=None) -> list[tuple[int, int]]:
    """The first n (image row, caption row) pairs of fs whose image has instance boxes and no person in
    its captions, and whose caption names at least `min_words` categories boxed in it: maps to show.
    allowed: image ids that may be drawn over (e.g. `plots.licensed(subset, ids, drawn=True)`); None: any."""
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer()
    labelled = set(subset.instance_image_ids())
    if allowed is not None:
        labelled &= {int(i) for i in allowed}
    out = []
    for row in rows_without_people(subset, fs.image_ids):
        image_id = int(fs.image_ids[row])
        if image_id not in labelled:
            continue
        for cap in (fs.caption_image == row).nonzero().squeeze(1).tolist():
            tokens = caption_tokens(tokenizer, caption_text(subset, int(fs.caption_ids[cap])))
            if sum(b is not None for b in word_boxes(subset, image_id, tokens)) >= min_words:
                out.append((row, cap))
                break
        if len(out) == n:
            break
    return out


COLUMNS = ["image_id", "caption_id", "word", "category", "hit", "baseline", "centre_hit"]


def _word_cases(model, fs: FeatureSet, subset, tokenizer, chunk: int):
    """Yield (case row of `pointing_game`, image row, caption row, (R,) attention of the word) per scored word."""
    tables = word_category_tables()
    labelled = set(subset.instance_image_ids())
    image_rows = [r for r, i in enumerate(fs.image_ids.tolist()) if i in labelled]
    captions = torch.isin(fs.caption_image, torch.tensor(image_rows)).nonzero().squeeze(1)
    text = subset.captions.set_index("caption_id").caption
    side = math.isqrt(fs.regions.shape[1])
    boxes = {}
    for part in captions.split(chunk):
        weights, _ = attention_maps(model, fs, fs.caption_image[part], part)
        peaks = weights.argmax(-1)                                                      # (B, T)
        for b, row in enumerate(part.tolist()):
            image_id, caption_id = int(fs.image_ids[fs.caption_image[row]]), int(fs.caption_ids[row])
            tokens = caption_tokens(tokenizer, text[caption_id])
            check_lengths(tokens, int(fs.lengths()[row]), caption_id)
            if image_id not in boxes:
                w, h = subset.images.loc[image_id, ["width", "height"]]
                centres = cell_centres(w, h, side)
                boxes[image_id] = {c: inside_any(centres, bx) for c, bx in category_boxes(subset, image_id).items()}
            for t, cat in enumerate(token_categories(tokens, tables)):
                if cat is None or cat not in boxes[image_id]:
                    continue
                inside = boxes[image_id][cat]                                           # (R,) cells in a box
                peak = int(peaks[b, t])
                yield ({"image_id": image_id, "caption_id": caption_id, "word": tokens[t], "category": cat,
                        "hit": bool(inside[peak]), "baseline": float(inside.mean()),
                        "centre_hit": bool(inside[len(inside) // 2])}, int(fs.caption_image[row]), row, weights[b, t])


@torch.inference_mode()
def pointing_game(model, fs: FeatureSet, subset, tokenizer=None, chunk: int = 256) -> pd.DataFrame:
    """Every (caption, word) of fs's instance-labelled images where the word names a category boxed in
    that image -> DataFrame: image_id, caption_id, word, category, hit (peak cell centre in a box of
    the category), baseline (share of the cell centres in such a box: a uniformly random cell's hit rate),
    centre_hit (whether the centre cell is in such a box: a second baseline, as objects sit near the middle).
    """
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer()
    rows = [case for case, *_ in _word_cases(model, fs, subset, tokenizer, chunk)]
    return pd.DataFrame(rows, columns=COLUMNS)


# ------------------------------------------------------------------- faithfulness: the deletion test

DELETED = ("peak", "random", "centre")     # the region zeroed: the word's peak, a random other one, the centre


@torch.inference_mode()
def pair_scores_without(model, fs: FeatureSet, image_rows: torch.Tensor, caption_rows: torch.Tensor,
                        regions: torch.Tensor | None = None, chunk: int = 256) -> torch.Tensor:
    """(B,) image rows, (B,) caption rows, paired row by row, (B,) region to zero in each image (None: none)
    -> (B,) the model's score of each pair (`model.pair_scores`) with that region's frozen features set to 0."""
    image_rows, caption_rows = torch.as_tensor(image_rows), torch.as_tensor(caption_rows)
    if len(image_rows) != len(caption_rows) or (regions is not None and len(regions) != len(image_rows)):
        raise ValueError("image_rows, caption_rows (and regions) must have one entry per pair")
    n_regions = fs.regions.shape[1]
    if regions is not None and len(regions) and not (0 <= int(regions.min()) and int(regions.max()) < n_regions):
        raise ValueError(f"regions to zero must lie in [0, {n_regions}); got {int(regions.min())}..{int(regions.max())}")
    model.eval()
    pad_to, out = int(fs.lengths().max()), []
    for part in torch.arange(len(image_rows)).split(chunk):
        feats, pooled = fs.image_batch(image_rows[part])
        if regions is not None:
            feats[torch.arange(len(part)), regions[part]] = 0
            pooled = feats.mean(1)
        img = model.encode_images(feats, pooled)
        out.append(model.pair_scores(img, model.encode_texts(*fs.text_batch(caption_rows[part], pad_to=pad_to))))
    return torch.cat(out).float()


@torch.inference_mode()
def deletion_game(model, fs: FeatureSet, subset, tokenizer=None, seed: int = 0, chunk: int = 256) -> pd.DataFrame:
    """The pointing game's cases, each with a faithfulness test -> `pointing_game`'s columns and score (the
    caption-image score), drop_peak, drop_random, drop_centre (score minus the score with that region's
    features zeroed: the word's attention peak, a random other region drawn with `seed`, the centre cell),
    effect = drop_peak - drop_random.

    Plausibility (`hit`) asks whether the peak lies on the named object; faithfulness asks whether the
    score depends on the region attention picked: effect > 0 means zeroing it costs more than zeroing
    another. Both can fail separately: a peak on the object that the score ignores is plausible, unfaithful.
    """
    _check_attention_model(model)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer()
    cases = list(_word_cases(model, fs, subset, tokenizer, chunk))
    df = pd.DataFrame([c for c, *_ in cases], columns=COLUMNS)
    if not cases:
        return df.assign(score=[], drop_peak=[], drop_random=[], drop_centre=[], effect=[])
    images = torch.tensor([i for _, i, _, _ in cases])
    captions = torch.tensor([c for _, _, c, _ in cases])
    peak = torch.stack([w for *_, w in cases]).argmax(-1)
    n_regions = fs.regions.shape[1]
    shift = torch.randint(1, n_regions, (len(cases),), generator=torch.Generator().manual_seed(seed))
    zeroed = {"peak": peak, "random": (peak + shift) % n_regions, "centre": torch.full_like(peak, n_regions // 2)}
    score = pair_scores_without(model, fs, images, captions, chunk=chunk)
    df["score"] = score.numpy()
    for name in DELETED:
        df[f"drop_{name}"] = (score - pair_scores_without(model, fs, images, captions, zeroed[name], chunk)).numpy()
    return df.assign(effect=df.drop_peak - df.drop_random)
