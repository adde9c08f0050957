"""Time FSR training iterations against the authors' loop, interleaved.

Variants, each a full training iteration (forward, backward, optimiser
step, EMA teacher update) at identical sizes and on the same batch:

- ``authors`` (with ``--reference-dir``): the iteration of the authors'
  ``train_voc.py`` with their modules, imported at run time from a local
  checkout of their code (``reference_code.AuthorsLoop``);
- ``ours_ms``: ``FSRSegmentor.loss`` of the paper config
  (``mask_cam_source='multi_scale'``, the authors' token mask);
- ``ours_ss``: the same with ``mask_cam_source='single_scale'``;
- ``fsr_off``: the same without FSR (``uncertain_loss=None,
  certain_loss=None``): the ToCo-style baseline;
- optional (``--extra``): ``ours_ms_bf16`` (autocast bf16 forward) and
  ``ours_ms_cp`` (``backbone.with_cp=True``).

The model is the paper config with the ViT scaled by the command line
(default 192 channels x 12 layers, 3 heads, patch 16, 224 px crops, batch
2), its LargeFOV decoder (512 channels), DINO head (2048/256/4096), two
aggregation blocks and PAR as in the paper; the authors' network is built
at the same sizes. Both sides stand at the same point of a 20k run
(``--progress``), where every loss is on. The dense energy loss runs on
both sides when the authors' compiled bilateral filter (rloss) is
importable, else on neither (``--energy`` overrides); its own forward and
backward are timed too and reported as a share of an iteration.

Variants run round-robin in one process, the order rotated every round. A
ratio is the median over rounds of the per-round time ratio (robust to
bursts of load on a shared machine); the ratio of the per-variant minimums
is printed as a cross-check. Each ratio also gets the ratio of the FLOPs of
one iteration (matmuls, convolutions and attention by torch's formulas,
``benchmark_utils.FlopCount``): a hardware-independent floor for what the
time ratio can reach while doing the same work.

Example::

    python tools/analysis_tools/benchmark_fsr_loop.py \\
        --reference-dir ../feature-self-reinforcement --rounds 8 \\
        --json work_dirs/loop.json
"""
import argparse
import copy
import json
import os.path as osp
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch

HERE = osp.dirname(osp.abspath(__file__))
PAPER_CONFIG = osp.join(
    osp.dirname(osp.dirname(HERE)),
    'configs/fsr/fsr_vit-b16_4xb2-20k_voc12aug-448x448.py')
# (numerator, denominator, target) of the time ratios to meet
TARGETS = [('ours_ms', 'authors', 0.60), ('ours_ss', 'authors', 0.50),
           ('ours_ms', 'fsr_off', 1.35)]
EXTRAS = ('ours_ms_bf16', 'ours_ms_cp')
PATCH_SIZE = 16  # the authors' ViT


def _import_plugin() -> None:
    """Make ``mmseg_fsr`` and the sibling helper modules importable."""
    sys.path.insert(0, HERE)
    try:
        import mmseg_fsr  # noqa: F401
    except ImportError:
        sys.path.insert(0, osp.dirname(osp.dirname(HERE)))
        import mmseg_fsr  # noqa: F401


def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--reference-dir',
        help="a checkout of the authors' code to time their loop too")
    parser.add_argument('--config', default=PAPER_CONFIG,
                        help='config to scale (default: the paper one)')
    parser.add_argument('--embed-dims', type=int, default=192)
    parser.add_argument('--num-layers', type=int, default=12)
    parser.add_argument('--num-heads', type=int, default=3)
    parser.add_argument('--crop', type=int, default=224)
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument(
        '--progress', type=int, nargs=2, default=(5000, 20000),
        metavar=('ITER', 'MAX_ITERS'),
        help='where both sides stand in their run (default: every loss on)')
    parser.add_argument(
        '--energy', choices=('auto', 'on', 'off'), default='auto',
        help='dense energy loss: auto = on both sides when the authors\' '
        'extension is importable (always, without --reference-dir)')
    parser.add_argument('--rounds', type=int, default=8,
                        help='recorded rounds (one iteration per variant)')
    parser.add_argument('--warmup', type=int, default=1,
                        help='rounds run before recording')
    parser.add_argument('--extra', nargs='*', default=[], choices=EXTRAS,
                        help='more variants to interleave')
    parser.add_argument('--ema', action='store_true',
                        help='also time the EMA update, foreach vs loop, on '
                        'a ViT-B-sized tensor list')
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
        help='overrides merged into the scaled config of every ours_* '
        'variant (e.g. model.stochastic_targets=False)')
    args = parser.parse_args(argv)
    if args.device != 'cpu' and args.reference_dir:
        parser.error("--reference-dir times the authors' loop on CPU only")
    return args


