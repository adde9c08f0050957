"""The installed plugin: import, registration, checkpoint fix, CLI tools.

The CLI tests run the repository's ``tools/train.py`` / ``tools/test.py``
and ``mim train/test mmsegmentation`` (mmseg's own scripts, which only learn
about the plugin through the config's ``custom_imports``) on a tiny stock
mmseg model and a generated VOC-layout dataset.
"""
import importlib.metadata as md
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import mmseg_fsr

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / 'mmseg_fsr'


def run(cmd, cwd, timeout=300, **env_vars):
    env = dict(os.environ)
    env.pop('PYTHONPATH', None)  # the installed package must be enough
    env.update(env_vars)
    proc = subprocess.run(
        [str(c) for c in cmd],
        cwd=str(cwd),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout)
    assert proc.returncode == 0, f'{cmd} failed:\n{proc.stdout[-6000:]}'
    return proc.stdout


def test_package_imports_with_version():
    assert mmseg_fsr.__version__ == md.version('mmseg-fsr')


def test_import_applies_checkpoint_fix():
    from mmengine.logging import HistoryBuffer

    from mmseg_fsr.utils import is_applied
    assert is_applied()
    # the pickled name HistoryBuffer is admitted, bound to its data-only
    # checked subclass
    admitted = {
        name: entry for entry, name in (
            e for e in torch.serialization.get_safe_globals()
            if isinstance(e, tuple))
    }
    bound = admitted['mmengine.logging.history_buffer.HistoryBuffer']
    assert issubclass(bound, HistoryBuffer) and bound is not HistoryBuffer


def _registered_classes():
    """(registry name, class name) of every ``@X.register_module()`` in the
    package source."""
    pattern = re.compile(
        r'@(\w+)\.register_module\(([^)]*)\)\s*\n(?:\s*@.*\n)*\s*class (\w+)')
    found = []
    for path in PKG.rglob('*.py'):
        for reg, args, cls in pattern.findall(path.read_text()):
            m = re.search(r"name\s*=\s*['\"](\w+)['\"]", args)
            found.append((reg, m.group(1) if m else cls, path.name))
    return found


def test_import_registers_into_mmseg_registries():
    import mmseg.registry as mmseg_registry
    found = _registered_classes()
    for reg_name, cls_name, fname in found:
        registry = getattr(mmseg_registry, reg_name, None)
        assert registry is not None, f'{fname}: unknown registry {reg_name}'
        assert registry.get(cls_name) is not None, (
            f'{cls_name} ({fname}) is not in mmseg.registry.{reg_name} after '
            '`import mmseg_fsr`')


@pytest.mark.parametrize('tool', ['train.py', 'test.py'])
def test_tool_help(tool):
    out = run([sys.executable, REPO / 'tools' / tool, '--help'], cwd=REPO)
    for flag in ('--cfg-options', '--work-dir', '--launcher'):
        assert flag in out
    extra = (('--resume', '--amp') if tool == 'train.py' else
             ('--tta', '--out', '--show-dir'))
    for flag in extra:
        assert flag in out


def test_shell_scripts_parse():
    for script in ('tools/dist_train.sh', 'tools/dist_test.sh',
                   'tools/slurm_train.sh', 'tools/slurm_test.sh',
                   'tools/slurm_run.sh', 'tools/install/setup_env.sh',
                   'tools/install/build_mmcv.sh', '.ci/run'):
        subprocess.run(['bash', '-n', str(REPO / script)], check=True)


# --------------------------------------------------------------------------
# CLI end to end on a tiny stock model
CONFIG = '''
custom_imports = dict(imports=['mmseg_fsr'], allow_failed_imports=False)
default_scope = 'mmseg'
data_root = {data_root!r}
crop = (32, 32)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
        seg_pad_val=255, size=crop),
    backbone=dict(
        type='VisionTransformer', img_size=crop, patch_size=8, embed_dims=16,
        num_layers=2, num_heads=2, mlp_ratio=2, out_indices=(1, )),
    decode_head=dict(
        type='FCNHead', in_channels=16, channels=8, num_convs=1,
        concat_input=False, num_classes=21,
        loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
    train_cfg=dict(), test_cfg=dict(mode='whole'))
train_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5), dict(type='PackSegInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale_factor=r, keep_ratio=True)
         for r in (1.0, 1.5)],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='LoadAnnotations')], [dict(type='PackSegInputs')]])]
tta_model = dict(type='SegTTAModel')
dataset = dict(
    type='PascalVOCDataset', data_root=data_root,
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
    ann_file='ImageSets/Segmentation/train.txt')
train_dataloader = dict(
    batch_size=2, num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(dataset, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
optim_wrapper = dict(
    type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=1e-4, begin=0, end=4,
         by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=4, val_interval=100)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=1, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='gloo'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(
    type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
'''


