"""Batched extraction (shapes, order, packing) and the feature cache (hits, keys, damage, atomic writes)."""
import json
import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from helpers.fast import extraction
from helpers.pipeline import feature_cache
from helpers.config import PATHS
from helpers.encoders import (Choice, aspect_transform, blog_transform, load_image_encoder,
                              load_text_encoder)
from helpers.fast.extraction import extract_image_features, extract_text_features, pack
from helpers.pipeline.feature_cache import (cache_file, cached_image_features, cached_text_features, image_cache_key,
                                            load_course_features)

CAPTIONS = ["A dog.", "Two dogs play with a red frisbee on the green grass near a wooden fence.",
            "A man riding a horse.", "Pizza.", "A kitchen with a stove, a sink and a window over the sink.",
            "A cat sleeps on a laptop keyboard.", "Bus."]


class FolderSubset:
    """The `helpers.data` subset interface over a folder of JPEGs (a few real COCO images + synthetic ones)."""

    def __init__(self, folder: Path, n_synthetic: int = 4):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, ids = folder, []
        real = next((r / "images" for r in (PATHS.subset, PATHS.shared_mirror) if (r / "images").is_dir()), None)
        for image_id in (139, 285, 632):
            if real is not None and (real / f"{image_id:012d}.jpg").is_file():
                shutil.copyfile(real / f"{image_id:012d}.jpg", folder / f"{image_id:012d}.jpg")
                ids.append(image_id)
        g = torch.Generator().manual_seed(0)
        for k in range(n_synthetic):
            w, h = (320, 240) if k % 2 else (200, 300)
            pixels = (torch.rand(h // 8, w // 8, 3, generator=g) * 255).byte().numpy()
            Image.fromarray(pixels).resize((w, h)).save(folder / f"{900000 + k:012d}.jpg", quality=85)
            ids.append(900000 + k)
        self.image_ids = sorted(ids)
        rows = [(10 * i + j, i, CAPTIONS[(i + j) % len(CAPTIONS)]) for i in self.image_ids for j in range(2)]
        self.captions = pd.DataFrame(rows, columns=["caption_id", "image_id", "caption"])

    def image_path(self, image_id: int) -> Path:
        return self.folder / f"{image_id:012d}.jpg"

    def load_image(self, image_id: int) -> Image.Image:
        with Image.open(self.image_path(image_id)) as im:
            return im.convert("RGB")

    def split_ids(self, name: str) -> list[int]:
        return {"train": self.image_ids[:-3], "val": self.image_ids[-3:-2], "test": self.image_ids[-2:]}[name]



pytestmark = pytest.mark.usefixtures("one_thread")   # see conftest.py


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    return FolderSubset(tmp_path_factory.mktemp("subset"))


@pytest.fixture(scope="module")
def image_encoder():
    return load_image_encoder("mobilenet_v2")[0]


@pytest.fixture(scope="module")
def text_encoder():
    return load_text_encoder("all-MiniLM-L6-v2")[0]


class CallCounter:
    """Counts forward calls of a module's class (extraction runs a BN-folded copy), to tell a hit from a rebuild."""

    def __init__(self, module):
        self.n, self.cls, self.forward = 0, type(module), type(module).forward

        def counting(this, *args, **kwargs):
            self.n += 1
            return self.forward(this, *args, **kwargs)
        self.cls.forward = counting

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cls.forward = self.forward


# ---------------------------------------------------------------------------------- extraction

def test_pack_hand_computed():
    tokens = torch.tensor([[[1.], [2.], [0.]], [[3.], [0.], [0.]]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    packed, offsets = pack(tokens, mask)
    assert packed.squeeze(1).tolist() == [1., 2., 3.] and offsets.tolist() == [0, 2, 3]


@pytest.mark.parametrize("num_workers", [0, 1])
def test_image_extraction_matches_one_at_a_time(subset, image_encoder, num_workers):
    ids = subset.image_ids
    regions, pooled = extract_image_features(subset, ids, image_encoder, blog_transform(), batch_size=3,
                                             num_workers=num_workers, device="cpu", progress=False)
    assert regions.shape == (len(ids), 49, 1280) and pooled.shape == (len(ids), 1280)
    assert regions.dtype == pooled.dtype == torch.float16
    torch.testing.assert_close(pooled.float(), regions.float().mean(1), atol=2e-3, rtol=2e-3)
    with torch.no_grad():   # last image alone (it sits in a partial batch): batching changes nothing
        r1, _ = image_encoder(blog_transform()(subset.load_image(ids[-1]))[None])
    torch.testing.assert_close(regions[-1].float(), r1[0], atol=2e-2, rtol=1e-2)


def test_graph_and_eager_kernels_agree_and_the_last_batch_is_padded(subset, image_encoder):
    ids = subset.image_ids   # batches of 3: the last one is short, and is zero-padded to 3 for the graph
    run = lambda graph: extract_image_features(subset, ids, image_encoder, blog_transform(), batch_size=3,  # noqa
                                               device="cpu", graph=graph, progress=False)
    (rg, pg), (re, pe) = run(True), run(False)
    assert rg.shape == re.shape == (len(ids), 49, 1280) and len(ids) % 3
    torch.testing.assert_close(rg.float(), re.float(), atol=1e-2, rtol=1e-2)   # float16 storage
    torch.testing.assert_close(pg.float(), pe.float(), atol=1e-2, rtol=1e-2)
    assert (3, 3, 224, 224) in {key[0] for key in image_encoder._graphs}      # built once, kept for reuse


def test_a_graph_that_cannot_be_built_falls_back_to_eager_with_a_warning(subset, monkeypatch):
    enc = load_image_encoder("mobilenet_v2")[0]              # a fresh encoder: no graph kept on it yet
    monkeypatch.setattr(extraction, "graph_copy", lambda encoder, x: (_ for _ in ()).throw(RuntimeError("no jit")))
    ids = subset.image_ids[:2]
    with pytest.warns(UserWarning, match="no jit.*eager kernels instead"):
        regions, _ = extract_image_features(subset, ids, enc, blog_transform(), device="cpu", progress=False)
    eager, _ = extract_image_features(subset, ids, enc, blog_transform(), device="cpu", graph=False, progress=False)
    torch.testing.assert_close(regions.float(), eager.float(), atol=1e-2, rtol=1e-2)


def test_graph_only_on_cpu_in_float32():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert extraction.use_graph(cpu, None) and not extraction.use_graph(cpu, None, graph=False)
    assert not extraction.use_graph(cpu, True)                 # bfloat16 autocast: eager
    assert not extraction.use_graph(cuda, None) and not extraction.use_graph(cuda, False, graph=True)


def test_text_extraction_packs_in_caption_order(text_encoder):
    tokens, offsets, pooled = extract_text_features(CAPTIONS, text_encoder, batch_size=3, device="cpu",
                                                    progress=False)
    lengths = [len(ids) for ids in text_encoder.tokenizer(CAPTIONS)["input_ids"]]
    assert offsets.tolist() == [0] + torch.tensor(lengths).cumsum(0).tolist()
    assert tokens.shape == (sum(lengths), 384) and tokens.dtype == pooled.dtype == torch.float16
    assert pooled.shape == (len(CAPTIONS), 384)
    for k, caption in enumerate(CAPTIONS):   # unpacked, one caption at a time, no padding at all
        alone, mask = text_encoder.encode([caption])
        seg = tokens[offsets[k]:offsets[k + 1]].float()
        torch.testing.assert_close(seg, alone[0], atol=1e-2, rtol=1e-2)
        torch.testing.assert_close(pooled[k].float(), alone[0].mean(0), atol=1e-2, rtol=1e-2)


# --------------------------------------------------------------------------------------- cache

def test_image_cache_hit_skips_the_encoder(subset, image_encoder, tmp_path):
    ids = subset.image_ids[:3]
    with CallCounter(image_encoder) as calls:
        first = cached_image_features(subset, ids, image_encoder, cache_dir=tmp_path, num_workers=0, progress=False)
        built = calls.n
        second = cached_image_features(subset, ids, image_encoder, cache_dir=tmp_path, num_workers=0, progress=False)
    assert built > 0 and calls.n == built
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    (path,) = tmp_path.glob("*.safetensors")
    assert path.name.startswith("image-mobilenet_v2-")
    key = image_cache_key(image_encoder.choice, blog_transform(), ids, feature_cache.image_md5s(subset, ids),
                          kernels="onednn-graph")
    assert path == cache_file(key, tmp_path)


def test_text_cache_hit_skips_the_encoder(text_encoder, tmp_path):
    with CallCounter(text_encoder) as calls:
        first = cached_text_features(CAPTIONS, text_encoder, cache_dir=tmp_path, progress=False)
        built = calls.n
        second = cached_text_features(CAPTIONS, text_encoder, cache_dir=tmp_path, progress=False)
        assert calls.n == built > 0
        cached_text_features(CAPTIONS[:-1], text_encoder, cache_dir=tmp_path, progress=False)
        assert calls.n > built                               # other captions: another key, another file
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert len(list(tmp_path.glob("text-all-MiniLM-L6-v2-*.safetensors"))) == 2


def test_changed_key_rebuilds(subset, image_encoder, tmp_path, monkeypatch):
    ids = subset.image_ids[:2]
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"version 1")
    monkeypatch.setattr(image_encoder, "choice", Choice("mobilenet_v2", weights, "test"))
    run = lambda tf=None, graph=None: cached_image_features(  # noqa: E731
        subset, ids, image_encoder, tf, cache_dir=tmp_path / "cache", num_workers=0, graph=graph, progress=False)
    with CallCounter(image_encoder) as calls:
        run()
        n = calls.n
        run()
        assert calls.n == n                                  # same key: hit
        run(aspect_transform())
        assert calls.n == 2 * n                              # other preprocessing: rebuilt
        weights.write_bytes(b"version 2, retrained")
        run()
        assert calls.n == 3 * n                              # other weights file contents: rebuilt
        run(graph=False)
        assert calls.n == 4 * n                              # eager kernels instead of the graph: rebuilt
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 4


def _first_cache_file(folder: Path) -> Path:
    (path,) = folder.glob("*.safetensors")
    return path


def test_corrupt_cache_file_is_rebuilt_with_a_warning(subset, image_encoder, tmp_path):
    ids = subset.image_ids[:2]
    good = cached_image_features(subset, ids, image_encoder, cache_dir=tmp_path, num_workers=0, progress=False)
    path = _first_cache_file(tmp_path)
    path.write_bytes(path.read_bytes()[:1000])               # truncated, as after a crash or full disk
    with CallCounter(image_encoder) as calls, pytest.warns(UserWarning, match="is unreadable, truncated"):
        again = cached_image_features(subset, ids, image_encoder, cache_dir=tmp_path, num_workers=0, progress=False)
    assert calls.n > 0 and torch.equal(again[1], good[1])
    with warnings.catch_warnings():                          # and the rebuilt file now reads cleanly
        warnings.simplefilter("error")
        cached_image_features(subset, ids, image_encoder, cache_dir=tmp_path, num_workers=0, progress=False)


def test_wrong_shapes_or_stale_key_are_rebuilt_with_a_warning(subset, image_encoder, tmp_path):
    ids = subset.image_ids[:2]
    cached_image_features(subset, ids, image_encoder, cache_dir=tmp_path, num_workers=0, progress=False)
    path = _first_cache_file(tmp_path)
    key = image_cache_key(image_encoder.choice, blog_transform(), ids, feature_cache.image_md5s(subset, ids),
                          kernels="onednn-graph")
    bad = {"regions": torch.zeros(2, 49, 7, dtype=torch.float16), "pooled": torch.zeros(2, 7, dtype=torch.float16),
           "image_ids": torch.tensor(ids)}
    feature_cache.save_cache(path, bad, key)
    with pytest.warns(UserWarning, match=r"corrupt \(shapes"):
        regions, _ = cached_image_features(subset, ids, image_encoder, cache_dir=tmp_path, num_workers=0,
                                           progress=False)
    assert regions.shape == (2, 49, 1280)
    save_file(bad, str(path), metadata={"key": json.dumps({**key, "transform": "something else"})})
    with pytest.warns(UserWarning, match="is stale"):
        regions, _ = cached_image_features(subset, ids, image_encoder, cache_dir=tmp_path, num_workers=0,
                                           progress=False)
    assert regions.shape == (2, 49, 1280)


def test_atomic_write_leaves_no_temp_files(tmp_path, monkeypatch):
    key = {"kind": "image", "backbone": "x"}
    feature_cache.save_cache(tmp_path / "a.safetensors", {"t": torch.ones(3)}, key)
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]
    assert (tmp_path / "a.safetensors").stat().st_mode & 0o777 == 0o644   # readable like any other data file

    def crash(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(feature_cache, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        feature_cache.save_cache(tmp_path / "b.safetensors", {"t": torch.ones(3)}, key)
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]   # no b, no temp file


def test_random_weights_are_not_cached(subset, tmp_path):
    enc, _ = load_image_encoder("mobilenet_v2", weights="random")
    with pytest.raises(ValueError, match="not cached"):
        cached_image_features(subset, subset.image_ids[:1], enc, cache_dir=tmp_path)


def test_load_course_features_splits_and_rereads(subset, image_encoder, text_encoder, tmp_path):
    sets = load_course_features(image_encoder, text_encoder, device="cpu", subset=subset, cache_dir=tmp_path,
                                progress=False)
    everything = sets["all"]
    assert everything.n_images == len(subset.image_ids) and everything.n_captions == len(subset.captions)
    assert sum(sets[s].n_images for s in ("train", "val", "test")) == everything.n_images
    for name in ("train", "val", "test"):
        assert sets[name].image_ids.tolist() == subset.split_ids(name)
        assert sets[name].n_captions == 2 * sets[name].n_images
    test = sets["test"]   # caption k of the split belongs to image caption_image[k] of the split
    cap = subset.captions.set_index("caption_id").loc[test.caption_ids.tolist()]
    assert cap.image_id.tolist() == test.image_ids[test.caption_image].tolist()
    tokens, mask, _ = everything.text_batch(torch.tensor([0]))
    assert mask.sum() == len(everything.tokens[everything.offsets[0]:everything.offsets[1]])
    with CallCounter(image_encoder) as ic, CallCounter(text_encoder) as tc:
        again = load_course_features(image_encoder, text_encoder, device="cpu", subset=subset, cache_dir=tmp_path,
                                     progress=False)
    assert ic.n == tc.n == 0 and torch.equal(again["all"].tokens, everything.tokens)
    assert len(everything.source) == 12 and again["test"].source == everything.source   # runs key on it
    assert feature_cache.fingerprint(everything.pooled[:-1], everything.text_pooled) != everything.source
