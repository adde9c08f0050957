"""One training set-up of test_accumulation_equivalence.py, run as a script.

``python step_setup_worker.py OUT_DIR SETUP [SETUP ...]`` trains the tiny
FSR model for ``STEPS`` optimiser steps of 8 images with the real mmengine
Runner, once per SETUP, and saves the student, teacher, centres and AdamW
state to ``OUT_DIR/SETUP.pth``. SETUP:

- ``ddp``: one rank of 4 (gloo; torch.distributed environment variables
  set by the caller), 2 images per rank;
- ``ddp_accum``: one rank of 2, 2 images, ``accumulative_counts=2``;
- ``accum``: one process, 2 images, ``AccumulatingIterBasedTrainLoop`` with
  ``accumulative_counts=4``;
- ``batch8``: one process, 8 images per step;
- ``plain_accum``: one process, 2 images, ``accumulative_counts=4`` with
  mmengine's ``IterBasedTrainLoop`` (4 x STEPS micro-batch iterations).

Every set-up gets the same fixed images (no sampler, no augmentation):
step t trains on images 8t..8t+7; micro-batch (or rank) k of it on
8t+2k, 8t+2k+1. The random masking draws are a function of the image, so
they are equal per image in every set-up. Drop path is off; the losses
average over images (the affinity loss, which pools token pairs over a
GPU's batch, is off: it is not the same over 8 images as over 4 x 2).
"""
import sys

import torch
import torch.distributed as dist
from mmengine.dataset import pseudo_collate
from mmengine.runner import Runner
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch.utils.data import DataLoader, Dataset

from mmseg_fsr.datasets import WSSSVOCDataset
from mmseg_fsr.engine.runner import resolve_iteration_fractions
from mmseg_fsr.models import FSRSegmentor
from mmseg_fsr.models.necks import UncertaintyMaskingNeck
from mmseg_fsr.testing import tiny_fsr_config, tiny_fsr_model_cfg

STEPS = 8
GLOBAL_BATCH = 8
CROP = 32
NUM_FG = 20


@MODELS.register_module(force=True)
class PerImageNoiseMaskingNeck(UncertaintyMaskingNeck):
    """The masking neck with uniform noise drawn per image id."""

    image_ids = None

    def forward(self, cams, img_labels, patch_grid, noise=None):
        gh, gw = self.block_grid(patch_grid)
        noise = torch.stack([
            torch.rand(gh * gw, generator=torch.Generator().manual_seed(i))
            for i in self.image_ids
        ])
        return super().forward(cams, img_labels, patch_grid, noise)


