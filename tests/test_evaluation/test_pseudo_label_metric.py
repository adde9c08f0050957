"""Tests of ``PseudoLabelMetric`` against hand-counted IoUs."""
import pytest
import torch
from mmengine.evaluator import Evaluator
from mmengine.structures import PixelData
from mmseg.registry import METRICS
from mmseg.structures import SegDataSample

import mmseg_fsr  # noqa: F401  (registers the modules)
from mmseg_fsr.evaluation.metrics.pseudo_label_metric import \
    PseudoLabelMetric

CLASSES = ('background', 'cat', 'dog')
I = 255  # noqa: E741

GT = torch.tensor([
    [0, 0, 1, 1],
    [0, 0, 1, 1],
    [2, 2, 2, 2],
    [I, I, 2, 2],
])
# 255 at (1, 3) where gt is class 1: must count as a miss, not be skipped;
# the 1s at (3, 0), (3, 1) sit on ignored gt and must not count.
CAM = torch.tensor([
    [0, 1, 1, 1],
    [0, 0, 1, I],
    [2, 2, 0, 2],
    [1, 1, 2, 2],
])
# Hand count over the 14 valid gt pixels:
#   class 0: gt {(0,0),(0,1),(1,0),(1,1)} = 4, pred {(0,0),(1,0),(1,1),(2,2)}
#            = 4, intersection 3, union 4 + 4 - 3 = 5 -> IoU 3/5
#   class 1: gt {(0,2),(0,3),(1,2),(1,3)} = 4, pred {(0,1),(0,2),(0,3),(1,2)}
#            = 4, intersection 3, union 5 -> IoU 3/5
#            (were the 255 skipped, union would be 4 -> 3/4)
#   class 2: gt 6, pred {(2,0),(2,1),(2,3),(3,2),(3,3)} = 5,
#            intersection 5, union 6 -> IoU 5/6
#   mIoU = (0.6 + 0.6 + 0.8333) / 3 = 67.78 %, aAcc = 11 / 14 = 78.57 %
CAM_MIOU = round(100 * (3 / 5 + 3 / 5 + 5 / 6) / 3, 2)
CAM_AACC = round(100 * 11 / 14, 2)
# A second prediction: everything background.
#   class 0: IoU 4 / 14 ; classes 1, 2: IoU 0 -> mIoU 9.52 %
PAR = torch.zeros(4, 4, dtype=torch.long)
PAR_MIOU = round(100 * (4 / 14) / 3, 2)


def _sample(**preds):
    s = SegDataSample(
        gt_sem_seg=PixelData(data=GT[None]),
        metainfo=dict(img_path='a.jpg', ori_shape=(4, 4), img_shape=(4, 4)))
    for key, value in preds.items():
        s.set_field(PixelData(data=value[None]), key)
    return s


def test_hand_counted_miou():
    assert CAM_MIOU == 67.78 and CAM_AACC == 78.57 and PAR_MIOU == 9.52
    metric = PseudoLabelMetric(pred_key='pred_cam_label')
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, [_sample(pred_cam_label=CAM).to_dict()])
    res = metric.evaluate(1)
    assert res['mIoU'] == pytest.approx(CAM_MIOU)
    assert res['aAcc'] == pytest.approx(CAM_AACC)


def test_hand_counted_per_class_areas():
    metric = PseudoLabelMetric(pred_key='pred_cam_label')
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, [_sample(pred_cam_label=CAM).to_dict()])
    intersect, union, pred_area, gt_area = metric.results[0]
    assert intersect.tolist() == [3, 3, 5]
    assert union.tolist() == [5, 5, 6]
    assert pred_area.tolist() == [4, 4, 5]
    assert gt_area.tolist() == [4, 4, 6]


def test_scores_pred_key_not_pred_sem_seg():
    # pred_sem_seg is perfect, but the metric must read its own key
    metric = PseudoLabelMetric(pred_key='pred_par_label')
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, [
        _sample(pred_sem_seg=GT.clamp(max=2), pred_par_label=PAR).to_dict()
    ])
    assert metric.evaluate(1)['mIoU'] == pytest.approx(PAR_MIOU)


def test_missing_pred_key_raises():
    metric = PseudoLabelMetric(pred_key='pred_cam_label')
    metric.dataset_meta = dict(classes=CLASSES)
    with pytest.raises(KeyError, match='output_cams'):
        metric.process({}, [_sample(pred_sem_seg=CAM).to_dict()])


def test_several_prefixed_metrics_in_one_evaluator():
    evaluator = Evaluator([
        METRICS.build(dict(type='IoUMetric', iou_metrics=['mIoU'])),
        METRICS.build(
            dict(
                type='PseudoLabelMetric',
                pred_key='pred_cam_label',
                prefix='cam')),
        METRICS.build(
            dict(
                type='PseudoLabelMetric',
                pred_key='pred_par_label',
                prefix='par')),
    ])
    evaluator.dataset_meta = dict(classes=CLASSES)
    sample = _sample(
        pred_sem_seg=GT.clamp(max=2), pred_cam_label=CAM, pred_par_label=PAR)
    evaluator.process([sample], {})
    res = evaluator.evaluate(1)
    assert {'mIoU', 'cam/mIoU', 'par/mIoU'} <= set(res)
    # GT.clamp(max=2) only differs on ignored pixels -> perfect
    assert res['mIoU'] == pytest.approx(100.0)
    assert res['cam/mIoU'] == pytest.approx(CAM_MIOU)
    assert res['par/mIoU'] == pytest.approx(PAR_MIOU)
