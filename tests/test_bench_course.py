"""`bench course` and the scale plan: the flop counting on known shapes, the scaling arithmetic on known
inputs, and the command on a tiny synthetic input."""
import json

import pandas as pd
import pytest
import torch

from helpers import models
from helpers.fast.scoring import scoring_flops_for
from helpers.features import synthetic_featureset
from helpers.tools import bench, scale_plan

STATS = {"regions": 49, "image_dim": 1280, "text_dim": 384, "captions_per_image": 5.0,
         "tokens_per_caption": 14.0, "images": 100, "captions": 500}


# ----------------------------------------------------------------------------- flops

def test_count_flops_of_known_products():
    a, b = torch.randn(5, 6), torch.randn(6, 7)
    assert bench.count_flops(lambda: a @ b) == 2 * 5 * 6 * 7
    lin = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8, requires_grad=True)
    assert bench.count_flops(lambda: lin(x)) == 2 * 3 * 8 * 4
    # backward: the gradient for the input and the one for the weight, each a product of the same size
    assert bench.count_flops(lambda: lin(x).sum().backward()) == 3 * (2 * 3 * 8 * 4)
    assert bench.count_flops(lambda: torch.softmax(a, -1)) == 0          # elementwise work is not counted


def test_count_flops_of_the_dual_training_forward():
    """`dual`'s FAST training scores on B images, B captions of T words: the two input projections, the
    value projection of the regions, the masked mean of the words and the (B, B) product."""
    b, r, c, t, dt, d = 4, 9, 32, 6, 24, 16
    model = models.build_model("dual", image_dim=c, text_dim=dt, dim=d)
    step = bench.ContrastiveStep(model, "infonce", bench.fast_scoring.FAST)
    args = (torch.randn(b, r, c), torch.randn(b, c), torch.randn(b, t, dt), torch.ones(b, t, dtype=torch.bool),
            torch.randn(b, dt))
    want = 2 * b * r * c * d + 2 * b * t * dt * d + 2 * b * r * d * d + 2 * b * t * d + 2 * b * b * d
    assert bench.count_flops(lambda: step(*args)) == want


def test_scoring_flops_for_known_sizes():
    n_tok, n_cap, n_img, r, d = 10, 2, 3, 4, 8
    cfg = models.ModelConfig(dim=d)                                       # decoupled: t -> i, per word
    assert scoring_flops_for(cfg, n_tok, n_cap, n_img, r) == 2 * (2 * 10 * 3 * 4 * 8) + 2 * 10 * 3 * 4 * 4
    dual = models.ModelConfig(dim=d, flow="none", head="pooled")
    assert scoring_flops_for(dual, n_tok, n_cap, n_img, r) == 2 * 10 * 8 + 2 * 2 * 3 * 8
    fs = synthetic_featureset(n_images=3, regions=4, image_dim=6, text_dim=5)
    model = models.build_model("decoupled", image_dim=6, text_dim=5, dim=d)
    assert bench.scoring_flops(model, fs) == scoring_flops_for(model.cfg, len(fs.tokens), fs.n_captions, 3, 4)


def test_saved_bytes_counts_what_backward_keeps():
    x = torch.randn(10, 20, requires_grad=True)
    w = torch.randn(20, 30, requires_grad=True)
    assert bench.saved_bytes(lambda: x @ w) == (10 * 20 + 20 * 30) * 4   # mm keeps both inputs


# ----------------------------------------------------------------------------- scaling arithmetic

def test_split_sizes_and_disk():
    sizes = scale_plan.split_sizes(STATS, {"train": 100, "val": 10, "test": 10})
    assert sizes["train"] == {"images": 100, "captions": 500, "tokens": 7000}
    assert sizes["all"] == {"images": 120, "captions": 600, "tokens": 8400}
    disk = scale_plan.disk_table(STATS, {"train": 100, "val": 10, "test": 10}).set_index("item").GB
    assert disk["image regions, float16"] == pytest.approx(120 * 49 * 1280 * 2 / 1e9)
    assert disk["token features, float16"] == pytest.approx(8400 * 384 * 2 / 1e9)
    assert disk["total"] == pytest.approx(disk.drop("total").sum())
    full = scale_plan.split_sizes(STATS)["all"]
    assert full["images"] == 123_287 and full["captions"] == 616_435


def test_runs_per_model_counts_the_shared_seed0_run():
    counts, n = scale_plan.runs_per_model(), len(scale_plan.grid_trials(scale_plan.search_grid()))
    assert counts.loc["decoupled"].tolist() == [n, 5, n + 4] and counts.loc["dual"].tolist() == [n, 3, n + 2]
    assert counts.comparison.sum() == 4 * 5 + 3 * 3 and counts.distinct.sum() == 7 * (n - 1) + 29


def _table(batch=256):
    """A made-up `bench course` table: dual only, round numbers."""
    rows = [("decode images", "", 1, 10, 1.0, None), ("extract images", "mobilenet_v2", 8, 10, 2.0, 6.0),
            ("extract captions", "minilm", 128, 100, 1.0, 2.0),
            ("train forward", "dual", batch, batch, 0.5, 5.0), ("train step", "dual", batch, batch, 1.0, 10.0),
            ("validate", "dual", 50, 250, 0.2, 1.0), ("score test", "dual", 100, 500, 0.4, 2.0)]
    table = pd.DataFrame(rows, columns=["phase", "model", "batch", "inputs", "seconds", "gflops"])
    table["floor_s"] = table.gflops / 10.0                                 # a 10 GFLOP/s machine
    table["vs_floor"] = table.seconds / table.floor_s
    table["activation_mb"] = [None, None, None, 3.0, None, None, None]
    return table


