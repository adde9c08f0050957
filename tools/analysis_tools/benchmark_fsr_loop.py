"""Time FSR training iterations against the reference loop, interleaved.

Variants, each a full iteration (forward, backward, optimiser step, EMA
teacher update), all at the same weights and on the same input batch:

- ``reference``: the reference script's work (``reference_loop.py``: three
  multi-scale CAM passes, PAR for both views, per-parameter EMA loop);
- ``ours_ms``: ``FSRSegmentor.loss`` with ``mask_cam_source='multi_scale'``;
- ``ours_ss``: the same with ``mask_cam_source='single_scale'``;
- ``fsr_off``: the baseline without FSR (``uncertain_loss=None,
  certain_loss=None``);
- optional (``--extra``): ``ours_ms_bf16`` (CPU/GPU autocast bf16 forward),
  ``ours_ms_fp16`` and ``ours_ms_cp`` (``backbone.with_cp=True``).

Variants run round-robin in one process (order rotated every round). A
ratio is the median over rounds of the per-round time ratio, which drops
the rounds a burst of load on a shared machine hit; the ratio of the
per-variant minimums is printed as a cross-check. The
model is the quick-start config scaled by the command-line sizes (default
ViT with 192 channels, 6 layers, 112x112 crops of 8x8 patches, batch 2: a
196-token grid with a token/width ratio like ViT-B/16 at 448), with the
paper's PAR and a DINO head scaled with the width.

Example::

    python tools/analysis_tools/benchmark_fsr_loop.py --rounds 12 \
        --extra ours_ms_bf16 ours_ms_cp --ema --json work_dirs/loop.json
"""
import argparse
import copy
import json
import os.path as osp
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch

# (numerator, denominator, target) of the ratios the issue sets.
TARGETS = [('ours_ms', 'reference', 0.8), ('ours_ss', 'reference', 0.6),
           ('ours_ms', 'fsr_off', 2.2)]
EXTRAS = ('ours_ms_bf16', 'ours_ms_fp16', 'ours_ms_cp')


def _import_plugin():
    """Make ``mmseg_fsr`` and the sibling ``reference_loop`` importable."""
    here = osp.dirname(osp.abspath(__file__))
    sys.path.insert(0, here)
    try:
        import mmseg_fsr  # noqa: F401
    except ImportError:
        sys.path.insert(0, osp.dirname(osp.dirname(here)))
        import mmseg_fsr  # noqa: F401


def parse_args(argv=None):
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--config', help='base config (default: the CPU quick-start one)')
    parser.add_argument('--embed-dims', type=int, default=192)
    parser.add_argument('--num-layers', type=int, default=6)
    parser.add_argument('--num-heads', type=int, default=3)
    parser.add_argument('--patch-size', type=int, default=8)
    parser.add_argument('--crop', type=int, default=112)
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=10,
                        help='recorded rounds (one iteration per variant)')
    parser.add_argument('--warmup', type=int, default=2,
                        help='rounds run before recording')
    parser.add_argument('--extra', nargs='*', default=[], choices=EXTRAS,
                        help='more variants to interleave')
    parser.add_argument('--ema', action='store_true',
                        help='also time the EMA update, foreach vs loop, on '
                        'a ViT-B-sized tensor list')
    parser.add_argument('--breakdown', action='store_true',
                        help='also time the parts: one multi-scale CAM '
                        'pass of B and 2B images, PAR of B images')
    parser.add_argument('--profile', action='store_true',
                        help='print the top operators (torch.profiler) of '
                        'one iteration of every variant')
    parser.add_argument('--device', default='cuda' if
                        torch.cuda.is_available() else 'cpu')
    parser.add_argument('--threads', type=int,
                        help='torch CPU threads (default: torch\'s choice)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--json', help='write the results here')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='overrides merged into the scaled config (e.g. '
        'model.pseudo_label_cfg.par.num_iter=5)')
    return parser.parse_args(argv)


