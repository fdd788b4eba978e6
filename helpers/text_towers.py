"""Two text encoders to measure the pretrained MiniLM's prior against (its training saw ~828k COCO captions).

- `GRUTower`: no prior at all, VSE++/SCAN's text side: WordPiece embeddings learnt from scratch (MiniLM's
  vocabulary) and a bidirectional GRU, trained with the retrieval model. Its per-token features come out
  in the course's form: (B, T, D) with pads exactly zero, (B, T) bool mask, real tokens first.
- `random_minilm` / `random_text_encoder`: MiniLM's architecture with random weights, frozen: the floor a
  frozen encoder with no pretraining gives, extracted exactly like the course's `TextEncoder`.

Both read the captions tokenized as the course's features are (`tokenize_captions`).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import AutoConfig, AutoModel

from .config import TEXT_MAX_LENGTH
from .encoders import Choice, TextEncoder, load_tokenizer, resolve_text_model, tokenize
from .models import masked_mean

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


def check_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """ValueError unless (B, T) long ids in [0, vocab_size) and a (B, T) 0/1 mask with real tokens first,
    at least one per caption; returns the mask as bool."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype != torch.long or input_ids.dim() != 2:
        raise ValueError(f"input_ids must be a (B, T) long tensor of token ids, got "
                         f"{getattr(input_ids, 'dtype', type(input_ids).__name__)} of shape "
                         f"{tuple(getattr(input_ids, 'shape', ()))}; make them with tokenize_captions")
    if input_ids.numel() == 0:
        raise ValueError(f"input_ids of shape {tuple(input_ids.shape)} is empty: pass at least one caption")
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask must be a tensor of input_ids' shape {tuple(input_ids.shape)}, got "
                         f"{tuple(getattr(attention_mask, 'shape', ()))}; pass the mask tokenize_captions returns")
    if attention_mask.is_floating_point() or ((attention_mask != 0) & (attention_mask != 1)).any():
        raise ValueError(f"attention_mask must be bool or integer 0/1 (1 = a real token), got {attention_mask.dtype} "
                         f"{attention_mask.unique().tolist()[:4]}; pass the mask tokenize_captions returns")
    if input_ids.min() < 0 or input_ids.max() >= vocab_size:
        raise ValueError(f"token ids must lie in [0, {vocab_size}), got {int(input_ids.min())}..."
                         f"{int(input_ids.max())}: they come from another tokenizer; use the tower's (MiniLM's)")
    mask = attention_mask.bool()
    late = (mask[:, 1:] & ~mask[:, :-1]).any(1)
    if late.any():
        raise ValueError(f"attention_mask row {int(late.nonzero()[0])} has a real token after a pad: real tokens "
                         "must come first (pad on the right, the tokenizer's padding_side='right')")
    empty = ~mask.any(1)
    if empty.any():
        raise ValueError(f"caption {int(empty.nonzero()[0])} has no real token (its mask row is all 0): drop it")
    return mask


class GRUTower(nn.Module):
    """WordPiece embeddings + a bidirectional GRU, randomly initialised from `seed`, learnt with the model:
    (B, T) ids, (B, T) mask -> (B, T, 2*hidden_dim) token features (pads zero), (B, T) bool mask."""

    def __init__(self, vocab_size: int, pad_id: int, embed_dim: int = 300, hidden_dim: int = 192, seed: int = 0):
        super().__init__()
        if not 0 <= pad_id < vocab_size:
            raise ValueError(f"pad_id {pad_id} is outside the vocabulary [0, {vocab_size}); "
                             "build the tower with GRUTower.from_tokenizer(tokenizer)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
            self.gru = nn.GRU(embed_dim, hidden_dim, batch_first=True, bidirectional=True)
            nn.init.uniform_(self.embed.weight, -0.1, 0.1)          # as VSE++ and SCAN initialise theirs
        with torch.no_grad():
            self.embed.weight[pad_id].zero_()
        self.dim = 2 * hidden_dim

    @classmethod
    def from_tokenizer(cls, tokenizer, **sizes) -> "GRUTower":
        """A tower over `tokenizer`'s vocabulary (len(tokenizer) rows), its [PAD] row the padding row."""
        return cls(len(tokenizer), tokenizer.pad_token_id, **sizes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) long ids, (B, T) mask -> (B, T, D) features, pads exactly zero; (B, T) bool mask.

        Packed by length, the GRU never reads a pad: a caption's features do not depend on its padding."""
        mask = check_tokens(input_ids, attention_mask, self.embed.num_embeddings)
        packed = pack_padded_sequence(self.embed(input_ids), mask.sum(1).cpu(), batch_first=True,
                                      enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, padding_value=0.0, total_length=input_ids.shape[1])
        return out, mask

    def pooled(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, D) features, (B, T) bool mask -> (B, D) mean over the real tokens."""
        return masked_mean(features, mask)


def random_minilm(seed: int = 0) -> nn.Module:
    """MiniLM's architecture (the packaged model's config) with random weights from `seed`, frozen, in eval mode."""
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
