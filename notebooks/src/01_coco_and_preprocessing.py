# %% [markdown]
# # 01 · COCO and preprocessing
#
# **You will be able to** load the course's COCO subset with pycocotools, read its captions and licences, see what the seed's preprocessing does to an image and what the BERT tokenizer does to a caption, and judge labels mined from captions.
# **Prerequisites:** `00_welcome_and_setup`.
# **Time:** about 30 s on a 2-core laptop (measured in CI); the same on a GPU (nothing here uses one).

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from helpers import data, encoders, plots, show_source

sns.set_theme(style="whitegrid", font_scale=0.9)
pd.set_option("display.precision", 3)

# %% [markdown]
# ## What is in the subset?
# 2,964 real COCO 2017 images (downscaled to ≤ 320 px) with their 14,827 official human captions. `load_subset` reads `data/coco-subset/annotations/captions.json` with **pycocotools**, the reference COCO API, and checks that every caption points at an image that exists.

# %%
subset = data.load_subset()
coco = subset.coco
print(f"{len(coco.getImgIds())} images, {len(coco.getAnnIds())} captions")
print(subset.captions.groupby("image_id").size().value_counts().rename("images with n captions").to_dict())

# %% [markdown]
# pycocotools indexes the annotations: `imgToAnns` gives the captions of an image, `loadImgs` its record (licence, Flickr source, original size).

# %%
image_id = subset.image_ids[0]
print(coco.loadImgs(image_id)[0])
for ann in coco.imgToAnns[image_id]:
    print("-", ann["caption"])

# %% [markdown]
# ## What do the images and their captions look like?
# Every image keeps its Flickr licence; most are *NonCommercial*. Whenever the course shows an image it credits it: the licence under the picture, the Flickr source in the table below it.

# %%
shown = subset.image_ids[10:16]
fig = plots.show_images(subset, shown)

# %%
plots.credits_table(subset, shown)

# %% [markdown]
# ## How long are the captions, and which words dominate?
# Caption length decides how many word tokens the attention has to handle per caption; the vocabulary shows what the images are about (and the dataset's person bias).

# %%
words = subset.captions.caption.str.lower().str.findall(r"[a-z]+")
lengths = words.str.len()
print(f"words per caption: mean {lengths.mean():.1f}, median {lengths.median():.0f}, max {lengths.max()}")
stop = {"a", "an", "the", "of", "on", "in", "with", "and", "is", "to", "at", "are", "his", "her", "it", "some", "that", "next", "two", "there", "for", "near", "while", "other", "by", "up", "down", "its", "from", "their", "front", "top"}
top = words.explode().loc[lambda w: ~w.isin(stop)].value_counts().head(20)
print(f"vocabulary: {words.explode().nunique()} distinct words")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
sns.histplot(lengths, discrete=True, ax=axes[0]).set(xlabel="words per caption", ylabel="captions", title="caption length")
sns.barplot(x=top.values, y=top.index, ax=axes[1], color="C0").set(xlabel="captions containing the word", title="20 most frequent content words")
fig.tight_layout()

# %% [markdown]
# ## How big are the images?
# The mirror keeps the longer side at 320 px. What matters for the seed's preprocessing is the **aspect ratio**: every image will be forced into a 224 × 224 square.

# %%
sizes = subset.images[["width", "height"]].assign(aspect=lambda d: (d.width / d.height).round(2))
print(sizes.aspect.describe()[["min", "50%", "max"]].to_dict())
print(f"images that are not square: {(sizes.aspect != 1).mean():.1%}")
ax = sns.scatterplot(sizes, x="width", y="height", alpha=0.3, s=12)
ax.set(title="image sizes in the subset (px)", xlabel="width (px)", ylabel="height (px)");

# %% [markdown]
# ## What does the seed's preprocessing do to an image?
# The blog uses `Resize((224, 224))` → `ToTensor()` → ImageNet `Normalize`. A pair of sizes squashes the image to a square; a common alternative resizes the shorter side to 224 and crops the centre, which keeps shapes but cuts the edges. The course keeps the seed's transform (it is what we reproduce); you can see the cost here.

# %%
show_source(encoders.seed_transform)

# %%
wide = sizes.aspect.idxmax()
fig = plots.compare_preprocessing(subset.load_image(wide), {"seed: Resize((224,224))": encoders.seed_transform(), "aspect kept: Resize(224)+CenterCrop": encoders.aspect_transform()})
print(plots.credits_table(subset, [wide]).to_string())

