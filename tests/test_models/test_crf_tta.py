"""Dense CRF and the multi-scale + flip + CRF test-time model."""
import os
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import DATASETS, MODELS
from mmseg.structures import SegDataSample

from mmseg_fsr.models.segmentors.crf_tta_model import CRFSegTTAModel
from mmseg_fsr.models.utils.dense_crf import dense_crf
from PIL import Image

from mmseg_fsr.testing import CPU_CONFIG, PAPER_CONFIG, tiny_fsr_model_cfg

# every FSR config's --tta is the paper's recipe
TTA_CONFIG = PAPER_CONFIG


def two_colour_case(height=24, width=48, colour_edge=20, wrong_edge=30):
    """Left red, right blue; class 1 probability a soft ramp centred on a
    boundary ``wrong_edge - colour_edge`` pixels right of the colour edge."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :colour_edge] = (220, 30, 30)
    image[:, colour_edge:] = (30, 30, 220)
    # centred between columns: no ties at the wrong boundary
    ramp = 1 / (1 + np.exp(-(np.arange(width) - wrong_edge + 0.5) / 3.0))
    fg = np.tile(0.05 + 0.9 * ramp, (height, 1))
    return image, np.stack([1 - fg, fg]).astype(np.float32)


def test_dense_crf_snaps_boundary_to_colour_edge():
    image, probs = two_colour_case()
    before = probs.argmax(0)
    refined = dense_crf(image, probs)
    after = refined.argmax(0)

    assert refined.shape == probs.shape and refined.dtype == np.float32
    np.testing.assert_allclose(refined.sum(0), 1, atol=1e-4)
    # the label edge moves from column 30 to the colour edge at column 20
    assert (before[:, :30] == 0).all() and (before[:, 30:] == 1).all()
    assert (after[:, :20] == 0).all() and (after[:, 20:] == 1).all()
    # only the band between the wrong boundary and the colour edge changed
    changed_cols = np.flatnonzero((after != before).any(0))
    assert changed_cols.min() >= 20 and changed_cols.max() < 30


def test_dense_crf_rejects_mismatched_image():
    image, probs = two_colour_case()
    with pytest.raises(ValueError, match='uint8 RGB image'):
        dense_crf(image[:-1], probs)


def test_missing_pydensecrf_says_how_to_install(monkeypatch):
    for name in ('pydensecrf', 'pydensecrf.densecrf', 'pydensecrf.utils'):
        monkeypatch.setitem(sys.modules, name, None)  # import -> ImportError
    image, probs = two_colour_case()
    with pytest.raises(ImportError, match='pip install pydensecrf2'):
        dense_crf(image, probs)
    module = tiny_fsr_model_cfg(32)
    with pytest.raises(ImportError, match='pip install pydensecrf2'):
        CRFSegTTAModel(module=module, crf=True)
    CRFSegTTAModel(module=tiny_fsr_model_cfg(32), crf=False)  # no CRF: fine


def fake_view(logits, img_shape):
    sample = SegDataSample(metainfo=dict(img_shape=img_shape))
    sample.seg_logits = PixelData(data=logits)
    return sample


@pytest.fixture(scope='module')
def tiny_fsr():
    model = MODELS.build(
        tiny_fsr_model_cfg(32, test_cfg=dict(output_cams=False)))
    model.init_weights()
    return model.eval()


def test_merge_rules(tiny_fsr):
    g = torch.Generator().manual_seed(0)
    a, a_flip, b, b_flip = torch.randn(4, 3, 5, 6, generator=g)
    views = [fake_view(a, (5, 6)), fake_view(a_flip, (5, 6)),
             fake_view(b, (7, 8)), fake_view(b_flip, (7, 8))]

    tta = CRFSegTTAModel(module=tiny_fsr, merge='max', crf=False)
    torch.testing.assert_close(tta.merge_logits(views),
                               torch.maximum(a + a_flip, b + b_flip))
    tta = CRFSegTTAModel(module=tiny_fsr, merge='mean', crf=False)
    mean = torch.stack([x.softmax(0) for x in (a, a_flip, b, b_flip)]).mean(0)
    torch.testing.assert_close(tta.merge_logits(views).softmax(0), mean)
    with pytest.raises(ValueError, match='merge'):
        CRFSegTTAModel(module=tiny_fsr, merge='sum', crf=False)


@pytest.fixture(scope='module')
def tta_batch(synthetic_voc):
    cfg = Config.fromfile(TTA_CONFIG)
    dataset = DATASETS.build(
        dict(
            type='WSSSVOCDataset',
            data_root=synthetic_voc,
            data_prefix=dict(
                img_path='JPEGImages', seg_map_path='SegmentationClass'),
            ann_file='ImageSets/Segmentation/val.txt',
            pipeline=cfg.tta_pipeline))
    return pseudo_collate([dataset[0], dataset[1]])


def test_tta_merges_scales_and_flips(tiny_fsr, tta_batch):
    # 3 scales x 2 flips of 2 images
    assert len(tta_batch['inputs']) == 6
    assert len(tta_batch['inputs'][0]) == 2
    tta = CRFSegTTAModel(module=tiny_fsr, crf=False)
    with torch.no_grad():
        results = tta.test_step(tta_batch)
        for i, result in enumerate(results):
            views = [
                tiny_fsr.test_step(
                    dict(inputs=[tta_batch['inputs'][j][i]],
                         data_samples=[tta_batch['data_samples'][j][i]]))[0]
                for j in range(6)
            ]
            logits = [v.seg_logits.data for v in views]
            expected = torch.stack([
                logits[0] + logits[1], logits[2] + logits[3],
                logits[4] + logits[5]
            ]).amax(0).softmax(0)
            torch.testing.assert_close(result.seg_probs.data, expected)
            assert result.pred_sem_seg.shape == (64, 64)
            assert torch.equal(result.pred_sem_seg.data[0],
                               expected.argmax(0))
            # meta and ground truth of the unflipped scale-1.0 view
            assert result.img_path == views[0].img_path
            assert not result.flip and result.img_shape == (64, 64)
            assert torch.equal(result.gt_sem_seg.data,
                               views[0].gt_sem_seg.data)


def test_views_of_one_shape_share_a_forward(tiny_fsr, tta_batch,
                                            monkeypatch):
    batch_sizes = []
    test_step = tiny_fsr.test_step

    def counted_test_step(data):
        batch_sizes.append(len(data['inputs']))
        return test_step(data)

    monkeypatch.setattr(tiny_fsr, 'test_step', counted_test_step)
    with torch.no_grad():
        CRFSegTTAModel(module=tiny_fsr, crf=False).test_step(tta_batch)
    # two images, each: three scales, each with its flip
    assert batch_sizes == [2, 2, 2] * 2


def test_cam_pass_runs_once_per_image(tta_batch, monkeypatch):
    model = MODELS.build(tiny_fsr_model_cfg(32)).eval()  # output_cams on
    cam_batches = []
    multi_scale_cams = model.pseudo_labeller.multi_scale_cams

    def counted(backbone, cam_head, images, **kwargs):
        cam_batches.append(len(images))
        return multi_scale_cams(backbone, cam_head, images, **kwargs)

    monkeypatch.setattr(model.pseudo_labeller, 'multi_scale_cams', counted)
    with torch.no_grad():
        results = CRFSegTTAModel(module=model, crf=False).test_step(tta_batch)
    assert cam_batches == [1, 1]  # the unflipped scale-1.0 view of each
    assert all('pred_cam_label' in result for result in results)


def test_crf_in_workers_matches_in_process(tiny_fsr, tta_batch):
    with torch.no_grad():
        local = CRFSegTTAModel(module=tiny_fsr, crf_workers=0)
        pooled = CRFSegTTAModel(module=tiny_fsr, crf_workers=2)
        plain = CRFSegTTAModel(module=tiny_fsr, crf=False)
        expected = local.test_step(tta_batch)
        got = pooled.test_step(tta_batch)
        before = plain.test_step(tta_batch)
    for a, b, c in zip(expected, got, before):
        assert torch.equal(a.pred_sem_seg.data, b.pred_sem_seg.data)
        torch.testing.assert_close(a.seg_probs.data, b.seg_probs.data)
        # the CRF ran: probabilities differ from the merged softmax
        assert not torch.allclose(a.seg_probs.data, c.seg_probs.data)
        torch.testing.assert_close(a.seg_logits.data, c.seg_logits.data)
    pooled._crf_pool.shutdown()


def test_paper_tta_config_views(tmp_path):
    cfg = Config.fromfile(TTA_CONFIG)
    assert cfg.tta_model.type == 'CRFSegTTAModel'
    assert cfg.tta_model['merge'] == 'max' and cfg.tta_model.crf
    init_default_scope('mmseg')
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / 'x.jpg')
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / 'x.png')
    result = Compose(cfg.tta_pipeline)(
        dict(img_path=str(tmp_path / 'x.jpg'),
             seg_map_path=str(tmp_path / 'x.png'), reduce_zero_label=False,
             seg_fields=[]))
    shapes = [s.img_shape for s in result['data_samples']]
    flips = [s.flip for s in result['data_samples']]
    assert shapes == [(20, 30), (20, 30), (25, 38), (25, 38), (30, 45),
                      (30, 45)]
    assert flips == [False, True] * 3


@pytest.mark.parametrize('cores, workers', [(1, 1), (2, 2), (16, 4),
                                            (None, 1)])
def test_cpu_config_crf_workers_follow_the_machine(monkeypatch, cores,
                                                   workers):
    """The CPU config's --tta starts at most one CRF process per core (the
    paper config keeps its 4)."""
    monkeypatch.setattr(os, 'cpu_count', lambda: cores)
    cfg = Config.fromfile(CPU_CONFIG)
    assert cfg.tta_model.crf_workers == workers
    assert Config.fromfile(PAPER_CONFIG).tta_model.crf_workers == 4
    init_default_scope('mmseg')
    cfg.model = tiny_fsr_model_cfg()
    tta = MODELS.build(dict(cfg.tta_model, module=cfg.model))
    assert tta.crf_workers == workers
