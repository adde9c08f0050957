"""Estimate the peak GPU memory of FSR training per set-up, on CPU.

For the model of a config (default: the paper's ViT-B/16 at 448 px, every
loss on) and its baseline without FSR, one training forward pass of
``--measure-batch`` images is run on CPU in every precision variant:

- ``saved``: the bytes autograd keeps for backward (the loop benchmark's
  count, ``benchmark_utils.saved_activation_bytes``), per image; under
  autocast they include the bf16 copies of the weights;
- ``cam_peak``: the peak of the tensors alive during the multi-scale CAM
  pass (``CAMPseudoLabeller.multi_scale_cams``, no gradient), which runs
  before anything is saved, per image.

The estimate per GPU for B images per micro-batch is::

    params + grads + 2 AdamW states (fp32, trainable) + teacher (fp32)
    + B x max(saved, cam_peak)

(gradients are counted whole, although backward frees activations as it
makes them). A GPU of S GB fits when the estimate is at most 90% of S
GiB: the CUDA context and the caching allocator's slack take the rest.
Gradient accumulation does not change memory: an accumulated step holds
one micro-batch at a time. Variants: ``fp32``; ``bf16`` (autocast, as
``AmpOptimWrapper``); ``with_cp`` (``backbone.with_cp=True``, activation
checkpointing of the ViT layers); ``bf16+cp``. bf16 runs CPU autocast, its
products computed in fp32 (``Bf16ByFp32Arithmetic``: same tensors, a CPU
without bf16 units is otherwise very slow).

These are estimates from CPU; ``torch.cuda.max_memory_allocated`` of a
real step on a GPU is the measured figure to put beside them.

Example::

    python tools/analysis_tools/memory_table.py
    python tools/analysis_tools/memory_table.py --img-size 320 --batches 4
"""
import argparse
import contextlib
import copy
import json
import os.path as osp
import sys
from typing import Dict, Iterator, List

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

HERE = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, HERE)  # the sibling benchmark helpers
from benchmark_fsr_loop import (PAPER_CONFIG, _import_plugin,  # noqa: E402
                                make_batch)

GPU_SIZES_GB = (12, 16, 24, 40, 80)
USABLE_FRACTION = 0.9
VARIANTS = {  # name: (autocast dtype, activation checkpointing)
    'fp32': (None, False),
    'bf16': ('bf16', False),
    'with_cp': (None, True),
    'bf16+cp': ('bf16', True),
}
# the set-ups of the paper recipe (global batch 8) by images per GPU
RECIPE_CONFIGS = {
    2: '4xb2 / 2xb2-accum2 / 1xb2-accum4',
    8: '1xb8',
}
GiB = 2**30


def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=PAPER_CONFIG,
                        help='FSR config (default: the paper one)')
    parser.add_argument('--img-size', type=int,
                        help='training crop (default: the config\'s)')
    parser.add_argument(
        '--batches', type=int, nargs='+', default=[2, 8],
        help='images per GPU per micro-batch to estimate (default: 2 and 8, '
        'the set-ups of the paper recipe)')
    parser.add_argument(
        '--precisions', nargs='+', choices=list(VARIANTS),
        default=list(VARIANTS),
        help='variants to measure (bf16 is several times slower on CPU)')
    parser.add_argument('--measure-batch', type=int, default=1,
                        help='images of the measured CPU forward pass')
    parser.add_argument('--threads', type=int,
                        help='torch CPU threads (default: torch\'s choice)')
    parser.add_argument('--json', help='write the results here')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='overrides merged into the config (e.g. model.backbone.'
        'embed_dims=192)')
    return parser.parse_args(argv)


