"""Mixed precision (CPU bf16 autocast) and activation checkpointing."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from mmseg_fsr.models.heads import CAMHead
from mmseg_fsr.models.losses import (BgFgCrossEntropyLoss, FSRCertainLoss,
                                     FSRUncertainLoss, PatchTokenContrastLoss)
from mmseg_fsr.models.utils import (PixelAdaptiveRefiner, min_max_normalize,
                                    refine_pseudo_labels)
from mmseg_fsr.testing import CPU_CONFIG, tiny_fsr_model_cfg
from benchmark_utils import saved_activation_bytes

CROP = 32
BF16 = dict(device_type='cpu', dtype=torch.bfloat16)


def build(**overrides):
    model = MODELS.build(tiny_fsr_model_cfg(CROP, **overrides))
    model.init_weights()
    model.set_training_progress(900, 1000)  # past every warm-up
    return model.train()


def two_view_batch(num_images=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(num_images, 2, 3, CROP, CROP, generator=g)
    samples = []
    for i in range(num_images):
        sample = SegDataSample(metainfo=dict(img_path=f'img{i}.jpg'))
        sample.gt_class_labels = torch.zeros(20)
        sample.gt_class_labels[[i, 5 + i]] = 1
        samples.append(sample)
    return inputs, samples


# ------------------------------------------------------- fp32 islands
def _bf16(*shape, seed=0):
    """Random bf16 tensor, as an autocast region would hand it over."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).bfloat16()


def _dino_u():
    # eval: no center update between the two calls
    loss = FSRUncertainLoss(out_channels=16, loss_weight=1.0).eval()
    mask = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 1, 1, 0]], dtype=torch.bool)
    student, teacher = _bf16(5, 16, seed=1) * 4, _bf16(2, 5, 16) * 4
    return lambda s=student, t=teacher: loss(s, t, mask, 0, 100)


def _dino_c():
    loss = FSRCertainLoss(out_channels=16, loss_weight=1.0).eval()
    student, teacher = _bf16(2, 16, seed=1) * 4, _bf16(2, 16) * 4
    return lambda s=student, t=teacher: loss(s, t, 0, 100)


def _par():
    refiner = PixelAdaptiveRefiner()
    images, scores = _bf16(2, 3, 32, 32), _bf16(2, 4, 8, 8).abs()
    return lambda: refiner(images, scores)


def _par_labels():
    refiner = PixelAdaptiveRefiner(dilations=(1, 2), num_iter=3)
    images, cams = _bf16(2, 3, 32, 32), _bf16(2, 4, 8, 8).abs().clamp(max=1)
    labels = torch.tensor([[1., 0, 1, 0], [0, 1, 0, 0]])
    return lambda: refine_pseudo_labels(refiner, images, cams, labels, 0.7,
                                        0.25)


def _bgfg():
    logits, labels = _bf16(2, 4, 8, 8), torch.randint(0, 4, (2, 8, 8))
    labels[0, :2] = 255
    return lambda: BgFgCrossEntropyLoss(loss_weight=1.0)(logits, labels)


def _cam_losses():
    head = CAMHead(in_channels=8, num_classes=3).bfloat16()
    feat, aux = _bf16(2, 8, 4, 4), _bf16(2, 8, 4, 4, seed=1)
    labels = torch.tensor([[1., 0, 1], [0, 1, 0]])
    return lambda: sum(head.loss(feat, aux, labels).values())


@pytest.mark.parametrize('make', [
    _dino_u, _dino_c, _par, _par_labels, _bgfg, _cam_losses,
    lambda: (lambda x=_bf16(2, 3, 8, 8).abs(): min_max_normalize(x))
], ids=['L_u', 'L_c', 'PAR', 'PAR labels', 'BgFgCE', 'CAM head', 'min-max'])
def test_fp32_islands_under_bf16_autocast(make):
    """Same bf16 inputs: the result is fp32 and equals the fp32 computation,
    i.e. autocast changed nothing inside these functions."""
    fn = make()
    expected = fn()
    with torch.autocast(**BF16):
        result = fn()
    if result.is_floating_point():
        assert result.dtype == torch.float32
        assert torch.isfinite(result).all()
    torch.testing.assert_close(result, expected, rtol=1e-6, atol=1e-6)


