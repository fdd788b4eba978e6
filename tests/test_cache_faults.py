"""The feature cache cannot serve bad data: damaged bytes, NaNs, cut files, repaired images, changed captions
and the leftovers of killed writes. Tiny fake encoders (features computed from each file's bytes) keep it fast."""
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from helpers.encoders import Choice
from helpers.pipeline import feature_cache
from helpers.pipeline.feature_cache import cached_image_features, cached_text_features, text_cache_key

C = 8   # channels of the fake encoders


class Subset:
    """The subset interface over root/images/*.jpg (any bytes: the fake encoder never decodes them), with a
    manifest.csv of their md5s like a prepared subset's when `manifest` is True."""

    def __init__(self, root: Path, n: int = 3, manifest: bool = False):
        self.root = root
        (root / "images").mkdir(parents=True)
        self.image_ids = list(range(1, n + 1))
        for i in self.image_ids:
            self.image_path(i).write_bytes(f"image {i} ".encode() * 50)
        if manifest:
            self.write_manifest()

    def image_path(self, image_id: int) -> Path:
        return self.root / "images" / f"{image_id:012d}.jpg"

    def write_manifest(self, **md5_of):
        rows = [{"image_id": i, "file_name": self.image_path(i).name, "file_bytes": self.image_path(i).stat().st_size,
                 "file_md5": md5_of.get(f"i{i}", hashlib.md5(self.image_path(i).read_bytes()).hexdigest())}
                for i in self.image_ids]
        pd.DataFrame(rows).to_csv(self.root / "manifest.csv", index=False)


class FakeEncoder:
    """What cached_*_features read from a loaded encoder: its choice (name + weights file), channels/dim."""

    def __init__(self, name: str, weights: Path):
        weights.write_bytes(b"weights")
        self.choice, self.channels, self.dim, self.max_length = Choice(name, weights, "test"), C, C, 16


def _from_bytes(data: bytes, shape) -> torch.Tensor:
    g = torch.Generator().manual_seed(int(hashlib.md5(data).hexdigest()[:8], 16))
    return torch.randn(*shape, generator=g).half()


@pytest.fixture
def calls(monkeypatch):
    """Fake extraction (features from each image's bytes, each caption's text); counts the builds."""
    n = {"image": 0, "text": 0}

    def images(subset, ids, model, transform, **kw):
        n["image"] += 1
        regions = torch.stack([_from_bytes(subset.image_path(i).read_bytes(), (4, C)) for i in ids])
        return regions, regions.float().mean(1).half()

    def texts(captions, model, **kw):
        n["text"] += 1
        toks = [_from_bytes(c.encode(), (len(c.split()), C)) for c in captions]
        offsets = torch.tensor([0] + [len(t) for t in toks]).cumsum(0)
        return torch.cat(toks), offsets, torch.stack([t.float().mean(0).half() for t in toks])

    monkeypatch.setattr(feature_cache, "extract_image_features", images)
    monkeypatch.setattr(feature_cache, "extract_text_features", texts)
    return n


@pytest.fixture
def setup(tmp_path, calls):
    subset = Subset(tmp_path / "subset")
    enc = FakeEncoder("mobilenet_v2", tmp_path / "weights.pth")
    cache = tmp_path / "cache"

    def run():
        return cached_image_features(subset, subset.image_ids, enc, cache_dir=cache, device="cpu", progress=False)
    return subset, run, cache, calls


def _only(folder: Path) -> Path:
    (path,) = folder.glob("*.safetensors")
    return path


def _no_warnings(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn()


def test_damaged_tensor_bytes_of_the_same_size_are_rebuilt_with_the_fresh_values(setup):
    subset, run, cache, calls = setup
    fresh = run()
    path = _only(cache)
    data = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    start, end = json.loads(data[8:8 + n])["regions"]["data_offsets"]
    for k in range(8 + n + start + 10, 8 + n + start + 18):   # 8 bytes inside 'regions' flipped, size unchanged
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))
    assert not torch.equal(load_file(str(path))["regions"], fresh[0])   # loads, silently different
    with pytest.warns(UserWarning, match=rf"{path}.*'regions' do not match their sha256.*rebuilding"):
        again = run()
    assert calls["image"] == 2
    assert torch.equal(again[0], fresh[0]) and torch.equal(again[1], fresh[1])
    assert torch.equal(_no_warnings(run)[0], fresh[0]) and calls["image"] == 2   # the rebuilt file reads cleanly


def test_nan_stored_is_rebuilt(setup):
    subset, run, cache, calls = setup
    fresh = run()
    path = _only(cache)
    with safe_open(str(path), framework="pt") as f:
        key = json.loads(f.metadata()["key"])
    tensors = load_file(str(path))
    tensors["regions"][1, 2, 3] = float("nan")
    feature_cache.save_cache(path, tensors, key)        # a well-formed file, checksums and all, holding a NaN
    with pytest.warns(UserWarning, match=rf"{path}.*'regions' holds NaN or inf"):
        again = run()
    assert calls["image"] == 2 and torch.equal(again[0], fresh[0]) and bool(torch.isfinite(again[0]).all())


@pytest.mark.parametrize("keep, what", [(0, "is empty"), (8, "is unreadable, truncated"),
                                        (-100, "is unreadable, truncated")])
