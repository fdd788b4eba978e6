"""Mutation suite of the exercises of notebooks 01-04: each typical mistake, written as a small function, fails
its check with its own message (and with no other mistake's); correct answers written differently from the
reference pass; predict and change checks answer a wrong type, NaN, infinity or a near miss with a message."""
import math
import random
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from helpers import encoders, exercises
from test_exercises import pad_to_longest_of_all

MEAN, STD = torch.tensor(encoders.IMAGENET_MEAN), torch.tensor(encoders.IMAGENET_STD)


# ----------------------------------------------------------------------------- 01 · mentions

def mentions_substring(caption, word):
    return word in caption.lower()


def mentions_prefix_only(caption, word):
    return re.search(rf"\b{word}", caption.lower()) is not None


def mentions_suffix_only(caption, word):
    return re.search(rf"{word}\b", caption.lower()) is not None


def mentions_case(caption, word):
    return re.search(rf"\b{word}\b", caption) is not None


def mentions_split(caption, word):
    return word in caption.lower().split()


def mentions_match_object(caption, word):
    return re.search(rf"\b{word}\b", caption.lower())


def mentions_no_false(caption, word):
    if re.search(rf"\b{word}\b", caption.lower()):
        return True


def mentions_count(caption, word):
    return len(re.findall(rf"\b{word}\b", caption.lower()))


def mentions_findall(caption, word):
    return re.findall(rf"\b{word}\b", caption.lower())


def mentions_words(caption, word):
    return any(w == word for w in re.findall(r"[a-z]+", caption.lower()))


def mentions_ignorecase(caption, word):
    return bool(re.search(rf"\b{re.escape(word)}\b", caption, flags=re.IGNORECASE))


def mentions_split_nonword(caption, word):
    return word.lower() in re.split(r"\W+", caption.lower())


# ----------------------------------------------------------------------------- 01 · normalise

def normalise_last_axis(images):
    return (images - MEAN) / STD


def normalise_batch_stats(images):
    return (images - images.mean()) / images.std()


def normalise_channel_batch_stats(images):
    return (images - images.mean((0, 2, 3), keepdim=True)) / images.std((0, 2, 3), keepdim=True)


def normalise_no_std(images):
    return images - MEAN.view(3, 1, 1)


def normalise_swapped(images):
    return (images - STD.view(3, 1, 1)) / MEAN.view(3, 1, 1)


def normalise_undo(images):
    return images * STD.view(3, 1, 1) + MEAN.view(3, 1, 1)


def normalise_4d(images):
    return (images - MEAN.view(1, 3, 1, 1)) / STD.view(1, 3, 1, 1)


def normalise_channels_last(images):
    return ((images.permute(0, 2, 3, 1) - MEAN) / STD).permute(0, 3, 1, 2)


def normalise_indexing(images):
    return images.sub(MEAN[:, None, None]).div(STD[:, None, None])


# ----------------------------------------------------------------------------- 01 · split_by_image

def split_captions(captions, n_test, seed):
    test = captions.sample(n=n_test * 5, random_state=seed)
    return captions.drop(test.index), test


