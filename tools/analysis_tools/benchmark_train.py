"""Training speed and peak memory of any config, without a Runner.

Builds the train data loader, the model and the optimiser wrapper from the
config, runs ``--warmup`` then ``--iters`` training iterations
(``model.train_step`` work: pre-processing, forward, backward, optimiser
step; plus the EMA teacher update when the model has one, as
``FSRTeacherHook`` does) and prints the median seconds per iteration,
images per second and peak memory: CUDA ``max_memory_allocated`` on a GPU,
the process's peak RSS on CPU (everything the process ever held: compare
separate runs only).

Weights are not initialised from files (``init_weights`` is not called), so
no pretrained checkpoint is needed; speed does not depend on weight values.
The model is told it is at the run's last iteration: every loss is on and
past its warm-up.

``--amp`` on a GPU uses mmengine's ``AmpOptimWrapper`` (dynamic loss scale
for fp16). mmengine's ``AmpOptimWrapper`` refuses to run without CUDA, so
on CPU the forward pass runs under ``torch.autocast('cpu', dtype)`` with a
plain ``OptimWrapper`` instead (also for configs that set
``AmpOptimWrapper``).

Examples::

    python tools/analysis_tools/benchmark_train.py \
        configs/fsr/fsr_vit-tiny-p8_1xb8-400_synthvoc-64x64.py --iters 20
    python tools/analysis_tools/benchmark_train.py CONFIG --amp bf16 \
        --with-cp --json work_dirs/bench.json \
        --cfg-options train_dataloader.batch_size=1
"""
import argparse
import json
import os.path as osp
import sys
from typing import Dict


def _import_plugin():
    try:
        import mmseg_fsr  # noqa: F401
    except ImportError:
        sys.path.insert(
            0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
        import mmseg_fsr  # noqa: F401


def parse_args(argv=None):
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='train config file')
    parser.add_argument('--iters', type=int, default=20,
                        help='timed iterations')
    parser.add_argument('--warmup', type=int, default=5,
                        help='iterations run before timing')
    parser.add_argument('--amp', choices=['fp16', 'bf16'],
                        help='mixed precision')
    parser.add_argument('--with-cp', action='store_true',
                        help='activation checkpointing in the backbone '
                        '(backbone.with_cp=True)')
    parser.add_argument('--device', help='default: cuda if available')
    parser.add_argument('--data-root', help='data folder of the same layout')
    parser.add_argument('--json', help='write the results here')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='overrides, key=value, merged into the config')
    return parser.parse_args(argv)


def prepare_config(args):
    """Load the config and apply the command-line switches."""
    from mmengine.config import Config

    from mmseg_fsr.utils.config_utils import set_data_root

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.data_root:
        set_data_root(cfg, args.data_root)
    if args.with_cp:
        cfg.model.backbone.with_cp = True
    return cfg


def build_optim(cfg, model, amp, device):
    """Optimiser wrapper, and the dtype to autocast the forward to on CPU.

    Returns:
        tuple: ``(optim_wrapper, cpu_autocast_dtype or None)``.
    """
    import torch
    from mmengine.optim import build_optim_wrapper

    from benchmark_utils import AMP_DTYPES

    wrapper_cfg = cfg.optim_wrapper.copy()
    dtype = AMP_DTYPES[amp] if amp else None
    if wrapper_cfg.get('type') == 'AmpOptimWrapper' and dtype is None:
        dtype = getattr(torch, wrapper_cfg.get('dtype') or 'float16')
    if dtype is not None and device.type == 'cuda':
        wrapper_cfg.update(
            type='AmpOptimWrapper', dtype=str(dtype).split('.')[-1])
        wrapper_cfg.setdefault('loss_scale', 'dynamic')
        return build_optim_wrapper(model, wrapper_cfg), None
    wrapper_cfg.type = 'OptimWrapper'
    for key in ('dtype', 'loss_scale', 'use_fsdp'):
        wrapper_cfg.pop(key, None)
    return build_optim_wrapper(model, wrapper_cfg), dtype


def main(argv=None) -> Dict:
    args = parse_args(argv)
    _import_plugin()
    import torch
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    from mmseg.registry import MODELS

    from benchmark_utils import (median, peak_memory_mb, reset_peak_memory,
                                 synchronize, timed, use_quiet_logger)

    cfg = prepare_config(args)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    use_quiet_logger('benchmark_train')
    device = torch.device(
        args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))

    loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    model = MODELS.build(cfg.model).to(device).train()
    max_iters = cfg.train_cfg.max_iters
    model.set_training_progress(max_iters - 1, max_iters)
    optim_wrapper, cpu_dtype = build_optim(cfg, model, args.amp, device)
    momentum = 0.9995  # the value does not change the cost
    batches = iter(loader)

    def step() -> None:
        data = next(batches)
        autocast = torch.autocast(
            'cpu', dtype=cpu_dtype, enabled=cpu_dtype is not None)
        # BaseModel.train_step, with the CPU autocast around the forward
        with optim_wrapper.optim_context(model), autocast:
            data = model.data_preprocessor(data, True)
            losses = model(**data, mode='loss')
        parsed, _ = model.parse_losses(losses)
        optim_wrapper.update_params(parsed)
        if hasattr(model, 'update_teacher') and model.with_fsr:
            model.update_teacher(momentum)

    for _ in range(args.warmup):
        step()
    synchronize(device)
    reset_peak_memory(device)
    times = [timed(step, device) for _ in range(args.iters)]

    batch_size = cfg.train_dataloader.batch_size
    seconds = median(times)
    result = dict(
        config=args.config,
        device=str(device),
        amp=args.amp or (str(cpu_dtype) if cpu_dtype else None),
        amp_mode=('AmpOptimWrapper' if type(optim_wrapper).__name__
                  == 'AmpOptimWrapper' else
                  'cpu autocast' if cpu_dtype else None),
        with_cp=args.with_cp,
        batch_size=batch_size,
        iters=args.iters,
        seconds_per_iter=seconds,
        images_per_s=batch_size / seconds,
        peak_memory_mb=peak_memory_mb(device),
        peak_memory_kind=('cuda max_memory_allocated'
                          if device.type == 'cuda' else 'process peak RSS'),
        torch_threads=torch.get_num_threads(),
        all_seconds=times)
    print(f'{args.config}: {seconds:.4f} s/iter (median of {args.iters}), '
          f'{result["images_per_s"]:.2f} images/s, peak memory '
          f'{result["peak_memory_mb"]:.0f} MiB '
          f'({result["peak_memory_kind"]}), amp={result["amp"]} '
          f'({result["amp_mode"]}), with_cp={args.with_cp}, device {device}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == '__main__':
    main()
