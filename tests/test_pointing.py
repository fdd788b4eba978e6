"""Attention maps and the pointing game: grid geometry, words -> categories, the game on a hand-made image."""
import numpy as np
import pandas as pd
import pytest
import torch

from helpers import pointing
from helpers.features import FeatureSet
from helpers.models import build_model


def test_cell_centres_are_row_major():
    c = pointing.cell_centres(70, 140)              # cells 10 px wide, 20 px high
    assert c.shape == (49, 2)
    assert c[0].tolist() == [5, 10] and c[1].tolist() == [15, 10] and c[7].tolist() == [5, 30]
    assert c[48].tolist() == [65, 130]


def test_hits_and_uniform_baseline_on_hand_made_boxes():
    centres = pointing.cell_centres(70, 70)         # centres at x, y = 5, 15, ..., 65
    # A box over the left 30 px holds the centres x = 5, 15, 25: 3 columns x 7 rows = 21 of 49 cells.
    inside = pointing.inside_any(centres, np.array([[0, 0, 30, 70]]))
    assert inside.sum() == 21 and inside.mean() == pytest.approx(21 / 49)
    # Its right edge at 35 would pass through the 4th column's centres: edges count, 28 of 49.
    assert pointing.inside_any(centres, np.array([[0, 0, 35, 70]])).sum() == 28
    # Two boxes: the union. Top-left cell (5, 5) and bottom-right cell (65, 65): 2 of 49.
    two = pointing.inside_any(centres, np.array([[0, 0, 10, 10], [60, 60, 10, 10]]))
    assert np.flatnonzero(two).tolist() == [0, 48]


def test_words_map_to_categories():
    toks = ["[CLS]", "two", "dogs", "and", "a", "hot", "dog", "near", "traffic", "lights", "[SEP]"]
    assert pointing.token_categories(toks) == [None, None, "dog", None, None, None, "hot dog", None, None,
                                                "traffic light", None]
    assert pointing.token_categories(["a", "teddy", "bear", "and", "a", "bear"]) == \
        [None, "teddy bear", None, None, None, "bear"]
    # word pieces: 'cat' followed by '##s' is part of a split word, '##s' itself is a piece
    assert pointing.token_categories(["a", "cat", "##s", "knives"]) == [None, None, None, "knife"]


class _FakeTokenizer:
    """Splits on spaces and adds [CLS]/[SEP]; its ids are the tokens themselves."""

    def __call__(self, text, **kwargs):
        return {"input_ids": ["[CLS]"] + text.split() + ["[SEP]"]}

    def convert_ids_to_tokens(self, ids):
        return list(ids)


class _FakeCoco:
    def __init__(self, anns):
        self.cats = {1: {"name": "dog"}, 2: {"name": "cat"}}
        self.imgToAnns = anns


class _FakeSubset:
    """Two 70x70 images; image 1 has a dog in its left 30 px (and a crowd cat box), image 2 is unlabelled."""

    def __init__(self):
        self.captions = pd.DataFrame({"caption_id": [10, 11, 20], "image_id": [1, 1, 2],
                                      "caption": ["a dog and a cat", "dogs", "a dog"]})
        self.images = pd.DataFrame({"width": [70, 70], "height": [70, 70]}, index=[1, 2])
        self.instances = _FakeCoco({1: [{"category_id": 1, "bbox": [0, 0, 30, 70], "iscrowd": 0},
                                        {"category_id": 2, "bbox": [0, 0, 70, 70], "iscrowd": 1}]})

    def instance_image_ids(self):
        return [1]


def _features(lengths=(7, 3, 4)):
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor(lengths)
    return FeatureSet(image_ids=torch.tensor([1, 2]), regions=torch.randn(2, 49, 8, generator=g).half(),
                      pooled=torch.zeros(2, 8).half(), caption_ids=torch.tensor([10, 11, 20]),
                      caption_image=torch.tensor([0, 0, 1]), tokens=torch.randn(int(lengths.sum()), 6).half(),
                      offsets=torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]),
                      text_pooled=torch.zeros(3, 6).half())


