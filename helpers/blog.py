"""The blog's code as written, kept runnable to show its bugs.

Nothing else in the course imports this for real work: `helpers.encoders` holds the corrected
extractors and `helpers.attention.DecoupledAttention` the corrected attention. The blog's code is
reproduced line for line; every departure from correct behaviour is kept on purpose and marked
`# blog bug:` at its line. The only glue added is that the backbone and the text model can be passed
in, so the code runs offline (the blog downloads them).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision import models, transforms


class ImagePreprocessor:
    """The blog's image "feature" extractor: a pretrained ResNet-50, whole, in eval mode."""

    def __init__(self, backbone_loader=None):
        # glue: `backbone_loader` (a model, or a function returning one) lets the course run this
        # offline with the weights it has; by default, the blog's model.
        if backbone_loader is None:
            # The blog: `models.resnet50(pretrained=True)`; this is today's spelling of `pretrained=True`
            # (the ImageNet V1 weights), which torchvision has since deprecated.
            self.model = models.resnet50(weights=models.ResNet50_Weights.IMAGENET1K_V1)
        elif isinstance(backbone_loader, nn.Module):
            self.model = backbone_loader
        else:
            self.model = backbone_loader()
        self.model.eval()
        # blog bug: defined here and never applied in extract_features, so a PIL image fails and an
        # unnormalised tensor gives wrong outputs; only a caller who normalises by hand gets sense.
        self.transform = transforms.Compose([
            transforms.Resize((224, 224)),  # blog bug (mild): squashes every image to a square
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ])

    def extract_features(self, image):
        """(B, 3, 224, 224) normalised tensor -> (B, 1000) ImageNet logits (not features)."""
        with torch.no_grad():
            # blog bug: self.transform is never applied to `image`.
            # blog bug: the whole classifier runs, so this returns the 1000 ImageNet class logits of
            # the fc head, not the 2048-d pooled features nor the 7x7 regions attention needs.
            features = self.model(image)
        return features


class TextPreprocessor:
    """The blog's text extractor: BERT's last hidden states for a batch of captions."""

    def __init__(self, name_or_path: str = "bert-base-uncased", **from_pretrained_kwargs):
        # glue: `name_or_path` and `from_pretrained_kwargs` let the course load a local model offline.
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path, **from_pretrained_kwargs)
        self.model = AutoModel.from_pretrained(name_or_path, **from_pretrained_kwargs)
        self.model.eval()

    def extract_features(self, text):
        """str or list[str] -> (B, T, D) last hidden states, padded positions included, no mask."""
        inputs = self.tokenizer(text, return_tensors="pt", padding=True, truncation=True)
        with torch.no_grad():
            outputs = self.model(**inputs)  # the attention mask reaches BERT: real words ignore [PAD]
        # blog bug: the padded positions (BERT's outputs at [PAD]) are returned with no mask to tell
        # them apart, so downstream they reach the attention as if they were words.
        return outputs.last_hidden_state


class DecoupledAttention(nn.Module):
    """The blog's text -> image attention, exactly as the blog writes it."""

    def __init__(self, dim):
        super().__init__()
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)  # blog bug: defined (and counted as parameters), never used

    def forward(self, text_features, image_features):
        """(B, T, dim) words, (B, R, dim) regions -> (B, T, dim) attended regions."""
        q = self.query(text_features)
        k = self.key(image_features)
        # blog bug: no masks, so padded words get (and pad any average with) attention outputs too.
        attn = F.softmax(q @ k.transpose(-2, -1) / (q.size(-1) ** 0.5), dim=-1)
        # blog bug: attends over the raw image features instead of self.value(image_features), which
        # also forces image and text to have the same width `dim`.
        return attn @ image_features
