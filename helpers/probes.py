"""Step 07, unimodal probes: what a trained model's image and caption vectors still say on their own.

The blog claims decoupled attention keeps "unimodal performance". Here that is measured with one
fixed protocol: a linear probe (standardise, one logistic regression per COCO category, mean
average precision on the test split) on one vector per image and one per caption, for the raw
frozen features and for each trained model. A second probe asks whether the two modalities stay
apart at all (`modality_probe`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from .data import mine_labels
from .features import FeatureSet
from .models import masked_mean

DROPPED = ("person",)   # captions name a person for 82% of the images: a near-constant target


# ----------------------------------------------------------------------------- representations

def one_caption_per_image(fs: FeatureSet, seed: int = 0) -> torch.Tensor:
    """(N_img,) one caption row per image, drawn with a fixed seed (image order)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(fs.n_captions, generator=g)
    best = torch.full((fs.n_images,), -1.0).scatter_reduce(0, fs.caption_image, noise, reduce="amax")
    pick = torch.full((fs.n_images,), -1, dtype=torch.long)
    hit = (noise == best[fs.caption_image]).nonzero().squeeze(1)
    pick[fs.caption_image[hit]] = hit
    return pick


def caption_rows(fs: FeatureSet, captions="all", seed: int = 0) -> torch.Tensor:
    """'all' | 'one' | rows -> the caption rows to represent: every caption, one per image (fixed seed), or those."""
    if isinstance(captions, str):
        if captions not in ("all", "one"):
            raise ValueError(f"captions must be 'all', 'one' or a tensor of caption rows, got {captions!r}")
        return torch.arange(fs.n_captions) if captions == "all" else one_caption_per_image(fs, seed)
    return torch.as_tensor(captions, dtype=torch.long)


def raw_representations(fs: FeatureSet, captions="all", seed: int = 0) -> dict[str, torch.Tensor]:
    """-> image (N_img, C) pooled CNN features, text (N, D) mean token features of the captions at
    caption_rows (N,) (see `caption_rows`)."""
    rows = caption_rows(fs, captions, seed)
    return {"image": fs.pooled.float(), "text": fs.text_pooled[rows].float(), "caption_rows": rows}


def same_size_controls(train: dict, test: dict, dim: int = 128, seed: int = 0) -> dict[str, dict]:
    """Raw representations of train and test -> two controls of the models' width `dim`, fitted on train:
    {'PCA-128 of raw features': {'train', 'test'}, 'random 128-d projection': {'train', 'test'}}.

    A 128-d model vector probed against 1280-/384-d raw features would lose mAP for its size alone;
    these controls show what 128 dimensions of the raw features keep without any training.
    """
    from sklearn.decomposition import PCA

    g = torch.Generator().manual_seed(seed)
    out = {f"PCA-{dim} of raw features": {"train": {}, "test": {}}, f"random {dim}-d projection": {"train": {}, "test": {}}}
    for side in ("image", "text"):
        pca = PCA(dim, random_state=seed).fit(_array(train[side]))
        proj = torch.randn(train[side].shape[1], dim, generator=g) / dim ** 0.5
        for split, reps in (("train", train), ("test", test)):
            out[f"PCA-{dim} of raw features"][split][side] = torch.from_numpy(pca.transform(_array(reps[side])))
            out[f"random {dim}-d projection"][split][side] = reps[side].float() @ proj
    for name in out:
        for split, reps in (("train", train), ("test", test)):
            out[name][split]["caption_rows"] = reps["caption_rows"]
    return out


def first_captions(fs: FeatureSet) -> torch.Tensor:
    """(N_img,) row of each image's first caption (its lowest caption row)."""
    first = torch.full((fs.n_images,), fs.n_captions, dtype=torch.long)
    return first.scatter_reduce(0, fs.caption_image, torch.arange(fs.n_captions), reduce="amin")


