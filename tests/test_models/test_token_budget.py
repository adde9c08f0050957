"""Inference within a token budget (``test_cfg.max_tokens``): images within
it are predicted exactly as whole images; beyond it the decoder slides a
window and the CAM pass is scaled down, so the backbone never sees more
tokens than the budget; an error names the image."""
import math

import pytest
import torch
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from mmseg_fsr.testing import tiny_fsr_model_cfg

PATCH = 8  # the tiny model's patch size


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    model = MODELS.build(tiny_fsr_model_cfg(32))
    model.init_weights()
    model.set_training_progress(900, 1000)
    return model.eval()


def _batch(model, height, width, seed=0):
    """One labelled image of ``height`` x ``width`` px, pre-processed."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, height, width), generator=g,
                          dtype=torch.uint8)
    seg = torch.randint(0, 21, (1, height, width), generator=g)
    sample = SegDataSample(gt_sem_seg=PixelData(data=seg))
    sample.set_metainfo(
        dict(img_path=f'big_{height}x{width}.jpg',
             img_shape=(height, width),
             ori_shape=(height, width),
             pad_shape=(height, width)))
    return model.data_preprocessor(
        dict(inputs=[image], data_samples=[sample]), False)


def _predict(model, data, **test_cfg):
    saved = dict(model.test_cfg)
    model.test_cfg.update(test_cfg)
    try:
        with torch.no_grad():
            return model.predict(data['inputs'],
                                 [s.clone() for s in data['data_samples']])[0]
    finally:
        model.test_cfg.clear()
        model.test_cfg.update(saved)


def _record_tokens(model):
    seen = []

    def hook(module, args):
        height, width = args[0].shape[-2:]
        seen.append(math.ceil(height / PATCH) * math.ceil(width / PATCH))

    return seen, model.backbone.register_forward_pre_hook(hook)


KEYS = ('seg_logits', 'pred_sem_seg', 'pred_cams', 'pred_cam_label',
        'pred_aux_cam_label', 'pred_par_label')


def test_configs_set_a_budget(model):
    assert model.test_cfg['max_tokens'] == 4096
    assert model.test_cfg['mode'] == 'whole'


def test_within_the_budget_equals_whole_image_inference(model):
    data = _batch(model, 48, 64)  # 6 x 8 = 48 tokens
    whole = _predict(model, data, max_tokens=None)
    budget = _predict(model, data, max_tokens=48, crop_size=(32, 32),
                      stride=(16, 16))
    for key in KEYS:
        assert torch.equal(budget.get(key).data, whole.get(key).data), key


def test_beyond_the_budget_slides_within_it(model):
    data = _batch(model, 64, 96)  # 8 x 12 = 96 tokens
    window = dict(crop_size=(48, 48), stride=(32, 32))
    seen, handle = _record_tokens(model)
    try:
        budget = _predict(model, data, max_tokens=48, **window)
    finally:
        handle.remove()
    # the decoder's 2 x 3 windows of 6 x 6 tokens, then the CAM pass
    # (scales 1, 0.5, 1.5) shrunk so that scale 1 is within the budget
    assert seen[:6] == [36] * 6 and len(seen) == 9, seen
    assert seen[6] <= 48 and seen[8] < 96 * 1.5**2, seen
    whole = _predict(model, data, max_tokens=None)
    slide = _predict(model, data, max_tokens=None, mode='slide', **window)
    assert torch.equal(budget.seg_logits.data, slide.seg_logits.data)
    assert not torch.equal(budget.seg_logits.data, whole.seg_logits.data)
    for key in KEYS:
        assert budget.get(key).data.shape[-2:] == (64, 96), key
    assert budget.pred_cams.data.shape == (20, 64, 96)


def test_an_error_names_the_image(model, monkeypatch):
    data = _batch(model, 32, 32)

    def out_of_memory(*args, **kwargs):
        raise RuntimeError('CUDA out of memory')

    monkeypatch.setattr(model.decode_head, 'forward', out_of_memory)
    with pytest.raises(RuntimeError, match='out of memory') as err:
        _predict(model, data)
    assert 'while predicting big_32x32.jpg' in ' '.join(err.value.__notes__)


def test_budget_needs_the_window():
    cfg = tiny_fsr_model_cfg(32)
    del cfg.test_cfg['stride']
    with pytest.raises(ValueError, match='max_tokens needs test_cfg'):
        MODELS.build(cfg)