class LiveTensorPeak(TorchDispatchMode):
    """Peak bytes of the tensor storages created inside and still alive.

    Storages existing before the block (weights, inputs) are not counted.
    After every operator the storages freed since are dropped, so the peak
    is the most held at once between operators, as a caching allocator's
    ``max_memory_allocated`` (without its rounding) would see it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: Dict[int, tuple] = {}
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for ptr, (ref, nbytes) in list(self.live.items()):
            if ref.expired():
                del self.live[ptr]
                self.current -= nbytes
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                ptr = storage.data_ptr()
                if ptr not in self.live and storage.nbytes():
                    self.live[ptr] = (StorageWeakRef(storage),
                                      storage.nbytes())
                    self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out


class Bf16ByFp32Arithmetic(TorchDispatchMode):
    """Run bf16 matrix products in fp32 and round the result to bf16.

    CPUs without bf16 units multiply bf16 many times slower than fp32. The
    tensors made and saved stay those of bf16 autocast (same shapes and
    dtypes), so the byte counts are those of bf16 training; only the
    arithmetic inside each product is fp32. Enter it outside the counters.
    """

    PRODUCTS = (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm,
                torch.ops.aten.baddbmm, torch.ops.aten.convolution,
                torch.ops.aten._scaled_dot_product_flash_attention_for_cpu)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        bf16 = [t for t in tree_flatten(args)[0]
                if isinstance(t, torch.Tensor) and t.dtype == torch.bfloat16]
        if func.overloadpacket not in self.PRODUCTS or not bf16:
            return func(*args, **kwargs)

        def fp32(t):
            is_bf16 = isinstance(t, torch.Tensor) and t.dtype == torch.bfloat16
            return t.float() if is_bf16 else t

        out = func(*tree_map(fp32, args), **tree_map(fp32, kwargs))
        if isinstance(out, tuple):  # attention: (output, fp32 logsumexp)
            return (out[0].to(torch.bfloat16), ) + out[1:]
        return out.to(torch.bfloat16)


@contextlib.contextmanager
def cam_pass_peak(model) -> Iterator[List[int]]:
    """Record the live-tensor peak of the model's multi-scale CAM passes
    (the largest over the calls) inside the block."""
    labeller = model.pseudo_labeller
    original = labeller.multi_scale_cams
    peak = [0]

    def tracked(*args, **kwargs):
        with LiveTensorPeak() as tracker:
            result = original(*args, **kwargs)
        peak[0] = max(peak[0], tracker.peak)
        return result

    labeller.multi_scale_cams = tracked
    try:
        yield peak
    finally:
        del labeller.multi_scale_cams  # back to the class's method


def model_config(args: argparse.Namespace):
    """The config's model at ``--img-size``, pretrained weights off."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    init_default_scope('mmseg')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.img_size:
        cfg.model.backbone.img_size = (args.img_size, args.img_size)
    cfg.model.backbone.init_cfg = None
    return cfg


def state_bytes(model) -> Dict[str, int]:
    """fp32 bytes of the trainable weights and of the EMA teacher."""
    trainable = sum(p.numel() for n, p in model.named_parameters()
                    if p.requires_grad and not n.startswith('teacher.'))
    teacher = sum(t.numel() for n, t in model.state_dict().items()
                  if n.startswith('teacher.') and t.is_floating_point())
    return dict(trainable=4 * trainable, teacher=4 * teacher)


def measure(cfg, args: argparse.Namespace, fsr: bool) -> Dict:
    """Saved-for-backward and CAM-pass bytes per image of every variant."""
    from mmseg.registry import MODELS

    from benchmark_utils import autocast, saved_activation_bytes

    model_cfg = copy.deepcopy(cfg.model)
    if not fsr:
        model_cfg.update(uncertain_loss=None, certain_loss=None)
    crop = model_cfg.backbone.img_size[0]
    batch = make_batch(
        model_cfg.decode_head.num_classes,
        argparse.Namespace(seed=0, batch_size=args.measure_batch, crop=crop))
    result = dict(fsr=fsr, crop=crop, variants={})
    for name in args.precisions:
        amp, with_cp = VARIANTS[name]
        model_cfg.backbone.with_cp = with_cp
        torch.manual_seed(0)
        model = MODELS.build(model_cfg)
        model.init_weights()
        model.train()
        # every loss on: the last iteration of the run
        model.set_training_progress(99, 100)
        arithmetic = (Bf16ByFp32Arithmetic() if amp else
                      contextlib.nullcontext())
        with arithmetic, saved_activation_bytes(model) as saved, \
                cam_pass_peak(model) as cam_peak, \
                autocast(torch.device('cpu'), amp):
            losses = model.loss(batch[0], batch[1])
        del losses  # frees the graph without a backward
        result['variants'][name] = dict(
            saved_per_image=saved[0] / args.measure_batch,
            cam_peak_per_image=cam_peak[0] / args.measure_batch)
        print(f'{"FSR" if fsr else "no FSR"} {name}: saved for backward '
              f'{saved[0] / args.measure_batch / GiB:.3f} GiB, CAM pass '
              f'{cam_peak[0] / args.measure_batch / GiB:.3f} GiB per image',
              flush=True)
    result.update(state_bytes(model))
    return result


