import copy

import pytest
import torch
from mmseg.registry import MODELS

import mmseg_fsr  # noqa: F401  (registers the modules)

C, K = 8, 5
PROJECTOR = dict(
    type='DINOProjector',
    in_channels=C,
    hidden_channels=12,
    bottleneck_channels=6,
    out_channels=K)


def _head(**kwargs):
    torch.manual_seed(0)
    cfg = dict(
        type='MCAAggregationHead',
        in_channels=C,
        num_blocks=2,
        num_heads=2,
        mlp_ratio=2,
        projector=PROJECTOR)
    head = MODELS.build(dict(cfg, **kwargs))
    head.init_weights()
    return head


def _inputs(B=2, N=6):
    torch.manual_seed(1)
    mask = torch.zeros(B, N, dtype=torch.bool)
    mask[0, [1, 4]] = True
    return torch.randn(B, N, C), torch.randn(B, C), mask


@pytest.mark.parametrize('name', [
    'MaskableViT', 'UncertaintyMaskingNeck', 'MCAAggregationHead',
    'DINOProjector', 'FSRCertainLoss', 'FSRUncertainLoss'
])
def test_registered_names_build_with_defaults(name):
    assert MODELS.build(dict(type=name)) is not None


def test_shapes_and_norm_eps():
    head = _head()
    patches, cls_token, mask = _inputs()
    agg = head.aggregate(patches, cls_token, mask)
    assert agg.shape == (2, C) and head.project(agg).shape == (2, K)
    assert head.project(patches).shape == (2, 6, K)
    # one (1, C) query serves every image
    assert torch.allclose(head.aggregate(patches, cls_token[:1]),
                          head.aggregate(patches, cls_token[:1].expand(2, -1)))
    norms = [m for m in head.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 4 and all(m.eps == 1e-6 for m in norms)


def test_mca_attends_to_masked_tokens_by_default():
    """The authors' class attention has no mask: the token mask changes
    nothing unless ``mask_attention`` (Eq. 7) is on, and a fully masked
    image is fine."""
    head = _head()
    patches, cls_token, mask = _inputs()
    assert torch.equal(head.aggregate(patches, cls_token, mask),
                       head.aggregate(patches, cls_token))
    assert torch.equal(
        head.aggregate(patches, cls_token, torch.ones_like(mask)),
        head.aggregate(patches, cls_token))
    changed = patches.clone()
    changed[0, [1, 4]] = torch.randn(2, C)  # not a shift: LN removes it
    assert not torch.allclose(head.aggregate(changed, cls_token, mask)[0],
                              head.aggregate(patches, cls_token, mask)[0])


def test_attention_excludes_masked_tokens():
    head = _head()
    patches, cls_token, mask = _inputs()
    out, weights = head.blocks[0](
        cls_token.unsqueeze(1), patches, mask, return_attention=True)
    assert out.shape == (2, 1, C)
    assert weights.shape == (2, 2, 6)  # (B, heads, N)
    assert torch.all(weights[0, :, [1, 4]] == 0)
    assert torch.all(weights[0, :, [0, 2, 3, 5]] > 0)
    assert torch.all(weights[1] > 0)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 2))
    assert torch.allclose(
        out,
        head.blocks[0](cls_token.unsqueeze(1), patches, mask),
        atol=1e-6)


def test_mca_ignores_masked_tokens_and_rows_are_independent():
    head = _head(mask_attention=True)
    patches, cls_token, mask = _inputs()
    agg = head.aggregate(patches, cls_token, mask)
    changed = patches.clone()
    changed[0, [1, 4]] = torch.randn(2, C)  # not a shift: LN removes it
    assert torch.allclose(agg, head.aggregate(changed, cls_token, mask))
    # Sample 1 has no masked token: same as without a mask.
    assert torch.allclose(agg[1], head.aggregate(patches, cls_token)[1])
    assert not torch.allclose(agg[0], head.aggregate(patches, cls_token)[0])


def test_mca_gradients_reach_inputs():
    head = _head(mask_attention=True)
    patches, cls_token, mask = _inputs()
    patches.requires_grad_()
    cls_token.requires_grad_()
    head.project(head.aggregate(patches, cls_token, mask)).sum().backward()
    assert cls_token.grad.abs().sum() > 0
    assert patches.grad[0, [0, 2, 3, 5]].abs().sum() > 0
    assert torch.all(patches.grad[0, [1, 4]] == 0)


def test_pooling_variants_by_hand():
    patches, cls_token, mask = _inputs()
    keep = [0, 2, 3, 5]
    gap = _head(aggregation='GAP')
    gmp = _head(aggregation='GMP')
    assert len(gap.blocks) == 0 and len(gmp.blocks) == 0
    out = gap.aggregate(patches, cls_token, mask)
    assert torch.allclose(out[0], patches[0, keep].mean(0))
    assert torch.allclose(out[1], patches[1].mean(0))
    out = gmp.aggregate(patches, cls_token, mask)
    assert torch.equal(out[0], patches[0, keep].max(0).values)
    assert torch.equal(out[1], patches[1].max(0).values)
    assert torch.allclose(gap.aggregate(patches, cls_token), patches.mean(1))


@pytest.mark.parametrize('aggregation', ['MCA', 'GAP', 'GMP'])
def test_fully_masked_row_raises(aggregation):
    head = _head(aggregation=aggregation, mask_attention=True)
    patches, cls_token, mask = _inputs()
    mask[1] = True
    with pytest.raises(ValueError, match='masked'):
        head.aggregate(patches, cls_token, mask)
    with pytest.raises(ValueError, match='shape'):
        head.aggregate(patches, cls_token, mask[:, :5])


def test_unknown_aggregation_raises():
    with pytest.raises(ValueError, match='aggregation'):
        _head(aggregation='ATTN')


def _projector(**kwargs):
    torch.manual_seed(0)
    proj = MODELS.build(dict(PROJECTOR, **kwargs))
    proj.init_weights()
    return proj


def _row_norms(proj):
    return proj.last_layer.weight.norm(dim=1)


def test_projector_shapes_and_unit_last_layer():
    proj = _projector()
    out = proj(torch.randn(3, 4, C))
    assert out.shape == (3, 4, K)
    magnitude = proj.last_layer.parametrizations.weight.original0
    assert not magnitude.requires_grad
    assert torch.allclose(_row_norms(proj), torch.ones(K))
    # Unit rows on an L2-normalised input: outputs are cosines.
    assert out.abs().max() <= 1 + 1e-6

    # Training cannot change the row norms.
    opt = torch.optim.SGD([p for p in proj.parameters() if p.requires_grad],
                          lr=1.)
    proj(torch.randn(3, C)).pow(2).sum().backward()
    opt.step()
    assert torch.allclose(_row_norms(proj), torch.ones(K))

    free = _projector(norm_last_layer=False)
    assert free.last_layer.parametrizations.weight.original0.requires_grad


def test_projector_deepcopy():
    proj = _projector()
    twin = copy.deepcopy(proj)
    x = torch.randn(2, C)
    assert torch.equal(proj(x), twin(x))
    with torch.no_grad():
        twin.last_layer.parametrizations.weight.original1.add_(1.)
    assert not torch.allclose(proj(x), twin(x))
    # Deep copy of the whole head (as done for the EMA teacher).
    head = _head()
    patches, cls_token, mask = _inputs()
    twin = copy.deepcopy(head)
    assert torch.equal(
        head.project(head.aggregate(patches, cls_token, mask)),
        twin.project(twin.aggregate(patches, cls_token, mask)))
