"""Every config builds; the paper configs train one iteration on CPU."""
import copy
import glob
import json
import os
import os.path as osp
import shutil

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.optim.optimizer import default_constructor
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmseg.registry import MODELS

from mmseg_fsr.testing import CPU_CONFIG
from mmseg_fsr.utils.config_utils import set_data_root

CONFIG_DIR = osp.join(osp.dirname(CPU_CONFIG), '..')
FSR_CONFIGS = sorted(
    glob.glob(osp.join(CONFIG_DIR, 'fsr', '**', '*.py'), recursive=True))
VOC_PAPER = osp.join(CONFIG_DIR, 'fsr',
                     'fsr_vit-b16_4xb2-20k_voc12aug-448x448.py')
COCO_PAPER = osp.join(CONFIG_DIR, 'fsr',
                      'fsr_vit-b16_4xb2-80k_coco2014-448x448.py')


def without_pretrained(model_cfg):
    """Full-size configs point at ImageNet weights that CI does not have."""
    model_cfg = copy.deepcopy(model_cfg)
    model_cfg.backbone.pop('init_cfg', None)
    return model_cfg


@pytest.mark.parametrize('path', FSR_CONFIGS,
                         ids=[osp.basename(p) for p in FSR_CONFIGS])
def test_config_builds_model(path):
    init_default_scope('mmseg')
    cfg = Config.fromfile(path)
    assert cfg.custom_imports.imports == ['mmseg_fsr']
    model = MODELS.build(without_pretrained(cfg.model))
    assert model.num_classes == model.cam_head.num_classes + 1


def test_paper_optimizer_groups(monkeypatch):
    """10x lr on classifiers, decoder and projector (the aggregation blocks
    train with the backbone, as the authors'); no decay on norms, biases
    and tokens."""
    init_default_scope('mmseg')
    cfg = Config.fromfile(VOC_PAPER)
    cfg.model.backbone.num_layers = 2
    cfg.model.backbone.out_indices = (0, 1)
    model = MODELS.build(without_pretrained(cfg.model))
    logged = []
    monkeypatch.setattr(default_constructor, 'print_log',
                        lambda msg, *args, **kwargs: logged.append(msg))
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    # the frozen teacher is left out without a warning per tensor
    assert not [msg for msg in logged if 'teacher' in msg]
    names = {id(p): n for n, p in model.named_parameters()}
    seen = set()
    for group in optim_wrapper.optimizer.param_groups:
        for param in group['params']:
            name = names[id(param)]
            seen.add(name)
            head = name.startswith(('cam_head.', 'decode_head.',
                                    'aggregation_head.projector.'))
            assert group['lr'] == pytest.approx(6e-5 * (10 if head else 1)), \
                name
            no_decay = param.ndim <= 1 or name.split('.')[-1] in (
                'pos_embed', 'cls_token', 'mask_token')
            assert group['weight_decay'] == (0 if no_decay else 0.05), name
    assert not any(n.startswith('teacher.') for n in seen)
    assert 'backbone.mask_token' in seen


def shrink_crop(pipeline, crop):
    """Set the crop of the two-view transform of a pipeline to ``crop``."""
    for transform in pipeline:
        if transform['type'] == 'WSSSMultiView':
            transform['crop_size'] = crop


def one_paper_iteration(cfg, data_root, tmp_path):
    """Build data and model from a paper config and run one train step."""
    set_data_root(cfg, data_root)
    cfg.work_dir = str(tmp_path)
    loader_cfg = copy.deepcopy(cfg.train_dataloader)
    loader_cfg.update(num_workers=0, persistent_workers=False)
    loader_cfg.sampler = dict(type='DefaultSampler', shuffle=False)
    shrink_crop(loader_cfg.dataset.pipeline, 64)
    loader = Runner.build_dataloader(loader_cfg, seed=0)
    model = MODELS.build(without_pretrained(cfg.model))
    model.init_weights()
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    # the last iteration: every staged loss is on
    model.set_training_progress(cfg.train_cfg.max_iters - 1,
                                cfg.train_cfg.max_iters)
    log_vars = model.train_step(next(iter(loader)), optim_wrapper)
    for key in ('loss_cls', 'loss_aff', 'decode.loss_seg', 'loss_fsr_u',
                'loss_fsr_c'):
        assert torch.isfinite(torch.as_tensor(log_vars[key])), key
    return loader.dataset