def estimate_bytes(measured: Dict, variant: str, batch: int) -> float:
    """Estimated peak bytes of one GPU (formula in the module doc)."""
    parts = measured['variants'][variant]
    static = 4 * measured['trainable'] + measured['teacher']  # w, g, m, v
    return static + batch * max(parts['saved_per_image'],
                                parts['cam_peak_per_image'])


def smallest_gpu(nbytes: float) -> str:
    """The smallest common GPU size that fits, or '>80'."""
    for size in GPU_SIZES_GB:
        if nbytes <= USABLE_FRACTION * size * GiB:
            return f'{size} GB'
    return f'>{GPU_SIZES_GB[-1]} GB'


def table_rows(results: List[Dict], batches: List[int]) -> List[Dict]:
    """One row per (FSR on/off, images per GPU, variant)."""
    rows = []
    for measured in results:
        for batch in batches:
            for variant in measured['variants']:
                nbytes = estimate_bytes(measured, variant, batch)
                rows.append(dict(
                    model='FSR' if measured['fsr'] else 'no FSR',
                    batch=batch, configs=RECIPE_CONFIGS.get(batch, ''),
                    variant=variant, estimated_gib=nbytes / GiB,
                    measured_gib=None, gpu=smallest_gpu(nbytes)))
    return rows


def report(results: List[Dict], rows: List[Dict]) -> None:
    """Print the measured parts, then the table."""
    print('per image, measured on CPU '
          f'({results[0]["crop"]} px):')
    for measured in results:
        name = 'FSR' if measured['fsr'] else 'no FSR'
        print(f'  {name}: trainable weights '
              f'{measured["trainable"] / GiB:.2f} GiB (fp32), teacher '
              f'{measured["teacher"] / GiB:.2f} GiB')
        for variant, parts in measured['variants'].items():
            print(f'    {variant:<8} saved for backward '
                  f'{parts["saved_per_image"] / GiB:.2f} GiB, CAM pass '
                  f'peak {parts["cam_peak_per_image"] / GiB:.2f} GiB')
    print('\nestimated peak GPU memory per GPU = weights + grads + AdamW '
          '(fp32) + teacher + images x max(saved '
          f'for backward, CAM pass peak); fits: <= {USABLE_FRACTION:.0%} '
          'of the GPU\n')
    print(f'| {"model":<7}| {"img/GPU":<8}| {"configs":<34}| '
          f'{"precision":<10}| {"estimated GiB":<14}| {"measured GiB":<13}| '
          'smallest GPU |')
    print('|' + '|'.join('-' * w for w in (8, 9, 35, 11, 15, 14, 14)) + '|')
    for row in rows:
        print(f'| {row["model"]:<7}| {row["batch"]:<8}| '
              f'{row["configs"]:<34}| {row["variant"]:<10}| '
              f'{row["estimated_gib"]:<14.2f}| {"-":<13}| '
              f'{row["gpu"]:<13}|')


def main(argv=None) -> Dict:
    args = parse_args(argv)
    _import_plugin()
    from benchmark_utils import use_quiet_logger

    if args.threads:
        torch.set_num_threads(args.threads)
    use_quiet_logger('memory_table')
    cfg = model_config(args)
    results = [measure(cfg, args, fsr) for fsr in (True, False)]
    rows = table_rows(results, args.batches)
    report(results, rows)
    output = dict(measured=results, rows=rows)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(output, f, indent=2)
    return output


if __name__ == '__main__':
    main()
