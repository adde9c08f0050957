"""mmengine checkpoints under torch >= 2.6 (``torch.load(weights_only=True)``).

A tiny stock mmseg ``EncoderDecoder`` (ViT + FCNHead) is trained through the
real ``mmengine.runner.Runner`` on a generated VOC-layout dataset with
``CheckpointHook`` (incl. ``save_best``), resumed by a second Runner and
tested from ``load_from`` by a third. Without
``mmseg_fsr.utils.allow_mmengine_checkpoints`` the checkpoints do not load.
"""
import io
import os
import os.path as osp
import pickle
import zipfile

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader, Runner

import mmseg_fsr  # noqa: F401  (applies the fix on import)
from mmseg_fsr.utils import (allow_mmengine_checkpoints, is_applied,
                             mmengine_checkpoint_safe_globals)

IMG = 32
NUM_IMAGES = 4


def make_voc(root):
    """Write a tiny PASCAL-VOC-layout dataset (JPEG images, PNG masks)."""
    rng = np.random.default_rng(0)
    for sub in ('JPEGImages', 'SegmentationClass', 'ImageSets/Segmentation'):
        os.makedirs(osp.join(root, sub), exist_ok=True)
    names = []
    for i in range(NUM_IMAGES):
        name = f'2007_{i:06d}'
        img = rng.integers(0, 255, (IMG, IMG, 3), dtype=np.uint8)
        mask = np.zeros((IMG, IMG), np.uint8)
        mask[8:24, 8:24] = 15 if i % 2 else 1  # person / aeroplane
        mask[8, :] = 255
        img[mask == 15] = (40, 200, 40)
        cv2.imwrite(osp.join(root, 'JPEGImages', name + '.jpg'), img)
        cv2.imwrite(osp.join(root, 'SegmentationClass', name + '.png'), mask)
        names.append(name)
    with open(osp.join(root, 'ImageSets/Segmentation/train.txt'), 'w') as f:
        f.write('\n'.join(names) + '\n')