def test_truncated_or_empty_file_is_rebuilt_with_a_warning(setup, keep, what):
    subset, run, cache, calls = setup
    fresh = run()
    path = _only(cache)
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.warns(UserWarning, match=rf"feature cache {path} {what}.*rebuilding it"):
        again = run()
    assert calls["image"] == 2 and torch.equal(again[0], fresh[0])


def test_a_repaired_image_is_a_new_key_and_damaged_images_are_never_cached(tmp_path, calls):
    subset = Subset(tmp_path / "subset", manifest=True)
    enc, cache = FakeEncoder("mobilenet_v2", tmp_path / "w.pth"), tmp_path / "cache"
    run = lambda: cached_image_features(subset, subset.image_ids, enc, cache_dir=cache,  # noqa: E731
                                        device="cpu", progress=False)
    good = subset.image_path(2).read_bytes()
    subset.image_path(2).write_bytes(good.replace(b"image", b"imagf"))     # damaged, same size: manifest md5 kept
    with pytest.warns(UserWarning, match="1 image file.*image 2 .*not cached.*helpers.data prepare"):
        run()
    assert list(cache.glob("*.safetensors")) == []                         # never under the good image's key
    subset.image_path(2).write_bytes(good)                                 # repaired
    fresh = _no_warnings(run)
    assert calls["image"] == 2 and torch.equal(fresh[0][1], _from_bytes(good, (4, C)))
    first = _only(cache)
    _no_warnings(run)
    assert calls["image"] == 2                                              # a hit
    subset.image_path(2).write_bytes(b"image 2, a new version")            # replaced, the manifest says so
    subset.write_manifest()
    again = _no_warnings(run)
    assert calls["image"] == 3 and torch.equal(again[0][1], _from_bytes(b"image 2, a new version", (4, C)))
    assert len(list(cache.glob("*.safetensors"))) == 2 and first.is_file()   # the old file is another key


def test_without_a_manifest_the_key_hashes_the_image_files(setup):
    subset, run, cache, calls = setup
    run()
    subset.image_path(3).write_bytes(b"image 3, repaired")
    again = run()
    assert calls["image"] == 2 and torch.equal(again[0][2], _from_bytes(b"image 3, repaired", (4, C)))
    md5s = feature_cache.image_md5s(subset, subset.image_ids)
    assert md5s[2] == hashlib.md5(b"image 3, repaired").hexdigest()


def test_leftover_temp_file_of_a_killed_write_is_removed(setup):
    subset, run, cache, calls = setup
    run()
    writer = ("import sys, time\nimport torch\nfrom pathlib import Path\nfrom helpers.pipeline import feature_cache\n"
              "def slow(tensors, filename, metadata=None):   # half written, then stuck until killed\n"
              "    Path(filename).write_bytes(b'half a file' * 1000)\n    print(filename, flush=True)\n"
              "    time.sleep(120)\n"
              "feature_cache.save_file = slow\n"
              "feature_cache.save_cache(Path(sys.argv[1]), {'t': torch.ones(3)}, {'kind': 'image'})\n")
    proc = subprocess.Popen([sys.executable, "-c", writer, str(cache / "image-x-0123456789ab.safetensors")],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1],
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    try:
        tmp = Path(proc.stdout.readline().strip())
        assert tmp.is_file() and tmp.name.startswith(".image-x-0123456789ab.safetensors.")
        _no_warnings(run)
        assert tmp.is_file()                                                 # a live write is left alone
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert tmp.is_file()                                                     # killed: its temp file stays behind
    with pytest.warns(UserWarning, match=rf"removed {tmp} .*interrupted"):
        run()
    assert not tmp.exists() and calls["image"] == 1


def test_files_of_an_older_format_are_removed(setup):
    subset, run, cache, calls = setup
    run()
    old = cache / "image-mobilenet_v2-000000000000.safetensors"
    feature_cache.save_cache(old, {"t": torch.ones(2)}, {"format": feature_cache.CACHE_FORMAT - 1, "kind": "image"})
    other = cache / "text-x-000000000000.safetensors"          # same format, another key: kept
    feature_cache.save_cache(other, {"t": torch.ones(2)}, {"format": feature_cache.CACHE_FORMAT, "kind": "text"})
    _no_warnings(run)
    assert not old.exists() and other.is_file()


def test_the_text_key_changes_with_a_caption(tmp_path, calls):
    enc, cache = FakeEncoder("all-MiniLM-L6-v2", tmp_path / "model.safetensors"), tmp_path / "cache"
    caps = ["A dog runs.", "Two cats sleep.", "A red bus."]
    edited = caps[:1] + ["Two cats sleep on a sofa."] + caps[2:]          # same count, one caption changed
    assert text_cache_key(enc.choice, caps, 16) != text_cache_key(enc.choice, edited, 16)
    run = lambda c: cached_text_features(c, enc, cache_dir=cache, device="cpu", progress=False)  # noqa: E731
    run(caps)
    tokens, offsets, _ = run(edited)
    assert calls["text"] == 2 and int(offsets[2] - offsets[1]) == 6      # rebuilt: the edited caption's 6 words
    run(caps)
    assert calls["text"] == 2                                             # and the first file still hits