def test_per_run_and_campaign_arithmetic():
    peak = 10e9
    runs = scale_plan.per_run(_table(), peak, STATS).set_index("phase")
    steps = 113_287 // 256
    train = runs.loc["train"]
    assert train.PFLOP == pytest.approx(60 * steps * 10e9 / 1e15)
    assert train["CPU h"] == pytest.approx(60 * steps * 10e9 / peak * 1.0 / 3600)   # vs_floor 1.0 s / (10/10) s
    assert train["GPU floor h"] == pytest.approx(60 * steps * 10e9 / scale_plan.GPU["bfloat16"] / 3600)
    cfg = scale_plan.model_config("dual", STATS)
    test = scoring_flops_for(cfg, 25_000 * 14, 25_000, 5_000, 49)
    assert runs.loc["score 5K test", "CPU h"] == pytest.approx(test / peak * 2.0 / 3600)
    assert runs.loc["validate", "GPU plan h"] == pytest.approx(
        60 * test / scale_plan.GPU["float32"] / scale_plan.GPU_EFFICIENCY / 3600)
    extract = scale_plan.extraction(_table(), peak, STATS).set_index("phase")
    assert extract.loc["extract images", "PFLOP"] == pytest.approx(0.6e9 * 123_287 / 1e15)
    assert extract.loc["decode images (host CPU)", "CPU h"] == pytest.approx(0.1 * 123_287 / 3600)
    counts = scale_plan.runs_per_model().loc[["dual"]]
    total = scale_plan.campaign(scale_plan.per_run(_table(), peak, STATS), scale_plan.extraction(_table(), peak, STATS),
                                counts).set_index("runs")
    per_run = train["CPU h"] + runs.loc["validate", "CPU h"]
    want = extract["CPU h"].sum() + 3 * per_run + 3 * runs.loc["score 5K test", "CPU h"]
    assert total.loc[3, "CPU h"] == pytest.approx(want)
    n = len(scale_plan.grid_trials(scale_plan.search_grid()))           # the search's trials per model
    assert total.loc[n + 2, "CPU h"] == pytest.approx(want + (n - 1) * per_run)


def test_plan_refuses_a_table_at_another_batch():
    with pytest.raises(ValueError, match="--budget gpu"):
        scale_plan.per_run(_table(batch=64), 10e9, STATS)


def test_plan_refuses_a_table_without_extraction():
    with pytest.raises(ValueError, match="--images"):
        scale_plan.extraction(_table().iloc[3:], 10e9, STATS)


def test_read_table_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="bench course"):
        scale_plan.read_table(tmp_path / "nope.csv")


# ----------------------------------------------------------------------------- the command

def test_bench_course_on_a_tiny_synthetic_input():
    def split(n, seed):
        return synthetic_featureset(n_images=n, regions=9, image_dim=32, text_dim=24, max_len=8, seed=seed)

    feats = {"train": split(70, 0), "val": split(6, 1), "test": split(8, 2)}
    table = bench.bench_course("cpu", n_images=0, val_images=4, test_images=5, model_names=("dual", "decoupled"),
                               feats=feats, verbose=False)
    assert table.phase.tolist() == ["train forward", "train step", "validate", "score test"] * 2
    assert (table.gflops > 0).all() and (table.floor_s > 0).all() and (table.seconds > 0).all()
    assert table.batch.tolist()[:3] == [64, 64, 4] and table.inputs[3] == feats["test"].select_images(
        torch.arange(5)).n_captions
    step = table.set_index(["phase", "model"]).gflops
    assert step["train step", "decoupled"] > 2 * step["train forward", "decoupled"]   # backward ~2x forward
    assert table.vs_floor.tolist() == pytest.approx((table.seconds / table.floor_s).tolist())
    assert set(table.attrs["peaks"]) == {"float32"}


def test_course_command_writes_the_plan_from_a_saved_table(tmp_path):
    csv = tmp_path / "bench-course-gpu-cpu.csv"
    _table().to_csv(csv, index=False)
    meta = {"machine": {"cpu": "Test CPU", "cores": 2, "threads": 2, "torch": "x", "gpu": None},
            "peaks": {"float32": 10e9}, "budget": "gpu", "device": "cpu", "stats": STATS, "date": "2024-01-01"}
    csv.with_suffix(".json").write_text(json.dumps(meta))
    plan = tmp_path / "plan.md"
    assert bench.main(["course", "--from", str(csv), "--plan", str(plan)]) == 0
    text = plan.read_text()
    assert "Test CPU" in text and "123,287" in text and "**10.0 GFLOP/s**" in text
    assert "| the published comparison (seeds' runs + 5K scoring) | 3 |" in text
    with pytest.raises(SystemExit, match="--plan"):
        bench.main(["course", "--from", str(csv)])
