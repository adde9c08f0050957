import pytest
import torch
from mmseg.models.backbones import VisionTransformer
from mmseg.registry import MODELS

import mmseg_fsr  # noqa: F401  (registers the modules)
from mmseg_fsr.models.backbones import MaskableViT

# 32x32 pretraining size, 4x4 patch grid; tests also feed 48x32 inputs.
TINY = dict(
    img_size=32,
    patch_size=8,
    embed_dims=16,
    num_layers=3,
    num_heads=2,
    mlp_ratio=2,
    out_indices=(1, 2),
    final_norm=True)


def _pair(**overrides):
    """A stock ViT and a MaskableViT sharing weights."""
    cfg = dict(TINY, **overrides)
    torch.manual_seed(0)
    vit = VisionTransformer(**cfg)
    vit.init_weights()
    model = MaskableViT(**cfg)
    model.init_weights()
    missing, unexpected = model.load_state_dict(vit.state_dict(), strict=False)
    assert missing == ['mask_token'] and unexpected == []
    # mmseg's ViT.train() returns None, so eval() cannot be chained.
    vit.eval()
    model.eval()
    return vit, model


def test_unmasked_matches_stock_vit():
    vit, model = _pair()
    x = torch.randn(2, 3, 48, 32)  # needs pos-embed interpolation
    ref, out = vit(x), model(x)
    assert len(out) == 2
    for r, o in zip(ref, out):
        assert o.shape == (2, 16, 6, 4)
        assert torch.equal(r, o)


def test_out_origin_and_no_cls_token_match_stock_vit():
    for overrides in (dict(out_origin=True), dict(with_cls_token=False)):
        vit, model = _pair(**overrides)
        x = torch.randn(1, 3, 32, 32)
        for r, o in zip(vit(x), model(x)):
            assert torch.equal(r, o)


@pytest.mark.parametrize('with_cls_token', [False, True])
def test_tokens_are_the_last_layer_before_the_final_norm(with_cls_token):
    """forward_with_tokens gives the patch tokens the final norm maps to
    the last output (the class token, if any, left out)."""
    vit, model = _pair(with_cls_token=with_cls_token)
    x = torch.randn(2, 3, 48, 32)
    outs, tokens = model.forward_with_tokens(x)
    assert tokens.shape == (2, 24, 16)
    for r, o in zip(vit(x), outs):
        assert torch.equal(r, o)
    normed = model.normalize_tokens(tokens)
    assert torch.equal(normed.transpose(1, 2).reshape(2, 16, 6, 4), outs[-1])
    assert not torch.allclose(normed, tokens)
    assert torch.equal(
        MaskableViT(**dict(TINY, final_norm=False)).normalize_tokens(tokens),
        tokens)


@pytest.mark.parametrize('out_origin', [False, True])
def test_full_depth_rows_stop_the_other_images_after_first_output(
        out_origin):
    _, model = _pair(out_origin=out_origin)
    x = torch.randn(5, 3, 32, 32)
    full = model(x)
    outs = model(x, full_depth_rows=2)
    # maps up to the first out_indices layer keep every image
    first = 1 + out_origin
    for o, f in zip(outs[:first], full[:first]):
        assert torch.equal(o, f)
    last, last_full = outs[-1], full[-1]
    assert last.shape == (2, 16, 4, 4)
    torch.testing.assert_close(last, last_full[:2], rtol=0, atol=1e-6)
    # no image past the first output: the later maps are empty
    outs = model(x, full_depth_rows=0)
    assert torch.equal(outs[first - 1], full[first - 1])
    assert outs[-1].shape == (0, 16, 4, 4)


def test_mask_token_replaces_embedding_before_pos_embed():
    _, model = _pair(out_origin=True)
    x = torch.randn(1, 3, 32, 32)
    mask = torch.zeros(1, 16, dtype=torch.bool)
    mask[0, [0, 5]] = True
    origin = model(x, mask)[0].flatten(2).transpose(1, 2)[0]  # (16, C)
    pos = model.pos_embed[0, 1:]
    for i in (0, 5):
        assert torch.allclose(origin[i], model.mask_token[0, 0] + pos[i])
    assert not torch.allclose(origin[0], origin[5])


def test_masked_pixels_do_not_matter_and_rows_are_independent():
    _, model = _pair()
    x = torch.randn(2, 3, 32, 32)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, :6] = True  # patches (0, 0..3) and (1, 0..1)
    out = model(x, mask)
    # Changing pixels under masked patches changes nothing.
    y = x.clone()
    y[0, :, :8] += 5.
    y[0, :, 8:16, :16] -= 5.
    for a, b in zip(out, model(y, mask)):
        assert torch.equal(a, b)
    # The all-False row gives exactly the unmasked result.
    unmasked = model(x)
    for a, b in zip(out, unmasked):
        assert torch.equal(a[1], b[1])
        assert not torch.allclose(a[0], b[0])
    # The mask token is what the masked positions see.
    with torch.no_grad():
        model.mask_token.add_(1.)
    assert not torch.allclose(model(x, mask)[-1][0], out[-1][0])


def test_mask_token_gradient():
    _, model = _pair()
    x = torch.randn(2, 3, 32, 32)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[1, 3] = True
    sum(o.sum() for o in model(x, mask)).backward()
    assert model.mask_token.grad.abs().sum() > 0

    model.zero_grad(set_to_none=True)
    sum(o.sum() for o in model(x, torch.zeros_like(mask))).backward()
    grad = model.mask_token.grad
    assert grad is None or not grad.any()

    model.zero_grad(set_to_none=True)
    sum(o.sum() for o in model(x)).backward()
    assert model.mask_token.grad is None


def test_wrong_mask_shape_raises():
    _, model = _pair()
    x = torch.randn(2, 3, 32, 32)
    for bad in (torch.zeros(2, 15, dtype=torch.bool),
                torch.zeros(1, 16, dtype=torch.bool),
                torch.zeros(2, 4, 4, dtype=torch.bool)):
        with pytest.raises(ValueError, match='patch grid'):
            model(x, bad)


def test_invalid_configs_raise():
    with pytest.raises(ValueError, match='output_cls_token'):
        MODELS.build(dict(type='MaskableViT', output_cls_token=True, **TINY))


def test_init_weights_draws_mask_token():
    torch.manual_seed(0)
    model = MaskableViT(**TINY)
    assert not model.mask_token.any()
    model.init_weights()
    assert model.mask_token.any()
    assert model.mask_token.abs().max() <= 0.1  # trunc_normal std .02


def test_with_cp_gives_same_gradients():
    x = torch.randn(2, 3, 32, 32)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, ::3] = True
    grads = []
    for with_cp in (False, True):
        torch.manual_seed(0)
        model = MaskableViT(with_cp=with_cp, **TINY)
        model.init_weights()
        model.train()
        outs, tokens = model.forward_with_tokens(x, mask)
        (sum(o.pow(2).sum() for o in outs) + tokens.sum()).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], atol=1e-6), name
