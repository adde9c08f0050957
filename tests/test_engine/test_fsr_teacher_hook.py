"""Tests of ``FSRTeacherHook`` and ``FSRSegmentor.update_teacher``."""
import copy
import math
import os.path as osp
import socket
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.model import MMDistributedDataParallel, is_model_wrapper
from mmengine.registry import init_default_scope
from mmseg.registry import HOOKS, MODELS
from mmseg.structures import SegDataSample

import mmseg_fsr  # noqa: F401  (registers the modules)
from mmseg_fsr.engine.hooks.fsr_teacher_hook import FSRTeacherHook
from mmseg_fsr.models.utils import EMATeacher

CONFIG = osp.join(
    osp.dirname(__file__), '..', '..', 'configs', 'fsr',
    'fsr_vit-tiny-p8_1xb8-400_synthvoc-64x64.py')
VOC_CLASSES = tuple(f'c{i}' for i in range(21))


@pytest.fixture(scope='module')
def tiny_cfg():
    init_default_scope('mmseg')
    m = Config.fromfile(CONFIG).model
    # shrink the CPU config further: 32x32 input, 16-d tokens, 2 layers
    m.backbone.update(
        img_size=(32, 32),
        embed_dims=16,
        num_layers=2,
        num_heads=2,
        out_indices=(0, 1))
    m.cam_head.in_channels = 16
    m.decode_head.update(in_channels=16, channels=8)
    m.aggregation_head.update(in_channels=16, num_heads=2)
    m.aggregation_head.projector.update(
        in_channels=16,
        hidden_channels=16,
        bottleneck_channels=8,
        out_channels=16)
    m.uncertain_loss.out_channels = 16
    m.certain_loss.out_channels = 16
    m.pseudo_labeller.update(
        cam_scales=(1.0, ), par=dict(dilations=(1, ), num_iter=1))
    m.loss_start_iters = dict(seg=0, aff=0, fsr=0)
    return m


def _build(cfg):
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(cfg))
    model.init_weights()
    return model


