# %% [markdown]
# # 03 · Text features
#
# **You will be able to** turn captions into per-token features (`last_hidden_state`) with their attention mask, show what the seed loses by dropping the mask, compare mean pooling with `[CLS]`, check with a measurement that the features carry meaning, and cache them for the whole subset.
# **Prerequisites:** `01_coco_and_preprocessing`, `02_image_features`.
# **Time:** about 1 min on a 2-core laptop the first time (extraction), seconds once cached (measured in CI). Not yet measured on a GPU.

# %%
import torch
import torch.nn.functional as F
from transformers.utils import logging as hf_logging

from helpers import data, encoders, features, seed, show_source

torch.manual_seed(0)
hf_logging.disable_progress_bar()      # no "Loading weights" bars in the outputs
subset = data.load_subset()

# %% [markdown]
# ## What does BERT give for a caption?
# The tokenizer turns a caption into word pieces with `[CLS]` and `[SEP]`; the model returns one vector per token, its `last_hidden_state`: (B, T, D). The course's encoder returns the attention mask with it, and zeroes the padded positions, so padding can never leak into a later step.

# %%
text_encoder, choice = encoders.load_text_encoder("auto")
print(choice.name, "—", choice.reason.split(" (")[0])
show_source(encoders.TextEncoder.forward)

# %%
captions = subset.captions_of(subset.image_ids[0])[:3]
tokens, mask = text_encoder.encode(captions)
print("tokens", tuple(tokens.shape), "mask", tuple(mask.shape), "| real tokens per caption:", mask.sum(1).tolist())

# %% [markdown]
# ## What does the seed lose by dropping the attention mask?
# The seed calls the model with `input_ids` only. Then every real word also attends to the `[PAD]` tokens of its batch, so **a caption's features depend on which other captions share its batch**. Measure it: encode a short caption alone, then in a batch with a long one.

# %%
show_source(seed.TextPreprocessor.extract_features)

# %%
blog = seed.TextPreprocessor(str(choice.weights_file.parent))
short, long = "A dog on a couch.", subset.captions.caption[subset.captions.caption.str.len().idxmax()]
alone = blog.extract_features([short])[0]
in_batch = blog.extract_features([short, long])[0, : alone.shape[0]]
ours_alone = text_encoder.encode([short])[0][0]
ours_batch = text_encoder.encode([short, long])[0][0, : ours_alone.shape[0]]
print(f"seed  (mask dropped): max change of the short caption's features = {(alone - in_batch).abs().max():.3f}")
print(f"course (mask kept):   max change below 1e-4: {bool((ours_alone - ours_batch).abs().max() < 1e-4)}")

# %% [markdown]
# With the mask dropped, the same caption gets different features in a different batch (and its `[PAD]` rows look like words to whatever comes next). With the mask, the change is floating-point noise (below 10⁻⁴).
#
# ## Extract all 14,827 captions, once
# Captions are sorted by length so each batch pads only to its own longest caption, then restored to their order. Features are stored **packed**: the real tokens of all captions one after another, with offsets marking where each caption starts — no padding is stored, so none can leak. The cache works as for images.

# %%
# NBVAL_IGNORE_OUTPUT
tok_all, offsets, pooled_all = features.cached_text_features(subset.captions.caption.tolist(), "auto")

# %%
print("packed tokens", tuple(tok_all.shape), "| offsets", tuple(offsets.shape), "| mean-pooled", tuple(pooled_all.shape))
k = 0
print(f"caption {k}: rows {int(offsets[k])}:{int(offsets[k + 1])} ->", text_encoder.tokenizer.tokenize(subset.captions.caption[k])[:6], "...")

# %% [markdown]
# ## One vector per caption: mean pooling or `[CLS]`?
# Global models need one vector per caption. Two common choices: the mean of the real tokens, or the `[CLS]` token. A measured sanity check decides: **captions of the same image should be closer to each other than captions of different images.** We report the gap in mean cosine similarity, and how often a caption's nearest caption describes the same image, on the 5,001 test captions.

# %%
test_rows = torch.tensor(subset.captions.image_id.isin(subset.split_ids("test")).to_numpy()).nonzero().squeeze(1)
image_of = torch.tensor(subset.captions.image_id.to_numpy())[test_rows]
same = image_of[:, None] == image_of[None, :]
off_diag = ~torch.eye(len(test_rows), dtype=torch.bool)

def caption_check(vectors):
    """(N, D) caption vectors -> same-image vs different-image mean cosine, and nearest-caption accuracy."""
    v = F.normalize(vectors.float(), dim=-1)
    sim = v @ v.t()
    nearest = sim.masked_fill(~off_diag, -2).argmax(1)
    return {"same image": sim[same & off_diag].mean().item(), "different images": sim[~same].mean().item(),
            "nearest caption same image": same[torch.arange(len(v)), nearest].float().mean().item()}

import pandas as pd
check = pd.DataFrame({"mean pooling": caption_check(pooled_all[test_rows]), "[CLS]": caption_check(tok_all[offsets[test_rows]])}).T
check["gap"] = check["same image"] - check["different images"]
check.round(3)

# %% [markdown]
# Both keep same-image captions closer than random pairs, and mean pooling separates them more clearly (all-MiniLM-L6-v2 was trained with mean pooling; `[CLS]` was never its output). The course's global text vector is the mean over real tokens; the attention models use every token.
#
# ## How much faster than the seed's loop?
# The seed encodes one caption at a time; the course batches captions sorted by length. Notebook 02's benchmark measured both on the same 256 captions in one run (its last table, rows `captions`); `python -m helpers.bench extract` repeats it on 1,024 captions.
#
# ## Recap
# - A caption becomes (T, D) token features plus a mask; padded positions are zero and flagged.
# - The seed drops the mask, so its features change with the batch; the course keeps it everywhere.
# - Mean pooling separates same-image captions from others better than `[CLS]` for this model (measured above).
# - Features for all 14,827 captions are cached, packed without padding.
#
# **Next:** `04_decoupled_attention` lets these word features attend over the image regions of notebook 02.
