"""Helpers for the course *Decoupled multimodal features, reproduced*: the map of the package.

The modules a learner reads, one per course step (each imports only libraries and the modules above it):
    config          paths, device, seeds and the encoder pair: resolved in one place
    atomic          files written atomically, and their checksums
    download        01: the subset from the official COCO servers (resumable, md5-checked); full COCO
                    2014 with Karpathy's split (COURSE_DATA=karpathy): pinned archives, safe extraction
    data            01: the COCO subset: prepare, verify, load, split, caption-mined labels; KarpathyCoco
    blog            the blog's code as written, kept runnable to show its bugs
    encoders        02-03: the frozen image and text encoders (regions, token features)
    features        02-03: FeatureSet, the features the models read, and 08's changes to them
    text_towers     text encoders without MiniLM's prior: a GRU tower learnt from scratch, a random MiniLM
    attention       04: decoupled (text -> image) attention, corrected
    losses          05, 08: InfoNCE, VSE++, pointwise, and 08's added terms
    models          04-05, 08: the retrieval models, the one registry of them, readable scoring
    checkpoints     05: a run folder's files, written so that a killed run resumes
    train           05: the training loop
    pretraining     08: self-supervised (SimCLR) pre-training of each modality's projection
    metrics         06: recall@K with ties against the model, rSum, verdict words
    intervals       06: honest intervals over test images and training seeds
    protocols       06 at scale: the published COCO 1K (five folds of 5K) and 5K protocols
    probes          07: linear probes of what each modality's vectors keep
    pointing        07: word-over-region attention maps and the pointing game
    plots           figures: images with credits, attention maps, curves, forest plots
    checks          the notebooks' checks of float results against committed references
    exercises/      the exercises, one module per notebook, their shared core and the solutions

The speed code, `fast/` (same results, faster; imports only the learner modules it speeds up):
    fast.scoring      tiled scoring of a whole split and lean training-batch scores
    fast.extraction   batched feature extraction, the CNN as one fused oneDNN Graph
    fast.distributed  the same update on several processes under torchrun
    fast.parallel     independent runs side by side, one thread each
    fast.shards       features in shards on disk, memory-mapped, read row by row

The pipeline, `pipeline/` (may import both; nothing imports it but the commands and the tools):
    pipeline.recipes        models, seeds, budgets, the chosen settings, one folder per configuration
    pipeline.feature_cache  features extracted once and read back; the course's splits
    pipeline.runs           train or reuse the course's runs, rank their test sets
    pipeline.search         05's learning-rate x temperature search, grown until it brackets, and its recheck
    pipeline.evaluation     06's tables: recalls, the +8.5% claim under each reading, the factorial
    pipeline.verdicts       06's declared comparisons: the primary, Holm-corrected families, the primary's power
    pipeline.features_kept  07's tables: probes, the pointing game, the verdict on every claim
    pipeline.ablations      08's runs and tables: one change at a time, each proposal tuned, the data-scale curve
    pipeline.encoder_prior  08's encoder prior: each encoder's search and runs, the contrasts, their interactions
    pipeline.shards         features at scale: extracted in shards under torchrun, DDP training, scoring
    pipeline.splits         06's split sensitivity: the primary comparison and first secondary on other splits

The tools, `tools/`, and the command line:
    tools.bench     timings: extraction, scoring, runs side by side, the course phase by phase (`python -m helpers bench`)
    tools.scale_plan  the course scaled to the full COCO split, from `bench course`'s table (docs/scale-plan.md)
    tools.editions  the student edition (`make student`)
    tools.run_notebooks  runs the notebooks with per-cell progress; a failure leaves its notebook (`make course`)
    tools.clean     committed notebooks without execution timestamps and widget state (`make refresh`)
    tools.standin   a tiny full-COCO stand-in from the subset, and a local server for it (tests, offline)
    tools.scale     full COCO end to end under torchrun, or all of it on the stand-in (`make scale-standin`)
    __main__        `python -m helpers train | search | reproduce | splits | bench | student | clean | summary`
"""
import inspect

__version__ = "0.1.0"


def show_source(obj) -> None:
    """Display the source code of a helper function or class in a notebook."""
    from IPython.display import Code, display   # IPython only where a notebook shows code

    display(Code(inspect.getsource(obj), language="python"))
