"""tools/analysis_tools: reference-loop emulation and benchmark smoke runs.

Only behaviour is checked here (work done, outputs written); no timing is
asserted, speed figures come from running the scripts (docs/benchmark.md).
"""
import importlib.util
import json
import os.path as osp

import pytest
import torch
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_fsr.models.segmentors.fsr_segmentor as fsr_module
from mmseg_fsr.testing import CPU_CONFIG, tiny_fsr_model_cfg
from benchmark_utils import ema_foreach_vs_loop

TOOLS = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'tools',
    'analysis_tools')
CROP = 32


def load_tool(name):
    spec = importlib.util.spec_from_file_location(
        f'{name}_tool', osp.join(TOOLS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# no Runner iteration info: every warm-up counts as finished
pytestmark = pytest.mark.usefixtures('outside_runner')


def build():
    model = MODELS.build(tiny_fsr_model_cfg(CROP))
    model.init_weights()
    return model.train()


def two_view_batch(num_images=2):
    g = torch.Generator().manual_seed(0)
    inputs = torch.randn(num_images, 2, 3, CROP, CROP, generator=g)
    samples = []
    for i in range(num_images):
        sample = SegDataSample(metainfo=dict(img_path=f'img{i}.jpg'))
        sample.gt_class_labels = torch.zeros(20)
        sample.gt_class_labels[i] = 1
        samples.append(sample)
    return inputs, samples


def record_calls(monkeypatch, owner, name, calls):
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        calls.append((name, args))
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)


def test_reference_loop_does_the_reference_work(monkeypatch):
    reference_loop = load_tool('reference_loop')
    model = build()
    cams, pars = [], []
    record_calls(monkeypatch, model, 'multi_scale_cams', cams)
    record_calls(monkeypatch, fsr_module, 'refine_pseudo_labels', pars)
    record_calls(monkeypatch, reference_loop, 'refine_pseudo_labels', pars)
    inputs, samples = two_view_batch()

    losses = reference_loop.reference_loss(model, inputs, samples)

    # three CAM passes of B images (view 2, view 1, view 2 again) and PAR
    # for both views, where FSRSegmentor.loss does one pass and one PAR
    assert [args[0].shape[0] for _, args in cams] == [2, 2, 2]
    assert torch.equal(cams[0][1][0], inputs[:, 1])
    assert torch.equal(cams[1][1][0], inputs[:, 0])
    assert len(pars) == 2
    torch.manual_seed(0)
    assert set(losses) == set(model.loss(inputs, samples))
    assert all(torch.isfinite(v).all() for v in losses.values())
    model.parse_losses(losses)[0].backward()
    assert model.backbone.patch_embed.projection.weight.grad is not None
    assert all(p.grad is None for p in model.teacher.parameters())


def test_reference_update_teacher_equals_foreach_update():
    reference_loop = load_tool('reference_loop')
    model = build()
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(torch.randn_like(p))
    copy = build()
    copy.load_state_dict(model.state_dict())

    reference_loop.reference_update_teacher(model, 0.9)
    copy.update_teacher(0.9)

    for (name, p), q in zip(model.teacher.named_parameters(),
                            copy.teacher.parameters()):
        torch.testing.assert_close(p, q, msg=name)


def test_ema_micro_benchmark_reports_both_variants():
    result = ema_foreach_vs_loop(num_params=200_000, rounds=1)
    assert result['foreach_s'] > 0 and result['loop_s'] > 0
    assert result['num_tensors'] > 100  # ViT-B's tensor list, repeated


def test_benchmark_fsr_loop_smoke(tmp_path):
    out = tmp_path / 'loop.json'
    result = load_tool('benchmark_fsr_loop').main([
        '--embed-dims', '32', '--num-heads', '2', '--num-layers', '3',
        '--crop', str(CROP), '--rounds', '1', '--warmup', '0', '--extra',
        'ours_ms_cp', '--json', str(out), '--cfg-options',
        'model.pseudo_label_cfg.par.num_iter=2'
    ])
    assert json.loads(out.read_text())['ratios'] == result['ratios']
    names = {'reference', 'ours_ms', 'ours_ss', 'fsr_off', 'ours_ms_cp'}
    assert set(result['seconds_per_iter']) == names
    assert [r['ratio'] for r in result['ratios']][:3] == [
        'ours_ms/reference', 'ours_ss/reference', 'ours_ms/fsr_off'
    ]
    saved = result['saved_activations_mib']
    assert 0 < saved['ours_ms_cp'] < saved['ours_ms']
    assert saved['fsr_off'] < saved['ours_ms']


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
    tta_model = (dict(type='CRFSegTTAModel', crf=True, crf_workers=0)
                 if crf else dict(type='SegTTAModel'))
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