def _own_vectors(enc: dict) -> torch.Tensor:
    """Encodings of one modality -> (B, D) one vector per row: mean region, or mean real word."""
    if "words" in enc:
        return masked_mean(enc["words"], enc["mask"])
    return enc["regions"].mean(1)


@torch.inference_mode()
def representations(model, fs: FeatureSet, device: str = "cpu", chunk: int = 256, captions="all",
                    mixed: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """-> image (N_img, D), text (N, D) for the captions at caption_rows (N,): one vector per image and
    per caption from a trained model (captions 'all', 'one' per image with `seed`, or rows).

    Most models: mean over regions and mean over real words of the projections (real words also for a
    model that counts padding in its scores). Models with flow "both" (joint, joint_words): their *mixed*
    pooled vectors, which depend on the pair, so each image is mixed with its own first caption and each
    caption with its own image (`models.FactorialModel.matched_vectors`); `mixed=False`: their
    projections before mixing, like decoupled's.
    """
    model.eval().to(device)
    joint = model.cfg.flow == "both" and mixed
    captions = caption_rows(fs, captions, seed)

    def images(rows):
        return model.encode_images(*(t.to(device) for t in fs.image_batch(rows)))

    def texts(rows):
        tokens, mask, pooled = (t.to(device) for t in fs.text_batch(rows))
        txt = model.encode_texts(tokens, mask, pooled)          # a model with text_length adds pads: cut
        return {**txt, "words": txt["words"][:, :mask.shape[1]], "mask": mask}

    image, regions = [], []
    for rows in torch.arange(fs.n_images).split(chunk):
        img = images(rows)
        if joint:
            regions.append(img["regions"])                 # mixed with captions below
        else:
            image.append(_own_vectors(img).float().cpu())
    if joint:
        regions, firsts = torch.cat(regions), first_captions(fs)
        image = [model.matched_vectors({"regions": regions[rows]}, texts(firsts[rows]))[0].float().cpu()
                 for rows in torch.arange(fs.n_images).split(chunk)]
    text = torch.empty(len(captions), image[0].shape[1])
    order = fs.lengths()[captions].argsort()              # similar lengths together: little padding
    for pos in order.split(chunk):
        rows = captions[pos]
        txt = texts(rows)
        if joint:
            vec = model.matched_vectors({"regions": regions[fs.caption_image[rows]]}, txt)[1]
        else:
            vec = _own_vectors(txt)
        text[pos] = vec.float().cpu()
    return {"image": torch.cat(image), "text": text, "caption_rows": captions}


# ----------------------------------------------------------------------------------- targets

def category_targets(subset, train_fs: FeatureSet, test_fs: FeatureSet, min_positives: int = 20,
                     min_test: int = 5) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """-> Y_train (N_train_img, K), Y_test (N_test_img, K) 0/1 caption-mined labels, K category names.

    Labels are `data.mine_labels` of each image's five captions. A category is kept when it has at
    least `min_positives` positive images in train and `min_test` in test; 'person' is dropped
    because the captions name a person for 82% of the images (a near-constant target measures little).
    """
    labels = mine_labels(subset.captions)
    y_train = labels.reindex(train_fs.image_ids.tolist()).fillna(0).astype(int)
    y_test = labels.reindex(test_fs.image_ids.tolist()).fillna(0).astype(int)
    keep = [c for c in labels.columns if c not in DROPPED and y_train[c].sum() >= min_positives
            and y_test[c].sum() >= min_test]
    return y_train[keep].to_numpy(), y_test[keep].to_numpy(), keep


def text_targets(y_images: np.ndarray, fs: FeatureSet) -> np.ndarray:
    """(N_img, K) image labels -> (N_cap, K): each caption gets its image's labels."""
    return y_images[fs.caption_image.numpy()]


# ------------------------------------------------------------------------------------- probes

def _array(x) -> np.ndarray:
    return x.detach().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)


