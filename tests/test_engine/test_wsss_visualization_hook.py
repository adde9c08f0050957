"""Tests of ``WSSSVisualizationHook``, its panels and the model maps."""
import glob
import importlib.util
import math
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmseg.registry import MODELS

import mmseg_fsr  # noqa: F401  (registers the modules)
from mmseg_fsr.engine.hooks import wsss_visualization_hook
from mmseg_fsr.testing import tiny_fsr_model_cfg
from mmseg_fsr.visualization import TITLE_HEIGHT, draw_cam_panel

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FSR_CONFIGS = sorted(
    glob.glob(osp.join(REPO, 'configs', 'fsr', '**', '*.py'), recursive=True))
SIZE = 64  # tiny config crop
HOOK = 'WSSSVisualizationHook'


class _Recorder(Hook):
    """Losses and module train/eval flags after every iteration, after
    every other hook."""

    priority = 'LOWEST'

    def __init__(self) -> None:
        self.losses, self.modes = [], []

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        self.losses.append({k: v.item() for k, v in outputs.items()})
        self.modes.append([m.training for m in runner.model.modules()])


def _configure(cfg, name: str, interval=None):
    """``cfg`` with the hook every ``interval`` iterations (None: no hook),
    without per-iteration seeding (so that any random draw of the hook
    would reach the training losses), validation and checkpoints."""
    hooks = [h for h in cfg.custom_hooks
             if h.type not in (HOOK, 'DeterministicResumeHook')]
    if interval is not None:
        hooks.append(dict(type=HOOK, interval=interval, num_images=2))
    cfg.custom_hooks = hooks
    cfg.train_cfg.val_interval = 1000
    cfg.default_hooks.checkpoint.interval = 1000
    # visualizers are global instances by name: one per run
    cfg.visualizer.name = f'{name}_{osp.basename(osp.dirname(cfg.work_dir))}'
    return cfg


def _train(cfg, name: str, interval=None):
    """Train; returns (runner, the _Recorder)."""
    runner = Runner.from_cfg(_configure(cfg, name, interval))
    recorder = _Recorder()
    runner.register_hook(recorder)
    runner.train()
    return runner, recorder


def _panels(runner) -> dict:
    files = glob.glob(
        osp.join(runner.log_dir, 'vis_data', 'vis_image', '*.png'))
    return {osp.basename(f): f for f in files}


def _has_title(strip: np.ndarray) -> bool:
    return int((strip > 128).sum()) > 10  # white text on black


def test_panel_has_a_titled_column_per_map():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)
    cams = rng.random((3, 48, 40))
    label = rng.integers(0, 4, (48, 40))
    panel = draw_cam_panel(
        image, cams, np.array([1, 0, 1]), [(0, 0, 0), (128, 0, 0),
                                           (0, 128, 0), (0, 0, 128)],
        ('background', 'cat', 'dog', 'aeroplane'), title='img_1',
        token_mask=label > 1, par_label=label, prediction=label)
    # image, CAM cat, CAM aeroplane, token mask, PAR label, prediction
    assert panel.shape == (TITLE_HEIGHT + 48, 6 * 40, 3)
    strips = np.split(panel[:TITLE_HEIGHT], 6, axis=1)
    assert all(_has_title(s) for s in strips)
    assert not np.array_equal(strips[1], strips[2])  # the class names
    np.testing.assert_array_equal(panel[TITLE_HEIGHT:, :40], image)