def mask_block_size(crop: int) -> int:
    """The authors' 64-px mask blocks, or 32 px when 64 does not divide
    the crop (their mask generator needs whole blocks)."""
    return 32 if crop % 64 else 64


def scaled_config(args: argparse.Namespace, energy: bool):
    """The config with its ViT scaled to the requested sizes."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from benchmark_utils import scale_vit

    init_default_scope('mmseg')
    cfg = Config.fromfile(args.config)
    scale_vit(cfg, args.embed_dims, args.num_layers, args.num_heads,
              args.crop, PATCH_SIZE)
    cfg.model.mask_neck.block_size = mask_block_size(args.crop)
    if not energy:
        cfg.model.energy_loss = None
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def make_batch(num_classes: int, args: argparse.Namespace):
    """Fixed views (B, 2, 3, S, S) and 1-3 image classes per sample.

    Returns:
        tuple: The views, the data samples and the (B, C - 1) multi-hot
        labels.
    """
    from mmseg.structures import SegDataSample

    g = torch.Generator().manual_seed(args.seed)
    inputs = torch.randn(args.batch_size, 2, 3, args.crop, args.crop,
                         generator=g)
    labels = torch.zeros(args.batch_size, num_classes - 1)
    samples = []
    for i in range(args.batch_size):
        present = torch.randperm(num_classes - 1, generator=g)[:1 + i % 3]
        labels[i, present] = 1
        sample = SegDataSample(metainfo=dict(img_path=f'random_{i}'))
        sample.gt_class_labels = labels[i]
        samples.append(sample)
    return inputs, samples, labels


@dataclass
class Variant:
    """One benchmarked training iteration.

    Attributes:
        model (nn.Module): Whose parameters are excluded from the saved
            activations.
        loss (callable): The forward pass, returns the loss dict.
        step (callable): Forward, backward, optimiser step, EMA.
        amp (str, optional): 'bf16' autocast of the forward.
    """
    model: torch.nn.Module
    loss: Callable[[], Dict]
    step: Callable[[], None]
    amp: Optional[str] = None


def build_ours(cfg, args: argparse.Namespace, batch: tuple,
               device: torch.device) -> Dict[str, Variant]:
    """``FSRSegmentor`` variants, same initial weights."""
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmseg.registry import MODELS

    from benchmark_utils import autocast

    torch.manual_seed(args.seed)
    base = MODELS.build(cfg.model)
    base.init_weights()

    def build(**overrides) -> torch.nn.Module:
        model_cfg = Config(dict(model=copy.deepcopy(cfg.model)))
        model_cfg.merge_from_dict(
            {f'model.{k}': v for k, v in overrides.items()})
        model = MODELS.build(model_cfg.model)
        # same weights; FSR off simply has no teacher / aggregation head
        model.load_state_dict(base.state_dict(), strict=False)
        return model

    models = dict(
        ours_ms=base,
        ours_ss=build(mask_cam_source='single_scale'),
        fsr_off=build(uncertain_loss=None, certain_loss=None))
    for name in args.extra:
        models[name] = (build(**{'backbone.with_cp': True})
                        if name == 'ours_ms_cp' else copy.deepcopy(base))
    inputs, samples = batch[0].to(device), [s.to(device) for s in batch[1]]

    def variant(name: str, model: torch.nn.Module) -> Variant:
        model.to(device).train()
        model.set_training_progress(*args.progress)
        wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
        amp = 'bf16' if name == 'ours_ms_bf16' else None

        def loss() -> Dict:
            return model.loss(inputs, samples)

        def step() -> None:
            with autocast(device, amp):
                losses = loss()
            wrapper.update_params(model.parse_losses(losses)[0])
            if model.with_fsr:
                model.update_teacher(0.9995)

        return Variant(model, loss, step, amp)

    return {name: variant(name, model) for name, model in models.items()}


def build_authors(R, args: argparse.Namespace, cfg,
                  batch: tuple) -> Variant:
    """The authors' loop (modules ``R``) at the sizes of ``cfg``."""
    from reference_code import (AuthorsLoop, build_reference_network,
                                cuda_calls_stay_on_cpu)

    projector = cfg.model.aggregation_head.projector
    torch.manual_seed(args.seed)
    student, teacher = [
        build_reference_network(
            R, args.crop, args.embed_dims, args.num_layers, args.num_heads,
            projector.out_channels, projector.hidden_channels,
            projector.bottleneck_channels, cfg.model.decode_head.num_classes,
            cfg.model.backbone.drop_path_rate) for _ in range(2)
    ]
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    student.train()
    loop = AuthorsLoop(R, student, teacher, args.crop, args.progress[1],
                       projector.out_channels, mask_block_size(args.crop))
    inputs, _, labels = batch
    views = [inputs[:, 0], inputs[:, 1]]

    def loss() -> Dict:
        with cuda_calls_stay_on_cpu():
            return loop.losses(views, labels, args.progress[0])[0]

    return Variant(student, loss,
                   lambda: loop.step(views, labels, args.progress[0]))


