"""mmpretrain ViT adapter and the examples mixing FSR into other models."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.models.backbones import VisionTransformer
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from mmseg_fsr.models.backbones.mmpretrain_vit_adapter import \
    MMPretrainViTAdapter

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
ASPP_EXAMPLE = osp.join(
    REPO, 'configs/fsr/examples/'
    'fsr_mmpretrain-deit-s_aspp_4xb2-20k_voc12aug-448x448.py')


def explicit_example(tmp_path) -> str:
    """The config written out in docs/extending.md, as a file beside the
    paper config it names as its base."""
    with open(osp.join(REPO, 'docs', 'extending.md')) as f:
        text = f.read()
    block = text.split('<!-- explicit-config -->\n```python\n')[1]
    block = block.split('```')[0]
    paper = osp.join(REPO,
                     'configs/fsr/fsr_vit-b16_4xb2-20k_voc12aug-448x448.py')
    path = tmp_path / 'explicit.py'
    path.write_text(
        block.replace("'../fsr_vit-b16_4xb2-20k_voc12aug-448x448.py'",
                      repr(paper)))
    return str(path)


TINY_ARCH = dict(
    embed_dims=32, num_layers=3, num_heads=2, feedforward_channels=64)
CROP, PATCH = 32, 8


def tiny_adapter(**kwargs):
    torch.manual_seed(0)
    backbone = MMPretrainViTAdapter(
        arch=TINY_ARCH, img_size=CROP, patch_size=PATCH, out_indices=(0, 2),
        **kwargs)
    backbone.init_weights()
    backbone.eval()  # mmpretrain's train() returns None: no chaining
    return backbone


def stock_patch_only_forward(stock, x):
    """mmpretrain's forward with the class token dropped after the
    positional embedding (what the adapter does), written out."""
    from mmpretrain.models.utils import resize_pos_embed
    tokens, hw = stock.patch_embed(x)
    tokens = torch.cat([stock.cls_token.expand(len(x), -1, -1), tokens], 1)
    tokens = tokens + resize_pos_embed(stock.pos_embed, stock.patch_resolution,
                                       hw, mode=stock.interpolate_mode,
                                       num_extra_tokens=1)
    tokens = tokens[:, 1:]
    outs = []
    for i, layer in enumerate(stock.layers):
        tokens = layer(tokens)
        if i == len(stock.layers) - 1:
            tokens = stock.ln1(tokens)
        if i in (0, 2):
            outs.append(tokens.transpose(1, 2).reshape(len(x), -1, *hw))
    return outs


def test_adapter_outputs_match_mmpretrain():
    backbone = tiny_adapter()
    stock = VisionTransformer(
        arch=TINY_ARCH, img_size=CROP, patch_size=PATCH, out_indices=[0, 2],
        out_type='featmap')
    stock.eval()
    missing, unexpected = stock.load_state_dict(
        backbone.state_dict(), strict=False)
    assert missing == [] and unexpected == ['mask_token']

    x = torch.randn(2, 3, CROP, 48)  # any multiple of the patch size
    aux, final = backbone(x)
    assert aux.shape == final.shape == (2, 32, 4, 6)
    assert backbone.patch_size == PATCH
    for ours, theirs in zip((aux, final), stock_patch_only_forward(stock, x)):
        torch.testing.assert_close(ours, theirs)

    (aux2, final2), tokens = backbone.forward_with_tokens(x)
    assert tokens.shape == (2, 24, 32)
    torch.testing.assert_close(final2, final)
    torch.testing.assert_close(
        backbone.normalize_tokens(tokens).transpose(1, 2).reshape(final.shape),
        final)
    # an all-False mask is the unmasked pass
    (_, unmasked), _ = backbone.forward_with_tokens(
        x, torch.zeros(2, 24, dtype=torch.bool))
    assert torch.equal(unmasked, final)


def test_adapter_masks_tokens_with_mask_token():
    backbone = tiny_adapter()
    x = torch.randn(2, 3, CROP, CROP)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, :5] = True  # image 1 stays unmasked
    (_, masked), _ = backbone.forward_with_tokens(x, mask)
    (_, plain), _ = backbone.forward_with_tokens(x)
    assert torch.equal(masked[1], plain[1])
    assert not torch.allclose(masked[0], plain[0])
    # the masked pass equals a pass where those patches embed to mask_token
    backbone.mask_token.data.zero_()
    embed = backbone.patch_embed
    original = embed.forward

    def zeroed(inputs):
        tokens, hw = original(inputs)
        return torch.where(mask.unsqueeze(-1), torch.zeros(()), tokens), hw

    (_, masked), _ = backbone.forward_with_tokens(x, mask)
    embed.forward = zeroed
    (_, expected), _ = backbone.forward_with_tokens(x)
    torch.testing.assert_close(masked, expected)
    with pytest.raises(ValueError, match='token_mask'):
        backbone(x, torch.zeros(2, 15, dtype=torch.bool))


def test_adapter_full_depth_rows():
    backbone = tiny_adapter()
    x = torch.randn(3, 3, CROP, CROP)
    aux, final = backbone(x)
    aux_cut, final_cut = backbone(x, full_depth_rows=1)
    assert torch.equal(aux_cut, aux)
    assert final_cut.shape == (1, 32, 4, 4)
    torch.testing.assert_close(final_cut, final[:1], rtol=0, atol=1e-6)
    aux_cut, final_cut = backbone(x, full_depth_rows=0)
    assert torch.equal(aux_cut, aux)
    assert final_cut.shape == (0, 32, 4, 4)


def test_adapter_rejects_bad_settings():
    with pytest.raises(ValueError, match='out_indices'):
        MMPretrainViTAdapter(
            arch=TINY_ARCH, img_size=CROP, patch_size=PATCH,
            out_indices=(2, ))
    with pytest.raises(ValueError, match='featmap'):
        MMPretrainViTAdapter(arch=TINY_ARCH, out_type='cls_token')
    with pytest.raises(ValueError, match='with_cls_token'):
        tiny_adapter(with_cls_token=False)


def shrink(model):
    """The example's own model types at width 32, 32x32 crops."""
    model.backbone.update(
        arch=TINY_ARCH, img_size=CROP, patch_size=PATCH, out_indices=(0, 2),
        drop_path_rate=0.0, init_cfg=None)
    model.cam_head.in_channels = 32
    model.decode_head.update(in_channels=32, channels=16)
    model.mask_neck.update(block_size=PATCH)
    model.aggregation_head.update(in_channels=32, num_heads=2)
    model.aggregation_head.projector.update(
        in_channels=32, hidden_channels=64, bottleneck_channels=16,
        out_channels=64)
    model.uncertain_loss.out_channels = model.certain_loss.out_channels = 64
    model.pseudo_labeller.par = dict(dilations=(1, 2), num_iter=2)
    model.loss_start_iters = dict(seg=0, aff=0, fsr=0)