@pytest.fixture(scope='module')
def tiny_config(tmp_path_factory):
    root = tmp_path_factory.mktemp('cli')
    data_root = root / 'VOC2012'
    for sub in ('JPEGImages', 'SegmentationClass', 'ImageSets/Segmentation'):
        (data_root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(4):
        name = f'2007_{i:06d}'
        mask = np.zeros((32, 32), np.uint8)
        mask[4:20, 6:26] = 12 if i % 2 else 7
        img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        cv2.imwrite(str(data_root / 'JPEGImages' / f'{name}.jpg'), img)
        cv2.imwrite(str(data_root / 'SegmentationClass' / f'{name}.png'), mask)
        names.append(name)
    (data_root / 'ImageSets/Segmentation/train.txt').write_text(
        '\n'.join(names) + '\n')
    cfg = root / 'tiny_vit_fcn_voc.py'
    cfg.write_text(CONFIG.format(data_root=str(data_root)))
    return root, cfg


def test_tools_train_resume_and_test(tiny_config):
    root, cfg = tiny_config
    work = root / 'tools_work'
    tools = REPO / 'tools'
    # 2 iterations, checkpoint at iter 2 (--cfg-options)
    run([
        sys.executable, tools / 'train.py', cfg, '--work-dir', work,
        '--cfg-options', 'train_cfg.max_iters=2'
    ],
        cwd=root)
    assert (work / 'iter_2.pth').is_file()
    # resume up to iter 4 (mmengine checkpoint under torch >= 2.6)
    out = run([sys.executable, tools / 'train.py', cfg, '--work-dir', work,
               '--resume'],
              cwd=root)
    assert 'resumed epoch: 0, iter: 2' in out
    assert (work / 'iter_4.pth').is_file()
    # test with TTA, prediction output and painted images
    preds, show = root / 'preds', root / 'show'
    out = run([
        sys.executable, tools / 'test.py', cfg, work / 'iter_4.pth',
        '--work-dir', root / 'tools_test', '--tta', '--out', preds,
        '--show-dir', show, '--cfg-options',
        'default_hooks.visualization.interval=1'
    ],
              cwd=root)
    assert 'mIoU' in out
    assert len(list(preds.glob('*.png'))) == 4
    assert len(list((show / 'vis_data' / 'vis_image').glob('*.png'))) == 4
    results = list((root / 'tools_test').rglob('*.json'))
    assert any('mIoU' in json.loads(p.read_text()) for p in results)


def test_mim_train_and_test_mmsegmentation(tiny_config):
    """mmseg's own tools (through mim) + the config's custom_imports."""
    root, cfg = tiny_config
    mim = shutil.which('mim', path=osp.dirname(sys.executable))
    assert mim, 'openmim is in requirements/optional.txt'
    work = root / 'mim_work'
    run([
        mim, 'train', 'mmsegmentation', cfg, '--work-dir', work,
        '--cfg-options', 'train_cfg.max_iters=2'
    ],
        cwd=root)
    assert (work / 'iter_2.pth').is_file()
    # mmseg's test.py loads the Runner checkpoint: works because the config's
    # custom_imports imported mmseg_fsr (and so applied the checkpoint fix)
    out = run([
        mim, 'test', 'mmsegmentation', cfg, '--checkpoint',
        work / 'iter_2.pth', '--work-dir', root / 'mim_test'
    ],
              cwd=root)
    assert 'mIoU' in out


# --------------------------------------------------------------------------
# The configs that installs carry, and the README's `mim` forms
CPU_CONFIG_NAME = 'fsr_vit-tiny-p8_1xb8-400_synthvoc-64x64.py'
# a one-iteration CPU run on the synthetic data
SHORT_RUN = [
    'train_cfg.max_iters=1', 'train_dataloader.batch_size=2',
    'train_dataloader.num_workers=0',
    'train_dataloader.persistent_workers=False',
    'val_dataloader.num_workers=0', 'test_dataloader.num_workers=0'
]
# the README's line that prints where an install keeps the configs
CONFIG_DIR_SNIPPET = ("import mmseg_fsr, os; print(os.path.join(os.path."
                      "dirname(mmseg_fsr.__file__), '.mim', 'configs'))")


def data_root_options(data_root) -> list:
    """mmseg's tools have no --data-root: each loader's data set."""
    return [
        f'{loader}.dataset.data_root={data_root}'
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
    ]


@pytest.fixture(scope='module')
def wheel(tmp_path_factory) -> Path:
    """The package built once as a wheel (``pip wheel``, offline), from a
    copy of the sources so that the build leaves nothing in the repository.
    """
    src = tmp_path_factory.mktemp('wheel_src')
    for name in ('setup.py', 'pyproject.toml', 'MANIFEST.in', 'README.md',
                 'requirements.txt'):
        shutil.copy(REPO / name, src / name)
    for name in ('requirements', 'mmseg_fsr', 'configs', 'tools'):
        shutil.copytree(
            REPO / name, src / name,
            ignore=shutil.ignore_patterns('__pycache__', '.mim'))
    dist = tmp_path_factory.mktemp('wheel_dist')
    run([
        sys.executable, '-m', 'pip', 'wheel', '--no-deps',
        '--no-build-isolation', '--no-index', '-w', dist, src
    ],
        cwd=src)
    [built] = dist.glob('mmseg_fsr-*.whl')
    return built


def test_wheel_carries_configs_and_tools(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for folder in ('configs', 'tools'):
        shipped = {
            f'mmseg_fsr/.mim/{p.relative_to(REPO).as_posix()}'
            for p in (REPO / folder).rglob('*')
            if p.is_file() and '__pycache__' not in p.parts
        }
        assert shipped and shipped <= names, sorted(shipped - names)
    assert not [n for n in names if '__pycache__' in n]


def test_mim_on_a_regular_install(wheel, synthetic_voc, tmp_path):
    """``pip install`` (here into a folder on PYTHONPATH): the configs are
    where the README says; ``mim train/test mmseg_fsr <config name>`` run
    the installed tools from outside the repository."""
    target = tmp_path / 'site'
    run([
        sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-index',
        '--target', target, wheel
    ],
        cwd=tmp_path)
    config_dir = run([sys.executable, '-c', CONFIG_DIR_SNIPPET],
                     cwd=tmp_path, PYTHONPATH=str(target)).splitlines()[-1]
    assert config_dir == str(target / 'mmseg_fsr' / '.mim' / 'configs')
    config = Path(config_dir) / 'fsr' / CPU_CONFIG_NAME
    assert config.is_file()

    mim = shutil.which('mim', path=osp.dirname(sys.executable))
    work = tmp_path / 'work'
    out = run([
        mim, 'train', 'mmseg_fsr', CPU_CONFIG_NAME, '--work-dir', work,
        '--data-root', synthetic_voc, '--cfg-options', *SHORT_RUN
    ],
        cwd=tmp_path, PYTHONPATH=str(target))
    # the installed copy of this project's tools/train.py
    assert str(target / 'mmseg_fsr' / '.mim' / 'tools' / 'train.py') in out
    assert (work / 'iter_1.pth').is_file()
    out = run([
        mim, 'test', 'mmseg_fsr', CPU_CONFIG_NAME, '--checkpoint',
        work / 'iter_1.pth', '--work-dir', tmp_path / 'test', '--data-root',
        synthetic_voc, '--cfg-options', *SHORT_RUN[-1:]
    ],
        cwd=tmp_path, PYTHONPATH=str(target))
    assert str(target / 'mmseg_fsr' / '.mim' / 'tools' / 'test.py') in out
    assert 'mIoU' in out


def test_mim_mmsegmentation_with_a_repository_config(
        synthetic_voc, tmp_path):
    """The editable install's form: ``mim train/test mmsegmentation`` with
    a config of the repository by its path, from another directory (the
    repository on PYTHONPATH, where an editable install puts it)."""
    mim = shutil.which('mim', path=osp.dirname(sys.executable))
    config = REPO / 'configs' / 'fsr' / CPU_CONFIG_NAME
    options = ['--cfg-options', *data_root_options(synthetic_voc), *SHORT_RUN]
    work = tmp_path / 'work'
    run([mim, 'train', 'mmsegmentation', config, '--work-dir', work,
         *options],
        cwd=tmp_path, PYTHONPATH=str(REPO))
    assert (work / 'iter_1.pth').is_file()
    out = run([
        mim, 'test', 'mmsegmentation', config, '--checkpoint',
        work / 'iter_1.pth', '--work-dir', tmp_path / 'test', *options
    ],
        cwd=tmp_path, PYTHONPATH=str(REPO))
    assert 'mIoU' in out


@pytest.mark.parametrize('registry_name, names', [
    ('MODELS', ['FSRSegmentor', 'MaskableViT', 'UncertaintyMaskingNeck',
                'MCAAggregationHead', 'DINOProjector', 'FSRUncertainLoss',
                'FSRCertainLoss', 'CAMHead', 'LargeFOVHead',
                'PatchTokenContrastLoss', 'BgFgCrossEntropyLoss',
                'WSSSDataPreProcessor']),
    ('HOOKS', ['FSRTeacherHook']),
    ('TRANSFORMS', ['GenerateImageLabels', 'PackWSSSInputs']),
    ('DATASETS', ['WSSSVOCDataset', 'WSSSCOCODataset']),
    ('METRICS', ['PseudoLabelMetric']),
    ('OPTIM_WRAPPER_CONSTRUCTORS', ['WSSSOptimWrapperConstructor']),
])
def test_design_card_names_are_registered(registry_name, names):
    import mmseg.registry as mmseg_registry
    registry = getattr(mmseg_registry, registry_name)
    for name in names:
        assert registry.get(name) is not None, f'{registry_name}.{name}'
