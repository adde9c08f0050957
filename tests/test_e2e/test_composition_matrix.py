"""FSR parts composed into users' own configs, trained with the real Runner.

Each case trains a few iterations on the synthetic VOC-layout data and
checks that every loss is finite, that the decoder loss starts at the
configured fraction of the run, and that the EMA teacher moves once per
optimiser step, whether or not the config lists the FSR hooks.
"""
import copy
import math
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner
from mmseg.registry import HOOKS

from mmseg_fsr.testing import tiny_fsr_config, tiny_fsr_model_cfg

README = osp.join(osp.dirname(__file__), '..', '..', 'README.md')
MAX_ITERS = 8
SEG_START = 0.25  # the decoder from iteration 2 of 8
EMBED = 32


@HOOKS.register_module(force=True)
class _LossRecorderHook(Hook):
    """Keeps every iteration's logged losses."""

    priority = 'LOWEST'

    def __init__(self) -> None:
        self.losses = []

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        self.losses.append({k: float(v) for k, v in outputs.items()})


def readme_user_config(tmp_path) -> str:
    """The README's "your own config" block, written to a file."""
    text = open(README).read()
    block = re.search(r'```python\n(# my_fsr_aspp_voc12aug\.py.*?)```', text,
                      re.S)
    assert block, 'README lost its user config block'
    path = tmp_path / 'my_fsr_aspp_voc12aug.py'
    path.write_text(block.group(1))
    return str(path)


def shrink_to_cpu(cfg: Config, data_root: str, work_dir: str,
                  crop: int = 64) -> Config:
    """The same composition at CPU size: tiny backbone and heads, 64 px
    crops, the synthetic data, no validation, no checkpoints."""
    model = cfg.model
    model.backbone.update(
        img_size=(crop, crop), patch_size=8, embed_dims=EMBED, num_layers=3,
        num_heads=2, out_indices=(0, 2), init_cfg=None)
    model.backbone.pop('arch', None)
    model.cam_head.in_channels = EMBED
    model.decode_head.update(in_channels=EMBED, channels=16)
    if 'aggregation_head' in model:
        model.aggregation_head.update(in_channels=EMBED, num_heads=2)
        model.aggregation_head.projector.update(
            in_channels=EMBED, hidden_channels=32, bottleneck_channels=16,
            out_channels=64)
        model.uncertain_loss.out_channels = 64
        model.certain_loss.out_channels = 64
        model.mask_neck.block_size = 16
    model.pseudo_labeller = dict(
        type='CAMPseudoLabeller', cam_scales=(1.0, ),
        par=dict(dilations=(1, ), num_iter=1))
    model.data_preprocessor.size = (crop, crop)
    for step in cfg.train_dataloader.dataset.get('datasets', []) or [
            cfg.train_dataloader.dataset]:
        for transform in step.pipeline:
            if transform.type == 'RandomCrop':
                transform.crop_size = (crop, crop)
            if transform.type == 'Pad':
                transform.size = (crop, crop)
            if transform.type == 'RandomResize':
                transform.scale = (4 * crop, crop)
        step.data_root = data_root
    cfg.train_dataloader.update(
        batch_size=2, num_workers=0, persistent_workers=False)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=MAX_ITERS,
                         val_interval=MAX_ITERS + 1)
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.test_dataloader = cfg.test_evaluator = cfg.test_cfg = None
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.pop('visualization', None)
    cfg.default_hooks.logger.interval = 1
    cfg.log_level = 'WARNING'
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=0)
    cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [
        dict(type='_LossRecorderHook')
    ]
    return cfg


def stock_pipeline_cfg(cfg: Config, crop: int = 64) -> Config:
    """``cfg`` with mmseg's stock train pipeline instead of the two views."""
    cfg.train_dataloader.dataset.pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='RandomResize', scale=(4 * crop, crop),
             ratio_range=(0.5, 2.0), keep_ratio=True),
        dict(type='RandomCrop', crop_size=(crop, crop), cat_max_ratio=0.75),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PhotoMetricDistortion'),
        dict(type='PackSegInputs'),
    ]
    cfg.model.data_preprocessor.size = (crop, crop)
    return cfg


def train_and_record(cfg: Config):
    """Train; return the model and the per-iteration losses."""
    runner = Runner.from_cfg(cfg)
    model = runner.model
    teacher_start = copy.deepcopy(model.teacher.state_dict()) if hasattr(
        model, 'teacher') else None
    runner.train()
    recorder = next(h for h in runner.hooks
                    if isinstance(h, _LossRecorderHook))
    return model, recorder.losses, teacher_start


