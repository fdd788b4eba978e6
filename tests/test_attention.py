"""DecoupledAttention: shapes, masks, the blog-faithful configuration, heads."""
import math

import pytest
import torch

from helpers import blog
from helpers.attention import DecoupledAttention


@pytest.fixture
def inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 5, 16, generator=g), torch.randn(3, 7, 16, generator=g)


def test_shapes_with_heads_and_value(inputs):
    text, image = inputs
    attn = DecoupledAttention(16, 16, 8, heads=2)
    out, w = attn(text, image)
    assert out.shape == (3, 5, 8) and w.shape == (3, 2, 5, 7)
    assert torch.allclose(w.sum(-1), torch.ones(3, 2, 5))


def test_different_text_and_image_dims():
    attn = DecoupledAttention(text_dim=12, image_dim=20, dim=8)
    out, w = attn(torch.randn(2, 4, 12), torch.randn(2, 9, 20))
    assert out.shape == (2, 4, 8) and w.shape == (2, 1, 4, 9)


def test_blog_faithful_equals_the_formula_written_out(inputs):
    text, image = inputs
    torch.manual_seed(1)
    attn = DecoupledAttention.blog_faithful(16)
    q, k = attn.query(text), attn.key(image)
    expected = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(16), dim=-1) @ image
    out, _ = attn(text, image)
    assert torch.allclose(out, expected, atol=1e-6)


def test_blog_faithful_equals_the_blogs_module(inputs):
    text, image = inputs
    theirs = blog.DecoupledAttention(16)
    ours = DecoupledAttention.blog_faithful(16)
    ours.query.load_state_dict(theirs.query.state_dict())
    ours.key.load_state_dict(theirs.key.state_dict())
    assert torch.allclose(ours(text, image)[0], theirs(text, image), atol=1e-6)


def test_blog_faithful_needs_equal_dims():
    with pytest.raises(ValueError, match="image_dim .* must equal dim"):
        DecoupledAttention(16, 32, 16, use_value=False)


def test_padded_word_has_no_influence_on_other_words(inputs):
    text, image = inputs
    attn = DecoupledAttention(16, 16, 16, heads=2)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[:, 3:] = False
    out1, w1 = attn(text, image, text_mask=mask)
    text2 = text.clone()
    text2[:, 3:] = 100 * torch.randn(3, 2, 16)          # change only the padded words
    out2, w2 = attn(text2, image, text_mask=mask)
    assert torch.equal(out1[:, :3], out2[:, :3])
    assert torch.all(w1[:, :, 3:] == 0) and torch.all(out1[:, 3:] == 0)


def test_masked_region_gets_zero_weight(inputs):
    text, image = inputs
    attn = DecoupledAttention(16, 16, 16)
    image_mask = torch.ones(3, 7, dtype=torch.bool)
    image_mask[:, 0] = False
    _, w = attn(text, image, image_mask=image_mask)
    assert torch.all(w[..., 0] == 0) and torch.allclose(w.sum(-1), torch.ones_like(w.sum(-1)))


def test_temperature_sharpens(inputs):
    text, image = inputs
    torch.manual_seed(0)
    hot = DecoupledAttention(16, 16, 16, temperature=100.0)
    cold = DecoupledAttention(16, 16, 16, temperature=0.1)
    cold.load_state_dict(hot.state_dict())
    assert cold(text, image)[1].max(-1).values.mean() > hot(text, image)[1].max(-1).values.mean()


def test_an_image_with_no_real_region_is_refused_not_nan(inputs):
    text, image = inputs
    attn = DecoupledAttention(16, 16, 8)
    image_mask = torch.ones(3, 7, dtype=torch.bool)
    image_mask[1] = False                                   # softmax over nothing: NaN weights before
    with pytest.raises(ValueError, match="image_mask has a row with no True"):
        attn(text, image, image_mask=image_mask)
    text_mask = torch.ones(3, 5, dtype=torch.bool)
    text_mask[2] = False
    with pytest.raises(ValueError, match="text_mask has a row with no True"):
        attn(text, image, text_mask=text_mask)


@pytest.mark.parametrize("kind", ["text_mask", "image_mask"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
def test_masks_must_be_bool_and_fit(inputs, kind, dtype):
    text, image = inputs
    attn = DecoupledAttention(16, 16, 8)
    size = 5 if kind == "text_mask" else 7
    with pytest.raises(ValueError, match=f"{kind} must be a bool tensor"):
        attn(text, image, **{kind: torch.ones(3, size, dtype=dtype)})
    with pytest.raises(ValueError, match=rf"{kind} must be \(B, {size}\)"):
        attn(text, image, **{kind: torch.ones(3, size + 1, dtype=torch.bool)})
