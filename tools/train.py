# Copyright (c) OpenMMLab. All rights reserved.
# Adapted for mmseg-fsr: imports ``mmseg_fsr`` so its modules are registered
# (and mmengine checkpoints load under torch >= 2.6) even when a config has
# no ``custom_imports``.
"""Train a segmentor with MMSegmentation 1.x + mmseg-fsr.

Examples::

    python tools/train.py configs/fsr/<config>.py
    python tools/train.py configs/fsr/<config>.py --work-dir work_dirs/x \
        --cfg-options train_cfg.max_iters=100 train_dataloader.batch_size=2
    python tools/train.py configs/fsr/<config>.py --tensorboard     # + TB
    python tools/train.py configs/fsr/<config>.py --resume          # latest
    python tools/train.py configs/fsr/<config>.py --resume path/iter_8000.pth
    bash tools/dist_train.sh configs/fsr/<config>.py 4              # 4 GPUs
    bash tools/dist_train.sh <config> 2   # no CUDA: 2 CPU processes (gloo)
"""
import argparse
import logging
import os
import os.path as osp
import sys


def _import_plugin():
    """``import mmseg_fsr``; falls back to the repository root on sys.path
    (running from a checkout that was not installed)."""
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


AMP_NEEDS_GPU = (
    '--amp needs a GPU: mmengine\'s AmpOptimWrapper (fp16 autocast with loss '
    'scaling) runs on CUDA, NPU, MLU or MUSA devices only, and none is '
    'available. On CPU, train in fp32: the same command without --amp. '
    '(bf16 autocast on CPU is only benchmarked, not trained: '
    'tools/analysis_tools/benchmark_train.py --amp bf16, see '
    'docs/benchmark.md.)')


def amp_device_available() -> bool:
    """Whether mmengine's ``AmpOptimWrapper`` can be built here (the devices
    its constructor asserts)."""
    from mmengine.device import (is_cuda_available, is_mlu_available,
                                 is_musa_available, is_npu_available)
    return (is_cuda_available() or is_npu_available() or is_mlu_available()
            or is_musa_available())


def parse_args(argv=None):
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(
        description='Train a segmentor (MMSegmentation 1.x + mmseg-fsr)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume training: without a value, from the latest checkpoint '
        'in the work_dir; with a value, from that checkpoint file')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training (fp16, mmengine\'s '
        'AmpOptimWrapper): needs a GPU (or NPU, MLU, MUSA); without one, '
        'train in fp32 without --amp')
    parser.add_argument(
        '--tensorboard',
        action='store_true',
        help='also log to TensorBoard (needs tensorboard): adds '
        'TensorboardVisBackend to visualizer.vis_backends, so scalars and '
        'WSSSVisualizationHook panels go to <work_dir>/<timestamp>/vis_data')
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
    # torch.distributed.launch passes --local-rank (torch >= 2.0);
    # torchrun sets the LOCAL_RANK environment variable instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if args.amp and not amp_device_available():
        parser.error(AMP_NEEDS_GPU)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main(argv=None):
    args = parse_args(argv)

    _import_plugin()
    from mmengine.config import Config
    from mmengine.logging import print_log
    from mmseg_fsr.engine import build_runner

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

    # enable automatic-mixed-precision training
    if args.amp:
        optim_wrapper = cfg.optim_wrapper.type
        if optim_wrapper == 'AmpOptimWrapper':
            print_log(
                'AMP training is already enabled in your config.',
                logger='current',
                level=logging.WARNING)
        else:
            assert optim_wrapper == 'OptimWrapper', (
                '`--amp` is only supported when the optimizer wrapper type is '
                f'`OptimWrapper` but got {optim_wrapper}.')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'

    # TensorBoard besides the config's backends (--cfg-options cannot add
    # a dict to a list)
    if args.tensorboard:
        cfg.visualizer.vis_backends.append(dict(type='TensorboardVisBackend'))

    # resume training
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    # dist_train.sh on machines without CUDA (gloo)
    init_cpu_distributed(cfg)

    # build the runner from config
    runner = build_runner(cfg)

    # start training
    runner.train()


if __name__ == '__main__':
    main()
