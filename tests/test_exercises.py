"""Exercises: every check passes the reference solution, and fails the stub and a typical mistake with a
message naming it; the notebooks hold 2-4 exercises each, whose solutions are the reference ones (the
student edition is tested in test_editions.py)."""
import ast
import builtins
import contextlib
import inspect
import io
import math
import re
import textwrap

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import exercises
from helpers.exercises import solutions
from helpers.tools import editions
from helpers.config import PROJECT_ROOT
from helpers.features import FeatureSet

NOTEBOOKS = PROJECT_ROOT / "notebooks"
CODE = [name for name, ex in exercises.EXERCISES.items() if ex.kind == "code"]
PREDICT = [name for name, ex in exercises.EXERCISES.items() if ex.kind != "code"]


def stub(*args, **kwargs):
    # YOUR CODE HERE
    raise NotImplementedError()


# ----------------------------------------------------------------------------- typical mistakes, one or more each

def mentions_substring(caption, word):
    return word in caption.lower()


def mentions_case(caption, word):
    return re.search(rf"\b{word}\b", caption) is not None


def mentions_split(caption, word):
    return word in caption.lower().split()


def normalise_last_axis(images):
    return (images - torch.tensor((0.485, 0.456, 0.406))) / torch.tensor((0.229, 0.224, 0.225))


def normalise_batch_stats(images):
    return (images - images.mean()) / images.std()


def split_captions(captions, n_test, seed):
    test = captions.sample(n=n_test * 5, random_state=seed)
    return captions.drop(test.index), test