def split_divided(captions, n_test, seed):
    rng = np.random.default_rng(seed)
    test = captions.image_id.isin(rng.choice(captions.image_id.unique(), size=n_test // 5, replace=False))
    return captions[~test], captions[test]


def split_with_replacement(captions, n_test, seed):
    rng = np.random.default_rng(seed)
    test = captions.image_id.isin(rng.choice(captions.image_id.unique(), size=n_test))
    return captions[~test], captions[test]


def split_swapped(captions, n_test, seed):
    rng = np.random.default_rng(seed)
    test = captions.image_id.isin(rng.choice(captions.image_id.unique(), size=n_test, replace=False))
    return captions[test], captions[~test]


def split_unseeded(captions, n_test, seed):
    rng = np.random.default_rng()
    test = captions.image_id.isin(rng.choice(captions.image_id.unique(), size=n_test, replace=False))
    return captions[~test], captions[test]


def split_seed_ignored(captions, n_test, seed):
    test = captions.image_id.isin(captions.image_id.unique()[:n_test])
    return captions[~test], captions[test]


def split_five_each(captions, n_test, seed):
    captions = captions.groupby("image_id").head(5)
    rng = np.random.default_rng(seed)
    test = captions.image_id.isin(rng.choice(captions.image_id.unique(), size=n_test, replace=False))
    return captions[~test], captions[test]


def split_permutation(captions, n_test, seed):
    ids = captions.image_id.unique()
    test_ids = ids[np.random.default_rng(seed).permutation(len(ids))[:n_test]]
    test = captions.image_id.isin(test_ids)
    return captions[~test], captions[test]


def split_python_random(captions, n_test, seed):
    test_ids = set(random.Random(seed).sample(sorted(set(captions.image_id)), n_test))
    in_test = [i in test_ids for i in captions.image_id]
    return captions[[not t for t in in_test]], captions[in_test]


# ----------------------------------------------------------------------------- 02 · regions_from_map

def regions_reshape(fmap):
    b, c, h, w = fmap.shape
    regions = fmap.reshape(b, h * w, c)
    return regions, regions.mean(1)


def regions_column_major(fmap):
    regions = fmap.transpose(2, 3).flatten(2).transpose(1, 2)
    return regions, regions.mean(1)


def regions_channels_first(fmap):
    regions = fmap.flatten(2)
    return regions, regions.mean(2)


def regions_swapped(fmap):
    regions = fmap.flatten(2).transpose(1, 2)
    return regions.mean(1), regions


def regions_pooled_sum(fmap):
    regions = fmap.flatten(2).transpose(1, 2)
    return regions, regions.sum(1)


def regions_pooled_max(fmap):
    regions = fmap.flatten(2).transpose(1, 2)
    return regions, regions.max(1).values


def regions_square(fmap):
    b, c, h, _ = fmap.shape
    regions = fmap.reshape(b, c, h * h).transpose(1, 2)
    return regions, regions.mean(1)


def regions_pooled_over_channels(fmap):
    regions = fmap.flatten(2).transpose(1, 2)
    return regions, regions.mean(2)


def regions_permute(fmap):
    b, c, h, w = fmap.shape
    return fmap.permute(0, 2, 3, 1).reshape(b, -1, c), fmap.mean((2, 3))


def regions_view(fmap):
    b, c = fmap.shape[:2]
    return fmap.view(b, c, -1).permute(0, 2, 1), F.adaptive_avg_pool2d(fmap, 1).flatten(1)


# ----------------------------------------------------------------------------- 02 · nearest_neighbours

def _cosines(vectors):
    unit = F.normalize(vectors, dim=-1)
    return unit @ unit.t()


def neighbours_with_self(vectors, k):
    return _cosines(vectors).topk(k, dim=1).indices


def neighbours_dot(vectors, k):
    sim = vectors @ vectors.t()
    sim.fill_diagonal_(float("-inf"))
    return sim.topk(k, dim=1).indices


def neighbours_least(vectors, k):
    sim = _cosines(vectors)
    sim.fill_diagonal_(float("inf"))
    return sim.topk(k, dim=1, largest=False).indices


def neighbours_reversed(vectors, k):
    sim = _cosines(vectors)
    sim.fill_diagonal_(float("-inf"))
    return sim.topk(k, dim=1).indices.flip(1)


def neighbours_values(vectors, k):
    sim = _cosines(vectors)
    sim.fill_diagonal_(float("-inf"))
    return sim.topk(k, dim=1).values


def neighbours_fixed_k(vectors, k):
    sim = _cosines(vectors)
    sim.fill_diagonal_(float("-inf"))
    return sim.topk(3, dim=1).indices


def neighbours_columns(vectors, k):
    unit = F.normalize(vectors, dim=0)
    sim = unit @ unit.t()
    sim.fill_diagonal_(float("-inf"))
    return sim.topk(k, dim=1).indices


def neighbours_euclidean(vectors, k):
    dist = torch.cdist(vectors, vectors)
    dist.fill_diagonal_(float("inf"))
    return dist.topk(k, dim=1, largest=False).indices


def neighbours_drop_first(vectors, k):
    return _cosines(vectors).topk(k + 1, dim=1).indices[:, 1:]


def neighbours_argsort(vectors, k):
    sim = F.cosine_similarity(vectors[:, None, :], vectors[None, :, :], dim=-1) - 3 * torch.eye(len(vectors))
    return sim.argsort(dim=1, descending=True)[:, :k]


# ----------------------------------------------------------------------------- 03 · pad_packed

def _pad(tokens, offsets, rows, lengths, index_shift=0, mask_rule=None, clamp=True, zero=True):
    steps = torch.arange(int(lengths.max()))
    mask = steps[None, :] < lengths[:, None] if mask_rule is None else mask_rule(steps, lengths)
    index = offsets[rows][:, None] + steps[None, :] + index_shift
    if clamp:
        index = index.clamp(min=0, max=len(tokens) - 1)
    padded = tokens[index]
    return (padded * mask[..., None] if zero else padded), mask


def pad_not_zeroed(tokens, offsets, rows):
    return _pad(tokens, offsets, rows, offsets[rows + 1] - offsets[rows], zero=False)


# pad_to_longest_of_all: the mistake test_exercises.py already writes (imported above).


def pad_one_too_many(tokens, offsets, rows):
    return _pad(tokens, offsets, rows, offsets[rows + 1] - offsets[rows] + 1)


def pad_one_too_few(tokens, offsets, rows):
    return _pad(tokens, offsets, rows, offsets[rows + 1] - offsets[rows] - 1)


def pad_loop_slice_too_long(tokens, offsets, rows):
    seqs = [tokens[offsets[r]:offsets[r + 1] + 1] for r in rows.tolist()]
    lengths = torch.tensor([len(s) for s in seqs])
    return pad_sequence(seqs, batch_first=True), torch.arange(int(lengths.max()))[None] < lengths[:, None]


def pad_mask_le(tokens, offsets, rows):
    return _pad(tokens, offsets, rows, offsets[rows + 1] - offsets[rows], mask_rule=lambda s, n: s[None] <= n[:, None])


def pad_rows_ignored(tokens, offsets, rows):
    first = torch.arange(len(rows))
    return _pad(tokens, offsets, first, offsets[first + 1] - offsets[first])


def pad_unclamped(tokens, offsets, rows):
    return _pad(tokens, offsets, rows, offsets[rows + 1] - offsets[rows], clamp=False)


def pad_float_mask(tokens, offsets, rows):
    padded, mask = _pad(tokens, offsets, rows, offsets[rows + 1] - offsets[rows])
    return padded, mask.float()


def pad_shifted(tokens, offsets, rows):
    return _pad(tokens, offsets, rows, offsets[rows + 1] - offsets[rows], index_shift=1)


def pad_loop(tokens, offsets, rows):
    seqs = [tokens[offsets[r]:offsets[r + 1]] for r in rows.tolist()]
    lengths = torch.tensor([len(s) for s in seqs])
    return pad_sequence(seqs, batch_first=True), torch.arange(int(lengths.max()))[None] < lengths[:, None]


def pad_fill(tokens, offsets, rows):
    lengths = (offsets[1:] - offsets[:-1])[rows]
    out = tokens.new_zeros(len(rows), int(lengths.max()), tokens.shape[1])
    mask = torch.zeros(len(rows), int(lengths.max()), dtype=torch.bool)
    for b, r in enumerate(rows.tolist()):
        n = int(lengths[b])
        out[b, :n] = tokens[offsets[r]:offsets[r] + n]
        mask[b, :n] = True
    return out, mask


# ----------------------------------------------------------------------------- 03 · masked_mean

def mean_with_padding(tokens, mask):
    return tokens.mean(1)


def mean_bool_mask(tokens, mask):
    return (tokens * mask).sum(1) / mask.sum(1)


def mean_padded_summed(tokens, mask):
    return tokens.sum(1) / mask.sum(1, keepdim=True)


def mean_over_t(tokens, mask):
    return (tokens * mask.unsqueeze(-1)).sum(1) / tokens.shape[1]


def mean_over_batch_count(tokens, mask):
    return (tokens * mask.unsqueeze(-1)).sum(1) / mask.sum()


def mean_sum_only(tokens, mask):
    return (tokens * mask.unsqueeze(-1)).sum(1)


def mean_over_features(tokens, mask):
    return (tokens * mask.unsqueeze(-1)).mean(-1)


def mean_whole_batch(tokens, mask):
    return tokens[mask].mean(0)


def mean_where(tokens, mask):
    return torch.where(mask[..., None], tokens, 0.0).sum(1) / mask.sum(1, keepdim=True)


def mean_per_row(tokens, mask):
    return torch.stack([tokens[i, mask[i]].mean(0) for i in range(len(tokens))])


# ----------------------------------------------------------------------------- 04 · region_attention

def _logits(q, k):
    return q @ k.transpose(-2, -1)


def attention_unscaled(q, k, region_mask):
    return _logits(q, k).masked_fill(~region_mask[:, None, :], float("-inf")).softmax(-1)


def attention_by_d(q, k, region_mask):
    return (_logits(q, k) / q.shape[-1]).masked_fill(~region_mask[:, None, :], float("-inf")).softmax(-1)


def attention_by_t(q, k, region_mask):
    return (_logits(q, k) / math.sqrt(q.shape[1])).masked_fill(~region_mask[:, None, :], float("-inf")).softmax(-1)


def attention_wrong_axis(q, k, region_mask):
    logits = _logits(q, k) / math.sqrt(q.shape[-1])
    return logits.masked_fill(~region_mask[:, None, :], float("-inf")).softmax(1)


def attention_mask_ignored(q, k, region_mask):
    return (_logits(q, k) / math.sqrt(q.shape[-1])).softmax(-1)


def attention_mask_inverted(q, k, region_mask):
    return (_logits(q, k) / math.sqrt(q.shape[-1])).masked_fill(region_mask[:, None, :], float("-inf")).softmax(-1)


def attention_mask_after(q, k, region_mask):
    return (_logits(q, k) / math.sqrt(q.shape[-1])).softmax(-1) * region_mask[:, None, :]


def attention_mask_zero(q, k, region_mask):
    return (_logits(q, k) / math.sqrt(q.shape[-1])).masked_fill(~region_mask[:, None, :], 0).softmax(-1)


def attention_mask_wrong_axis(q, k, region_mask):
    return (_logits(q, k) / math.sqrt(q.shape[-1])).masked_fill(~region_mask[:, :, None], float("-inf")).softmax(-1)


def attention_where(q, k, region_mask):
    logits = torch.einsum("btd,brd->btr", q / q.shape[-1] ** 0.5, k)
    return torch.softmax(torch.where(region_mask.unsqueeze(1), logits, torch.tensor(float("-inf"))), dim=-1)


def attention_large_negative(q, k, region_mask):
    logits = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(k.shape[-1])
    return F.softmax(logits - 1e9 * (~region_mask).float()[:, None, :], dim=2)


# exercise -> [(typical wrong answer, a regex only its own message matches)]
WRONG = {
    "mentions": [(mentions_substring, "substring match"), (mentions_prefix_only, "at the start of"),
                 (mentions_suffix_only, "at the end of"), (mentions_case, r"mentions: case:"),
                 (mentions_split, "punctuation"), (mentions_match_object, r"re\.Match object"),
                 (mentions_no_false, "returned None for .* return False there"),
                 (mentions_count, "return True or False; your function returned int"),
                 (mentions_findall, "return True or False; your function returned list")],
    "normalise": [(normalise_last_axis, "did not broadcast over the channels"),
                  (normalise_batch_stats, "batch's own statistics"),
                  (normalise_channel_batch_stats, "batch's own statistics"),
                  (normalise_no_std, "division by the std is missing"), (normalise_swapped, "mean and std swapped"),
                  (normalise_undo, "undoes a normalisation")],
    "split_by_image": [(split_captions, "captions resampled apart from their images"),
                       (split_divided, "n_test counted captions, not images"),
                       (split_with_replacement, "with replacement"), (split_swapped, "train and test swapped"),
                       (split_unseeded, "not seeded"), (split_seed_ignored, "the seed is ignored"),
                       (split_five_each, "captions lost or duplicated")],
    "regions_from_map": [(regions_reshape, "reshape without permute"), (regions_column_major, "column-major"),
                         (regions_channels_first, "channels are still first"), (regions_swapped, "pooled swapped"),
                         (regions_pooled_sum, "sum of the regions"), (regions_pooled_max, "max over the regions"),
                         (regions_square, "not square"), (regions_pooled_over_channels, "averaged over the channels")],
    "nearest_neighbours": [(neighbours_with_self, "its own nearest neighbour"), (neighbours_dot, "dot products"),
                           (neighbours_least, "least similar"), (neighbours_reversed, "wrong order"),
                           (neighbours_values, r"similarities \(\.values\)"), (neighbours_fixed_k, "asked for k = 5"),
                           (neighbours_columns, r"columns \(dim=0\)"), (neighbours_euclidean, "Euclidean")],
    "pad_packed": [(pad_not_zeroed, "padding not zeroed"), (pad_to_longest_of_all, r"longest caption \*of the batch\*"),
                   (pad_one_too_many, "off by one: each caption has one token too many"),
                   (pad_one_too_few, "off by one: each caption has one token too few"),
                   (pad_loop_slice_too_long, "off by one: each caption has one token too many"),
                   (pad_mask_le, "`<=` instead of `<`"), (pad_rows_ignored, r"captions 0\.\.B-1"),
                   (pad_unclamped, "an index past the end of `tokens`"), (pad_float_mask, "must be a bool tensor"),
                   (pad_shifted, "shifted by one position")],
    "masked_mean": [(mean_with_padding, "padding counted in the mean"), (mean_bool_mask, "did not broadcast"),
                    (mean_padded_summed, "padded positions summed"), (mean_over_t, "divided by T"),
                    (mean_over_batch_count, "real tokens of the whole batch"),
                    (mean_sum_only, "the sum of the real tokens, not their mean"),
                    (mean_over_features, "averaged over the features"),
                    (mean_whole_batch, "one vector for the whole batch")],
    "region_attention": [(attention_unscaled, r"no 1/√d scaling"), (attention_by_d, "divided by d, not by √d"),
                         (attention_by_t, "not by √d \\(q.shape\\[-1\\]"), (attention_wrong_axis, "softmax over the wrong axis"),
                         (attention_mask_ignored, "mask ignored"), (attention_mask_inverted, "mask inverted"),
                         (attention_mask_after, "zeroed after the softmax"),
                         (attention_mask_zero, "masked logits set to 0"),
                         (attention_mask_wrong_axis, "did not line up")],
}

# exercise -> correct answers written differently from the reference
RIGHT = {
    "mentions": [mentions_words, mentions_ignorecase, mentions_split_nonword],
    "normalise": [normalise_4d, normalise_channels_last, normalise_indexing],
    "split_by_image": [split_permutation, split_python_random],
    "regions_from_map": [regions_permute, regions_view],
    "nearest_neighbours": [neighbours_drop_first, neighbours_argsort],
    "pad_packed": [pad_loop, pad_fill],
    "masked_mean": [mean_where, mean_per_row],
    "region_attention": [attention_where, attention_large_negative],
}

MINE = ["mentions", "normalise", "split_by_image", "regions_from_map", "n_regions", "nearest_neighbours",
        "pad_packed", "masked_mean", "padding_share", "uniform_keys", "drop_scaling", "region_attention"]


def test_the_suite_covers_every_exercise_of_01_to_04():
    own = sorted(n for n, ex in exercises.EXERCISES.items() if ex.notebook in ("01", "02", "03", "04"))
    assert own == sorted(MINE)
    for name in MINE:
        if exercises.EXERCISES[name].kind == "code":
            assert len({regex for _, regex in WRONG[name]}) >= 5 and len(RIGHT[name]) >= 2, name
        else:
            assert name in PREDICT


def _message(name, answer, *context):
    with pytest.raises(AssertionError) as caught:
        exercises.EXERCISES[name].check(answer, *context)
    return str(caught.value)


@pytest.mark.parametrize("name, wrong, regex", [(n, w, r) for n, cases in WRONG.items() for w, r in cases],
                         ids=lambda x: getattr(x, "__name__", None))
def test_a_typical_mistake_fails_with_its_own_message(name, wrong, regex):
    message = _message(name, wrong)
    assert message.startswith(f"✗ {name}: "), message
    assert re.search(regex, message), message
    others = {r for w, r in WRONG[name] if r != regex and not re.search(r, regex)}
    blamed = [r for r in others if re.search(r, message)]
    assert not blamed, f"{message!r} also names another mistake: {blamed}"


@pytest.mark.parametrize("name, right", [(n, r) for n, rights in RIGHT.items() for r in rights],
                         ids=lambda x: getattr(x, "__name__", None))
def test_a_correct_answer_written_differently_passes(name, right, capsys):
    exercises.EXERCISES[name].check(right)
    assert capsys.readouterr().out.startswith("✓ Correct: ")


# predict / change -> (right answers, [(near miss or wrong answer, regex of its message)])
PREDICT = {
    "n_regions": ([49, 49.0, np.int64(49), torch.tensor(49)],
                  [(48, "not 48: each side"), (50, "not 50: each side"), (49.5, "a whole number"),
                   (7, "side of the grid"), (1280, "number of channels"), (196, "14 × 14"), (1568, "the area"),
                   (-49, "not -49")]),
    "padding_share": ([0.77, 0.766, 1 - 13.8 / 59],
                      [(0.6, "far more than 60%"), (0.9, "less than 90%"), (0.234, r"share of \*real\* tokens"),
                       (77, "between 0 and 1"), (-0.2, "between 0 and 1")]),
    "uniform_keys": ([1 / 49, 0.0204, 0.02],
                     [(1.0, "all the weight on one region"), (1 / 7, "1/7 is one over the side"),
                      (0.0, "still sum to 1"), (0.03, "not 0.03"), (2.0, "between 0 and 1")]),
    "drop_scaling": (["b", "(b)", " B "],
                     [("a", r"not \(a\)"), ("c", r"not \(c\)"), ("d", "one of the letters"), ("", "one of the letters"), ("ab", "one of the letters"), ("bc", "one of the letters")]),
}
NUMBER_TYPES = ["49", [49], (49,), True, False, {"n": 49}, np.bool_(True), torch.tensor([1.0, 2.0])]
NOT_FINITE = [float("nan"), float("inf"), -float("inf"), np.float64("nan"), torch.tensor(float("nan")), 10 ** 400]
LETTER_TYPES = [1, 2.0, ["b"], ("b",), True, {"b": 1}, float("nan"), float("inf"), b"b"]


@pytest.mark.parametrize("name", list(PREDICT))
def test_a_prediction_is_checked_for_its_value(name, capsys):
    rights, wrongs = PREDICT[name]
    for right in rights:
        exercises.EXERCISES[name].check(right)
        assert capsys.readouterr().out.startswith("✓ Correct: ")
    for wrong, regex in wrongs:
        message = _message(name, wrong)
        assert message.startswith(f"✗ {name}: ") and re.search(regex, message), (wrong, message)


@pytest.mark.parametrize("name", list(PREDICT))
def test_a_prediction_of_the_wrong_type_or_not_finite_gets_a_message(name):
    letters = exercises.EXERCISES[name].kind == "change"
    for wrong in (LETTER_TYPES if letters else NUMBER_TYPES + NOT_FINITE):
        message = _message(name, wrong)
        expected = "as a string" if letters else "(as a number|as a finite number)"
        assert message.startswith(f"✗ {name}: ") and re.search(expected, message), (wrong, message)


@pytest.mark.parametrize("name", MINE)
def test_a_check_called_the_wrong_way_gets_a_message(name):
    answer = {"n_regions": 49, "padding_share": 0.77, "uniform_keys": 1 / 49, "drop_scaling": "b"}.get(name, print)
    for extra in ((None,), ([],), ({},)):
        message = _message(name, answer, *extra)
        assert message.startswith(f"✗ {name}: the check was called the wrong way"), message


@pytest.mark.parametrize("name", MINE)
def test_every_exercise_has_at_least_two_hints(name, capsys):
    ex = exercises.EXERCISES[name]
    ex.hint(1)
    first = capsys.readouterr().out
    ex.hint(2)
    second = capsys.readouterr().out
    assert first.startswith("Hint 1/") and second.startswith("Hint 2/") and first[9:] != second[9:]