@pytest.mark.parametrize('fsr', [True, False])
def test_training_maps(fsr):
    init_default_scope('mmseg')
    overrides = {} if fsr else dict(
        mask_neck=None, aggregation_head=None, uncertain_loss=None,
        certain_loss=None)
    torch.manual_seed(0)
    model = MODELS.build(tiny_fsr_model_cfg(32, **overrides)).eval()
    labels = torch.tensor([[1.] + [0] * 19, [0, 1.] + [0] * 18])
    maps = model.training_maps(torch.randn(2, 3, 32, 32), labels)
    assert maps['cams'].shape == maps['aux_cams'].shape == (2, 20, 32, 32)
    assert maps['pseudo_label'].shape == maps['prediction'].shape == (2, 32,
                                                                      32)
    assert maps['prediction'].max() < 21
    if not fsr:  # ToCo: no mask neck, no token-mask column
        assert 'token_mask' not in maps
        return
    mask = maps['token_mask']
    assert mask.shape == (2, 32, 32) and mask.dtype == torch.bool
    # single-patch blocks: ceil(mask_ratio * patches) whole patches masked
    patch = model.backbone.patch_size
    masked = math.ceil(0.4 * (32 // patch)**2)
    assert mask.sum().item() == 2 * masked * patch**2
    assert mask.unflatten(1, (-1, patch)).unflatten(3, (-1, patch)).all(
        2).all(-1).sum().item() == 2 * masked


def test_panels_change_no_loss(tiny_cfg):
    plain, plain_log = _train(tiny_cfg(3), 'plain')
    assert not _panels(plain)
    drawn, drawn_log = _train(tiny_cfg(3), 'drawn', interval=1)
    # bit for bit, and every module back in its train/eval mode
    assert drawn_log.losses == plain_log.losses
    assert drawn_log.modes == plain_log.modes

    panels = _panels(drawn)
    assert sorted(panels) == sorted(f'wsss_panel_{i}_{step}.png'
                                    for i in range(2) for step in (1, 2, 3))
    panel = cv2.imread(panels['wsss_panel_0_3.png'])
    height, width = panel.shape[:2]
    # image, >= 1 CAM, token mask, PAR label, prediction; 64-px tiles
    assert height == TITLE_HEIGHT + SIZE
    assert width % SIZE == 0 and width >= 5 * SIZE
    assert all(
        _has_title(s)
        for s in np.split(panel[:TITLE_HEIGHT], width // SIZE, axis=1))


def test_tensorboard_switch(tiny_cfg, tmp_path):
    pytest.importorskip(
        'tensorboard', reason='TensorboardVisBackend needs tensorboard '
        '(requirements/optional.txt)')
    from tensorboard.backend.event_processing.event_accumulator import \
        EventAccumulator
    config = str(tmp_path / 'tiny.py')
    _configure(tiny_cfg(2), 'tensorboard', interval=2).dump(config)
    spec = importlib.util.spec_from_file_location(
        'fsr_tools_train', osp.join(REPO, 'tools', 'train.py'))
    train_tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_tool)
    train_tool.main([config, '--tensorboard'])  # the documented switch

    [vis_data] = glob.glob(str(tmp_path / 'work' / '*' / 'vis_data'))
    events = EventAccumulator(vis_data, size_guidance={'images': 0})
    events.Reload()
    assert {'wsss_panel_0', 'wsss_panel_1'} <= set(events.Tags()['images'])
    assert 'loss' in events.Tags()['scalars']
    [event] = events.Images('wsss_panel_0')
    assert event.step == 2
    # the same panel as the local backend's PNG, pixel for pixel
    tb_panel = cv2.imdecode(
        np.frombuffer(event.encoded_image_string, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(
        tb_panel,
        cv2.imread(osp.join(vis_data, 'vis_image', 'wsss_panel_0_2.png')))


def test_only_the_main_process_draws(tiny_cfg, monkeypatch):
    monkeypatch.setattr(wsss_visualization_hook, 'is_main_process',
                        lambda: False)
    runner, _ = _train(tiny_cfg(1), 'rank1', interval=1)
    assert not _panels(runner)


@pytest.mark.parametrize('interval, steps', [(0.5, (2, 4)),
                                             (0.025, (1, 2, 3, 4))])
def test_interval_as_fraction_of_the_run(tiny_cfg, interval, steps):
    """A float interval is that fraction of the run (at least 1
    iteration): a run shorter than the paper config's 500 iterations still
    draws."""
    runner, _ = _train(tiny_cfg(4), 'fraction', interval=interval)
    assert sorted(_panels(runner)) == sorted(
        f'wsss_panel_{i}_{step}.png' for i in range(2) for step in steps)


@pytest.mark.parametrize(
    'config', FSR_CONFIGS, ids=[osp.relpath(c, REPO) for c in FSR_CONFIGS])
def test_every_fsr_config_draws(config):
    """Every config draws a fixed share of its run (40 or 4 times)."""
    hooks = [h for h in Config.fromfile(config).custom_hooks
             if h.type == HOOK]
    assert len(hooks) == 1
    assert hooks[0].interval in (0.025, 0.25)


@pytest.mark.parametrize('kwargs', [
    dict(interval=0), dict(interval=0.0), dict(interval=1.5),
    dict(interval=True), dict(interval='100'), dict(num_images=0)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        wsss_visualization_hook.WSSSVisualizationHook(**kwargs)