def split_n_captions(captions, n_test, seed):
    rng = np.random.default_rng(seed)
    ids = captions.image_id.unique()
    test = captions.image_id.isin(rng.choice(ids, size=n_test // 5, replace=False))
    return captions[~test], captions[test]


def regions_reshape(fmap):
    b, c, h, w = fmap.shape
    regions = fmap.reshape(b, h * w, c)
    return regions, regions.mean(1)


def regions_channels_first(fmap):
    regions = fmap.flatten(2)
    return regions, regions.mean(2)


def neighbours_with_self(vectors, k):
    unit = F.normalize(vectors, dim=-1)
    return (unit @ unit.t()).topk(k, dim=1).indices


def neighbours_dot(vectors, k):
    sim = vectors @ vectors.t()
    sim.fill_diagonal_(float("-inf"))
    return sim.topk(k, dim=1).indices


def pad_not_zeroed(tokens, offsets, rows):
    lengths = offsets[rows + 1] - offsets[rows]
    steps = torch.arange(int(lengths.max()))
    mask = steps[None, :] < lengths[:, None]
    index = (offsets[rows][:, None] + steps[None, :]).clamp(max=len(tokens) - 1)
    return tokens[index], mask


def pad_to_longest_of_all(tokens, offsets, rows):
    lengths = offsets[1:] - offsets[:-1]
    steps = torch.arange(int(lengths.max()))
    mask = steps[None, :] < lengths[rows][:, None]
    index = (offsets[rows][:, None] + steps[None, :]).clamp(max=len(tokens) - 1)
    return tokens[index] * mask[..., None], mask


def mean_with_padding(tokens, mask):
    return tokens.mean(1)


def mean_bool_mask(tokens, mask):
    return (tokens * mask).sum(1) / mask.sum(1)


def attention_unscaled(q, k, region_mask):
    return (q @ k.transpose(-2, -1)).masked_fill(~region_mask[:, None, :], float("-inf")).softmax(-1)


def attention_wrong_axis(q, k, region_mask):
    logits = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return logits.masked_fill(~region_mask[:, None, :], float("-inf")).softmax(dim=1)


def attention_mask_ignored(q, k, region_mask):
    return (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1)


def attention_mask_after(q, k, region_mask):
    return (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1) * region_mask[:, None, :]


def info_nce_one_way(scores, logit_scale):
    return F.cross_entropy(scores * logit_scale.exp(), torch.arange(len(scores)))


def info_nce_no_temperature(scores, logit_scale):
    t = torch.arange(len(scores))
    return (F.cross_entropy(scores, t) + F.cross_entropy(scores.t(), t)) / 2


def info_nce_detached(scores, logit_scale):
    return torch.tensor(solutions.info_nce(scores, logit_scale).item())


def stop_ties_as_progress(rsums, patience):
    best_epoch = len(rsums) - rsums[::-1].index(max(rsums))
    return patience > 0 and len(rsums) - best_epoch >= patience


def stop_vs_previous(rsums, patience):
    without = 0
    for before, now in zip(rsums, rsums[1:]):
        without = 0 if now > before else without + 1
    return patience > 0 and without >= patience


def stop_one_late(rsums, patience):
    return patience > 0 and len(rsums) - (rsums.index(max(rsums)) + 1) > patience


def recall_ties_for_model(scores, caption_image, k):
    n_img, n_cap = scores.shape
    own = caption_image[None, :] == torch.arange(n_img)[:, None]
    best_own = scores.masked_fill(~own, float("-inf")).amax(1, keepdim=True)
    correct = scores[caption_image, torch.arange(n_cap)]
    i2t, t2i = ((scores > best_own) & ~own).sum(1), ((scores > correct) & ~own).sum(0)
    return 100 * (i2t < k).float().mean().item(), 100 * (t2i < k).float().mean().item()


def recall_first_caption_only(scores, caption_image, k):
    n_img, n_cap = scores.shape
    own = caption_image[None, :] == torch.arange(n_img)[:, None]
    first = own.float().argmax(1)                                   # each image's first caption
    i2t = ((scores >= scores[torch.arange(n_img), first][:, None]) & ~own).sum(1)
    correct = scores[caption_image, torch.arange(n_cap)]
    t2i = ((scores >= correct) & ~own).sum(0)
    return 100 * (i2t < k).float().mean().item(), 100 * (t2i < k).float().mean().item()


def bootstrap_captions_apart(hits, caption_image, n_boot=1000, seed=0):
    rng = np.random.default_rng(seed)
    rates = [100 * hits[rng.integers(0, len(hits), len(hits))].mean() for _ in range(n_boot)]
    lo, hi = np.percentile(rates, [2.5, 97.5])
    return float(lo), float(hi)


def bootstrap_without_replacement(hits, caption_image, n_boot=1000, seed=0):
    rng = np.random.default_rng(seed)
    rates = [100 * hits[rng.permutation(len(hits))].mean() for _ in range(n_boot)]
    lo, hi = np.percentile(rates, [2.5, 97.5])
    return float(lo), float(hi)


def pointwise_all_negatives(scores, logit_scale):
    z = scores * logit_scale.exp()
    off = ~torch.eye(len(z), dtype=torch.bool)
    return F.softplus(-z.diag()).mean() + F.softplus(z[off]).mean()


def pointwise_competing(scores, logit_scale):
    return solutions.info_nce(scores, logit_scale)


def subsample_not_nested(fs, fraction, seed=0):
    g = torch.Generator().manual_seed(seed + int(100 * fraction))
    keep = torch.randperm(fs.n_images, generator=g)[:max(1, round(fraction * fs.n_images))]
    return fs.select_images(keep.sort().values)


def subsample_captions(fs, fraction, seed=0):
    """Draw caption rows, then keep their images with only the drawn captions."""
    g = torch.Generator().manual_seed(seed)
    caps = torch.randperm(fs.n_captions, generator=g)[:round(fraction * fs.n_captions)].sort().values
    images = fs.caption_image[caps].unique()
    remap = torch.full((fs.n_images,), -1, dtype=torch.long)
    remap[images] = torch.arange(len(images))
    lengths = fs.lengths()[caps]
    tokens = torch.cat([fs.tokens[fs.offsets[c]:fs.offsets[c + 1]] for c in caps.tolist()])
    return FeatureSet(fs.image_ids[images], fs.regions[images], fs.pooled[images], fs.caption_ids[caps],
                      remap[fs.caption_image[caps]], tokens,
                      torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]), fs.text_pooled[caps])


def peaks_swapped(weights, width, height):
    row, col = weights.argmax(-1) // 7, weights.argmax(-1) % 7
    return torch.stack([(row + 0.5) / 7 * width, (col + 0.5) / 7 * height], -1)


def peaks_corner(weights, width, height):
    row, col = weights.argmax(-1) // 7, weights.argmax(-1) % 7
    return torch.stack([col / 7 * width, row / 7 * height], -1)