def test_voc_paper_config_trains_one_iteration(synthetic_voc, tmp_path):
    init_default_scope('mmseg')
    cfg = Config.fromfile(VOC_PAPER)
    dataset = one_paper_iteration(cfg, synthetic_voc, tmp_path)
    assert type(dataset).__name__ == 'WSSSVOCDataset'
    assert len(dataset) == 16  # aug.txt of the synthetic folder


@pytest.fixture
def coco_layout(synthetic_voc, tmp_path):
    """The synthetic images in the COCO 2014 layout of the converter."""
    root = tmp_path / 'coco2014'
    labels = {}
    for split, voc_split in (('train', 'train'), ('val', 'val')):
        names = open(osp.join(synthetic_voc, 'ImageSets/Segmentation',
                              f'{voc_split}.txt')).read().split()
        os.makedirs(root / f'{split}2014')
        os.makedirs(root / 'SegmentationClass' / f'{split}2014')
        for name in names:
            shutil.copy(osp.join(synthetic_voc, 'JPEGImages', f'{name}.jpg'),
                        root / f'{split}2014' / f'{name}.jpg')
            shutil.copy(
                osp.join(synthetic_voc, 'SegmentationClass', f'{name}.png'),
                root / 'SegmentationClass' / f'{split}2014' / f'{name}.png')
            labels[name] = [1]
        os.makedirs(root / 'ImageSets', exist_ok=True)
        (root / 'ImageSets' / f'{split}.txt').write_text('\n'.join(names))
    (root / 'ImageSets' / 'val_5k.txt').write_text(
        (root / 'ImageSets' / 'val.txt').read_text())
    (root / 'cls_labels_coco.json').write_text(json.dumps(labels))
    return str(root)


def test_coco_paper_config_trains_one_iteration(coco_layout, tmp_path):
    init_default_scope('mmseg')
    cfg = Config.fromfile(COCO_PAPER)
    assert cfg.model.decode_head.num_classes == 81
    assert cfg.model.pseudo_labeller.high_thr == 0.65
    # the decoder from 8k, the affinity loss from 12k (of 80k)
    assert dict(cfg.model.loss_start_iters) == dict(
        fsr=0, seg=0.1, aff=0.15)
    dataset = one_paper_iteration(cfg, coco_layout, tmp_path)
    assert len(dataset.metainfo['classes']) == 81


def test_every_config_has_a_model_zoo_row():
    """configs/fsr/README.md: one row per config, with a paper and an
    "ours" cell."""
    with open(osp.join(CONFIG_DIR, 'fsr', 'README.md')) as f:
        readme = f.read()
    zoo = readme[readme.index('## Results and models'):]
    zoo = zoo[:zoo.index('\n### ')]
    rows = [line for line in zoo.splitlines() if line.startswith('| [')]
    linked = sorted(row.split('](', 1)[1].split(')', 1)[0] for row in rows)
    expected = sorted(
        osp.relpath(p, osp.join(CONFIG_DIR, 'fsr')) for p in FSR_CONFIGS)
    assert linked == expected
    header = zoo.splitlines()[[
        i for i, line in enumerate(zoo.splitlines()) if line.startswith('| ')
    ][0]]
    assert 'paper' in header and header.rstrip(' |').endswith('ours')
    for row in rows:
        assert row.count('|') == header.count('|'), row


