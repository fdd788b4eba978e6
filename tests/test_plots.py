"""Figures a classroom can read: no label overlaps another, boxes land where the instances are."""
import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from helpers import plots  # noqa: E402


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_anchor_names_are_in_a_legend_that_overlaps_no_bar_and_not_the_title():
    results = pd.DataFrame({"model": ["dual", "joint"], "metric": "rsum", "mean": [170.0, 180.0],
                            "lo": [160.0, 170.0], "hi": [180.0, 190.0]})
    fig = plots.rsum_with_intervals(results, {"VSE++": 478.6, "SCAN t→i": 500.5})
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["VSE++: 478.6", "SCAN t→i: 500.5"]
    assert not ax.texts                                           # no free-floating labels left to collide
    box = legend.get_window_extent(renderer)
    assert not _overlap(box, ax.title.get_window_extent(renderer))
    assert not any(_overlap(box, bar.get_window_extent(renderer)) for bar in ax.patches)
    assert ax.get_ylim()[1] > 500.5


class Subset:
    """Two images licensed CC BY (id 4): shown and drawn over."""
    images = pd.DataFrame({"license": [4, 4]}, index=[5, 6])
    licenses = {4: {"name": "Attribution License"}}

    def __init__(self, size=(64, 48)):
        self.size = size

    def load_image(self, i):
        return Image.new("RGB", self.size)

    def captions_of(self, i):
        return ["a long caption that wraps over more than one line of the title of its image"] * 2

    def credit(self, i):
        return f"COCO {i} · Attribution License · http://flickr/{i}"


def test_credits_sit_inside_their_image(monkeypatch):
    fig = plots.show_images(Subset(), [5, 6], ncols=1)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes[:2]:
        (credit,) = ax.texts
        assert credit.get_text() == f"id {5 if ax is fig.axes[0] else 6} · CC BY License"
        inner, outer = credit.get_window_extent(renderer), ax.get_window_extent(renderer)
        assert outer.x0 <= inner.x0 and inner.x1 <= outer.x1 and outer.y0 <= inner.y0 and inner.y1 <= outer.y1


def test_word_boxes_are_drawn_on_their_word_only_and_scaled_to_224():
    weights = torch.rand(2, 49)                                   # the image is 448 x 224: x halves, y unchanged
    fig = plots.attention_maps(Subset((448, 224)), 5, weights, ["dog", "on"], ncols=2, boxes=[np.array([[100.0, 20.0, 200.0, 50.0]]), None])
    first, second = fig.axes[:2]
    (rect,) = first.patches
    assert (rect.get_x(), rect.get_y(), rect.get_width(), rect.get_height()) == (50.0, 20.0, 100.0, 50.0)
    assert not second.patches