def check_run(model, losses, teacher_start, hooks_listed: bool) -> None:
    assert len(losses) == MAX_ITERS
    for it, logged in enumerate(losses):
        assert all(math.isfinite(v) for v in logged.values()), (it, logged)
        decoder_on = 'decode.loss_seg' in logged
        assert decoder_on == (it >= int(SEG_START * MAX_ITERS)), (it, logged)
    if teacher_start is None:
        return
    assert {'loss_fsr_c', 'loss_fsr_u'} <= set(losses[-1])
    # once per optimiser step: with the hook right after each, without it
    # at the next step's first forward (the last step still pending)
    moved_steps = MAX_ITERS - 1 if hooks_listed else MAX_ITERS - 2
    assert int(model.teacher.last_step) == moved_steps
    teacher = model.teacher.state_dict()
    changed = [
        k for k, v in teacher.items()
        if v.is_floating_point() and not torch.equal(v, teacher_start[k])
    ]
    assert len(changed) > 20
    student = model.backbone.state_dict()
    assert not torch.equal(student['patch_embed.projection.weight'],
                           teacher['backbone.patch_embed.projection.weight'])


def test_readme_user_config(synthetic_voc, tmp_path):
    """The README's own config: stock data config and pipeline, ASPPHead,
    MaskableViT, plain mmengine Runner, no FSR hook listed."""
    cfg = Config.fromfile(readme_user_config(tmp_path))
    assert not cfg.get('custom_hooks') and 'runner_type' not in cfg
    assert cfg.train_dataloader.dataset.type == 'ConcatDataset'
    cfg = shrink_to_cpu(cfg, synthetic_voc, str(tmp_path / 'work'))
    cfg.model.loss_start_iters = dict(seg=SEG_START)
    check_run(*train_and_record(cfg), hooks_listed=False)


def _two_view_cfg(synthetic_voc, tmp_path, **model_overrides) -> Config:
    cfg = tiny_fsr_config(synthetic_voc, str(tmp_path / 'work'), MAX_ITERS)
    cfg.model = tiny_fsr_model_cfg(
        crop=64, loss_start_iters=dict(seg=SEG_START), **model_overrides)
    return shrink_to_cpu(cfg, synthetic_voc, str(tmp_path / 'work'))


DECODE_HEADS = {
    'FCNHead': dict(type='FCNHead', in_channels=EMBED, in_index=-1,
                    channels=16, num_convs=1, concat_input=False,
                    num_classes=21, norm_cfg=None, align_corners=False),
    'SegformerHead': dict(type='SegformerHead', in_channels=[EMBED, EMBED],
                          in_index=[0, 1], channels=16, num_classes=21,
                          norm_cfg=dict(type='GN', num_groups=4),
                          align_corners=False),
}


@pytest.mark.parametrize('head,backbone,pipeline,hooks', [
    ('LargeFOVHead', 'MaskableViT', 'stock', True),
    ('FCNHead', 'MMPretrainViTAdapter', 'two_view', True),
    ('SegformerHead', 'MaskableViT', 'two_view', False),
    ('ASPPHead', 'MMPretrainViTAdapter', 'stock', False),
])
def test_fsr_composition(synthetic_voc, tmp_path, head, backbone, pipeline,
                         hooks):
    cfg = _two_view_cfg(synthetic_voc, tmp_path)
    if head in DECODE_HEADS:
        cfg.model.decode_head = dict(
            DECODE_HEADS[head],
            loss_decode=dict(type='BgFgCrossEntropyLoss', loss_weight=0.1))
    elif head == 'ASPPHead':
        cfg.model.decode_head = dict(
            type='ASPPHead', in_channels=EMBED, in_index=-1, channels=16,
            dilations=(1, 2), num_classes=21, norm_cfg=None,
            align_corners=False,
            loss_decode=dict(type='BgFgCrossEntropyLoss', loss_weight=0.1))
    if backbone == 'MMPretrainViTAdapter':
        cfg.model.backbone = dict(
            type='MMPretrainViTAdapter',
            arch=dict(embed_dims=EMBED, num_layers=3, num_heads=2,
                      feedforward_channels=64),
            img_size=64, patch_size=8, out_indices=(0, 2))
    if pipeline == 'stock':
        cfg = stock_pipeline_cfg(cfg)
    if not hooks:
        cfg.custom_hooks = [dict(type='_LossRecorderHook')]
    check_run(*train_and_record(cfg), hooks_listed=hooks)


def test_wsss_segmentor_alone(synthetic_voc, tmp_path):
    """The ToCo-style baseline as a config of its own, stock pipeline."""
    cfg = _two_view_cfg(synthetic_voc, tmp_path)
    model = cfg.model
    cfg.model = dict(
        type='WSSSSegmentor',
        **{k: model[k] for k in ('data_preprocessor', 'backbone', 'cam_head',
                                 'decode_head', 'pseudo_labeller')},
        loss_start_iters=dict(seg=SEG_START))
    cfg = stock_pipeline_cfg(cfg)
    model, losses, teacher = train_and_record(cfg)
    assert type(model).__name__ == 'WSSSSegmentor' and teacher is None
    assert 'loss_aff' in losses[0] and 'loss_fsr_c' not in losses[0]
    check_run(model, losses, teacher, hooks_listed=True)


def test_training_without_runner_progress_says_what_to_do(
        synthetic_voc, tmp_path):
    """Without RuntimeInfoHook the model has no iteration: it stops at the
    first step and names the fix."""
    cfg = _two_view_cfg(synthetic_voc, tmp_path)
    cfg.default_hooks.runtime_info = None
    with pytest.raises(RuntimeError, match='set_training_progress'):
        Runner.from_cfg(cfg).train()
