"""tools/analysis_tools: benchmark smoke runs.

Only behaviour is checked here (work done, outputs written); no timing is
asserted, speed figures come from running the scripts (docs/benchmark.md).
"""
import importlib.util
import json
import os
import os.path as osp

import pytest
import torch

from mmseg_fsr.testing import CPU_CONFIG, PAPER_CONFIG
from benchmark_utils import FlopCount, ema_foreach_vs_loop

TOOLS = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'tools',
    'analysis_tools')


def load_tool(name):
    spec = importlib.util.spec_from_file_location(
        f'{name}_tool', osp.join(TOOLS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ema_micro_benchmark_reports_both_variants():
    result = ema_foreach_vs_loop(num_params=200_000, rounds=1)
    assert result['foreach_s'] > 0 and result['loop_s'] > 0
    assert result['num_tensors'] > 100  # ViT-B's tensor list, repeated


def test_flop_count_matches_hand_counts():
    a, b = torch.randn(4, 5), torch.randn(5, 6)
    with FlopCount() as count:
        a @ b
    assert count.flops == 2 * 4 * 5 * 6

    q = torch.randn(1, 2, 7, 8)  # batch, heads, tokens, channels
    with FlopCount() as count, torch.no_grad():
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert count.flops == 2 * (2 * 1 * 2 * 7 * 7 * 8)  # QK^T, then AV

    x = torch.randn(3, 5, requires_grad=True)
    with FlopCount() as count:
        (x @ b).sum().backward()
    assert count.flops == 2 * (2 * 3 * 5 * 6)  # forward, gradient of x


def loop_benchmark_args(tmp_path, *extra):
    return [
        '--embed-dims', '32', '--num-heads', '2', '--num-layers', '4',
        '--crop', '96', '--rounds', '1', '--warmup', '0', '--json',
        str(tmp_path / 'loop.json'), *extra
    ]


def test_benchmark_fsr_loop_smoke(tmp_path):
    result = load_tool('benchmark_fsr_loop').main(
        loop_benchmark_args(tmp_path, '--extra', 'ours_ms_cp'))

    assert json.loads((tmp_path / 'loop.json').read_text())[
        'ratios'] == result['ratios']
    assert result['config']['energy']  # on without the authors' code
    assert set(result['seconds_per_iter']) == {
        'ours_ms', 'ours_ss', 'fsr_off', 'ours_ms_cp', 'energy_ours'}
    assert [r['ratio'] for r in result['ratios']] == [
        'ours_ms/fsr_off', 'ours_ms_cp/ours_ms',
        'energy loss share of ours_ms']
    saved = result['saved_activations_mib']
    assert 0 < saved['ours_ms_cp'] < saved['ours_ms']
    assert saved['fsr_off'] < saved['ours_ms']
    # checkpointing recomputes the forward: same work plus one forward
    gflops = result['gflops_per_iter']
    assert 0 < gflops['fsr_off'] < gflops['ours_ss'] < gflops['ours_ms']
    assert gflops['ours_ms'] < gflops['ours_ms_cp']
    fsr_ratio = result['ratios'][0]
    assert fsr_ratio['flop_ratio'] == pytest.approx(
        gflops['ours_ms'] / gflops['fsr_off'])


@pytest.mark.skipif(
    not os.environ.get('FSR_REFERENCE_DIR'),
    reason="FSR_REFERENCE_DIR (a checkout of the authors' code) not set")
def test_benchmark_fsr_loop_times_the_authors_loop(tmp_path):
    result = load_tool('benchmark_fsr_loop').main(
        loop_benchmark_args(tmp_path, '--reference-dir',
                            os.environ['FSR_REFERENCE_DIR']))

    assert {'authors', 'ours_ms', 'ours_ss', 'fsr_off'} <= set(
        result['seconds_per_iter'])
    assert [r['ratio'] for r in result['ratios']][:3] == [
        'ours_ms/authors', 'ours_ss/authors', 'ours_ms/fsr_off']
    assert result['saved_activations_mib']['authors'] > 0


def train_overrides():
    return [
        'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False'
    ]


def test_benchmark_train_smoke(synthetic_voc, tmp_path):
    out = tmp_path / 'train.json'
    result = load_tool('benchmark_train').main([
        CPU_CONFIG, '--iters', '2', '--warmup', '1', '--amp', 'bf16',
        '--with-cp', '--data-root', synthetic_voc, '--json',
        str(out), '--cfg-options', *train_overrides()
    ])
    assert json.loads(out.read_text())['seconds_per_iter'] == result[
        'seconds_per_iter']
    assert len(result['all_seconds']) == 2
    assert result['images_per_s'] > 0 and result['peak_memory_mb'] > 0
    expected_mode = ('AmpOptimWrapper'
                     if torch.cuda.is_available() else 'cpu autocast')
    assert result['amp_mode'] == expected_mode and result['with_cp']


def _crf_available():
    from mmseg_fsr.models.utils.dense_crf import import_pydensecrf
    try:
        import_pydensecrf()
    except ImportError:
        return False
    return True


@pytest.mark.parametrize('crf', [False, True])
def test_benchmark_test_smoke(synthetic_voc, tmp_path, crf):
    if crf and not _crf_available():
        pytest.skip('pydensecrf2 is not installed')
    # the config's paper recipe with CRF, or mmseg's mean TTA by name
    tta_model = (dict(type='CRFSegTTAModel', crf=True, crf_workers=0)
                 if crf else dict(_delete_=True, type='SegTTAModel'))
    config = tmp_path / 'tta.py'
    config.write_text(f"""
_base_ = [{CPU_CONFIG!r}]
model = dict(test_cfg=dict(output_cams=False))
tta_model = {tta_model!r}
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale_factor=r, keep_ratio=True)
         for r in (1.0, 1.5)],
        [dict(type='RandomFlip', prob=p, direction='horizontal')
         for p in (0., 1.)],
        [dict(type='LoadAnnotations')], [dict(type='PackSegInputs')]])]
""")
    args = [
        str(config), '--tta', '--num-images', '2', '--warmup', '0',
        '--data-root', synthetic_voc, '--cfg-options',
        'test_dataloader.num_workers=0'
    ]
    if crf:
        args[2:2] = ['--crf-workers', '0']
    result = load_tool('benchmark_test').main(args)
    expected = {'plain', 'tta'} | ({'tta+crf(workers=0)'} if crf else set())
    assert set(result['modes']) == expected
    for timing in result['modes'].values():
        assert timing['images'] == 2 and timing['images_per_s'] > 0


def test_benchmark_test_refuses_one_image_for_the_authors(capsys):
    with pytest.raises(SystemExit):
        load_tool('benchmark_test').parse_args(
            [PAPER_CONFIG, '--reference-dir', '.', '--num-images', '1'])
    assert 'two images or more' in capsys.readouterr().err


def _authors_inference_available():
    import importlib.util
    return os.environ.get('FSR_REFERENCE_DIR') and _crf_available() and all(
        importlib.util.find_spec(name)
        for name in ('sklearn', 'joblib', 'imageio', 'tqdm', 'texttable'))


@pytest.mark.skipif(
    not _authors_inference_available(),
    reason="FSR_REFERENCE_DIR (the authors' code) or the imports of their "
    'infer_voc.py are missing')
def test_benchmark_test_times_the_authors_loop(synthetic_voc, tmp_path):
    result = load_tool('benchmark_test').main([
        PAPER_CONFIG, '--vit', '32', '3', '2', '--tta', '--crf-workers', '0',
        '--num-images', '2', '--warmup', '1', '--data-root', synthetic_voc,
        '--reference-dir', os.environ['FSR_REFERENCE_DIR'], '--work-dir',
        str(tmp_path), '--cfg-options', 'model.test_cfg.output_cams=False',
        'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False'
    ])
    authors = result['modes']['authors']
    assert authors['images'] == 2 and authors['images_per_s'] > 0
    # their CRF stage wrote one prediction per timed image
    assert len(os.listdir(tmp_path / 'authors' / 'segs_dir')) == 2
    assert result['speedup_over_authors']['tta+crf(workers=0)'] > 0
