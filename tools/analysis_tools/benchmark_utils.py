"""Timing and memory helpers shared by ``tools/analysis_tools/benchmark_*``."""
import contextlib
import resource
import statistics
import sys
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import torch
import torch.nn as nn
from mmengine.logging import MMLogger
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import (flop_registry, sdpa_backward_flop_count,
                                      sdpa_flop_count)

AMP_DTYPES = {'fp16': torch.float16, 'bf16': torch.bfloat16}


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so that wall-clock time covers them."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes, device work included."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleaved_timings(steps: Dict[str, Callable[[], object]],
                        rounds: int,
                        warmup: int,
                        device: torch.device) -> Dict[str, List[float]]:
    """Time several step functions, interleaved round by round.

    Every round runs each step once, in an order rotated by one per round, so
    that slow drifts of a shared machine (other processes, thermal state)
    hit all variants alike. The first ``warmup`` rounds are not recorded.

    Args:
        steps (dict[str, callable]): Name -> one step, no arguments.
        rounds (int): Recorded rounds.
        warmup (int): Rounds run before recording.
        device (torch.device): Device to synchronise.

    Returns:
        dict[str, list[float]]: Seconds per recorded step, per name.
    """
    names = list(steps)
    times = {name: [] for name in names}
    for r in range(warmup + rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            seconds = timed(steps[name], device)
            if r >= warmup:
                times[name].append(seconds)
    return times


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return statistics.median(values)


def paired_ratio(numerator: Sequence[float],
                 denominator: Sequence[float]) -> float:
    """Median over rounds of the per-round time ratio.

    On a shared machine a burst of load can slow a few single steps many
    times over; a round's two steps run back to back, so the per-round ratio
    mostly cancels slow drifts and the median drops the rounds a burst hit.

    Args:
        numerator (Sequence[float]): Seconds per round of one variant.
        denominator (Sequence[float]): Same rounds of the other variant.

    Returns:
        float: The median ratio.
    """
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError('need the same, non-zero number of rounds, got '
                         f'{len(numerator)} and {len(denominator)}')
    return median([n / d for n, d in zip(numerator, denominator)])


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window (CUDA only; RSS peaks cannot reset)."""
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory in MiB.

    On CUDA, ``max_memory_allocated`` since the last reset (tensors only). On
    CPU, the process's peak resident set size, which counts everything the
    process ever held (Python, libraries, data loading) and never goes down:
    compare it across separate processes only.
    """
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # kilobytes on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == 'darwin' else peak / 2**10


@contextlib.contextmanager
def saved_activation_bytes(model: nn.Module) -> Iterator[List[int]]:
    """Count the bytes autograd saves for backward inside the block.

    Unlike peak RSS this isolates one forward pass on CPU too: the sum of
    the distinct storages packed for backward, parameters excluded. With
    activation checkpointing, a checkpointed layer saves only its input.

    Args:
        model (nn.Module): Whose parameters are not counted.

    Yields:
        list[int]: A one-element list holding the running total.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = set()
    total = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in params and ptr not in seen:
            seen.add(ptr)
            total[0] += storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield total


def use_quiet_logger(prefix: str) -> None:
    """Make a new WARNING-level ``MMLogger`` the current one.

    Optimiser constructors and ``init_weights`` log a line per parameter to
    the current logger, which would bury a benchmark's output. A new name
    each call: an existing logger would not become the current one again.

    Args:
        prefix (str): Start of the logger name.
    """
    MMLogger.get_instance(f'{prefix}_{time.time_ns()}', log_level='WARNING')


def autocast(device: torch.device, amp: Optional[str]):
    """``torch.autocast`` for ``amp`` in ('fp16', 'bf16'), else a no-op."""
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def ema_foreach_vs_loop(num_params: int = 86_000_000,
                        rounds: int = 10,
                        momentum: float = 0.9995,
                        device: Optional[torch.device] = None
                        ) -> Dict[str, float]:
    """Median seconds of one EMA step: one ``foreach`` call vs a loop.

    The tensor list has ViT-B's shapes (12 blocks of qkv, projection, MLP,
    norms and biases, plus embeddings), scaled to about ``num_params``
    elements. The loop is the reference's per-parameter ``mul_``/``add_``.

    Args:
        num_params (int): Approximate element count (ViT-B: 86M).
        rounds (int): Timed rounds per variant, interleaved.
        momentum (float): EMA momentum.
        device (torch.device, optional): Defaults to CPU.

    Returns:
        dict[str, float]: ``foreach_s``, ``loop_s``, ``num_tensors``,
        ``num_params``.
    """
    device = device or torch.device('cpu')
    dim = 768
    block = [(3 * dim, dim), (3 * dim, ), (dim, dim), (dim, ), (4 * dim, dim),
             (4 * dim, ), (dim, 4 * dim), (dim, ), (dim, ), (dim, ), (dim, ),
             (dim, )]
    shapes = [(dim, 3, 16, 16), (dim, ), (1, 1, dim), (1, 785, dim)]
    shapes += block * 12 + [(dim, ), (dim, )]
    numel = sum(torch.Size(s).numel() for s in shapes)
    repeat = max(1, round(num_params / numel))
    shapes = shapes * repeat
    teacher = [torch.randn(s, device=device) for s in shapes]
    student = [torch.randn(s, device=device) for s in shapes]

    def foreach() -> None:
        torch._foreach_lerp_(teacher, student, 1.0 - momentum)

    def loop() -> None:
        for t, s in zip(teacher, student):
            t.mul_(momentum).add_((1.0 - momentum) * s)

    times = interleaved_timings(
        dict(foreach=foreach, loop=loop), rounds, 1, device)
    return dict(
        foreach_s=median(times['foreach']),
        loop_s=median(times['loop']),
        num_tensors=len(shapes),
        num_params=numel * repeat)


def scale_vit(cfg, embed_dims: int, num_layers: int, num_heads: int,
              crop: Optional[int] = None, patch_size: int = 16) -> None:
    """Resize the ViT of an FSR config in place, heads following it.

    The auxiliary CAM stays on layer -3; decoder, projector and CAM head
    keep their own sizes and take the new width as input.

    Args:
        cfg (Config): An FSR config (``model.backbone`` a ViT).
        embed_dims, num_layers, num_heads (int): ViT sizes.
        crop (int, optional): Training crop (``backbone.img_size``).
        patch_size (int): ViT patch size.
    """
    updates = {
        'model.backbone.patch_size': patch_size,
        'model.backbone.embed_dims': embed_dims,
        'model.backbone.num_layers': num_layers,
        'model.backbone.num_heads': num_heads,
        'model.backbone.out_indices': (num_layers - 3, num_layers - 1),
        'model.backbone.init_cfg': None,
        'model.cam_head.in_channels': embed_dims,
        'model.decode_head.in_channels': embed_dims,
        'model.aggregation_head.in_channels': embed_dims,
        'model.aggregation_head.num_heads': num_heads,
        'model.aggregation_head.projector.in_channels': embed_dims,
    }
    if crop is not None:
        updates['model.backbone.img_size'] = (crop, crop)
    cfg.merge_from_dict(updates)


def _cpu_attention_flops(query, key, value, *args, **kwargs) -> int:
    return sdpa_flop_count(query.shape, key.shape, value.shape)


def _cpu_attention_backward_flops(grad_out, query, key, value, *args,
                                  **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out.shape, query.shape, key.shape,
                                    value.shape)


# torch's formulas, plus the CPU flash attention that torch's table lacks
FLOP_FORMULAS = {
    **flop_registry,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
    _cpu_attention_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
    _cpu_attention_backward_flops,
}


class FlopCount(TorchDispatchMode):
    """FLOPs of the matmuls, convolutions and attention run inside.

    Counted by torch's own formulas (``torch.utils.flop_counter``) and
    formulas for the CPU flash attention they lack. torch's
    ``FlopCounterMode`` also tracks the module hierarchy with backward
    hooks, which fails on inputs that require grad without a grad_fn (the
    authors' CAM pass makes such tensors); a total needs no hierarchy.

    Example:
        >>> with FlopCount() as count:
        ...     step()
        >>> count.flops
    """

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        formula = FLOP_FORMULAS.get(func._overloadpacket)
        if formula is None:
            # composite ops count through the ops they are made of
            with self:
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        out = func(*args, **kwargs)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        return out