def scaled_config(args):
    """The base config with the model scaled to the requested sizes."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmseg_fsr.testing import CPU_CONFIG

    init_default_scope('mmseg')
    cfg = Config.fromfile(args.config or CPU_CONFIG)
    dims, patch = args.embed_dims, args.patch_size
    # Paper proportions: aux CAM on layer -3, decoder 2/3 of the width
    # (512 for 768), projector hidden 8/3 (2048), bottleneck 1/3 (256),
    # K = 16/3 of the width (4096).
    projector_dims = dims * 16 // 3
    cfg.merge_from_dict({
        'model.backbone.img_size': (args.crop, args.crop),
        'model.backbone.patch_size': patch,
        'model.backbone.embed_dims': dims,
        'model.backbone.num_layers': args.num_layers,
        'model.backbone.num_heads': args.num_heads,
        'model.backbone.out_indices': (args.num_layers - 3,
                                       args.num_layers - 1),
        'model.cam_head.in_channels': dims,
        'model.decode_head.in_channels': dims,
        'model.decode_head.channels': dims * 2 // 3,
        'model.mask_neck.patch_size': patch,
        'model.mask_neck.block_size': patch,
        'model.aggregation_head.in_channels': dims,
        'model.aggregation_head.num_heads': args.num_heads,
        'model.aggregation_head.projector.in_channels': dims,
        'model.aggregation_head.projector.hidden_channels': dims * 8 // 3,
        'model.aggregation_head.projector.bottleneck_channels': dims // 3,
        'model.aggregation_head.projector.out_channels': projector_dims,
        'model.uncertain_loss.out_channels': projector_dims,
        'model.certain_loss.out_channels': projector_dims,
        'model.pseudo_label_cfg.par': dict(
            dilations=(1, 2, 4, 8, 12, 24), num_iter=10),
    })
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def make_batch(num_classes: int, args):
    """A fixed two-view batch with 1-3 image classes per sample."""
    from mmseg.structures import SegDataSample

    g = torch.Generator().manual_seed(args.seed)
    inputs = torch.randn(args.batch_size, 2, 3, args.crop, args.crop,
                         generator=g)
    samples = []
    for i in range(args.batch_size):
        sample = SegDataSample(metainfo=dict(img_path=f'random_{i}'))
        present = torch.randperm(num_classes, generator=g)[:1 + i % 3]
        sample.gt_class_labels = torch.zeros(num_classes)
        sample.gt_class_labels[present] = 1
        samples.append(sample)
    return inputs, samples


@dataclass
class Variant:
    """One benchmarked training iteration.

    Attributes:
        model (FSRSegmentor): Its own copy of the weights.
        loss (callable): The forward pass, returns the loss dict.
        amp (str, optional): 'bf16' / 'fp16' autocast of the forward.
        step (callable): Forward, backward, optimiser step, EMA.
    """
    model: torch.nn.Module
    loss: Callable[[], Dict]
    amp: Optional[str]
    step: Callable[[], None]


def build_variants(cfg, args, device) -> Tuple[Dict[str, Variant], tuple]:
    """Models, optimisers and step functions of every variant."""
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmseg.registry import MODELS

    import reference_loop
    from benchmark_utils import autocast

    torch.manual_seed(args.seed)
    base = MODELS.build(cfg.model)
    base.init_weights()

    def build(**overrides) -> torch.nn.Module:
        model_cfg = Config(dict(model=copy.deepcopy(cfg.model)))
        model_cfg.merge_from_dict(
            {f'model.{k}': v for k, v in overrides.items()})
        model = MODELS.build(model_cfg.model)
        # same weights; FSR-off simply has no teacher / aggregation head
        model.load_state_dict(base.state_dict(), strict=False)
        return model

    models = dict(
        reference=copy.deepcopy(base),
        ours_ms=copy.deepcopy(base),
        ours_ss=build(mask_cam_source='single_scale'),
        fsr_off=build(uncertain_loss=None, certain_loss=None))
    for name in args.extra:
        models[name] = (
            build(**{'backbone.with_cp': True})
            if name == 'ours_ms_cp' else copy.deepcopy(base))

    inputs, samples = make_batch(base.cam_head.num_classes, args)
    inputs = inputs.to(device)
    samples = [s.to(device) for s in samples]
    momentum = 0.9995

    def make_variant(name: str, model: torch.nn.Module) -> Variant:
        model.to(device).train()
        wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
        amp = {'ours_ms_bf16': 'bf16', 'ours_ms_fp16': 'fp16'}.get(name)
        if name == 'reference':
            def loss() -> Dict:
                return reference_loop.reference_loss(model, inputs, samples)

            ema = reference_loop.reference_update_teacher
        else:
            def loss() -> Dict:
                return model.loss(inputs, samples)

            ema = type(model).update_teacher if model.with_fsr else None

        def step() -> None:
            with autocast(device, amp):
                losses = loss()
            parsed, _ = model.parse_losses(losses)
            wrapper.update_params(parsed)
            if ema is not None:
                ema(model, momentum)

        return Variant(model, loss, amp, step)

    variants = {name: make_variant(name, m) for name, m in models.items()}
    return variants, (inputs, samples)


def activation_memory(variants: Dict[str, Variant],
                      device: torch.device) -> Dict[str, float]:
    """MiB saved for backward by one forward pass of each variant."""
    from benchmark_utils import autocast, saved_activation_bytes

    result = {}
    for name, variant in variants.items():
        with saved_activation_bytes(variant.model) as total, autocast(
                device, variant.amp):
            losses = variant.loss()
        del losses  # frees the graph without a backward
        result[name] = total[0] / 2**20
    return result


def breakdown(model, inputs, samples, device, rounds) -> Dict[str, float]:
    """Median seconds of the CAM pass (view 1; view 1 + the auxiliary CAM
    of view 2) and of PAR."""
    from mmseg_fsr.models.utils import refine_pseudo_labels
    from benchmark_utils import interleaved_timings, median

    view1, view2 = inputs[:, 0], inputs[:, 1]
    cams, _ = model.multi_scale_cams(view1)
    labels = model._image_labels(samples)
    cfg = model.pseudo_label_cfg
    parts = {
        'cam_pass_B': lambda: model.multi_scale_cams(view1),
        'cam_pass_B_aux_B': lambda: model.multi_scale_cams(
            torch.cat([view1, view2]), len(view1)),
        'par_B': lambda: refine_pseudo_labels(
            model.refiner, view1, cams, labels, cfg['high_thr'],
            cfg['low_thr'], cfg['ignore_index'], cfg['par_down_scale']),
    }
    times = interleaved_timings(parts, rounds, 1, device)
    return {k: median(v) for k, v in times.items()}


def profile(variants: Dict[str, Variant], row_limit: int = 12) -> None:
    """Print the top operators of one iteration of every variant."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for name, variant in variants.items():
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            variant.step()
        print(f'\n=== {name}')
        print(prof.key_averages().table(
            sort_by='self_cpu_time_total', row_limit=row_limit))


