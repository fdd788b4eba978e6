# %% [markdown]
# # 02 · Image features
#
# **You will be able to** turn an image into CNN region features and a pooled vector, explain why the seed's extractor gives 1000 numbers per image instead, check that the pretrained weights are real, and extract (and cache) features for the whole subset fast.
# **Prerequisites:** `01_coco_and_preprocessing`.
# **Time:** about 2 min on a 2-core laptop the first time (feature extraction), seconds once cached (measured in CI). Not yet measured on a GPU.

# %%
import torch
import torch.nn.functional as F

import torchvision

from helpers import bench, config, data, encoders, features, plots, seed, show_source

torch.manual_seed(0)
subset = data.load_subset()

# %% [markdown]
# ## What does a CNN backbone give?
# A classification CNN is a stack of convolutions that ends in a **feature map** (C channels on a coarse grid), then global-average pooling and a linear classifier. For attention we want the map itself: each of the 7 × 7 cells is a **region** with a C-dimensional feature; their mean is the **pooled** image vector.
#
# `auto` picks the seed's ResNet-50 when its weights are on this machine and the offline MobileNetV2 otherwise (notebook 00 explains why).

# %%
encoder, choice = encoders.load_image_encoder("auto")
print(choice.name, "—", choice.reason.split(" (")[0])
show_source(encoders.ImageEncoder.forward)

# %%
image_id = subset.image_ids[3]
x = encoders.seed_transform()(subset.load_image(image_id)).unsqueeze(0)     # (1, 3, 224, 224)
with torch.inference_mode():
    fmap = encoder.body(x)
    regions, pooled = encoder(x)
print("feature map", tuple(fmap.shape), "-> regions", tuple(regions.shape), "-> pooled", tuple(pooled.shape))

# %% [markdown]
# ## Why does the seed's image extractor give 1000 numbers per image?
# Here is the blog's `ImagePreprocessor`, kept runnable in `helpers.seed` with its bugs marked. It loads the *whole* classifier and calls it; and it defines a transform that it never applies.

# %%
show_source(seed.ImagePreprocessor)

# %% [markdown]
# Run it as written (with the offline backbone in place of ResNet-50; the blog's `pretrained=True` is deprecated in torchvision, `weights=...` replaced it). A PIL image goes straight into the network:

# %%
classifier = getattr(torchvision.models, choice.name)()        # the full torchvision model, classifier included
classifier.load_state_dict(torch.load(choice.weights_file, weights_only=True))   # today's spelling of pretrained=True
blog = seed.ImagePreprocessor(classifier)
try:
    blog.extract_features(subset.load_image(image_id))
except Exception as e:
    print(type(e).__name__, "—", str(e)[:90])

# %% [markdown]
# It fails: the transform is never applied. Transform by hand, and the output is **1000 ImageNet logits**, one score per ImageNet class — not features, and not regions for attention to look at:

# %%
logits = blog.extract_features(blog.transform(subset.load_image(image_id)).unsqueeze(0))
print("seed output:", tuple(logits.shape), "| course output:", tuple(regions.shape), "regions +", tuple(pooled.shape), "pooled")
with torch.inference_mode():
    same = torch.allclose(logits, encoder.classify(pooled), atol=1e-4)
print("same numbers as the course's classifier head on its pooled vector:", same)

# %% [markdown]
# The last line shows what the seed computes: our pooled vector pushed through the classifier head. The fix is to stop *before* pooling (`encoder.body`) and keep the regions — which is what `ImageEncoder` does.
#
# ## Are the weights real?
# Random weights would also give tensors of the right shape. ImageNet top-5 predictions on COCO images are a quick check that the pretrained weights loaded.

# %%
shown = subset.image_ids[20:24]
batch = torch.stack([encoders.seed_transform()(subset.load_image(i)) for i in shown])
with torch.inference_mode():
    top5 = encoder.top_k(encoder(batch)[1], k=5)
for i, preds in zip(shown, top5):
    print(i, " · ".join(f"{name} {p:.2f}" for name, p in preds))

# %%
fig = plots.show_images(subset, shown, ncols=4, n_captions=1, width=3.4)