def peaks_in_cells(weights, width, height):
    row, col = weights.argmax(-1) // 7, weights.argmax(-1) % 7
    return torch.stack([col + 0.5, row + 0.5], -1).float()


# exercise -> [(typical wrong answer, what the message must say)]
def interaction_contrast_only(contrast, encoder, base="minilm"):
    return [(1, (encoder, contrast[0])), (-1, (encoder, contrast[1]))]


def interaction_flipped(contrast, encoder, base="minilm"):
    a, b = contrast
    return [(-1, (encoder, a)), (1, (encoder, b)), (1, (base, a)), (-1, (base, b))]


MISTAKES = {
    "mentions": [(mentions_substring, "substring match"), (mentions_case, "case"), (mentions_split, "punctuation")],
    "normalise": [(normalise_last_axis, "did not broadcast over the channels"),
                  (normalise_batch_stats, "batch's own statistics")],
    "split_by_image": [(split_captions, "captions resampled apart from their images"),
                       (split_n_captions, "n_test counted captions, not images")],
    "regions_from_map": [(regions_reshape, "reshape without permute"), (regions_channels_first, "channels are still first")],
    "nearest_neighbours": [(neighbours_with_self, "its own nearest neighbour"), (neighbours_dot, "dot products, not cosines")],
    "pad_packed": [(pad_not_zeroed, "padding not zeroed"), (pad_to_longest_of_all, "longest caption \\*of the batch\\*")],
    "masked_mean": [(mean_with_padding, "padding counted in the mean"), (mean_bool_mask, "did not broadcast")],
    "region_attention": [(attention_unscaled, "no 1/√d scaling"), (attention_wrong_axis, "softmax over the wrong axis"),
                         (attention_mask_ignored, "mask ignored"), (attention_mask_after, "zeroed after the softmax")],
    "info_nce": [(info_nce_one_way, "only one direction of InfoNCE"), (info_nce_no_temperature, "temperature ignored"),
                 (info_nce_detached, "cut from the graph")],
    "should_stop": [(stop_ties_as_progress, "a tie counted as progress"), (stop_vs_previous, "compared with the one before"),
                    (stop_one_late, "one epoch late")],
    "recall_at_k": [(recall_ties_for_model, "ties counted in the model's favour"),
                    (recall_first_caption_only, "i2t counted only each image's first caption")],
    "bootstrap_interval": [(bootstrap_captions_apart, "captions resampled apart from their images"),
                           (bootstrap_without_replacement, "draw \\*with\\* replacement")],
    "peak_centres": [(peaks_swapped, "rows and columns swapped"), (peaks_corner, "corner, not its centre"),
                     (peaks_in_cells, "in grid cells, not pixels")],
    "pointwise_loss": [(pointwise_all_negatives, "every mismatched pair used as a negative"),
                       (pointwise_competing, "candidates compete")],
    "subsample": [(subsample_not_nested, "not nested"), (subsample_captions, "captions resampled apart from their images")],
    "interaction_terms": [(interaction_contrast_only, "only the contrast on gru"),
                          (interaction_flipped, "every sign flipped")],
}


def gap_table(word):
    """A gap table as `ablations.gap_table` writes it (only the column the check reads)."""
    import pandas as pd

    return pd.DataFrame([{"gap": "joint - decoupled", "the gap": word}, {"gap": "dual - decoupled", "the gap": "narrows"}])


HOLDS = (gap_table("holds (no credible change)"),)
# predict / change -> (right answer, [(wrong answer, what the message must say)], context)
PREDICTIONS = {
    "n_regions": (49, [(7, "side of the grid"), (1280, "channels")], ()),
    "padding_share": (0.75, [(0.2, "far more"), (75, "between 0 and 1")], ()),
    "uniform_keys": (1 / 49, [(1.0, "all the weight on one region")], ()),
    "drop_scaling": ("b", [("a", "not \\(a\\)"), ("x", "one of the letters")], ()),
    "chance_loss": (4.2, [(0, "certain"), (64, "number of candidates")], ()),
    "optimistic_ties": (100, [(0, "pessimistic rule")], ()),
    "caption_level": ("b", [("a", "not \\(a\\)")], ()),
    "leakage": ("b", [("a", "not \\(a\\)"), ("c", "chance")], ()),
    "modality_chance": (0.5, [(1.0, "unmixed"), (0, "always wrong"), (50, "between 0 and 1")], ()),
    "gap_with_data": ("c", [("a", "includes zero")], HOLDS),
}