def main(argv=None) -> Dict:
    args = parse_args(argv)
    _import_plugin()

    from benchmark_utils import (ema_foreach_vs_loop,
                                           interleaved_timings, median,
                                           paired_ratio, use_quiet_logger)

    use_quiet_logger('benchmark_fsr_loop')

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = scaled_config(args)
    variants, (inputs, samples) = build_variants(cfg, args, device)
    print(f'device {device}, torch threads {torch.get_num_threads()}, '
          f'batch {args.batch_size} x 2 views of {args.crop}x{args.crop}, '
          f'ViT {args.embed_dims}d x {args.num_layers} layers, '
          f'patch {args.patch_size}')
    if args.profile:
        profile(variants)

    times = interleaved_timings({k: v.step for k, v in variants.items()},
                                args.rounds, args.warmup, device)
    result: Dict = dict(
        config=dict(vars(args), device=str(device)),
        torch_threads=torch.get_num_threads(),
        seconds_per_iter={k: median(v) for k, v in times.items()},
        all_seconds=times)
    result['images_per_s'] = {
        k: args.batch_size / v
        for k, v in result['seconds_per_iter'].items()
    }
    result['saved_activations_mib'] = activation_memory(variants, device)
    med = result['seconds_per_iter']

    def ratio(num: str, den: str, **extra) -> Dict:
        # paired: robust to load bursts; of minimums: a cross-check
        return dict(ratio=f'{num}/{den}',
                    value=paired_ratio(times[num], times[den]),
                    ratio_of_min=min(times[num]) / min(times[den]),
                    **extra)

    ratios: List[Dict] = []
    for num, den, target in TARGETS:
        r = ratio(num, den, target=target)
        ratios.append(dict(r, met=r['value'] <= target))
    for name in args.extra:
        ratios.append(ratio(name, 'ours_ms'))
    if 'ours_ms_cp' in args.extra:
        mem = result['saved_activations_mib']
        ratios.append(dict(ratio='saved activations ours_ms_cp/ours_ms',
                           value=mem['ours_ms_cp'] / mem['ours_ms']))
    result['ratios'] = ratios
    if args.breakdown:
        result['breakdown_s'] = breakdown(variants['ours_ms'].model, inputs,
                                          samples, device, args.rounds)
    if args.ema:
        result['ema_vit_b'] = ema_foreach_vs_loop(device=device)

    print(f'{"variant":<14}{"s/iter":>10}{"img/s":>9}{"saved MiB":>11}')
    for name in variants:
        print(f'{name:<14}{med[name]:>10.3f}'
              f'{result["images_per_s"][name]:>9.2f}'
              f'{result["saved_activations_mib"][name]:>11.1f}')
    print('ratios: median of per-round ratios [ratio of minimums]')
    for r in ratios:
        of_min = (f' [{r["ratio_of_min"]:.3f}]'
                  if 'ratio_of_min' in r else '')
        target = (f'  (target <= {r["target"]}: '
                  f'{"met" if r["met"] else "MISSED"})' if 'target' in r
                  else '')
        print(f'{r["ratio"]:<40}{r["value"]:.3f}{of_min}{target}')
    for key, value in result.get('breakdown_s', {}).items():
        print(f'{key:<18}{value:.3f} s')
    if args.ema:
        ema = result['ema_vit_b']
        print(f'EMA over {ema["num_tensors"]} tensors / '
              f'{ema["num_params"] / 1e6:.1f}M params: foreach '
              f'{ema["foreach_s"] * 1e3:.1f} ms, loop '
              f'{ema["loop_s"] * 1e3:.1f} ms '
              f'({ema["loop_s"] / ema["foreach_s"]:.2f}x)')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == '__main__':
    main()
