"""notebooks/sanitize.cfg: absolute paths become <PATH> wherever the checkout or the environment lives;
ordinary output is left alone. The rules are applied as nbval applies them: each section's regex, in order."""
import configparser
import re
from pathlib import Path

import pytest

CFG = Path(__file__).resolve().parents[1] / "notebooks" / "sanitize.cfg"


def rules() -> list[tuple[str, str]]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(CFG.read_text())
    return [(parser[s]["regex"], parser[s]["replace"]) for s in parser.sections()]


def sanitize(text: str) -> str:
    for regex, replace in rules():
        text = re.sub(regex, replace, text)
    return text


def test_nbval_reads_the_same_rules():
    """nbval has its own reader (a `regex: ` line followed by a `replace: ` line); it must agree."""
    from nbval.plugin import get_sanitize_patterns
    assert get_sanitize_patterns(CFG.read_text()) == rules()


@pytest.mark.parametrize("path", [
    "/home/alice/decoupled-course/data/coco-subset",
    "/tmp/course-clone.ab12/decoupled-course/runs/x/best.pt",
    "/work/main/data/cache/f.safetensors",
    "/opt/conda/envs/x/lib/python3.11/site-packages/torch/__init__.py",
    "/srv/checkout/results/table.csv",
    "/mnt/c/course/notebooks/05_joint_training.ipynb",
    "/var/tmp/clone/helpers/train.py",
    "/builds/x/.venv/bin/python",
    "/usr/lib/python3/dist-packages/numpy/core.py",
    "/data/coco-subset",                               # the course's folder at the very top
    "/tmp/x/runs/5s-run/best.pt",                      # paths go first: the timing rule never sees 5s
    "/home/bob/elsewhere/notes.txt",                   # anything under a home folder
    "/Users/carol/course",
    "/root/decoupled/x.pt",
    "~/decoupled-course/results",
])
def test_absolute_paths_become_PATH(path):
    assert sanitize(path) == "<PATH>"
    assert sanitize(f"saved to {path}\n") == "saved to <PATH>\n"
    assert sanitize(f"PosixPath('{path}')") == "PosixPath('<PATH>')"
    assert sanitize(f'"{path}": 3') == '"<PATH>": 3'


@pytest.mark.parametrize("text", [
    "rSum 183.7",
    "(1000, 5001)",
    "a/b",
    "1/49",
    "i2t_R@1 12.5 / t2i_R@1 10.0",
    "tokens per caption incl. [CLS]/[SEP]: mean 13.8",
    "http://images.cocodataset.org/val2017/000000000139.jpg",
    "http://farm5.staticflickr.com/4115/4906536419_...",
    "</style></div></td>",
    ".output_html .c { color: #3D7B7B; font-style: italic } /* Comment */",
    "data/coco-subset and runs/course are relative",
    "~1.0 = the modalities stay separable",
    "/dataset/x and /tmp/database are not the course's folders",
])
def test_ordinary_text_is_unchanged(text):
    assert sanitize(text) == text