def test_every_exercise_has_a_test_case():
    assert sorted(MISTAKES) == sorted(CODE)
    assert sorted(PREDICTIONS) == sorted(PREDICT)


@pytest.mark.parametrize("name", CODE)
def test_code_check_passes_the_reference_solution(name, capsys):
    exercises.EXERCISES[name].check(getattr(solutions, name))
    out = capsys.readouterr().out
    assert out.startswith("✓ Correct: ") and out.count("\n") == 1


@pytest.mark.parametrize("name", CODE)
def test_code_check_says_an_untouched_stub_is_not_attempted(name):
    with pytest.raises(AssertionError, match=f"○ {name}: not attempted: replace `raise NotImplementedError"):
        exercises.EXERCISES[name].check(stub)


@pytest.mark.parametrize("name, wrong, message",
                         [(name, wrong, message) for name, cases in MISTAKES.items() for wrong, message in cases],
                         ids=lambda x: getattr(x, "__name__", None))
def test_code_check_names_the_typical_mistake(name, wrong, message):
    with pytest.raises(AssertionError, match=message):
        exercises.EXERCISES[name].check(wrong)


@pytest.mark.parametrize("name", PREDICT)
def test_prediction_check(name, capsys):
    right, wrongs, context = PREDICTIONS[name]
    ex = exercises.EXERCISES[name]
    ex.check(right, *context)
    assert capsys.readouterr().out.startswith("✓ Correct: ")
    for stub_answer in (..., None):
        with pytest.raises(AssertionError, match="○ .*: not attempted: put your prediction in place of `...`"):
            ex.check(stub_answer, *context)
    for wrong, message in wrongs:
        with pytest.raises(AssertionError, match=message):
            ex.check(wrong, *context)


@pytest.mark.parametrize("table, right", [(gap_table("widens"), "a"), (gap_table("widens (opens from no credible gap)"), "a"),
                                          (gap_table("narrows"), "b"), (HOLDS[0], "c")])
def test_gap_with_data_reads_the_measured_table(table, right, capsys):
    exercises.gap_with_data.check(right, table)
    assert capsys.readouterr().out.startswith(f"✓ Correct: ({right})")
    with pytest.raises(AssertionError, match=f"the answer is \\({right}\\)"):
        exercises.gap_with_data.check("b" if right != "b" else "a", table)


def test_a_check_leaves_the_global_random_state_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    exercises.region_attention.check(solutions.region_attention)    # builds modules, which draw initial weights
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("name", list(exercises.EXERCISES))
def test_every_exercise_has_a_hint_and_a_solution(name, capsys):
    ex = exercises.EXERCISES[name]
    ex.hint()
    hint = capsys.readouterr().out
    ex.solution()
    solution = capsys.readouterr().out
    assert hint.startswith("Hint 1/") and f"({name}): " in hint and len(hint) > 40
    if ex.kind == "code":
        assert solution.startswith(f"def {name}(") and "return" in solution
    else:
        assert solution.startswith(f"Solution ({name}): ") and len(solution) > 20


# ----------------------------------------------------------------------------- the exercises in the notebooks

def exercise_cells(nb) -> list[tuple[int, str]]:
    """(cell index, exercise name) of every code cell that calls exercises.<name>.check."""
    return [(i, name) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            for name in re.findall(r"^exercises\.(\w+)\.check\(", cell.source, re.M)]


def without_markers(source: str) -> str:
    return "\n".join(line for line in source.split("\n") if "BEGIN SOLUTION" not in line and "END SOLUTION" not in line)


def free_names(source: str) -> set[str]:
    """Names a cell reads but neither binds nor gets from Python's builtins."""
    tree = ast.parse(source)
    bound, read = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    return read - bound - set(dir(builtins))


def imports_for(names: set[str], earlier: list[str]) -> str:
    """The import statements of earlier cells that bind `names` (only those names)."""
    lines = {}
    for source in earlier:
        for node in ast.parse(source).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    name = alias.asname or alias.name.split(".")[0]
                    if name in names:
                        one = ast.Import([alias]) if isinstance(node, ast.Import) else ast.ImportFrom(node.module, [alias], node.level)
                        lines[name] = ast.unparse(one)
    return "\n".join(lines.values())


