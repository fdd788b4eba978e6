"""Helpers for the course *Decoupled multimodal features, reproduced*.

One module per course step: ``config`` (paths, device, seeds), ``data`` (the COCO subset),
``download`` (fetching it from the official servers), ``blog`` (the blog's code as written),
``encoders`` (image and text features), ``features`` (extraction and the feature cache), ``bench``, ``attention``,
``models``, ``losses``, ``train``, ``metrics``, ``probes``, ``interpret``, ``plots`` and ``reproduce``.
"""
import inspect

__version__ = "0.1.0"


def show_source(obj) -> None:
    """Display the source code of a helper function or class in a notebook."""
    from IPython.display import Code, display

    display(Code(inspect.getsource(obj), language="python"))
