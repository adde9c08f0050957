"""Tiny FSR configs for fast CPU tests, derived from the quick-start one."""
import os.path as osp

from mmengine.config import Config
from mmengine.registry import init_default_scope

from ..utils.config_utils import set_data_root


def _config_root() -> str:
    """The configs shipped with the package (``mmseg_fsr/.mim/configs``,
    what wheels and editable installs carry), else a source checkout's."""
    package = osp.dirname(osp.dirname(osp.abspath(__file__)))
    shipped = osp.join(package, '.mim', 'configs')
    return shipped if osp.isdir(shipped) else osp.join(
        osp.dirname(package), 'configs')


CPU_CONFIG = osp.join(_config_root(), 'fsr',
                      'fsr_vit-tiny-p8_1xb8-400_synthvoc-64x64.py')
# the paper's VOC config (ViT-B/16, 448 px), e.g. for its --tta recipe
PAPER_CONFIG = osp.join(_config_root(), 'fsr',
                        'fsr_vit-b16_4xb2-20k_voc12aug-448x448.py')


def tiny_fsr_model_cfg(crop: int = 32, **overrides) -> Config:
    """The quick-start model at width 32 (3 layers), every loss on at once.

    Args:
        crop (int): Training crop the backbone is built for.
        **overrides: Merged into the model config.

    Returns:
        Config: Model config.
    """
    init_default_scope('mmseg')
    cfg = Config.fromfile(CPU_CONFIG).model
    cfg.backbone.update(
        img_size=(crop, crop), embed_dims=32, num_heads=2, num_layers=3,
        out_indices=(0, 2))
    cfg.cam_head.in_channels = 32
    cfg.decode_head.update(in_channels=32, channels=16)
    cfg.aggregation_head.update(in_channels=32, num_heads=2)
    cfg.aggregation_head.projector.update(in_channels=32, out_channels=64)
    cfg.uncertain_loss.out_channels = cfg.certain_loss.out_channels = 64
    cfg.loss_start_iters = dict(seg=0, aff=0, fsr=0)
    # 4x4 patches: single-patch masking blocks
    cfg.mask_neck.block_size = cfg.backbone.patch_size
    wrapper = Config(dict(model=cfg))
    wrapper.merge_from_dict({f'model.{k}': v for k, v in overrides.items()})
    return wrapper.model


def tiny_fsr_config(data_root: str, work_dir: str,
                    max_iters: int = 4) -> Config:
    """A whole Runner config: the tiny model on a VOC-layout folder.

    Batch 2, no worker processes, decoder from iteration 1, a checkpoint
    every 2 iterations, validation (decoder, CAM, auxiliary-CAM and PAR
    mIoU) at the end, the CPU config's hooks (the visualisation hook
    drawing nothing).

    Args:
        data_root (str): VOC-layout data root (e.g. synthetic data).
        work_dir (str): Runner work dir.
        max_iters (int): Training iterations.

    Returns:
        Config: Runner config.
    """
    init_default_scope('mmseg')
    cfg = Config.fromfile(CPU_CONFIG)
    set_data_root(cfg, data_root)
    cfg.work_dir = work_dir
    cfg.model = tiny_fsr_model_cfg(crop=64, loss_start_iters=dict(seg=1))
    cfg.train_dataloader.update(
        batch_size=2, num_workers=0, persistent_workers=False)
    for loader in ('val_dataloader', 'test_dataloader'):
        cfg[loader].num_workers = 0
    cfg.train_cfg.update(max_iters=max_iters, val_interval=max_iters)
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0,
             end=2)
    ]
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.update(interval=2, max_keep_ckpts=-1)
    # no training panels (the CPU config draws every quarter of the run, a
    # CAM pass per drawing); tests of the hook set their own interval
    for hook in cfg.custom_hooks:
        if hook.type == 'WSSSVisualizationHook':
            hook.interval = max_iters + 1
    cfg.log_level = 'WARNING'
    return cfg