def _scramble_teacher(model):
    """Give the teacher weights that differ from the student's."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for t in model.teacher.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g))


def _float_pairs(model):
    pairs = []
    for name in ('backbone', 'aggregation_head'):
        student = getattr(model, name).state_dict()
        teacher = model.teacher[name].state_dict()
        assert student.keys() == teacher.keys()
        pairs += [(f'{name}.{k}', student[k], teacher[k]) for k in student
                  if teacher[k].is_floating_point()]
    assert len(pairs) > 20
    return pairs


# ------------------------------------------------------------ momentum
def _teacher(momentum=0.9995, end_momentum=1.0):
    return EMATeacher(dict(backbone=torch.nn.Linear(2, 2)), True, momentum,
                      end_momentum)


def test_momentum_schedule_values():
    """The authors' cosine_scheduler: cos(pi t / T) over t = 0..T-1."""
    teacher = _teacher()
    assert teacher.momentum == 0.9995 and teacher.end_momentum == 1.0
    assert teacher.momentum_at(0, 100) == pytest.approx(0.9995, abs=1e-12)
    assert teacher.momentum_at(50, 100) == pytest.approx(0.99975, abs=1e-12)
    # the last iteration is one step short of 1: 1 - 0.0005 (1 - cos(pi/T))/2
    assert teacher.momentum_at(99, 100) == pytest.approx(
        1 - 0.0005 * (1 + math.cos(math.pi * 99 / 100)) / 2, abs=1e-15)
    # a quarter of the way: 1 - 0.0005 * (1 + cos(pi / 4)) / 2
    assert teacher.momentum_at(25, 100) == pytest.approx(
        1 - 0.0005 * (1 + math.sqrt(0.5)) / 2, abs=1e-12)
    values = [teacher.momentum_at(t, 100) for t in range(100)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    # beyond the end (e.g. resumed with fewer iterations) stays at the end
    assert teacher.momentum_at(500, 100) == pytest.approx(1.0)
    assert teacher.momentum_at(0, 1) == pytest.approx(0.9995)


def test_momentum_custom_range():
    teacher = _teacher(momentum=0.5, end_momentum=0.9)
    assert teacher.momentum_at(0, 10) == pytest.approx(0.5)
    assert teacher.momentum_at(5, 10) == pytest.approx(0.7)
    assert teacher.momentum_at(10, 10) == pytest.approx(0.9)


@pytest.mark.parametrize('momentum,end_momentum', [(-0.1, 1.0), (0.9, 1.1),
                                                   (0.99, 0.9), (1.5, 2.0)])
def test_invalid_momenta_raise(momentum, end_momentum, tiny_cfg):
    with pytest.raises(ValueError, match='0 <= momentum <= end_momentum'):
        _teacher(momentum, end_momentum)
    cfg = copy.deepcopy(tiny_cfg)
    cfg.teacher_cfg = dict(momentum=momentum, end_momentum=end_momentum)
    with pytest.raises(ValueError, match='0 <= momentum <= end_momentum'):
        _build(cfg)


def test_hook_registered():
    assert isinstance(HOOKS.build(dict(type='FSRTeacherHook')), FSRTeacherHook)


def test_follow_moves_once_per_step():
    """One EMA step per optimiser step, however often it is asked; none
    before the first step; the record is a checkpointed buffer."""
    student = torch.nn.Linear(2, 2)
    teacher = EMATeacher(dict(backbone=student), True, 0.5, 0.5)
    with torch.no_grad():
        teacher['backbone'].weight.zero_()
        student.weight.fill_(1.0)
    assert 'last_step' in teacher.state_dict()
    assert not teacher.follow(dict(backbone=student), -1, 10)
    assert teacher.follow(dict(backbone=student), 0, 10)
    assert not teacher.follow(dict(backbone=student), 0, 10)
    assert torch.allclose(teacher['backbone'].weight, torch.full((2, 2), .5))
    assert teacher.follow(dict(backbone=student), 1, 10)
    assert torch.allclose(teacher['backbone'].weight, torch.full((2, 2), .75))
    assert int(teacher.last_step) == 1


# ------------------------------------------------------- update_teacher
def test_teacher_starts_as_student_copy(tiny_cfg):
    model = _build(tiny_cfg)
    for name, s, t in _float_pairs(model):
        assert torch.equal(s, t), name
        assert s.data_ptr() != t.data_ptr(), name
    assert all(not p.requires_grad for p in model.teacher.parameters())


@pytest.mark.parametrize('m', [0.0, 0.3, 0.9, 1.0])
def test_update_teacher_is_ema(tiny_cfg, m):
    model = _build(tiny_cfg)
    _scramble_teacher(model)
    before = {n: (s.clone(), t.clone()) for n, s, t in _float_pairs(model)}
    model.update_teacher(m)
    for name, s, t in _float_pairs(model):
        s0, t0 = before[name]
        assert torch.equal(s, s0), f'student changed: {name}'
        assert torch.allclose(t, m * t0 + (1 - m) * s0, atol=1e-6), name


@pytest.mark.parametrize('stochastic_targets', [True, False])
def test_teacher_mode_follows_stochastic_targets(tiny_cfg,
                                                 stochastic_targets):
    """The authors never put the teacher in eval mode (drop path acts)."""
    cfg = copy.deepcopy(tiny_cfg)
    cfg.stochastic_targets = stochastic_targets
    model = _build(cfg)
    model.train()
    assert model.teacher.training is stochastic_targets
    model.eval()
    assert not model.teacher.training


def test_teacher_gets_no_grad(tiny_cfg):
    model = _build(tiny_cfg)
    model.train()
    model.set_training_progress(50, 100)
    torch.manual_seed(0)
    samples = []
    for i in range(2):
        s = SegDataSample(metainfo=dict(img_path=f'{i}.jpg'))
        s.gt_class_labels = torch.zeros(20)
        s.gt_class_labels[3 * i] = 1
        samples.append(s)
    losses = model.loss(torch.randn(2, 2, 3, 32, 32), samples)
    assert 'loss_fsr_c' in losses and 'loss_fsr_u' in losses
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    for name, p in model.teacher.named_parameters():
        assert p.grad is None, name
        assert not p.requires_grad, name
    assert model.backbone.patch_embed.projection.weight.grad is not None
    assert model.aggregation_head.projector.mlp[0].weight.grad is not None


# ----------------------------------------------------------------- hook
def _runner(model, it=50, max_iters=100):
    return SimpleNamespace(model=model, iter=it, max_iters=max_iters)


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture
def gloo_group():
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(
            'gloo',
            init_method=f'tcp://127.0.0.1:{_free_port()}',
            rank=0,
            world_size=1)
    yield
    if created:
        dist.destroy_process_group()


def test_hook_updates_teacher_through_ddp_wrapper(tiny_cfg, gloo_group):
    cfg = copy.deepcopy(tiny_cfg)
    cfg.teacher_cfg = dict(momentum=0.5, end_momentum=1.0)
    model = _build(cfg)
    _scramble_teacher(model)
    before = {n: (s.clone(), t.clone()) for n, s, t in _float_pairs(model)}
    wrapped = MMDistributedDataParallel(module=model)
    assert is_model_wrapper(wrapped)
    FSRTeacherHook().after_train_iter(_runner(wrapped, 50, 100), batch_idx=0)
    m = 0.75  # 1 - 0.5 * (1 + cos(pi / 2)) / 2
    for name, s, t in _float_pairs(model):
        s0, t0 = before[name]
        assert torch.allclose(t, m * t0 + (1 - m) * s0, atol=1e-6), name
    assert int(model.teacher.last_step) == 50


def test_hook_momentum_one_keeps_teacher(tiny_cfg):
    model = _build(tiny_cfg)
    _scramble_teacher(model)
    before = {n: t.clone() for n, _, t in _float_pairs(model)}
    FSRTeacherHook().after_train_iter(_runner(model, 100, 100), batch_idx=0)
    for name, _, t in _float_pairs(model):
        assert torch.equal(t, before[name]), name


@pytest.mark.parametrize('model', [
    SimpleNamespace(num_classes=21),  # no teacher at all
    SimpleNamespace(with_fsr=False, advance_teacher=lambda *a: None),
])
def test_hook_tolerates_models_without_a_teacher(model):
    FSRTeacherHook().after_train_iter(_runner(model), batch_idx=0)


def test_fsr_off_model_has_no_teacher_to_move(tiny_cfg):
    cfg = copy.deepcopy(tiny_cfg)
    cfg.update(uncertain_loss=None, certain_loss=None, mask_neck=None,
               aggregation_head=None)
    model = _build(cfg)
    assert not hasattr(model, 'teacher')
    FSRTeacherHook().after_train_iter(_runner(model), batch_idx=0)