def run_cell(source: str, earlier: list[str]) -> str:
    """Run an exercise cell with only the imports it needs from earlier cells; -> what it printed."""
    code = without_markers(source)
    missing = free_names(code) - set(re.findall(r"\b\w+\b", imports_for(free_names(code), earlier)))
    assert not missing, f"an exercise cell uses {sorted(missing)}, which no earlier cell imports (exercise cells " \
                        "use only imported modules, so that they run wherever they are placed)"
    namespace = {}
    exec(imports_for(free_names(code), earlier), namespace)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(code, namespace)
    return out.getvalue()


NOTEBOOK_FILES = sorted(NOTEBOOKS.glob("0[1-8]_*.ipynb"))


def test_notebooks_01_to_08_are_all_there():
    assert [p.name[:2] for p in NOTEBOOK_FILES] == ["01", "02", "03", "04", "05", "06", "07", "08"]


def predictions_checked_later(nb) -> dict[int, int]:
    """{marked cell: its check cell} for predictions that need the notebook's measured results: the marked
    cell only sets `prediction` (before the results are shown), a later cell checks it against them."""
    out = {}
    for i, cell in enumerate(nb.cells):
        if editions.BEGIN in cell.source and not re.search(r"^exercises\.\w+\.check\(", cell.source, re.M):
            later = [j for j, name in exercise_cells(nb) if j > i and re.search(r"\.check\(prediction,", nb.cells[j].source)]
            assert "prediction =" in cell.source and later, f"cell {i} holds a solution but no check follows it"
            out[i] = later[0]
    return out


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name[:2])
def test_each_notebook_holds_2_to_4_exercises_that_exist(path):
    nb = nbformat.read(path, as_version=4)
    names = [name for _, name in exercise_cells(nb)]
    assert 2 <= len(names) <= 4, f"{path.name}: {len(names)} exercises"
    assert set(names) <= set(exercises.EXERCISES), f"unknown: {set(names) - set(exercises.EXERCISES)}"
    assert sorted(names) == sorted(n for n, ex in exercises.EXERCISES.items() if ex.notebook == path.name[:2])
    marked = [i for i, c in enumerate(nb.cells) if editions.BEGIN in c.source]
    later = predictions_checked_later(nb)
    checks = sorted([i for i, _ in exercise_cells(nb) if i not in later.values()] + list(later))
    assert marked == checks, "every exercise cell holds one solution region, and only those"
    for i in marked:
        assert nb.cells[i - 1].cell_type == "markdown" and "Exercise" in nb.cells[i - 1].source
    for i, name in exercise_cells(nb):                 # the instructor edition is committed executed
        text = "".join(o.get("text", "") for o in nb.cells[i].outputs if o.output_type == "stream")
        assert text.rstrip("\n").split("\n")[-1].startswith("✓ Correct: "), \
            f"{path.name}: the {name} cell is not executed, or its check failed"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name[:2])
def test_the_notebook_solutions_pass_their_checks(path):
    nb = nbformat.read(path, as_version=4)
    sources = [c.source for c in nb.cells if c.cell_type == "code"]
    for i, name in exercise_cells(nb):
        if i in predictions_checked_later(nb).values():
            continue                                   # checked against the notebook's own results, when it runs
        earlier = [c.source for c in nb.cells[:i] if c.cell_type == "code"]
        assert run_cell(nb.cells[i].source, earlier).rstrip().split("\n")[-1].startswith("✓ Correct: "), name
    assert sources


def solution_functions() -> list[tuple[str, str]]:
    """(exercise, function source without the markers) of every coded exercise in the notebooks."""
    out = []
    for source in [c.source for p in NOTEBOOK_FILES for c in nbformat.read(p, as_version=4).cells]:
        if editions.BEGIN in source:
            for node in ast.parse(without_markers(source)).body:
                if isinstance(node, ast.FunctionDef):
                    out.append((node.name, ast.get_source_segment(without_markers(source), node)))
    return out


def test_notebook_solutions_are_the_reference_solutions():
    found = dict(solution_functions())
    assert sorted(found) == sorted(CODE)
    for name, source in found.items():
        assert textwrap.dedent(source).rstrip() == inspect.getsource(getattr(solutions, name)).rstrip(), name