def energy_parts(R, model, batch: tuple) -> Dict[str, Callable[[], None]]:
    """Forward + backward of the dense energy loss alone, each side, on
    (B, K, S, S) decoder logits and pseudo labels of the batch's size."""
    from reference_code import (cuda_calls_stay_on_cpu, energy_loss_available,
                                reference_energy_loss)

    images = batch[0][:, 0]
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(len(images), model.num_classes, *images.shape[-2:],
                         generator=g, requires_grad=True)
    labels = torch.randint(0, model.num_classes, logits[:, 0].shape,
                           generator=g)
    labels[:, :8] = 255  # an ignore band, as PAR leaves
    mean, std = model.data_preprocessor.mean_std()

    def ours() -> None:
        model.energy_loss(images, logits, labels, mean, std).backward()

    def authors() -> None:
        with cuda_calls_stay_on_cpu():
            reference_energy_loss(R, images, logits, labels.float()).backward()

    parts = dict(energy_ours=ours)
    if R is not None and energy_loss_available(R):
        parts['energy_authors'] = authors
    return parts


def use_energy(args: argparse.Namespace) -> Tuple[bool, Optional[object]]:
    """Whether the energy loss runs, and the authors' modules (or None)."""
    R = None
    if args.reference_dir:
        from reference_code import energy_loss_available, load_reference
        R = load_reference(args.reference_dir)
        if args.energy == 'on' and not energy_loss_available(R):
            raise RuntimeError(
                "--energy on: the authors' bilateral-filter extension "
                "(rloss' bilateralfilter) is not importable")
        if args.energy == 'auto':
            return energy_loss_available(R), R
    return args.energy != 'off', R


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


def flops_per_iteration(variants: Dict[str, Variant]) -> Dict[str, float]:
    """GFLOPs of one iteration (forward, backward, update) of each variant.

    The authors' dense energy loss runs in a C++ extension that the counter
    cannot see; its time share is reported separately.
    """
    from benchmark_utils import FlopCount

    result = {}
    for name, variant in variants.items():
        with FlopCount() as count:
            variant.step()
        result[name] = count.flops / 1e9
    return result


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


