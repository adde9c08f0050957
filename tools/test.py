# Copyright (c) OpenMMLab. All rights reserved.
# Adapted for mmseg-fsr: imports ``mmseg_fsr`` so its modules are registered
# and mmengine checkpoints load under torch >= 2.6's weights_only default.
"""Test (and evaluate) a segmentor with MMSegmentation 1.x + mmseg-fsr.

Examples::

    python tools/test.py configs/fsr/<config>.py work_dirs/x/iter_20000.pth
    python tools/test.py <config> <ckpt> --tta             # multi-scale+flip
    python tools/test.py <config> <ckpt> --out preds/      # save predictions
    python tools/test.py <config> <ckpt> --show-dir vis/   # painted images
    bash tools/dist_test.sh <config> <ckpt> 4
    bash tools/dist_test.sh <config> <ckpt> 2   # no CUDA: 2 CPU processes
"""
import argparse
import logging
import os
import os.path as osp
import sys


def _import_plugin():
    try:
        import mmseg_fsr  # noqa: F401
    except ImportError:
        sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
        import mmseg_fsr  # noqa: F401


def init_cpu_distributed(cfg) -> bool:
    """Start the process group for ``--launcher pytorch`` without CUDA.

    mmengine's ``init_dist`` calls ``torch.cuda.set_device(LOCAL_RANK)``
    before ``init_process_group``, which fails without an NVIDIA driver
    ("Found no NVIDIA driver"), whatever ``env_cfg.dist_cfg.backend`` says.
    Without CUDA this starts the gloo process group itself (the Runner
    then reuses it) and makes DDP wrap the CPU model without
    ``device_ids``. With CUDA nothing changes.

    Returns:
        bool: Whether the CPU process group was started here.
    """
    import datetime

    import torch
    import torch.distributed as dist
    from mmengine.logging import print_log
    from mmengine.registry import MODEL_WRAPPERS
    from torch.nn.parallel import DistributedDataParallel

    if cfg.get('launcher') != 'pytorch' or torch.cuda.is_available() \
            or dist.is_initialized():
        return False
    dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}))
    backend = dist_cfg.pop('backend', 'nccl')
    if backend != 'gloo':
        print_log(
            f'no CUDA device: using the gloo backend instead of {backend}',
            logger='current',
            level=logging.WARNING)
    if dist_cfg.get('timeout') is not None:
        dist_cfg['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
    dist.init_process_group('gloo', **dist_cfg)  # env:// from torchrun
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = \
        'gloo'
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper_type = MODEL_WRAPPERS.get(
        wrapper.get('type', 'MMDistributedDataParallel'))
    if isinstance(wrapper_type, type) and issubclass(
            wrapper_type, DistributedDataParallel):
        wrapper['device_ids'] = None  # CPU modules take none
    cfg.model_wrapper_cfg = wrapper
    return True


def parse_args(argv=None):
    from mmengine.config import DictAction

    _import_plugin()
    from mmseg_fsr.utils.checkpoint_fit import add_allow_partial_argument

    parser = argparse.ArgumentParser(
        description='MMSeg (+ mmseg-fsr) test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help=('if specified, the evaluation metric results will be dumped '
              'into the directory as json'))
    parser.add_argument(
        '--out',
        type=str,
        help='the directory to save output prediction for offline evaluation')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved. '
        'If specified, it will be automatically saved '
        'to the work_dir/timestamp/show_dir')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--data-root',
        help='run on another data folder of the same layout: sets data_root '
        'of every data loader\'s data set (--cfg-options data_root=... '
        'cannot, configs substitute it when they are parsed)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file. If the value to '
        'be overwritten is a list, it should be like key="[a,b]" or key=a,b '
        'It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" '
        'Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument(
        '--tta',
        action='store_true',
        help='test time augmentation (the config\'s tta_model/tta_pipeline)')
    add_allow_partial_argument(parser)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def trigger_visualization_hook(cfg, args):
    default_hooks = cfg.default_hooks
    if 'visualization' in default_hooks:
        visualization_hook = default_hooks['visualization']
        # Turn on visualization
        visualization_hook['draw'] = True
        if args.show:
            visualization_hook['show'] = True
            visualization_hook['wait_time'] = args.wait_time
        if args.show_dir:
            visualizer = cfg.visualizer
            visualizer['save_dir'] = args.show_dir
    else:
        raise RuntimeError(
            'VisualizationHook must be included in default_hooks. '
            'refer to usage '
            '"visualization=dict(type=\'SegVisualizationHook\')"')
    return cfg


def main(argv=None):
    args = parse_args(argv)

    _import_plugin()
    from mmengine.config import Config
    from mmseg_fsr.engine import build_runner
    from mmseg_fsr.utils.checkpoint_fit import ALLOW_PARTIAL_FLAG

    # load config
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.data_root is not None:
        from mmseg_fsr.utils.config_utils import set_data_root
        set_data_root(cfg, args.data_root)

    # work_dir is determined in this priority: CLI > segment in file > filename
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

    cfg.load_from = args.checkpoint
    cfg.resume = False
    # mmengine loads non-strictly: refuse a checkpoint that does not fit
    cfg.custom_hooks = [
        hook for hook in cfg.get('custom_hooks', [])
        if hook.get('type') != 'CheckpointFitHook'
    ] + [
        dict(type='CheckpointFitHook',
             allow_partial=args.allow_partial_checkpoint,
             opt_in=ALLOW_PARTIAL_FLAG)
    ]
    # dist_test.sh on machines without CUDA (gloo)
    init_cpu_distributed(cfg)

    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)

    if args.tta:
        if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
            raise KeyError('--tta needs `tta_model` and `tta_pipeline` in '
                           f'the config {args.config}')
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model

    # add output_dir in metric
    if args.out is not None:
        # the decoder's IoUMetric writes the predictions; with several
        # metrics (CAM / PAR pseudo labels) it is the first one
        evaluators = cfg.test_evaluator if isinstance(
            cfg.test_evaluator, list) else [cfg.test_evaluator]
        evaluators[0]['output_dir'] = args.out
        evaluators[0]['keep_results'] = True

    # build the runner from config
    runner = build_runner(cfg)

    # start testing
    runner.test()


if __name__ == '__main__':
    main()