def linear_probe(X_train, Y_train, X_test, Y_test, C: float = 1.0, seed: int = 0,
                 names: list[str] | None = None) -> dict:
    """(N, D) vectors, (N, K) 0/1 targets for train and test -> {'mAP': float, 'per_category': DataFrame}.

    Standardise (fit on train), one logistic regression per category, average precision per
    category on test, mean over categories. The per-category table also shows each category's
    test prevalence, which is the AP of a probe that ranks at random.
    """
    scaler = StandardScaler().fit(_array(X_train))
    xtr, xte = scaler.transform(_array(X_train)), scaler.transform(_array(X_test))
    Y_train, Y_test = np.asarray(Y_train), np.asarray(Y_test)
    names = names or [str(k) for k in range(Y_train.shape[1])]
    rows = []
    with threadpool_limits(1):    # one BLAS thread: 10x faster for these small products on a busy 2-core CPU
        for k, name in enumerate(names):
            clf = LogisticRegression(C=C, max_iter=1000, random_state=seed).fit(xtr, Y_train[:, k])
            ap = average_precision_score(Y_test[:, k], clf.decision_function(xte))
            rows.append({"category": name, "AP": ap, "test_positives": int(Y_test[:, k].sum()),
                         "prevalence": float(Y_test[:, k].mean())})
    per = pd.DataFrame(rows).set_index("category")
    return {"mAP": float(per.AP.mean()), "per_category": per}