def ratios(times: Dict[str, List[float]], gflops: Dict[str, float],
           extra: List[str]) -> List[Dict]:
    """The target ratios whose variants ran, then each extra / ours_ms."""
    from benchmark_utils import paired_ratio

    def ratio(num: str, den: str) -> Dict:
        row = dict(ratio=f'{num}/{den}',
                   value=paired_ratio(times[num], times[den]),
                   ratio_of_min=min(times[num]) / min(times[den]))
        if num in gflops and den in gflops:
            row['flop_ratio'] = gflops[num] / gflops[den]
        return row

    rows = []
    for num, den, target in TARGETS:
        if num in gflops and den in gflops:
            row = ratio(num, den)
            rows.append(dict(row, target=target,
                             met=row['value'] <= target))
    rows += [ratio(name, 'ours_ms') for name in extra]
    for side, variant in (('ours', 'ours_ms'), ('authors', 'authors')):
        part = f'energy_{side}'
        if part in times and variant in times:
            rows.append(dict(ratio(part, variant),
                             ratio=f'energy loss share of {variant}'))
    return rows


def report(result: Dict, args: argparse.Namespace) -> None:
    """Print the table of variants and the ratios."""
    med, mem = result['seconds_per_iter'], result['saved_activations_mib']
    gflops = result['gflops_per_iter']
    print(f'{"variant":<16}{"s/iter":>9}{"img/s":>8}{"saved MiB":>11}'
          f'{"GFLOPs":>9}')
    for name in mem:
        print(f'{name:<16}{med[name]:>9.3f}'
              f'{args.batch_size / med[name]:>8.2f}{mem[name]:>11.1f}'
              f'{gflops[name]:>9.1f}')
    for name in set(med) - set(mem):
        print(f'{name:<16}{med[name]:>9.3f}')
    print('ratios: median of per-round ratios [ratio of minimums] '
          '{ratio of FLOPs}')
    for r in result['ratios']:
        target = (f'  (target <= {r["target"]}: '
                  f'{"met" if r["met"] else "MISSED"})' if 'target' in r
                  else '')
        flops = f' {{{r["flop_ratio"]:.3f}}}' if 'flop_ratio' in r else ''
        print(f'{r["ratio"]:<36}{r["value"]:.3f} '
              f'[{r["ratio_of_min"]:.3f}]{flops}{target}')
    if 'ema_vit_b' in result:
        ema = result['ema_vit_b']
        print(f'EMA over {ema["num_tensors"]} tensors / '
              f'{ema["num_params"] / 1e6:.1f}M params: foreach '
              f'{ema["foreach_s"] * 1e3:.1f} ms, loop '
              f'{ema["loop_s"] * 1e3:.1f} ms '
              f'({ema["loop_s"] / ema["foreach_s"]:.2f}x)')


def main(argv=None) -> Dict:
    args = parse_args(argv)
    _import_plugin()
    from benchmark_utils import (ema_foreach_vs_loop, interleaved_timings,
                                 median, use_quiet_logger)

    use_quiet_logger('benchmark_fsr_loop')
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    energy, R = use_energy(args)
    cfg = scaled_config(args, energy)
    batch = make_batch(cfg.model.decode_head.num_classes, args)
    variants = build_ours(cfg, args, batch, device)
    if args.reference_dir:
        variants = dict(authors=build_authors(R, args, cfg, batch),
                        **variants)
    print(f'device {device}, torch threads {torch.get_num_threads()}, '
          f'batch {args.batch_size} x 2 views of {args.crop}x{args.crop}, '
          f'ViT {args.embed_dims}d x {args.num_layers} layers, patch '
          f'{PATCH_SIZE}, iteration {args.progress[0]} of '
          f'{args.progress[1]}, energy loss {"on" if energy else "off"}')
    if args.profile:
        profile(variants)
    steps = {name: v.step for name, v in variants.items()}
    if energy:
        steps.update(energy_parts(R, variants['ours_ms'].model, batch))
    times = interleaved_timings(steps, args.rounds, args.warmup, device)
    gflops = flops_per_iteration(variants)
    result: Dict = dict(
        config=dict(vars(args), device=str(device), energy=energy),
        torch_threads=torch.get_num_threads(),
        seconds_per_iter={k: median(v) for k, v in times.items()},
        all_seconds=times,
        saved_activations_mib=activation_memory(variants, device),
        gflops_per_iter=gflops,
        ratios=ratios(times, gflops, args.extra))
    if args.ema:
        result['ema_vit_b'] = ema_foreach_vs_loop(device=device)
    report(result, args)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == '__main__':
    main()
