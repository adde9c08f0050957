"""tools/analysis_tools/memory_table.py at tiny size, and its parts."""
import contextlib
import json

import torch

from memory_table import (Bf16ByFp32Arithmetic, GiB, LiveTensorPeak,
                          estimate_bytes, main, smallest_gpu)
from mmseg_fsr.testing import CPU_CONFIG


def test_live_tensor_peak_counts_what_is_held_at_once():
    x = torch.zeros(1000)  # made outside: not counted
    with LiveTensorPeak() as tracker:
        a = x + 1  # 4000 bytes
        b = a * 2  # 8000 held
        del a, b
        c = x + 3  # 4000 held
        view = c[:10]  # shares c's storage
    assert tracker.peak == 8000
    assert tracker.current == 4000
    assert view.untyped_storage().nbytes() == 4000


def test_smallest_gpu_keeps_a_tenth_free():
    assert smallest_gpu(10 * GiB) == '12 GB'  # 10 <= 0.9 x 12
    assert smallest_gpu(11 * GiB) == '16 GB'
    assert smallest_gpu(73 * GiB) == '>80 GB'


def test_memory_table_at_tiny_size(tmp_path, capsys):
    out = main(['--config', CPU_CONFIG, '--img-size', '32', '--batches', '2',
                '8', '--json', str(tmp_path / 'memory.json')])
    printed = capsys.readouterr().out
    assert 'estimated peak GPU memory' in printed
    assert '4xb2 / 2xb2-accum2 / 1xb2-accum4' in printed and '1xb8' in printed
    assert json.loads((tmp_path / 'memory.json').read_text())['rows']
    fsr, baseline = out['measured']
    assert fsr['fsr'] and not baseline['fsr'] and fsr['crop'] == 32
    assert baseline['teacher'] == 0 < fsr['teacher']
    parts = {k: v['saved_per_image'] for k, v in fsr['variants'].items()}
    # (at this size the bf16 weight copies outweigh the halved activations)
    assert parts['with_cp'] < parts['fp32'] and parts['bf16+cp'] > 0
    assert parts['fp32'] > baseline['variants']['fp32']['saved_per_image']
    assert fsr['variants']['fp32']['cam_peak_per_image'] > 0
    # 2 models x 2 batches x 4 precisions, the formula of the module doc
    assert len(out['rows']) == 16
    row = out['rows'][4]
    assert (row['model'], row['batch'], row['variant']) == ('FSR', 8, 'fp32')
    fp32 = fsr['variants']['fp32']
    expected = 4 * fsr['trainable'] + fsr['teacher'] + 8 * max(
        fp32['saved_per_image'], fp32['cam_peak_per_image'])
    assert row['estimated_gib'] * GiB == estimate_bytes(fsr, 'fp32', 8) \
        == expected
    assert row['measured_gib'] is None


def test_bf16_by_fp32_arithmetic_keeps_the_bf16_tensors():
    """Same saved bytes and dtypes as bf16 autocast; products in fp32."""
    from benchmark_utils import saved_activation_bytes

    layer = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(),
                                torch.nn.Linear(32, 8))
    x = torch.randn(4, 16)
    counts, outs = [], []
    for mode in (None, Bf16ByFp32Arithmetic()):
        with (mode or contextlib.nullcontext()), \
                saved_activation_bytes(layer) as saved, \
                torch.autocast('cpu', dtype=torch.bfloat16):
            outs.append(layer(x))
        counts.append(saved[0])
    assert counts[0] == counts[1] > 0
    assert outs[0].dtype == outs[1].dtype == torch.bfloat16
    torch.testing.assert_close(outs[1], outs[0], rtol=2e-2, atol=2e-2)