def test_patch_token_contrast_fp32_output_under_bf16_autocast():
    """Autocast runs bmm in bf16 whatever the input dtype: the loss keeps its
    similarity matmul out of autocast, so fp32 tokens give the fp32 loss."""
    tokens, labels = torch.randn(2, 16, 6, 6), torch.randint(0, 3, (2, 6, 6))
    loss = PatchTokenContrastLoss(loss_weight=1.0)
    expected = loss(tokens, labels)
    with torch.autocast(**BF16):
        from_fp32 = loss(tokens, labels)
        from_bf16 = loss(tokens.bfloat16(), labels)
    assert torch.equal(from_fp32, expected)
    assert from_bf16.dtype == torch.float32 and torch.isfinite(from_bf16)
    # only the bf16 rounding of the tokens themselves remains
    torch.testing.assert_close(from_bf16, expected, rtol=1e-2, atol=1e-3)


# ------------------------------------------------- AMP training step
@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')
def test_mmengine_amp_optim_wrapper_needs_cuda():
    """Why the CPU path below autocasts by hand: mmengine refuses CPU AMP."""
    params = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(AssertionError, match='gpu'):
        AmpOptimWrapper(optimizer=torch.optim.SGD(params, lr=0.1),
                        dtype='bfloat16')


def test_bf16_train_step_gives_finite_fp32_losses():
    model = build()
    seen = []
    # an FFN layer (attention's out_proj is called functionally, no hook)
    linear = next(m for name, m in model.backbone.named_modules()
                  if 'ffn' in name and isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optim_wrapper = OptimWrapper(
        torch.optim.AdamW(model.parameters(), lr=1e-3))
    inputs, samples = two_view_batch()

    # AmpOptimWrapper.optim_context(model) = this with CUDA autocast
    with optim_wrapper.optim_context(model), torch.autocast(**BF16):
        losses = model.loss(inputs, samples)
    parsed, log_vars = model.parse_losses(losses)
    optim_wrapper.update_params(parsed)
    model.update_teacher(0.9)

    assert torch.bfloat16 in seen  # autocast reached the backbone
    assert {'loss_cls', 'loss_aff', 'decode.loss_seg', 'loss_fsr_u',
            'loss_fsr_c'} <= set(losses)
    for name, value in losses.items():
        assert value.dtype == torch.float32, name
        assert torch.isfinite(value).all(), name
    after = model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values()
               if v.is_floating_point())
    assert not torch.equal(before['backbone.patch_embed.projection.weight'],
                           after['backbone.patch_embed.projection.weight'])


def test_amp_config_inherits_the_paper_optimiser():
    config_dir = osp.dirname(CPU_CONFIG)
    cfg = Config.fromfile(
        osp.join(config_dir, 'fsr_vit-b16_4xb2-amp-20k_voc12aug-448x448.py'))
    paper = Config.fromfile(
        osp.join(config_dir, 'fsr_vit-b16_4xb2-20k_voc12aug-448x448.py'))
    wrapper = cfg.optim_wrapper
    assert (wrapper.type, wrapper.dtype,
            wrapper.loss_scale) == ('AmpOptimWrapper', 'bfloat16', 'dynamic')
    for key in ('constructor', 'optimizer', 'paramwise_cfg'):
        assert wrapper[key] == paper.optim_wrapper[key]
    assert cfg.model == paper.model


# ------------------------------------------ activation checkpointing
def _gradients(model, inputs, samples):
    model.zero_grad()
    torch.manual_seed(1)  # same masks, drop-path draws and noise
    losses = model.loss(inputs, samples)
    model.parse_losses(losses)[0].backward()
    return {
        name: p.grad.clone()
        for name, p in model.named_parameters() if p.grad is not None
    }


def test_checkpointing_keeps_gradients(monkeypatch):
    # drop path on: the recomputation must replay the same random draws
    plain = build(**{'backbone.drop_path_rate': 0.1})
    ckpt = build(**{'backbone.drop_path_rate': 0.1, 'backbone.with_cp': True})
    ckpt.load_state_dict(plain.state_dict())
    calls = []
    original = torch.utils.checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    # mmseg's ViT layers call torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, 'checkpoint', counting)
    inputs, samples = two_view_batch()

    expected = _gradients(plain, inputs, samples)
    assert not calls
    result = _gradients(ckpt, inputs, samples)
    # one call per layer of the student pass; CAM and teacher passes run
    # without grad and are never checkpointed
    assert len(calls) == len(ckpt.backbone.layers)
    assert expected.keys() == result.keys()
    for name in expected:
        torch.testing.assert_close(
            result[name], expected[name], rtol=1e-5, atol=1e-7, msg=name)


def test_checkpointing_saves_fewer_activations():
    plain = build()
    ckpt = build(**{'backbone.with_cp': True})
    ckpt.load_state_dict(plain.state_dict())
    inputs, samples = two_view_batch()
    saved = []
    for model in (plain, ckpt):
        torch.manual_seed(1)
        with saved_activation_bytes(model) as total:
            model.loss(inputs, samples)
        saved.append(total[0])
    assert 0 < saved[1] < saved[0]
