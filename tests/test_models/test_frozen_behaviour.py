"""Frozen outputs of the CPU config: refactors must not change the maths.

Recorded after the fidelity work (the authors' computation). Three training
steps (forward, backward, AdamW step, EMA teacher) of the quick-start config
on fixed two-view uint8 batches, then inference on a fixed image. If a
change is meant to alter the computation, re-record the values and say why
in the commit.
"""
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from mmseg_fsr.testing import CPU_CONFIG

LOSSES = [
    # loss_cls, loss_cls_aux, loss_aff, decode.loss_seg, loss_reg,
    # loss_fsr_c, loss_fsr_u
    [1.1882450580596924, 1.0861729383468628, 0.09925568848848343,
     0.46983471512794495, -1.2028108358208556e-06, 0.5647430419921875,
     0.6910869479179382],
    [0.7055880427360535, 0.35510534048080444, 0.09975115209817886,
     0.25483888387680054, -2.648323288667598e-06, 0.5163801312446594,
     0.6763855218887329],
    [0.5057832598686218, 0.3379491865634918, 0.10011643171310425,
     0.3443431556224823, -5.446664999908535e-06, 0.5100569725036621,
     0.6387983560562134],
]
PREDICTION = dict(
    logits_sum=-100715.546875,
    logits_abs_sum=306960.59375,
    cams_sum=43918.0703125,
    cam_label_hist=[0, 8],
    par_label_sum=1525883)


def build_model():
    init_default_scope('mmseg')
    cfg = Config.fromfile(CPU_CONFIG)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    return model, wrapper


def two_view_batch(step):
    g = torch.Generator().manual_seed(100 + step)
    inputs, samples = [], []
    for i in range(2):
        # two views packed along the channel axis, as PackWSSSInputs does
        inputs.append(
            torch.randint(0, 256, (2, 3, 64, 64), generator=g,
                          dtype=torch.uint8).flatten(0, 1))
        sample = SegDataSample(
            metainfo=dict(img_path=f'image_{i}.jpg', num_views=2))
        labels = torch.zeros(20)
        labels[torch.randperm(20, generator=g)[:1 + i]] = 1
        sample.gt_class_labels = labels
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def inference_batch():
    g = torch.Generator().manual_seed(7)
    image = torch.randint(0, 256, (3, 72, 88), generator=g, dtype=torch.uint8)
    seg = torch.zeros(1, 72, 88, dtype=torch.long)
    seg[:, 20:50, 30:70] = 8
    sample = SegDataSample(gt_sem_seg=PixelData(data=seg))
    sample.set_metainfo(dict(img_path='test.jpg', ori_shape=(72, 88),
                             img_shape=(72, 88)))
    return dict(inputs=[image], data_samples=[sample])


def run():
    model, wrapper = build_model()
    model.train()
    losses = []
    torch.manual_seed(1)
    for step in range(3):
        model.set_training_progress(150 + step, 400)
        log_vars = model.train_step(two_view_batch(step), wrapper)
        model.update_teacher(0.99)
        losses.append([float(log_vars[k]) for k in (
            'loss_cls', 'loss_cls_aux', 'loss_aff', 'decode.loss_seg',
            'loss_reg', 'loss_fsr_c', 'loss_fsr_u')])
    model.eval()
    result = model.test_step(inference_batch())[0]
    prediction = dict(
        logits_sum=float(result.seg_logits.data.sum()),
        logits_abs_sum=float(result.seg_logits.data.abs().sum()),
        cams_sum=float(result.pred_cams.data.sum()),
        cam_label_hist=result.pred_cam_label.data.unique().tolist(),
        par_label_sum=int(result.pred_par_label.data.sum()))
    return losses, prediction


def test_three_steps_and_prediction_unchanged():
    losses, prediction = run()
    for step, (got, want) in enumerate(zip(losses, LOSSES)):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-7), step
    for key, want in PREDICTION.items():
        assert prediction[key] == pytest.approx(want, rel=1e-5), key


if __name__ == '__main__':
    print(run())