def make_cfg(data_root, work_dir, max_iters, name, **kwargs):
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='PackSegInputs')
    ]
    dataset = dict(
        type='PascalVOCDataset',
        data_root=data_root,
        data_prefix=dict(
            img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/train.txt',
        pipeline=pipeline)
    eval_loader = dict(
        batch_size=1,
        num_workers=0,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dataset)
    cfg = dict(
        default_scope='mmseg',
        experiment_name=name,  # unique: Runners built in one second clash
        work_dir=work_dir,
        model=dict(
            type='EncoderDecoder',
            data_preprocessor=dict(
                type='SegDataPreProcessor',
                mean=[123.675, 116.28, 103.53],
                std=[58.395, 57.12, 57.375],
                bgr_to_rgb=True,
                pad_val=0,
                seg_pad_val=255,
                size=(IMG, IMG)),
            backbone=dict(
                type='VisionTransformer',
                img_size=(IMG, IMG),
                patch_size=8,
                embed_dims=16,
                num_layers=2,
                num_heads=2,
                mlp_ratio=2,
                out_indices=(1, ),
                final_norm=True),
            decode_head=dict(
                type='FCNHead',
                in_channels=16,
                channels=8,
                num_convs=1,
                concat_input=False,
                num_classes=21,
                norm_cfg=dict(type='BN', requires_grad=True),
                loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
            train_cfg=dict(),
            test_cfg=dict(mode='whole')),
        train_dataloader=dict(
            batch_size=2,
            num_workers=0,
            sampler=dict(type='InfiniteSampler', shuffle=True),
            dataset=dataset),
        val_dataloader=eval_loader,
        test_dataloader=eval_loader,
        val_evaluator=dict(type='IoUMetric', iou_metrics=['mIoU']),
        test_evaluator=dict(type='IoUMetric', iou_metrics=['mIoU']),
        train_cfg=dict(
            type='IterBasedTrainLoop', max_iters=max_iters, val_interval=2),
        val_cfg=dict(type='ValLoop'),
        test_cfg=dict(type='TestLoop'),
        optim_wrapper=dict(
            type='OptimWrapper',
            optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01)),
        param_scheduler=[
            dict(
                type='LinearLR',
                start_factor=0.1,
                by_epoch=False,
                begin=0,
                end=2),
            dict(
                type='PolyLR',
                power=1.0,
                eta_min=0.0,
                by_epoch=False,
                begin=2,
                end=4)
        ],
        default_hooks=dict(
            timer=dict(type='IterTimerHook'),
            logger=dict(type='LoggerHook', interval=1),
            param_scheduler=dict(type='ParamSchedulerHook'),
            checkpoint=dict(
                type='CheckpointHook',
                by_epoch=False,
                interval=2,
                save_best='mIoU'),
            sampler_seed=dict(type='DistSamplerSeedHook')),
        env_cfg=dict(
            cudnn_benchmark=False,
            mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
            dist_cfg=dict(backend='gloo')),
        randomness=dict(seed=0),
        log_level='WARNING')
    cfg.update(kwargs)
    return Config(cfg)


class RecordResumeState(Hook):
    """Records what the Runner restored before the first training step."""

    priority = 'VERY_LOW'

    def before_train(self, runner):
        self.iter = runner.iter
        self.state = {
            k: v.detach().clone()
            for k, v in runner.model.state_dict().items()
        }
        self.lr = runner.optim_wrapper.get_lr()['lr'][0]
        self.last_step = runner.param_schedulers[0].last_step
        self.opt_state_len = len(runner.optim_wrapper.optimizer.state)
        self.loss_history = runner.message_hub.get_scalar(
            'train/loss').data[0].copy()


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """2 iterations with the real Runner; checkpoint + best at iter 2."""
    root = tmp_path_factory.mktemp('fsr_ckpt')
    data_root = str(root / 'VOC2012')
    work_dir = str(root / 'work')
    make_voc(data_root)
    runner = Runner.from_cfg(
        make_cfg(data_root, work_dir, max_iters=2, name='ckpt_train'))
    runner.train()
    ckpt = osp.join(work_dir, 'iter_2.pth')
    assert osp.isfile(ckpt)
    return dict(data_root=data_root, work_dir=work_dir, ckpt=ckpt)


@pytest.fixture
def without_allowlist():
    """Temporarily remove every user safe global (as without the fix)."""
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        yield
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(saved)


def test_fix_is_applied_on_import():
    assert is_applied()
    assert allow_mmengine_checkpoints() is True  # idempotent
    registered = set(torch.serialization.get_safe_globals())
    for item in mmengine_checkpoint_safe_globals():
        assert item in registered
    # the name is bound to the checked class, never to mmengine's own
    assert HistoryBuffer not in registered
    assert any(isinstance(item, tuple) and item[1] ==
               'mmengine.logging.history_buffer.HistoryBuffer'
               for item in registered)


def test_runner_checkpoint_needs_the_allowlist(trained, without_allowlist):
    ckpt = trained['ckpt']
    # the checkpoint really holds non-tensor types ...
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(ckpt)
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in unsafe
    # ... so plain torch >= 2.6 and mmengine's own loader refuse it
    with pytest.raises(pickle.UnpicklingError):
        torch.load(ckpt, map_location='cpu', weights_only=True)
    with pytest.raises(pickle.UnpicklingError):
        CheckpointLoader.load_checkpoint(ckpt, map_location='cpu')
    # with exactly the allowlist (no other safe globals) it loads
    with torch.serialization.safe_globals(mmengine_checkpoint_safe_globals()):
        ckpt_dict = torch.load(ckpt, map_location='cpu', weights_only=True)
    assert set(ckpt_dict) >= {
        'meta', 'state_dict', 'message_hub', 'optimizer', 'param_schedulers'
    }


def test_every_global_in_runner_checkpoints_is_allowlisted(trained):
    names = set()
    for item in mmengine_checkpoint_safe_globals():
        if isinstance(item, tuple):
            names.add(item[1])
        else:
            names.add(f'{item.__module__}.{item.__qualname__}')
    files = [f for f in os.listdir(trained['work_dir']) if f.endswith('.pth')]
    assert 'iter_2.pth' in files and any(f.startswith('best_') for f in files)
    for f in files:
        path = osp.join(trained['work_dir'], f)
        unsafe = set(
            torch.serialization.get_unsafe_globals_in_checkpoint(path))
        assert unsafe <= names, unsafe - names
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
        hub = ckpt['message_hub']
        buf = hub['log_scalars']['train/loss']
        assert isinstance(buf, HistoryBuffer) and len(buf.data[0]) >= 2
        assert np.isfinite(buf.mean())
        assert isinstance(hub['runtime_info']['best_score'], np.floating)


def test_resume_and_test_with_the_real_runner(trained):
    ckpt = torch.load(trained['ckpt'], map_location='cpu', weights_only=True)
    assert ckpt['meta']['iter'] == 2

    # resume: a new Runner in the same work_dir continues from iter 2
    runner = Runner.from_cfg(
        make_cfg(
            trained['data_root'],
            trained['work_dir'],
            max_iters=4,
            name='ckpt_resume',
            resume=True))
    recorder = RecordResumeState()
    runner.register_hook(recorder)
    runner.train()
    assert recorder.iter == 2
    for k, v in ckpt['state_dict'].items():
        torch.testing.assert_close(recorder.state[k], v, msg=k)
    assert recorder.last_step == ckpt['param_schedulers'][0]['last_step']
    assert recorder.opt_state_len > 0  # AdamW moments restored
    np.testing.assert_allclose(
        recorder.loss_history,
        ckpt['message_hub']['log_scalars']['train/loss'].data[0])
    assert runner.iter == 4
    final = osp.join(trained['work_dir'], 'iter_4.pth')
    assert osp.isfile(final)

    # test: load_from the final checkpoint (what tools/test.py does)
    final_sd = torch.load(
        final, map_location='cpu', weights_only=True)['state_dict']
    tester = Runner.from_cfg(
        make_cfg(
            trained['data_root'],
            trained['work_dir'] + '_test',
            max_iters=4,
            name='ckpt_test',
            load_from=final))
    metrics = tester.test()
    assert 'mIoU' in metrics and 0.0 <= metrics['mIoU'] <= 100.0
    for k, v in final_sd.items():
        torch.testing.assert_close(
            tester.model.state_dict()[k].cpu(), v, msg=k)


def _save_with_global(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


class _GetattrInit:

    def __reduce__(self):
        return getattr, (HistoryBuffer, '__init__')


class _GetattrOther:

    def __reduce__(self):  # np.ndarray itself is allowlisted
        return getattr, (np.ndarray, 'tofile')


def test_restricted_getattr_blocks_everything_else():
    for evil in (_GetattrInit(), _GetattrOther()):
        with pytest.raises(pickle.UnpicklingError):
            torch.load(_save_with_global({'x': evil}), weights_only=True)
    # what HistoryBuffer pickles itself as is fine
    hb = HistoryBuffer()
    hb.update(1.5)
    out = torch.load(_save_with_global({'hb': hb}), weights_only=True)['hb']
    assert out.current() == 1.5 and out.mean() == 1.5


class _CraftedHistoryBuffer:
    """Pickles as a HistoryBuffer, with the given state."""

    def __init__(self, **state):
        self.state = dict(
            dict(max_length=10, _log_history=np.array([1.0, 3.0]),
                 _count_history=np.array([1, 1])), **state)

    def __reduce__(self):
        return HistoryBuffer, (), self.state


def _mean_of_a_new_buffer():
    buf = HistoryBuffer()
    buf.update(1.0)
    buf.update(3.0)
    return buf.statistics('mean')


@pytest.mark.parametrize('state', [
    dict(statistics_methods={'mean': HistoryBuffer.max}),
    dict(mean=HistoryBuffer.max),  # shadows the method on the instance
    dict(_log_history=[1.0, 3.0]),  # not an array
])
def test_crafted_history_buffer_cannot_change_the_class(state):
    """mmengine's __setstate__ writes the file's statistics methods into
    the class-wide table: a crafted checkpoint could make every buffer's
    ``mean`` compute ``max``. The allowlist admits only the Runner's data."""
    payload = _save_with_global({'hb': _CraftedHistoryBuffer(**state)})
    with pytest.raises(pickle.UnpicklingError,
                       match='HistoryBuffer state refused'):
        torch.load(payload, weights_only=True)
    assert HistoryBuffer._statistics_methods['mean'] is HistoryBuffer.mean
    assert _mean_of_a_new_buffer() == 2.0


def test_crafted_history_buffer_changes_the_class_without_the_check():
    """The fault, reproduced with mmengine's own unpickling."""
    payload = _save_with_global({
        'hb': _CraftedHistoryBuffer(
            statistics_methods={'mean': HistoryBuffer.max})
    })
    try:
        torch.load(payload, weights_only=False)
        assert _mean_of_a_new_buffer() == 3.0  # max, for every buffer
    finally:
        HistoryBuffer._statistics_methods['mean'] = HistoryBuffer.mean
    assert _mean_of_a_new_buffer() == 2.0


def test_runner_history_buffers_load_as_plain_history_buffers():
    hb = HistoryBuffer(max_length=7)
    hb.update(1.5)
    hb.update(2.5, count=2)
    out = torch.load(_save_with_global({'hb': hb}), weights_only=True)['hb']
    assert type(out) is HistoryBuffer and out.max_length == 7
    np.testing.assert_array_equal(out.data[0], [1.5, 2.5])
    assert out.mean() == hb.mean()
    # saved again, it pickles as mmengine's class
    assert b'_DataOnly' not in _save_with_global({'hb': out}).getvalue()


def test_numpy1_checkpoints_load(tmp_path):
    """Checkpoints pickled under numpy 1.x name ``numpy.core.*``."""
    src = tmp_path / 'np2.pth'
    torch.save({'a': np.arange(3.0), 's': np.float32(2.5)}, src)
    dst = tmp_path / 'np1.pth'
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, 'w') as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith('data.pkl'):
                assert b'numpy._core.multiarray' in data
                data = data.replace(b'numpy._core.multiarray',
                                    b'numpy.core.multiarray')
            zout.writestr(info, data)
    out = torch.load(dst, weights_only=True)
    np.testing.assert_array_equal(out['a'], np.arange(3.0))
    assert out['s'] == np.float32(2.5)