# the paper recipe on fewer GPUs: (paper config, images per GPU,
# accumulative_counts); GPUs x images x accumulation = the paper's 4 x 2
GPU_SETUPS = {
    'fsr_vit-b16_1xb8-20k_voc12aug-448x448.py': (VOC_PAPER, 8, 1),
    'fsr_vit-b16_1xb2-accum4-20k_voc12aug-448x448.py': (VOC_PAPER, 2, 4),
    'fsr_vit-b16_2xb2-accum2-20k_voc12aug-448x448.py': (VOC_PAPER, 2, 2),
    'fsr_vit-b16_1xb8-80k_coco2014-448x448.py': (COCO_PAPER, 8, 1),
    'fsr_vit-b16_1xb2-accum4-80k_coco2014-448x448.py': (COCO_PAPER, 2, 4),
}


def recipe_parts(cfg) -> tuple:
    """(images per GPU, accumulative_counts, everything else)."""
    cfg = copy.deepcopy(cfg.to_dict())
    batch = cfg['train_dataloader'].pop('batch_size')
    counts = cfg['optim_wrapper'].pop('accumulative_counts', 1)
    loop = cfg['train_cfg'].pop('type')
    assert loop == ('AccumulatingIterBasedTrainLoop' if counts > 1 else
                    'IterBasedTrainLoop')
    return batch, counts, cfg


@pytest.mark.parametrize('name', sorted(GPU_SETUPS))
def test_gpu_setup_config_is_the_4xb2_recipe(name):
    """Only the images per GPU, the accumulation and the loop differ from
    the 4xb2 config, and GPUs x images x accumulation is its 8."""
    init_default_scope('mmseg')
    paper, batch, counts = GPU_SETUPS[name]
    gpus = int(name.split('_')[2].split('xb')[0])
    ours = recipe_parts(Config.fromfile(osp.join(CONFIG_DIR, 'fsr', name)))
    reference = recipe_parts(Config.fromfile(paper))
    assert ours[:2] == (batch, counts)
    assert gpus * batch * counts == 4 * reference[0] * reference[1] == 8
    ours[2].pop('filename', None)
    reference[2].pop('filename', None)
    assert ours[2] == reference[2]


@pytest.mark.parametrize('name', sorted(GPU_SETUPS))
def test_gpu_setup_config_trains_tiny(name, synthetic_voc, coco_layout,
                                      tmp_path):
    """The config's own runner, loop, optimiser wrapper, data and hooks,
    with the tiny model at 32 px: 2 optimiser steps of
    ``accumulative_counts`` micro-batches each."""
    from mmseg_fsr.engine.runner import build_runner
    from mmseg_fsr.testing import tiny_fsr_model_cfg

    init_default_scope('mmseg')
    _, batch, counts = GPU_SETUPS[name]
    cfg = Config.fromfile(osp.join(CONFIG_DIR, 'fsr', name))
    set_data_root(cfg, coco_layout if 'coco' in name else synthetic_voc)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.model = tiny_fsr_model_cfg(
        crop=32, loss_start_iters=cfg.model.loss_start_iters,
        decode_head=dict(num_classes=cfg.model.decode_head.num_classes))
    cfg.train_dataloader.update(num_workers=0, persistent_workers=False)
    shrink_crop(cfg.train_dataloader.dataset.pipeline, 32)
    cfg.train_cfg.max_iters = 2
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.default_hooks.checkpoint.update(interval=2, save_best=None)
    cfg.log_level = 'WARNING'
    runner = build_runner(cfg)
    runner.train()
    assert runner.iter == 2
    assert runner.train_dataloader.batch_size == batch
    # 2 AdamW steps over 2 x counts micro-batches
    state = runner.optim_wrapper.state_dict()['state']
    assert {int(s['step']) for s in state.values()} == {2}
    assert runner.optim_wrapper._inner_count == 2 * counts
    assert osp.exists(osp.join(cfg.work_dir, 'iter_2.pth'))