@pytest.mark.parametrize('example', ['aspp', 'explicit'])
def test_example_config_builds_and_computes_losses(example, tmp_path):
    config = ASPP_EXAMPLE if example == 'aspp' else explicit_example(tmp_path)
    cfg = Config.fromfile(config)
    init_default_scope('mmseg')
    assert cfg.model.backbone.type == 'MMPretrainViTAdapter'
    assert cfg.model.decode_head.type in ('ASPPHead', 'FCNHead')
    shrink(cfg.model)
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert model.with_fsr and hasattr(model, 'teacher')

    model.set_training_progress(1000, 1000)  # past every warm-up
    g = torch.Generator().manual_seed(0)
    inputs = torch.randn(2, 2, 3, CROP, CROP, generator=g)
    samples = []
    for present in ([0, 4], [11]):
        sample = SegDataSample()
        sample.gt_class_labels = torch.zeros(20)
        sample.gt_class_labels[present] = 1
        samples.append(sample)
    losses = model.loss(inputs, samples)
    assert {'loss_cls', 'loss_cls_aux', 'loss_aff', 'decode.loss_seg',
            'loss_fsr_u', 'loss_fsr_c'} <= set(losses)
    total = sum(v for v in losses.values() if v.requires_grad)
    assert torch.isfinite(total)
    total.backward()
    assert model.backbone.mask_token.grad is not None