def test_pointing_game_on_a_hand_made_image(monkeypatch):
    fs, sub = _features(), _FakeSubset()
    peaks = {10: 0, 11: 6}        # caption 10 looks at cell 0 (x=5, in the dog box), 11 at cell 6 (x=65, outside)

    def fake_maps(model, fs, image_rows, caption_rows):
        w = torch.zeros(len(caption_rows), 7, 49)
        for b, row in enumerate(caption_rows.tolist()):
            w[b, :, peaks[int(fs.caption_ids[row])]] = 1
        return w, None

    monkeypatch.setattr(pointing, "attention_maps", fake_maps)
    df = pointing.pointing_game(None, fs, sub, _FakeTokenizer())
    # 'cat' has only a crowd box (dropped), image 2 has no instances: two cases, both 'dog'.
    assert df[["caption_id", "word", "category", "hit"]].values.tolist() == [[10, "dog", "dog", True],
                                                                             [11, "dogs", "dog", False]]
    assert df.baseline.tolist() == pytest.approx([21 / 49, 21 / 49])
    assert df.centre_hit.tolist() == [False, False]          # centre cell x = 35 is right of the box


def test_word_attention_rows_sum_to_one_and_lengths_are_checked():
    fs, sub = _features(), _FakeSubset()
    torch.manual_seed(0)
    model = build_model("decoupled", image_dim=8, text_dim=6, dim=16)
    weights, tokens = pointing.word_attention(model, fs, 0, 0, sub, _FakeTokenizer())
    assert tokens == ["[CLS]", "a", "dog", "and", "a", "cat", "[SEP]"] and weights.shape == (7, 49)
    assert torch.allclose(weights.sum(-1), torch.ones(7))
    assert pointing.as_grid(weights).shape == (7, 7, 7)
    with pytest.raises(ValueError, match="another text encoder"):
        pointing.word_attention(model, _features((6, 3, 4)), 0, 0, sub, _FakeTokenizer())
    with pytest.raises(ValueError, match="no word -> region attention"):
        pointing.attention_maps(build_model("dual", image_dim=8, text_dim=6, dim=16), fs, [0], [0])


def test_word_boxes_give_each_word_the_boxes_of_the_category_it_names():
    class Instances:
        cats = {18: {"name": "dog"}, 1: {"name": "person"}}
        imgToAnns = {7: [{"category_id": 18, "bbox": [1, 2, 3, 4]}, {"category_id": 1, "bbox": [5, 5, 5, 5], "iscrowd": 1}]}

    class Subset:
        instances = Instances()

    boxes = pointing.word_boxes(Subset(), 7, ["[CLS]", "a", "dog", "and", "a", "man", "[SEP]"])
    assert [b is None for b in boxes] == [True, True, False, True, True, True, True]   # the man's box is a crowd box
    assert boxes[2].tolist() == [[1.0, 2.0, 3.0, 4.0]]


def test_pointing_examples_pick_labelled_images_without_people_whose_caption_names_boxed_categories():
    import pandas as pd

    from helpers.features import synthetic_featureset

    fs = synthetic_featureset(n_images=4, captions_per_image=2, max_len=12, seed=0)
    image_ids = fs.image_ids.tolist()
    texts = {0: ["a dog and a man", "a man with a dog"],                # a person: never shown
             1: ["a dog on a couch", "a dog"],                        # labelled, no person, 2 boxed words
             2: ["a dog on a couch", "a cat"],                        # no instance boxes
             3: ["a cat", "a cat on a couch near a dog"]}             # its second caption qualifies
    rows = [(image_ids[r], 10 * r + k, t) for r, caps in texts.items() for k, t in enumerate(caps)]
    captions = pd.DataFrame(rows, columns=["image_id", "caption_id", "caption"])
    fs.caption_ids = torch.tensor(captions.caption_id.values)

    class Instances:
        cats = {18: {"name": "dog"}, 63: {"name": "couch"}, 17: {"name": "cat"}}
        imgToAnns = {image_ids[r]: [{"category_id": c, "bbox": [0, 0, 5, 5]} for c in (18, 63, 17)] for r in (0, 1, 3)}

        def getImgIds(self):
            return list(self.imgToAnns)

    class Subset:
        instances = Instances()

        def __init__(self):
            self.captions = captions

        def instance_image_ids(self):
            return sorted(self.instances.getImgIds())

    class Tokenizer:
        def __call__(self, text, truncation, max_length):
            return {"input_ids": text.split()}

        def convert_ids_to_tokens(self, ids):
            return ["[CLS]", *ids, "[SEP]"]

    assert pointing.pointing_examples(fs, Subset(), Tokenizer(), n=3) == [(1, 2), (3, 7)]
    assert pointing.pointing_examples(fs, Subset(), Tokenizer(), n=3, allowed=[image_ids[3]]) == [(3, 7)]   # licensed
