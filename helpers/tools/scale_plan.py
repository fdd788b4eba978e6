"""The scale plan: `bench course`'s measured table, scaled to the Karpathy split of COCO, as markdown.

Every figure is either in the measured table or computed here from it and from the constants below,
each named with its source; what is assumed (a GPU's peak, how close to it the code runs, the host's
decode workers) says so. The arithmetic for any phase: time = flops at full scale / peak rate × the ratio
to the floor. On this CPU the ratio is measured (`vs_floor` of the table); on a GPU that did not run it,
the floor at the datasheet's peak is a lower bound and the planning figure divides it by
`GPU_EFFICIENCY`, an assumption.

`python -m helpers bench course --budget gpu --plan docs/scale-plan.md` measures and writes the plan;
`--from results/bench-course-gpu-cpu.csv` writes it again from a saved table without measuring.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .. import models
from ..fast.scoring import scoring_flops_for
from ..pipeline.recipes import BUDGETS, MODEL_NAMES, START_GRID, grid_of, grid_trials, searched, seeds_for, train_config

# The Karpathy split (Karpathy & Fei-Fei 2015): train with "restval", 5,000 val and 5,000 test images.
KARPATHY = {"train": 113_287, "val": 5_000, "test": 5_000}
ARCHIVES_GB = {"train2014.zip": 13.0, "val2014.zip": 6.0}   # cocodataset.org/#download: "[83K/13GB]", "[41K/6GB]"
# Assumed, not measured: NVIDIA's H200 SXM datasheet gives BF16 and FP16 Tensor Core 1,979 TFLOPS "with
# sparsity" (half of it dense) and FP32 67 TFLOPS (the course scores in float32; TF32 is off by default).
GPU = {"name": "NVIDIA H200 SXM", "float16": 989e12, "bfloat16": 989e12, "float32": 67e12}
GPU_EFFICIENCY = 0.25      # assumed share of the peak the course's kernels reach on that GPU (small D = 128)
HOST_WORKERS = 16          # assumed: decoding workers on the GPU machine's host (16 cores)
GB = 1e9


def split_sizes(stats: dict, split: dict = KARPATHY) -> dict:
    """{split: images} and the course's measured captions per image and tokens per caption ->
    {split: {'images', 'captions', 'tokens'}} (rounded to whole captions and tokens), with 'all'."""
    out = {}
    for name, n in split.items():
        captions = round(n * stats["captions_per_image"])
        out[name] = {"images": n, "captions": captions, "tokens": round(captions * stats["tokens_per_caption"])}
    out["all"] = {k: sum(v[k] for v in out.values()) for k in ("images", "captions", "tokens")}
    return out


def disk_table(stats: dict, split: dict = KARPATHY) -> pd.DataFrame:
    """Disk for the images (the publisher's archives) and the float16 feature cache, with the arithmetic."""
    n = split_sizes(stats, split)["all"]
    r, c, d, t = stats["regions"], stats["image_dim"], stats["text_dim"], stats["tokens_per_caption"]
    rows = [{"item": f"COCO 2014 images ({name}, the publisher's figure)", "arithmetic": "", "GB": gb}
            for name, gb in ARCHIVES_GB.items()]
    rows += [
        {"item": "image regions, float16", "arithmetic": f"{n['images']:,} images x {r} x {c} x 2 B",
         "GB": n["images"] * r * c * 2 / GB},
        {"item": "pooled image vectors, float16", "arithmetic": f"{n['images']:,} x {c} x 2 B",
         "GB": n["images"] * c * 2 / GB},
        {"item": "token features, float16",
         "arithmetic": f"{n['captions']:,} captions x {t:.2f} tokens x {d} x 2 B", "GB": n["tokens"] * d * 2 / GB},
        {"item": "pooled caption vectors, float16", "arithmetic": f"{n['captions']:,} x {d} x 2 B",
         "GB": n["captions"] * d * 2 / GB}]
    table = pd.DataFrame(rows)
    total = pd.DataFrame([{"item": "total", "arithmetic": "", "GB": table.GB.sum()}])
    return pd.concat([table, total], ignore_index=True)


def course_model(name: str, stats: dict) -> models.RetrievalModel:
    """The (untrained) model a course run of `name` (GPU budget) builds, at the features' sizes."""
    overrides = train_config(name, "gpu").model_overrides
    return models.build_model(name, image_dim=stats["image_dim"], text_dim=stats["text_dim"], **overrides)


def model_config(name: str, stats: dict) -> models.ModelConfig:
    """The configuration a course run of `name` (GPU budget) builds, at the features' sizes."""
    return course_model(name, stats).cfg


def largest_model(stats: dict) -> int:
    """Parameters of the course's largest model (GPU budget) at the features' sizes."""
    return max(models.count_parameters(course_model(name, stats)) for name in MODEL_NAMES)


def per_run(table: pd.DataFrame, peak_cpu: float, stats: dict, split: dict = KARPATHY,
            epochs: int | None = None) -> pd.DataFrame:
    """Per model, one course run at full scale (GPU budget: its batch, `epochs` = its most epochs, early
    stopping may end sooner): flops of training, of validating on the whole val split every epoch, and of
    scoring the 5K test; CPU hours at the measured ratio to the floor, GPU floor and planning hours."""
    budget = BUDGETS["gpu"]
    batch, epochs = budget["batch_size"], epochs or budget["epochs"]
    sizes = split_sizes(stats, split)
    steps = sizes["train"]["images"] // batch
    rows = []
    for name in table.model[table.phase == "train step"]:
        m = table[table.model == name].set_index("phase")
        if int(m.loc["train step", "batch"]) != batch:
            raise ValueError(f"the table's training steps ran at batch {int(m.loc['train step', 'batch'])}, the "
                             f"GPU budget's is {batch}: measure with `python -m helpers bench course --budget gpu`")
        cfg = model_config(name, stats)
        val, test = (scoring_flops_for(cfg, sizes[s]["tokens"], sizes[s]["captions"], sizes[s]["images"],
                                       stats["regions"]) for s in ("val", "test"))
        work = {"train": epochs * steps * m.loc["train step", "gflops"] * 1e9, "validate": epochs * val,
                "score 5K test": test}
        ratio = {"train": m.loc["train step", "vs_floor"], "validate": m.loc["validate", "vs_floor"],
                 "score 5K test": m.loc["score test", "vs_floor"]}
        dtype = {"train": "bfloat16", "validate": "float32", "score 5K test": "float32"}
        for phase, flops in work.items():
            rows.append({"model": name, "phase": phase, "PFLOP": flops / 1e15, "vs_floor (CPU)": ratio[phase],
                         "CPU h": flops / peak_cpu * ratio[phase] / 3600,
                         "GPU floor h": flops / GPU[dtype[phase]] / 3600,
                         "GPU plan h": flops / GPU[dtype[phase]] / GPU_EFFICIENCY / 3600})
    return pd.DataFrame(rows)


def extraction(table: pd.DataFrame, peak_cpu: float, stats: dict, split: dict = KARPATHY) -> pd.DataFrame:
    """Extracting every image and caption of the split once: flops per input from the table x inputs."""
    missing = {"decode images", "extract images", "extract captions"} - set(table.phase)
    if missing:
        raise ValueError(f"the table has no {sorted(missing)} rows; measure them with `bench course --images 16` "
                         "(--images 0 skips extraction)")
    n = split_sizes(stats, split)["all"]
    m = table.set_index("phase")
    rows = []
    for phase, count in (("extract images", n["images"]), ("extract captions", n["captions"])):
        flops = m.loc[phase, "gflops"] * 1e9 / m.loc[phase, "inputs"] * count
        rows.append({"phase": phase, "inputs": count, "PFLOP": flops / 1e15, "vs_floor (CPU)": m.loc[phase, "vs_floor"],
                     "CPU h": flops / peak_cpu * m.loc[phase, "vs_floor"] / 3600,
                     "GPU floor h": flops / GPU["float16"] / 3600,
                     "GPU plan h": flops / GPU["float16"] / GPU_EFFICIENCY / 3600})
    decode_s = m.loc["decode images", "seconds"] / m.loc["decode images", "inputs"]
    rows.append({"phase": "decode images (host CPU)", "inputs": n["images"], "PFLOP": None, "vs_floor (CPU)": None,
                 "CPU h": decode_s * n["images"] / 3600, "GPU floor h": decode_s * n["images"] / HOST_WORKERS / 3600,
                 "GPU plan h": decode_s * n["images"] / HOST_WORKERS / 3600})
    return pd.DataFrame(rows)


def search_grid() -> dict:
    """The search's final grid, {axis: values}: the values of the committed CPU search (every model gets the
    same grid), or the starting grid before there is one."""
    table = searched("cpu")
    return grid_of(table) if len(table) else dict(START_GRID)


def runs_per_model() -> pd.DataFrame:
    """Per model: the search's trials (seed 0), the comparison's seeds, and the distinct runs of both (the
    chosen trial is the comparison's seed-0 run: the same configuration, one folder)."""
    n = len(grid_trials(search_grid()))
    return pd.DataFrame([{"model": m, "search": n, "comparison": len(seeds_for(m)),
                          "distinct": n + len(seeds_for(m)) - 1} for m in MODEL_NAMES]).set_index("model")


def campaign(runs: pd.DataFrame, extract: pd.DataFrame, counts: pd.DataFrame) -> pd.DataFrame:
    """Hours of the comparison alone (its seeds' runs and 5K test scoring, extraction once) and of the
    search + comparison (distinct runs), summed over models."""
    cols = ["CPU h", "GPU floor h", "GPU plan h"]
    per = runs.pivot_table(index="model", columns="phase", values=cols, aggfunc="sum", sort=False)
    once = extract[cols].sum()
    out = []
    for what, n in (("the published comparison (seeds' runs + 5K scoring)", "comparison"),
                    ("search + comparison (distinct runs + 5K scoring)", "distinct")):
        k = counts.loc[per.index, n]
        seeds = counts.loc[per.index, "comparison"]
        row = {"campaign": what, "runs": int(k.sum())}
        for c in cols:
            train = ((per[(c, "train")] + per[(c, "validate")]) * k).sum()
            row[c] = once[c] + train + (per[(c, "score 5K test")] * seeds).sum()
        out.append(row)
    return pd.DataFrame(out)


def overhead_note(runs: pd.DataFrame, above: float = 100.0) -> str:
    """A sentence naming the rows whose measured time is mostly not products (vs_floor above `above`)."""
    slow = runs[runs["vs_floor (CPU)"] > above]
    if slow.empty:
        return f"Every row ran within {above:g}x its floor."
    names = ", ".join(f"{r.model} {r.phase} ({r._4:,.0f}x)" for r in slow.itertuples())
    return (f"Rows over {above:g}x their floor ({names}) were timed mostly in fixed costs and ranking, not in "
            "products: scaling them by flops assumes those costs grow like the pairs (ranking does, fixed costs "
            "do not), so their CPU hours are an upper estimate.")


def _md(table: pd.DataFrame, digits: int = 2) -> str:
    def cell(v):
        if v is None or (isinstance(v, float) and pd.isna(v)):
            return ""
        if isinstance(v, float):
            if v == 0 or abs(v) >= 1e4:
                return f"{v:,.0f}"
            return f"{v:,.{digits}f}" if abs(v) >= 1 else f"{v:.3g}"
        return f"{v:,}" if isinstance(v, int) else str(v)
    head = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "---|" * len(table.columns)
    return "\n".join([head, rule] + ["| " + " | ".join(cell(v) for v in r) + " |"
                                     for r in table.astype(object).itertuples(index=False)])


def plan_markdown(table: pd.DataFrame, meta: dict, split: dict = KARPATHY) -> str:
    """The scale plan as markdown from `bench course`'s table and its .json (machine, peaks, stats)."""
    stats, peak = meta["stats"], meta["peaks"]["float32"]
    sizes = split_sizes(stats, split)
    disk = disk_table(stats, split)
    runs = per_run(table, peak, stats, split)
    extract = extraction(table, peak, stats, split)
    counts = runs_per_model()
    total = campaign(runs, extract, counts)
    budget = BUDGETS["gpu"]
    steps = sizes["train"]["images"] // budget["batch_size"]
    m = meta["machine"]
    measured = table.drop(columns=[c for c in ("activation_mb",) if c in table]).copy()
    act = table.dropna(subset=["activation_mb"]) if "activation_mb" in table else table.iloc[:0]
    feat_ram = (sizes["train"]["images"] * (stats["regions"] + 1) * stats["image_dim"]
                + (sizes["train"]["tokens"] + sizes["train"]["captions"]) * stats["text_dim"]) * 2 / GB
    comparison, both = total.iloc[0], total.iloc[1]
    lines = [
        "# Scale plan: the course's comparison on the full Karpathy split",
        "",
        "Generated by `python -m helpers bench course --budget gpu --plan docs/scale-plan.md` (the arithmetic is "
        "`helpers.tools.scale_plan`; `--from <table.csv>` rewrites this file from a saved table). Figures marked "
        "*measured* come from the bench's table below; every other figure is computed from it in the tables "
        "that follow, with the arithmetic shown; *assumed* marks the inputs that were not measured.",
        "",
        "## 1. Measured on this machine",
        "",
        f"CPU: {m['cpu']} ({m['cores']} cores, torch {m['torch']}, {m['threads']} threads), GPU: {m['gpu'] or 'none'}; "
        f"{meta['date']}. The machine was busy with other work while the bench ran, so the seconds are slower "
        "than an idle machine's; the peak matrix-product rate was measured in the same run (the better of a "
        "measurement before and one after), and the ratio to the floor (`vs_floor` = seconds / floor_s) is the "
        "figure that carries over. No GPU was lent for this measurement: every GPU figure below is scaled from "
        "the floor at an assumed peak.",
        "",
        f"Peak matrix-product rate (float32, 2048² GEMM), measured: **{peak / 1e9:,.1f} GFLOP/s**. "
        f"Training steps at the GPU budget's batch of {budget['batch_size']}; validation and test scoring on "
        "the first images of the course's splits and all their captions (`batch` = images, `inputs` = captions); "
        f"seconds are the best of {meta.get('repeats', 1)} repeat(s). "
        "Flops are counted by `torch.utils.flop_counter` (training, "
        "extraction) or `bench.scoring_flops` (scoring): matrix products and convolutions only.",
        "",
        _md(measured, 3),
        "",
        "Activation memory of one training step (tensors saved for backward, float32, measured): "
        + ", ".join(f"{r.model} {r.activation_mb:,.0f} MB" for r in act.itertuples()) + ".",
        "",
        "## 2. The full split",
        "",
        f"Karpathy split: {split['train']:,} training images (with restval), {split['val']:,} validation, "
        f"{split['test']:,} test. Captions per image and tokens per caption are the course subset's, measured "
        f"({stats['captions']:,} captions of {stats['images']:,} images: {stats['captions_per_image']:.3f} per "
        f"image; {stats['tokens_per_caption']:.2f} tokens each, [CLS] and [SEP] included):",
        "",
        _md(pd.DataFrame([{"split": k, **v} for k, v in sizes.items()]), 0),
        "",
        "### Disk",
        "",
        _md(disk, 1),
        "",
        "### Memory",
        "",
        f"- Training features in RAM (float16, the course keeps a split in memory): ({sizes['train']['images']:,} x "
        f"({stats['regions']} + 1) x {stats['image_dim']} + ({sizes['train']['tokens']:,} + "
        f"{sizes['train']['captions']:,}) x {stats['text_dim']}) x 2 B = **{feat_ram:.1f} GB**; validation "
        "and test add the same per image and caption (the disk table's total, less the archives).",
        "- One training step's activations at the GPU budget's batch are the measured figures above (float32 on "
        "the CPU; bf16 autocast on a GPU keeps some of them in half the bytes): at most "
        f"**{act.activation_mb.max() / 1024:.2f} GB** ({act.model[act.activation_mb.idxmax()]}), beside the "
        f"largest model's {largest_model(stats):,} parameters (with AdamW's two moments, a few MB): "
        "one GPU holds a step many times over; the features can "
        "stay in host RAM and go to the GPU a batch at a time, as the course's loop does.",
        "",
        "### Compute per run (one model, one seed)",
        "",
        f"Training: {split['train']:,} // {budget['batch_size']} = {steps} steps per epoch x {budget['epochs']} epochs "
        f"(the GPU budget's most; early stopping with patience {budget['patience']} may end sooner) x the measured "
        "train step's flops. Validation: the whole validation split every epoch, as the course does "
        f"({sizes['val']['images']:,} images x {sizes['val']['captions']:,} captions), x {budget['epochs']}. "
        f"Test: {sizes['test']['images']:,} x {sizes['test']['captions']:,} = "
        f"{sizes['test']['images'] * sizes['test']['captions'] / 1e6:.1f}M image-caption pairs, once. Flops of "
        "scoring at scale are `fast.scoring.scoring_flops_for` at these sizes. CPU h = wall-clock hours on this "
        "machine (all its cores) = flops / the measured peak x the measured `vs_floor`; "
        "GPU floor h = flops / the assumed peak "
        f"({GPU['name']}: {GPU['bfloat16'] / 1e12:,.0f} TFLOP/s bf16 dense for training, "
        f"{GPU['float32'] / 1e12:,.0f} TFLOP/s float32 for scoring; *assumed*, from the datasheet); "
        f"GPU plan h = GPU floor h / {GPU_EFFICIENCY} (*assumed* share of the peak reached).",
        "",
        _md(runs, 3),
        "",
        overhead_note(runs),
        "",
        "### Extraction (once, every image and caption of the split)",
        "",
        f"Flops per input from the measured extraction rows x inputs; decoding is host work (no products): "
        f"measured seconds per image here x images, on the GPU machine over {HOST_WORKERS} host workers "
        "(*assumed*), so GPU extraction takes at least the decode line.",
        "",
        _md(extract, 3),
        "",
        "## 3. Repeating the course's published comparison",
        "",
        f"The comparison: {len(MODEL_NAMES)} models; seeds "
        f"{', '.join(f'{k} x {len(seeds_for(k))}' for k in MODEL_NAMES)}"
        f" = {int(counts.comparison.sum())} runs, each ranked on the 5K test. The search before it: "
        f"{len(grid_trials(search_grid()))} trials per model "
        f"({' x '.join(f'{k} {len(v)}' for k, v in search_grid().items())}, seed 0) = "
        f"{int(counts.search.sum())} runs, of which the {len(MODEL_NAMES)} chosen are the comparison's seed-0 runs, "
        f"so {int(counts.distinct.sum())} distinct runs in all. Hours = extraction once (decoding counted on "
        "its own, not overlapped with the GPU's work: an upper side) + Σ models runs x (train + validate) "
        "+ Σ models seeds x 5K scoring:",
        "",
        _md(counts.reset_index(), 0),
        "",
        _md(total, 1),
        "",
        f"Headline: the published comparison on the full split is about **{comparison['CPU h']:,.0f} hours** on "
        f"this machine's {m['cores']} cores (at its measured rates, {comparison['CPU h'] / 24:,.0f} days) "
        f"and, on one {GPU['name']}, at least "
        f"{comparison['GPU floor h']:,.1f} GPU hours (floor, assumed peak) and about "
        f"**{comparison['GPU plan h']:,.1f} GPU hours** at the assumed {GPU_EFFICIENCY:.0%} of peak; with the search, "
        f"{both['CPU h']:,.0f} hours here or about {both['GPU plan h']:,.1f} GPU hours. Validating on the whole "
        "5K validation split every epoch is part of these figures (the validate rows); validating on 1K of it "
        "would cut that share by 25x (it scales with images x captions).",
        "",
        "To replace the assumed GPU figures with measured ones, run the same command on a GPU "
        "(`python -m helpers bench course --budget gpu --device cuda --plan ...`): the table then holds the GPU's "
        "own seconds and its measured peak per precision.",
        "",
    ]
    return "\n".join(lines)


def read_table(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """A saved `bench course` table and its .json -> (table, meta); a clear error when either is missing."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"{path} or {meta_path.name} is missing; run `python -m helpers bench course "
                                "--budget gpu` first (it writes both)")
    return pd.read_csv(path), json.loads(meta_path.read_text())