def probe_table(reps: dict[str, dict], train_fs: FeatureSet, test_fs: FeatureSet, y_train: np.ndarray,
                y_test: np.ndarray, names: list[str] | None = None, C: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """{name: {'train': reps, 'test': reps}} -> DataFrame (rows = names in order; image mAP, text mAP).

    Each reps is a `representations` (or `raw_representations`) dict; a caption's targets are its
    image's labels, taken at the dict's caption_rows.
    """
    rows = {}
    for name, r in reps.items():
        tr, te = r["train"], r["test"]
        yt_tr = text_targets(y_train, train_fs)[tr["caption_rows"].numpy()]
        yt_te = text_targets(y_test, test_fs)[te["caption_rows"].numpy()]
        rows[name] = {"image mAP": linear_probe(tr["image"], y_train, te["image"], y_test, C, seed, names)["mAP"],
                      "text mAP": linear_probe(tr["text"], yt_tr, te["text"], yt_te, C, seed, names)["mAP"]}
    return pd.DataFrame.from_dict(rows, orient="index")


def modality_probe(image_train, text_train, image_test, text_test, seed: int = 0) -> float:
    """(N, D) image and (M, D) text vectors per split -> test accuracy of "image or text?".

    Each side is cut to the smaller count (rows drawn with a fixed seed), so chance is 0.5:
    ~1.0 = the modalities stay separable (nothing mixed them), ~0.5 = indistinguishable.
    """
    rng = np.random.default_rng(seed)

    def balanced(a, b):
        a, b = _array(a), _array(b)
        n = min(len(a), len(b))
        a, b = a[rng.permutation(len(a))[:n]], b[rng.permutation(len(b))[:n]]
        return np.concatenate([a, b]), np.r_[np.zeros(n), np.ones(n)]

    xtr, ytr = balanced(image_train, text_train)
    xte, yte = balanced(image_test, text_test)
    scaler = StandardScaler().fit(xtr)
    with threadpool_limits(1):
        clf = LogisticRegression(max_iter=1000, random_state=seed).fit(scaler.transform(xtr), ytr)
        return float(clf.score(scaler.transform(xte), yte))


# ------------------------------------------------------------------- the vectors each model scores with

PARTNERS = ("own", "other")


def other_images(n_images: int, seed: int = 0) -> torch.Tensor:
    """(N_img,) for each image row another image row (a fixed random cycle: never itself, each used once)."""
    if n_images < 2:
        raise ValueError(f"pairing with another image needs at least 2 images, got {n_images}")
    order = torch.randperm(n_images, generator=torch.Generator().manual_seed(seed))
    other = torch.empty(n_images, dtype=torch.long)
    other[order] = order.roll(-1)
    return other


@torch.inference_mode()
def pair_vectors(model, fs: FeatureSet, image_rows: torch.Tensor, caption_rows: torch.Tensor,
                 device: str = "cpu", chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) image rows, (B,) caption rows, paired row by row -> (B, D) image, (B, D) text: the vectors the
    model's head compares for each pair, after attention (`model.pair_vectors`), pooled over the words
    its head counts. Captions pad to the set's longest, as `models.score_all` pads them."""
    if len(image_rows) != len(caption_rows):
        raise ValueError(f"image_rows ({len(image_rows)}) and caption_rows ({len(caption_rows)}) must pair row by row")
    model.eval().to(device)
    pad_to = int(fs.lengths().max())
    image, text = [], []
    for part in torch.arange(len(caption_rows)).split(chunk):
        img = model.encode_images(*(t.to(device) for t in fs.image_batch(image_rows[part])))
        txt = model.encode_texts(*(t.to(device) for t in fs.text_batch(caption_rows[part], pad_to=pad_to)))
        i, t = model.pair_vectors(img, txt)
        image.append(i.float().cpu())
        text.append(t.float().cpu())
    return torch.cat(image), torch.cat(text)


def scored_representations(model, fs: FeatureSet, captions="one", partner: str = "own", device: str = "cpu",
                           chunk: int = 256, seed: int = 0) -> dict[str, torch.Tensor]:
    """-> image (N_img, D), text (N, D) for the captions at caption_rows (N,): the *scored* vectors (after
    attention), beside `representations`' *own* ones (before it).

    Image i is paired with one caption (`one_caption_per_image` with `seed`), each caption with an image:
    partner 'own' = its own caption / image, 'other' = those of another image (`other_images`).
    Leakage: an image vector attended with its own caption carries that caption (for flow "both", its
    words; for "text_to_image", which regions the words chose), and the probe's labels are mined from
    captions. Probe 'other' beside 'own': a gain that vanishes with another image's caption came from
    the caption, not from the image. For flow "none" (dual) nothing is attended: text equals the own
    vectors, image is the attention's value projection of them (`FactorialModel.word_vectors`).
    """
    if partner not in PARTNERS:
        raise ValueError(f"partner must be one of {PARTNERS}, got {partner!r}")
    rows = caption_rows(fs, captions, seed)
    pick = one_caption_per_image(fs, seed)
    other = other_images(fs.n_images, seed) if partner == "other" else torch.arange(fs.n_images)
    image, _ = pair_vectors(model, fs, torch.arange(fs.n_images), pick[other], device, chunk)
    _, text = pair_vectors(model, fs, other[fs.caption_image[rows]], rows, device, chunk)
    return {"image": image, "text": text, "caption_rows": rows}


def interference_cases(model, fs: FeatureSet, device: str = "cpu", chunk: int = 256, seed: int = 0) -> pd.DataFrame:
    """One caption per image (`one_caption_per_image`) -> DataFrame image_id, caption_id, image_change,
    text_change: 1 - cos between a scored vector paired with its own partner and with another image's
    (`scored_representations` 'own' vs 'other'). 0 = the other modality does not reach this side.

    The encoders are frozen, so their features cannot interfere; this measures the trained vectors: zero
    by construction on a side that receives no attention (text for flow "text_to_image", both for "none").
    """
    own, other = (scored_representations(model, fs, "one", p, device, chunk, seed) for p in PARTNERS)
    change = {side: 1 - torch.nn.functional.cosine_similarity(own[side].double(), other[side].double(), dim=-1)
              for side in ("image", "text")}
    rows = own["caption_rows"]
    return pd.DataFrame({"image_id": fs.image_ids[fs.caption_image[rows]].numpy(),
                         "caption_id": fs.caption_ids[rows].numpy(),
                         "image_change": change["image"].numpy(), "text_change": change["text"].numpy()})