# %% [markdown]
# ## What do region features look like?
# Each of the 49 regions has its own vector. Its **norm** shows where the network found strong evidence; drawn over the squashed 224 × 224 image the network saw, it follows the objects.

# %%
norms = regions[0].norm(dim=-1)                       # (49,)
fig = plots.attention_maps(subset.load_image(image_id), (norms / norms.sum())[None], ["region feature norm"], ncols=1, width=3.6)
print(plots.credits_table(subset, [image_id]).to_string())

# %% [markdown]
# ## Extract the whole subset, once
# The course's pipeline decodes images in a DataLoader worker while the model runs, batches them, uses `torch.inference_mode`, and stores float16 features in a **safetensors cache** under `data/cache/`. The cache key covers the backbone, the weights file's checksum, the preprocessing and the image ids; a changed setting never reads old features, and a damaged file is rebuilt. On a GPU the same call uses pinned memory, non-blocking copies, channels-last and mixed precision.

# %%
show_source(features.extract_image_features)

# %%
# NBVAL_IGNORE_OUTPUT
regions_all, pooled_all = features.cached_image_features(subset, subset.image_ids, "auto")

# %%
print("regions", tuple(regions_all.shape), regions_all.dtype, "| pooled", tuple(pooled_all.shape))
print(f"cache: {sum(p.stat().st_size for p in config.PATHS.cache.glob('image-*.safetensors')) / 2**20:.0f} MiB")

# %% [markdown]
# ## Do pooled features make sense? Nearest neighbours
# If the features carry meaning, an image's nearest neighbours (cosine of pooled vectors) should show similar scenes. Look at three queries, then measure: how often does the nearest neighbour share a caption-mined category with its query, against random pairs?

# %%
emb = F.normalize(pooled_all.float(), dim=-1)
sim = emb @ emb.t()
sim.fill_diagonal_(-1)
queries = [subset.image_ids[k] for k in (5, 40, 77)]
rows = [subset.image_ids.index(q) for q in queries]
neighbours = {q: [subset.image_ids[j] for j in sim[r].topk(3).indices.tolist()] for q, r in zip(queries, rows)}
fig = plots.show_images(subset, [i for q in queries for i in [q, *neighbours[q]]], ncols=4, n_captions=1, width=3.0,
                        marks={q: "orange" for q in queries})

# %%
mined = data.mine_labels(subset.captions).loc[subset.image_ids].drop(columns="person")   # 'person' is in nearly every image
labels = torch.tensor(mined.values, dtype=torch.float)
nn_index = sim.argmax(1)
share_nn = ((labels * labels[nn_index]).sum(1) > 0).float().mean()
g = torch.Generator().manual_seed(0)
share_random = ((labels * labels[torch.randperm(len(labels), generator=g)]).sum(1) > 0).float().mean()
print(f"nearest neighbour shares a non-person category: {share_nn:.1%}  (random image: {share_random:.1%})")

# %% [markdown]
# ## How much faster is the course's pipeline than the seed's loop?
# The seed processes one image at a time: open, transform, one forward pass. The course batches, decodes in a worker and skips autograd bookkeeping. `helpers.bench` times both on the same 64 images (and 256 captions) in one run (timings vary from run to run; the ratio is what to look at).

# %%
result = bench.bench_extract(n_images=64, n_captions=256, repeats=1, subset=subset, verbose=False)
for r in result.itertuples():
    print(f"{r.modality:8s} {r.pipeline[:44]:44s} {r.inputs_per_s:.1f} {r.modality}/s  ({r.speedup:.1f}×)")

# %% [markdown]
# The captions rows are notebook 03's subject; they are measured here in the same run. `python -m helpers.bench extract` runs this benchmark from the command line on more inputs and with repeats.
#
# ## Recap
# - A CNN's last feature map gives R = 7 × 7 = 49 region vectors and, averaged, one pooled vector per image.
# - The seed's extractor returns ImageNet class logits (and never applies its transform); the course stops before pooling.
# - Top-5 ImageNet predictions and nearest neighbours show that the offline weights are real and the features meaningful.
# - Features for all 2,964 images are cached in safetensors; later notebooks read them in seconds.
#
# **Next:** `03_text_features` does the same for captions, where the attention mask matters.
