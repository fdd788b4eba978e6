"""Licences: the code and text carry theirs, and every COCO image shown is one whose licence allows it.

Figures refuse, or replace with a placeholder, an image whose licence forbids showing it (tested on a
stand-in subset); the committed notebooks' outputs are scanned: every figure of photos prints its credit
lines, and every credited image's licence is checked against the subset's own annotations.
"""
import json
import re
import tomllib
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from helpers import plots
from helpers.config import PATHS

ROOT = Path(__file__).resolve().parent.parent
PHOTO_FIGURES = {"show_images": False, "text_query": False, "compare_preprocessing": True, "attention_maps": True}


class Subset:
    """Images 1 (CC BY-NC-SA), 4 (CC BY), 5 (CC BY-SA), 7 (no known restrictions): id = licence id."""
    images = pd.DataFrame({"license": [1, 4, 5, 7]}, index=[1, 4, 5, 7])
    licenses = {1: {"name": "Attribution-NonCommercial-ShareAlike License"}, 4: {"name": "Attribution License"},
                5: {"name": "Attribution-ShareAlike License"}, 7: {"name": "No known copyright restrictions"}}
    loaded: list = []

    def load_image(self, i):
        self.loaded.append(i)
        return Image.new("RGB", (32, 32))

    def captions_of(self, i):
        return ["a caption"]

    def credit(self, i):
        return f"COCO {i} · {self.licenses[i]['name']} · http://flickr/{i}"


def test_licensed_keeps_the_ids_whose_licence_allows_showing_or_drawing():
    assert plots.licensed(Subset(), [1, 4, 5, 7]) == [4, 5, 7]
    assert plots.licensed(Subset(), [1, 4, 5, 7], drawn=True) == [4, 7]       # share-alike binds a derivative


def test_a_grid_never_loads_an_unshareable_image_and_credits_each_one(capsys):
    s = Subset()
    s.loaded = []
    plots.show_images(s, [1, 4, 5], ncols=3)
    assert s.loaded == [4, 5]                                                 # image 1's pixels never drawn
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("not shown: COCO 1 · Attribution-NonCommercial-ShareAlike License")
    assert out[1:] == ["shown: COCO 4 · Attribution License · http://flickr/4",
                       "shown: COCO 5 · Attribution-ShareAlike License · http://flickr/5"]
    s.loaded = []
    plots.text_query(s, "a caption", [1, 7], correct_id=7)
    assert s.loaded == [7]


@pytest.mark.parametrize("image_id", [1, 5])
def test_figures_drawn_over_an_image_refuse_licences_without_derivatives(image_id):
    with pytest.raises(ValueError, match=rf"image {image_id} is licensed .* does not allow publishing a figure"):
        plots.attention_maps(Subset(), image_id, pd.DataFrame([[0.5] * 49]).values, ["dog"])
    with pytest.raises(ValueError, match="plots.licensed\\(subset, ids, drawn=True\\)"):
        plots.compare_preprocessing(Subset(), image_id, {})


def _photo_cells():
    """(notebook, cell index, figure function, credited ids, png count) of every cell that draws photos."""
    for nb in sorted(PATHS.notebooks.glob("[0-9][0-9]_*.ipynb")):
        for k, cell in enumerate(json.loads(nb.read_text())["cells"]):
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"])
            used = [f for f in PHOTO_FIGURES if re.search(rf"plots\.{f}\(", source)]
            if not used:
                continue
            text = "".join("".join(o.get("text", "")) for o in cell.get("outputs", []))
            pngs = sum("image/png" in o.get("data", {}) for o in cell.get("outputs", []))
            ids = [int(i) for i in re.findall(r"^shown: COCO (\d+) · ", text, flags=re.M)]
            yield nb.name, k, used, ids, pngs


def test_every_photo_shown_in_the_notebooks_is_credited_and_licensed_for_it():
    if not (PATHS.subset / "annotations" / "captions.json").is_file():
        pytest.skip("the prepared subset is needed to read the images' licences: run `make data`")
    licence = {i["id"]: i["license"] for i in json.loads((PATHS.subset / "annotations" / "captions.json")
                                                          .read_text())["images"]}
    cells = list(_photo_cells())
    assert len(cells) >= 7                                      # 01, 02, 04, 06 and 07 draw photos
    for name, k, used, ids, pngs in cells:
        assert pngs and ids, f"{name} cell {k} draws photos with no credit line in its outputs"
        allowed = plots.DRAWN_LICENCES if any(PHOTO_FIGURES[f] for f in used) else plots.SHOWN_LICENCES
        bad = [i for i in ids if licence[i] not in allowed]
        assert not bad, f"{name} cell {k} shows COCO images {bad} whose licence does not allow it"


def test_the_code_and_the_text_carry_licences_named_in_the_readme_and_the_package():
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert "Creative Commons Attribution 4.0 International" in (ROOT / "LICENSE-TEXT").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "LICENSE" in readme and "LICENSE-TEXT" in readme and "CC BY 4.0" in readme
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and project["authors"] and set(project["license-files"]) == {"LICENSE", "LICENSE-TEXT"}
