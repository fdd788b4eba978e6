"""helpers.tools.bench: the blog's loop calls the model as the blog does."""
import torch

from helpers.tools import bench


class _Recorder(torch.nn.Module):
    """A stand-in text encoder: the real tokenizer's interface, a model that records what it is given."""

    max_length = 32

    def __init__(self):
        super().__init__()
        self.calls = []
        self.model = lambda **kw: self.calls.append(kw)

    @staticmethod
    def tokenizer(text, return_tensors, padding, truncation, max_length):
        ids = torch.arange(len(text.split()) + 2)[None]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_blog_caption_loop_passes_the_attention_mask():
    enc = _Recorder()
    bench.blog_caption_loop(["a dog", "two dogs on grass"], enc)
    assert len(enc.calls) == 2                                            # one caption at a time
    assert all(set(kw) == {"input_ids", "attention_mask"} for kw in enc.calls)   # `self.model(**inputs)`