# %% [markdown]
# ## How does the BERT tokenizer see a caption?
# The seed uses `bert-base-uncased`. Its weights cannot be downloaded here, so the course's default text model is **all-MiniLM-L6-v2**, which shares the *same* uncased WordPiece vocabulary; tokenization below is identical to BERT's. Watch for: word pieces (`##`), the special `[CLS]` and `[SEP]`, padding to the longest caption, and the **attention mask** that marks real tokens.

# %%
text_encoder, choice = encoders.load_text_encoder("auto")
tokenizer = text_encoder.tokenizer
print(choice.name, "·", type(tokenizer).__name__, "· vocabulary", tokenizer.vocab_size)
batch = subset.captions_of(image_id)[:3]
enc = tokenizer(batch, padding=True, return_tensors="pt")
for ids, mask in zip(enc["input_ids"], enc["attention_mask"]):
    print(" ".join(tokenizer.convert_ids_to_tokens(ids)))
    print("mask:", mask.tolist())

# %% [markdown]
# Padding tokens are there only to make a rectangle. The seed calls the model with `input_ids` only, so the mask is dropped and the short captions' `[PAD]` positions are attended to as if they were words — and later, its `DecoupledAttention` averages over them too. Notebook 03 measures what that does; the course carries the mask through every step.
#
# How many tokens does a caption take? This bounds the cost of word-to-region attention later.

# %%
n_tokens = pd.Series([len(t) for t in tokenizer(subset.captions.caption.tolist())["input_ids"]])
print(f"tokens per caption incl. [CLS]/[SEP]: mean {n_tokens.mean():.1f}, 95th percentile {n_tokens.quantile(0.95):.0f}, max {n_tokens.max()}")
print(f"word pieces per word: {(n_tokens - 2).sum() / lengths.sum():.2f}")

# %% [markdown]
# ## How is the data split?
# A deterministic split by image id (hash order, so it is the same on every machine): a fixed **1,000-image test set** for the standard COCO 1K retrieval protocol, which includes all 258 images that have official instance labels (so label-based evaluations use real labels), 250 validation images for choosing checkpoints, and the rest for training.

# %%
show_source(data.make_split)

# %%
split = {name: subset.split_ids(name) for name in ["train", "val", "test"]}
print({name: len(ids) for name, ids in split.items()})
print("instance-labelled images in test:", len(set(subset.instance_image_ids()) & set(split["test"])), "of", len(subset.instance_image_ids()))
print("captions per split:", {name: int(subset.captions.image_id.isin(ids).sum()) for name, ids in split.items()})

# %% [markdown]
# ## Can captions stand in for category labels?
# Later notebooks probe what each model's features know about object categories, but only 258 images have official labels. Labels mined from captions cover every image: a COCO category counts as present when any caption names it or a common synonym ("puppy" → dog, "sofa" → couch). They are **weak** labels: captions mention what is salient, not everything. On the 258 labelled images we can measure how weak.

# %%
mined = data.mine_labels(subset.captions)
quality = data.label_quality(mined, data.instance_labels(subset))
print(f"mined labels per image: {mined.sum(axis=1).mean():.2f}; images with at least one: {(mined.sum(axis=1) > 0).mean():.1%}")
quality.loc[["ALL (micro)"]]

# %%
quality.drop("ALL (micro)").sort_values("images_with_category", ascending=False).head(12)

# %% [markdown]
# Precision is high (when a caption names a thing, it is usually there), recall is low for small, background objects (bottles, cups, books: present in the scene, rarely worth a caption). The probes in notebook 06 therefore use categories that captions do mention, and report the labels' quality next to their results.
#
# ## Recap
# - The subset is real COCO: 2,964 images, 14,827 captions, loaded with pycocotools; every image shown is credited with its licence.
# - The seed squashes every image to 224 × 224; most COCO images are not square.
# - BERT's tokenizer pads batches and returns an attention mask; the seed drops that mask.
# - A fixed, hash-based split gives a 1K test set that holds all 258 instance-labelled images.
# - Caption-mined labels are precise but miss a lot; their measured quality travels with every result built on them.
#
# **Next:** `02_image_features` turns these images into features with a CNN backbone, and shows that the seed's image extractor returns class scores instead.
