"""Step 08's text encoder without a prior, the GRU tower, and the measure of a prior (MiniLM's training saw ~828k
COCO captions).

- `GRUTower`: no prior at all, VSE++/SCAN's text side: WordPiece embeddings learnt from scratch (MiniLM's
  vocabulary) and a bidirectional GRU, trained with the retrieval model. Its per-token features come out
  in the course's form: (B, T, D) with pads exactly zero, (B, T) bool mask, real tokens first.
- A model with a tower (`models.ModelConfig.text_tower`) reads the captions' ids (`encoders.tokenize_captions`);
  `tower_features` turns a split's ids into the tower's features, which `model_features` hands to the scoring.
- `caption_check`: how far an encoder groups the captions of one image before any retrieval training.

The other encoder without a prior, MiniLM with random weights, is `encoders.random_text_encoder`. This module
imports nothing else of the package, so `models` can build a tower without a longer chain of imports.
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

VOCAB_SIZE, PAD_ID = 30522, 0  # MiniLM's WordPiece vocabulary and its [PAD] (a test checks them against its tokenizer)


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
        """(B, T, D) features, (B, T) bool mask -> (B, D) mean over the real tokens (`attention.masked_mean`'s
        mean, written out so that this module imports nothing of the package)."""
        m = mask[..., None].to(features.dtype)
        return (features * m).sum(1) / m.sum(1)


@torch.inference_mode()
def tower_features(tower: GRUTower, fs, chunk: int = 256):
    """A `features.FeatureSet` of WordPiece ids ((N_tok, 1) tokens) -> the same FeatureSet with `tower`'s features
    of its captions, (N_tok, D) packed tokens and (N_cap, D) pooled, float16 like the course's: what a split is
    scored on."""
    if fs.tokens.shape[-1] != 1:
        raise ValueError(f"tower_features reads WordPiece ids ((N_tok, 1) tokens), got tokens of width "
                         f"{fs.tokens.shape[-1]}: these are already features")
    was_training = tower.training
    tower.eval()
    device = next(tower.parameters()).device
    tokens, pooled = [], []
    for start in range(0, fs.n_captions, chunk):                  # in caption order: packed as fs.offsets says
        ids, mask, _ = fs.text_batch(torch.arange(start, min(start + chunk, fs.n_captions)))
        features, mask = tower(ids[..., 0].long().to(device), mask.to(device))
        tokens.append(features[mask].cpu())
        pooled.append(tower.pooled(features, mask).cpu())
    tower.train(was_training)
    return replace(fs, tokens=torch.cat(tokens).half(), text_pooled=torch.cat(pooled).half())


def model_features(model: nn.Module, fs):
    """The features `model` scores: for a model with a tower (`models.ModelConfig.text_tower`) given ids, its
    tower's features of them (`tower_features`); otherwise `fs` as it is."""
    tower = getattr(model, "text_tower", None)
    return tower_features(tower, fs) if tower is not None and fs.tokens.shape[-1] == 1 else fs


def caption_check(vectors: torch.Tensor, caption_image: torch.Tensor) -> dict:
    """(N, D) caption vectors, (N,) image of each caption -> mean cosine between captions of the same image and
    of different images, and the share of captions whose nearest other caption (by cosine) describes the same
    image: how far an encoder groups captions by image before any retrieval training."""
    v = F.normalize(vectors.float(), dim=-1)
    sim = v @ v.t()
    same = caption_image[:, None] == caption_image[None, :]
    off_diag = ~torch.eye(len(v), dtype=torch.bool)
    nearest = sim.masked_fill(~off_diag, -2).argmax(1)
    return {"same image": sim[same & off_diag].mean().item(), "different images": sim[~same].mean().item(),
            "nearest caption same image": same[torch.arange(len(v)), nearest].float().mean().item()}