@MODELS.register_module(force=True)
class PerImageNoiseFSRSegmentor(FSRSegmentor):
    """Tells its masking neck which images the batch holds.

    The key part of an attention input bias gets no gradient in exact
    arithmetic (a softmax is shift-invariant), only rounding noise, which
    AdamW normalises to full-size steps that differ between set-ups; it is
    zeroed here so the comparison sees the real updates.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name, param in self.named_parameters():
            if name.endswith('in_proj_bias') and param.requires_grad:
                keys = torch.ones_like(param)
                keys[len(param) // 3:2 * len(param) // 3] = 0
                param.register_hook(lambda grad, keys=keys: grad * keys)

    def loss(self, inputs, data_samples):
        self.mask_neck.image_ids = [s.image_id for s in data_samples]
        return super().loss(inputs, data_samples)


class FixedTwoViewImages(Dataset):
    """Two random 32x32 views and 1-3 classes per image, in a fixed order;
    ``indices`` picks and orders the images this loader serves."""

    metainfo = WSSSVOCDataset.METAINFO

    def __init__(self, indices):
        self.indices = list(indices)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, idx):
        image_id = self.indices[idx]
        g = torch.Generator().manual_seed(10_000 + image_id)
        views = torch.randint(0, 256, (6, CROP, CROP), generator=g,
                              dtype=torch.uint8)
        labels = torch.zeros(NUM_FG)
        labels[torch.randperm(NUM_FG, generator=g)[:1 + image_id % 3]] = 1
        sample = SegDataSample(metainfo=dict(
            num_views=2, image_id=image_id, img_shape=(CROP, CROP),
            ori_shape=(CROP, CROP)))
        sample.gt_class_labels = labels
        return dict(inputs=views, data_samples=sample)


def image_order(setup: str, rank: int):
    """The images one process trains on, in the order it takes them."""
    if setup == 'ddp':  # rank k: micro-batch k of every step
        return [8 * t + 2 * rank + i for t in range(STEPS) for i in (0, 1)]
    if setup == 'ddp_accum':  # rank r: micro-batches 2r, 2r + 1
        return [8 * t + 4 * rank + i for t in range(STEPS) for i in range(4)]
    return range(GLOBAL_BATCH * STEPS)


def train(setup: str, out: str) -> None:
    distributed = setup.startswith('ddp')
    if distributed:
        # mmengine's init_dist would call torch.cuda.set_device: initialise
        # the CPU process group first, the Runner then reuses it.
        dist.init_process_group('gloo')
    rank = dist.get_rank() if distributed else 0
    cfg = tiny_fsr_config('unused', out + '.work', max_iters=STEPS)
    cfg.model = tiny_fsr_model_cfg(
        crop=CROP, type='PerImageNoiseFSRSegmentor',
        affinity_loss=None,
        # mean over every pixel (ignored ones count 0): the mean of the
        # micro-batch means
        decode_head=dict(loss_decode=dict(
            _delete_=True, type='CrossEntropyLoss', loss_weight=0.1)),
        # the decoder from step 2, uncertain masking from step 4 of 8
        loss_start_iters=dict(seg=2, aff=0, fsr=0),
        mask_neck=dict(type='PerImageNoiseMaskingNeck',
                       random_warmup_ratio=0.5))
    assert cfg.model.backbone.drop_path_rate == 0
    cfg.default_hooks.checkpoint.interval = 1000
    cfg.custom_hooks = [
        h for h in cfg.custom_hooks if h.type != 'WSSSVisualizationHook'
    ]
    cfg.train_cfg = dict(type='AccumulatingIterBasedTrainLoop',
                         max_iters=STEPS)
    batch_size = 2
    if setup == 'batch8':
        batch_size = GLOBAL_BATCH
    elif setup == 'accum':
        cfg.optim_wrapper.accumulative_counts = 4
    elif setup == 'plain_accum':
        cfg.optim_wrapper.accumulative_counts = 4
        cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=4 * STEPS)
    elif setup == 'ddp_accum':
        cfg.optim_wrapper.accumulative_counts = 2
    if distributed:
        cfg.launcher = 'pytorch'
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel',
                                     find_unused_parameters=True,
                                     device_ids=None)
    elif setup not in ('batch8', 'accum', 'plain_accum'):
        raise ValueError(setup)
    cfg = resolve_iteration_fractions(cfg)
    loader = DataLoader(FixedTwoViewImages(image_order(setup, rank)),
                        batch_size=batch_size, shuffle=False,
                        collate_fn=pseudo_collate)
    runner = Runner(
        model=cfg.model, work_dir=cfg.work_dir, train_dataloader=loader,
        train_cfg=cfg.train_cfg, optim_wrapper=cfg.optim_wrapper,
        param_scheduler=cfg.param_scheduler, default_hooks=cfg.default_hooks,
        custom_hooks=cfg.custom_hooks, launcher=cfg.get('launcher', 'none'),
        env_cfg=cfg.env_cfg,
        randomness=cfg.randomness, default_scope='mmseg',
        log_level='WARNING', cfg=cfg)
    runner.train()
    model = runner.model.module if distributed else runner.model
    state = {
        f'student.{k}': v
        for k, v in model.state_dict().items()
        if not k.startswith('teacher.') and not k.endswith('center')
    }
    state.update({f'{k}': v for k, v in model.state_dict().items()
                  if k.startswith('teacher.') or k.endswith('center')})
    optimizer = runner.optim_wrapper.state_dict()['state']
    for index, param_state in optimizer.items():
        for key, value in param_state.items():
            state[f'adamw.{index}.{key}'] = torch.as_tensor(value)
    if rank == 0:
        torch.save(state, out)
    if distributed:
        dist.destroy_process_group()


if __name__ == '__main__':
    for name in sys.argv[2:]:
        train(name, f'{sys.argv[1]}/{name}.pth')
