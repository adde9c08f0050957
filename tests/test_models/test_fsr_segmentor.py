"""FSRSegmentor: mmseg's generic segmentor checks, label handling, reuse."""
import copy
from functools import partial

import pytest
import torch
from mmengine.optim import OptimWrapper
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from mmseg_fsr.models.backbones import MaskableViT
from mmseg_fsr.models.pseudo_labellers import to_8bit_rgb
from mmseg_fsr.models.utils import stack_image_labels
from mmseg_fsr.testing import tiny_fsr_model_cfg

CROP = 32


def build(progress=(900, 1000), **overrides):
    """The tiny model, told it is at ``progress`` (past every warm-up)."""
    model = MODELS.build(tiny_fsr_model_cfg(CROP, **overrides))
    model.init_weights()
    model.set_training_progress(*progress)
    return model


def stock_batch(num_images=2, num_classes=21, size=CROP, seed=0):
    """A batch as mmseg's own segmentor tests make it: uint8 images and
    random ground-truth masks, no image-level label."""
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(num_images):
        inputs.append(torch.randint(0, 256, (3, size, size), generator=g,
                                    dtype=torch.uint8))
        seg = torch.randint(0, num_classes, (1, size, size), generator=g)
        sample = SegDataSample(gt_sem_seg=PixelData(data=seg))
        sample.set_metainfo(dict(img_shape=(size, size),
                                 ori_shape=(size, size),
                                 pad_shape=(size, size)))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def two_view_batch(labels, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(len(labels), 2, 3, CROP, CROP, generator=g)
    samples = []
    for i, present in enumerate(labels):
        sample = SegDataSample(metainfo=dict(img_path=f'img{i}.jpg'))
        sample.gt_class_labels = torch.zeros(20)
        sample.gt_class_labels[list(present)] = 1
        samples.append(sample)
    return inputs, samples


# -------------------------------------------------- mmseg's generic checks
@pytest.mark.parametrize('with_fsr', [True, False])
def test_generic_segmentor_modes(with_fsr):
    # stock configs give the pre-processor the crop size to pad to
    overrides = dict(data_preprocessor=dict(size=(CROP, CROP)))
    if not with_fsr:
        overrides.update(uncertain_loss=None, certain_loss=None)
    model = build(**overrides)
    assert hasattr(model, 'teacher') == with_fsr
    data = model.data_preprocessor(stock_batch(), True)

    losses = model.forward(**data, mode='loss')
    assert {'loss_cls', 'loss_cls_aux', 'loss_aff',
            'decode.loss_seg'} <= set(losses)
    assert ('loss_fsr_u' in losses) == with_fsr
    assert all(torch.isfinite(v).all() for v in losses.values())

    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    log_vars = model.train_step(stock_batch(), optim_wrapper)
    assert 'loss' in log_vars

    model.eval()
    for step in (model.val_step, model.test_step):
        results = step(stock_batch())
        assert results[0].pred_sem_seg.shape == (CROP, CROP)
        assert results[0].seg_logits.data.shape == (21, CROP, CROP)
    data = model.data_preprocessor(stock_batch(), False)
    predictions = model.forward(**data, mode='predict')
    assert len(predictions) == 2
    logits = model.forward(data['inputs'], mode='tensor')
    assert logits.shape == (2, 21, CROP // 8, CROP // 8)


def test_predict_outputs_cams_and_pseudo_labels():
    model = build().eval()
    data = model.data_preprocessor(stock_batch(1), False)
    sample = model.predict(**data)[0]
    assert sample.pred_cams.data.shape == (20, CROP, CROP)
    assert 0 <= float(sample.pred_cams.data.min())
    assert float(sample.pred_cams.data.max()) <= 1
    present = set(data['data_samples'][0].gt_sem_seg.data.unique().tolist())
    for key in ('pred_cam_label', 'pred_par_label'):
        values = set(sample.get(key).data.unique().tolist())
        assert values <= present | {255}


def test_cams_only_for_labelled_images_of_a_batch():
    """A labelled image and a bare one (a TTA view) in one batch: CAMs for
    the labelled one, the same as when predicted alone."""
    model = build().eval()
    data = model.data_preprocessor(stock_batch(2), False)
    alone = model.predict(data['inputs'][:1], data['data_samples'][:1])[0]
    bare = SegDataSample(metainfo=data['data_samples'][1].metainfo)
    labelled, unlabelled = model.predict(
        data['inputs'], [data['data_samples'][0], bare])
    torch.testing.assert_close(labelled.pred_cams.data, alone.pred_cams.data)
    assert torch.equal(labelled.pred_cam_label.data,
                       alone.pred_cam_label.data)
    assert 'pred_cams' not in unlabelled
    assert unlabelled.pred_sem_seg.shape == (CROP, CROP)


# ------------------------------------------------------------ gradients
def test_gradients_reach_student_never_teacher():
    model = build().train()
    inputs, samples = two_view_batch([[0], [1, 2]])
    losses = model.loss(inputs, samples)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    assert model.backbone.mask_token.grad.abs().sum() > 0
    for name, param in model.aggregation_head.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert model.cam_head.classifier.weight.grad.abs().sum() > 0
    assert model.decode_head.conv_seg.weight.grad.abs().sum() > 0
    for name, param in model.teacher.named_parameters():
        assert not param.requires_grad and param.grad is None, name


def test_teacher_changes_only_through_update():
    model = build().train()
    teacher_before = copy.deepcopy(model.teacher.state_dict())
    optim_wrapper = OptimWrapper(
        torch.optim.AdamW(model.parameters(), lr=1e-2))
    inputs, samples = two_view_batch([[0], [3]])
    optim_wrapper.update_params(
        sum(v for k, v in model.loss(inputs, samples).items() if 'loss' in k))
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key
    model.update_teacher(0.5)
    student = model.backbone.state_dict()
    teacher = model.teacher['backbone'].state_dict()
    key = 'layers.0.ffn.layers.1.weight'
    expected = 0.5 * teacher_before[f'backbone.{key}'] + 0.5 * student[key]
    torch.testing.assert_close(teacher[key], expected)


# ------------------------------------------------------- labels only
def test_pixel_labels_never_reach_the_losses():
    """Same image labels, noise masks: identical losses."""
    model = build().train()
    twin = copy.deepcopy(model)  # the loss centers move on every call
    inputs, samples = two_view_batch([[0, 4], [7]])
    noisy = copy.deepcopy(samples)
    for sample in noisy:
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, 21, (1, CROP, CROP)))
    torch.manual_seed(0)
    clean_losses = model.loss(inputs, samples)
    torch.manual_seed(0)
    noisy_losses = twin.loss(inputs, noisy)
    assert clean_losses.keys() == noisy_losses.keys()
    for key in clean_losses:
        assert torch.equal(clean_losses[key], noisy_losses[key]), key


def test_stock_batches_get_a_second_view_and_labels_from_masks():
    """WSSSDataPreProcessor turns a stock training batch into two views and
    reads the image labels off the masks (the transform's function)."""
    model = build(data_preprocessor=dict(size=(CROP, CROP)))
    batch = stock_batch()
    batch['data_samples'][0].gt_sem_seg = PixelData(
        data=torch.full((1, CROP, CROP), 3).index_fill_(1, torch.tensor([0]),
                                                        20))
    data = model.data_preprocessor(batch, True)
    assert data['inputs'].shape == (2, 2, 3, CROP, CROP)
    labels = data['data_samples'][0].gt_class_labels
    assert labels.nonzero()[:, 0].tolist() == [2, 19]
    # view 1 is the image itself
    plain = model.data_preprocessor(stock_batch(), False)['inputs']
    torch.testing.assert_close(data['inputs'][1:, 0], plain[1:])


def test_stock_batch_labels_come_from_the_whole_mask(tmp_path):
    """A crop that kept background only still carries the classes of the
    whole image, read from its mask file (the WSSS label), not an error."""
    import numpy as np
    from PIL import Image
    mask = np.zeros((48, 48), np.uint8)
    mask[40:, 40:] = 7  # outside the crop below
    mask[:4, 44:] = 255
    path = str(tmp_path / 'whole.png')
    Image.fromarray(mask).save(path)
    model = build(data_preprocessor=dict(size=(CROP, CROP)))
    batch = stock_batch(num_images=1)
    sample = batch['data_samples'][0]
    sample.gt_sem_seg = PixelData(data=torch.zeros(1, CROP, CROP).long())
    sample.set_metainfo(dict(seg_map_path=path, img_path='whole.jpg'))
    data = model.data_preprocessor(batch, True)
    assert data['data_samples'][0].gt_class_labels.nonzero()[:, 0].tolist() \
        == [6]
    # reduce_zero_label as LoadAnnotations: 7 -> 6, 0 -> ignore
    reduced = SegDataSample(metainfo=dict(seg_map_path=path,
                                          reduce_zero_label=True))
    labels = stack_image_labels([reduced], 21, whole_mask=True)
    assert labels.nonzero()[:, 1].tolist() == [5]
    # no file named: the (cropped) mask, where background only is an error
    plain = SegDataSample(gt_sem_seg=PixelData(
        data=torch.zeros(1, CROP, CROP).long()))
    with pytest.raises(ValueError, match='empty label set'):
        stack_image_labels([plain], 21, whole_mask=True)


def test_stock_batch_without_a_pad_size_names_the_setting():
    model = build()
    assert model.data_preprocessor.size is None
    model.data_preprocessor.size_divisor = None
    with pytest.raises(ValueError, match='data_preprocessor.size'):
        model.data_preprocessor(stock_batch(), True)


def test_progress_comes_from_the_runner_unless_given():
    """Under a Runner the model follows MessageHub's iter / max_iters (and
    moves the teacher once per step); outside one it needs
    set_training_progress."""
    from mmengine.logging import MessageHub
    model = MODELS.build(tiny_fsr_model_cfg(CROP)).train()
    model.init_weights()
    inputs, samples = two_view_batch([[0], [3, 5]])
    hub = MessageHub.get_instance('test_progress_from_runner')
    hub.pop_info('loop_stage')
    with pytest.raises(RuntimeError, match='set_training_progress'):
        model.loss(inputs, samples)
    hub.update_info_dict(dict(loop_stage='train', iter=3, max_iters=10,
                              dataset_meta=dict(classes=list(range(21)))))
    model.loss(inputs, samples)
    assert (model.cur_iter, model.max_iters) == (3, 10)
    assert int(model.teacher.last_step) == 2
    model.loss(inputs, samples)  # a second micro-batch of the same step
    assert int(model.teacher.last_step) == 2
    hub.update_info('dataset_meta', dict(classes=list(range(5))))
    with pytest.raises(ValueError, match='wrong class count: the training '
                       'data has 5 classes .*num_classes=21'):
        model.loss(inputs, samples)
    model.set_training_progress(7, 10)  # given by hand: it wins
    hub.update_info('dataset_meta', dict(classes=list(range(21))))
    model.loss(inputs, samples)
    assert model.cur_iter == 7 and int(model.teacher.last_step) == 2
    hub.pop_info('loop_stage')


# ---------------------------------------------------------- bad input
def test_wrong_class_count_and_empty_label_set():
    model = build().train()
    inputs, samples = two_view_batch([[0]])
    samples[0].gt_class_labels = torch.ones(80)
    with pytest.raises(ValueError, match='wrong class count.*img0.jpg'):
        model.loss(inputs, samples)
    samples[0].gt_class_labels = torch.zeros(20)
    with pytest.raises(ValueError, match='empty label set.*img0.jpg'):
        model.loss(inputs, samples)
    sample = SegDataSample(gt_sem_seg=PixelData(
        data=torch.full((1, CROP, CROP), 40)))
    with pytest.raises(ValueError, match='wrong class count.*class 40'):
        stack_image_labels([sample], 21)
    with pytest.raises(ValueError, match='two views'):
        model.loss(inputs[:, 0], samples)


def test_crop_not_multiple_of_patch_size():
    model = build().train()
    inputs, samples = two_view_batch([[0]])
    with pytest.raises(ValueError, match='multiple of the backbone patch '
                       r'size 8, got \(1, 2, 3, 30, 30\)'):
        model.loss(inputs[..., :30, :30], samples)


@pytest.mark.parametrize('overrides, message', [
    (dict(cam_head=dict(num_classes=80)), 'wrong class count'),
    (dict(pseudo_labeller=dict(low_thr=0.8)), 'thresholds out of order'),
    (dict(loss_start_iters=dict(decoder=3)), 'unknown loss_start_iters'),
    (dict(mask_cam_source='teacher'), 'mask_cam_source'),
    (dict(mask_neck=dict(patch_size=16, block_size=16)), 'patch size 8'),
])
def test_invalid_settings_fail_at_build(overrides, message):
    with pytest.raises(ValueError, match=message):
        MODELS.build(tiny_fsr_model_cfg(CROP, **overrides))


def test_fsr_needs_neck_and_head():
    with pytest.raises(TypeError, match='need mask_neck, aggregation_head'):
        MODELS.build(tiny_fsr_model_cfg(CROP, mask_neck=None))


def test_loss_starts_beyond_the_run_are_errors():
    with pytest.raises(ValueError, match=r'fraction.*\[0, 1\].*got 1.5'):
        build(loss_start_iters=dict(seg=1.5))
    model = build(loss_start_iters=dict(seg=200), progress=(0, 1))
    with pytest.raises(ValueError,
                       match=r"\{'seg': 200\} lie past max_iters=100"):
        model.set_training_progress(0, 100)


def test_loss_starts_as_fractions_follow_the_run_length():
    model = build(loss_start_iters=dict(seg=0.1, aff=0.15, fsr=0))
    for max_iters, expected in ((20000, (2000, 3000)), (80, (8, 12))):
        model.set_training_progress(0, max_iters)
        assert (model.loss_starts['seg'],
                model.loss_starts['aff']) == expected


def test_fsr_needs_a_maskable_backbone():
    cfg = tiny_fsr_model_cfg(CROP)
    cfg.backbone.type = 'VisionTransformer'
    cfg.backbone.pop('init_cfg', None)
    with pytest.raises(TypeError, match='forward_with_tokens'):
        MODELS.build(cfg)


def test_multi_scale_mask_needs_a_truncatable_backbone():
    """Without ``full_depth_rows`` only the single-scale mask is possible."""

    class NoRowsViT(MaskableViT):

        def forward(self, inputs, token_mask=None):
            return super().forward(inputs, token_mask)

    MODELS.register_module(name='_NoRowsViT', module=NoRowsViT, force=True)
    cfg = tiny_fsr_model_cfg(CROP)
    cfg.backbone.type = '_NoRowsViT'
    with pytest.raises(TypeError, match='full_depth_rows'):
        MODELS.build(cfg)
    cfg.mask_cam_source = 'single_scale'
    MODELS.build(cfg)


def test_aux_only_images_stop_at_the_auxiliary_layer():
    """View 2 in the batched CAM pass gives the CAMs of separate passes,
    while running the last layers for view 1's rows only."""
    model = build().train()
    inputs, _ = two_view_batch([[0], [1], [2]])
    view1, view2 = inputs[:, 0], inputs[:, 1]
    cam_pass = partial(model.pseudo_labeller.multi_scale_cams, model.backbone,
                       model.cam_head)
    cams1, aux1 = cam_pass(view1)
    _, aux2 = cam_pass(view2)

    last_layer_rows = []
    model.backbone.layers[-1].register_forward_hook(
        lambda module, args, out: last_layer_rows.append(args[0].shape[0]))
    cams, aux = cam_pass(torch.cat([view1, view2]), 3)

    assert cams.shape == (3, 20, CROP, CROP)
    assert aux.shape == (6, 20, CROP, CROP)
    torch.testing.assert_close(cams, cams1, rtol=0, atol=1e-5)
    torch.testing.assert_close(aux, torch.cat([aux1, aux2]), rtol=0,
                               atol=1e-5)
    # image + flip of view 1 only, at every scale
    scales = model.pseudo_labeller.cam_scales
    assert last_layer_rows == [6] * len(scales)
    assert model.training and model.backbone.training


def test_baseline_runs_on_a_backbone_that_cannot_stop_early():
    """FSR off, only ``forward(inputs)``: auxiliary-only CAMs (affinity
    before the decoder starts) run the whole backbone instead."""
    cfg = tiny_fsr_model_cfg(
        CROP, uncertain_loss=None, certain_loss=None,
        loss_start_iters=dict(seg=10, aff=0, fsr=0))
    cfg.backbone.type = 'VisionTransformer'
    model = MODELS.build(cfg)
    model.init_weights()
    model.train()
    inputs, samples = two_view_batch([[0], [1]])
    for progress, expected in (((5, 100), {'loss_aff'}),
                               ((50, 100), {'decode.loss_seg', 'loss_aff'})):
        model.set_training_progress(*progress)
        losses = model.loss(inputs, samples)
        assert expected <= set(losses)
        assert all(torch.isfinite(v).all() for v in losses.values())


@pytest.mark.parametrize('idle_steps', [True, False])
def test_idle_decoder_is_stepped_before_its_start(idle_steps):
    """The authors' loop computes the decoder loss at weight 0 before its
    start: zero gradients, so AdamW decays the decoder and counts its steps
    (whose bias correction then lets the first real updates exceed the
    lr). ``idle_decoder_steps=False`` keeps the decoder out until then."""
    model = build(progress=(5, 100), idle_decoder_steps=idle_steps,
                  loss_start_iters=dict(seg=10, aff=0, fsr=0)).train()
    inputs, samples = two_view_batch([[0], [1]])
    losses = model.loss(inputs, samples)
    assert not any('seg' in k for k in losses)  # no decoder loss yet
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    weight = model.decode_head.conv_seg.weight
    before = weight.detach().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1,
                                  weight_decay=0.5)
    optimizer.step()
    if idle_steps:
        assert all(torch.equal(p.grad, torch.zeros_like(p))
                   for p in model.decode_head.parameters())
        # decoupled decay only: w * (1 - lr * wd), no Adam move
        assert torch.allclose(weight, before * 0.95, atol=1e-7)
        assert int(optimizer.state[weight]['step']) == 1
    else:
        assert all(p.grad is None for p in model.decode_head.parameters())
        assert torch.equal(weight, before) and not optimizer.state[weight]


# --------------------------------------------------- work per iteration
def count_calls(monkeypatch, owner, name):
    calls = []
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


@pytest.mark.parametrize('mask_cam_source', ['multi_scale', 'single_scale'])
def test_multi_scale_cam_computed_once_per_iteration(monkeypatch,
                                                     mask_cam_source):
    model = build(mask_cam_source=mask_cam_source).train()
    cam_calls = count_calls(monkeypatch, model.pseudo_labeller,
                            'multi_scale_cams')
    par_calls = count_calls(monkeypatch, model.pseudo_labeller,
                            'pseudo_labels')
    inputs, samples = two_view_batch([[0], [1]])
    model.loss(inputs, samples)
    # one batched pass: view 1, and view 2 (auxiliary CAM only) when it
    # picks the mask
    assert len(cam_calls) == 1
    (_, _, images, num_final), _ = cam_calls[0]
    views = [0, 1] if mask_cam_source == 'multi_scale' else [0]
    assert torch.equal(images, inputs[:, views].transpose(0, 1).flatten(0, 1))
    assert num_final == 2
    assert len(par_calls) == 1
    assert par_calls[0][0][1].shape[0] == 2  # PAR on view 1 only


def test_final_cam_only_once_the_decoder_starts(monkeypatch):
    """COCO's schedule: the mask picks from CAMs before the decoder and the
    affinity loss start, so only view 2's auxiliary CAM is computed; the
    affinity loss alone needs view 1's auxiliary CAM only."""
    inputs, samples = two_view_batch([[0], [1]])
    for starts, views in [(dict(seg=10, aff=10, fsr=0), [1]),
                          (dict(seg=10, aff=0, fsr=0), [0, 1])]:
        model = build(
            progress=(5, 100),
            loss_start_iters=starts,
            mask_neck=dict(random_warmup_ratio=0.0)).train()
        cam_calls = count_calls(monkeypatch, model.pseudo_labeller,
                                'multi_scale_cams')
        last_layer_rows = []
        model.backbone.layers[-1].register_forward_hook(
            lambda module, args, out: last_layer_rows.append(args[0].shape[0]))
        losses = model.loss(inputs, samples)
        (_, _, images, num_final), _ = cam_calls[0]
        assert torch.equal(images,
                           inputs[:, views].transpose(0, 1).flatten(0, 1))
        assert num_final == 0
        # only the student's training pass (both views) reaches it
        assert last_layer_rows == [4]
        assert all(torch.isfinite(v).all() for v in losses.values())


def test_no_work_for_losses_not_started(monkeypatch):
    model = build(
        progress=(5, 100),
        loss_start_iters=dict(seg=10, aff=10, fsr=0),
        mask_neck=dict(random_warmup_ratio=0.2)).train()
    cam_calls = count_calls(monkeypatch, model.pseudo_labeller,
                            'multi_scale_cams')
    par_calls = count_calls(monkeypatch, model.pseudo_labeller,
                            'pseudo_labels')
    inputs, samples = two_view_batch([[0], [1]])
    losses = model.loss(inputs, samples)
    # random masking phase, decoder and affinity off: no CAM, no PAR
    assert cam_calls == [] and par_calls == []
    assert 'decode.loss_seg' not in losses and 'loss_aff' not in losses
    assert {'loss_fsr_u', 'loss_fsr_c'} <= set(losses)


def test_cam_prediction_accepts_images_without_class():
    """Scoring or exporting CAMs (e.g. COCO val) meets empty label sets."""
    model = build().eval()
    data = model.data_preprocessor(stock_batch(1), False)
    data['data_samples'][0].gt_class_labels = torch.zeros(20)
    sample = model.predict(**data)[0]
    assert set(sample.pred_cam_label.data.unique().tolist()) == {0}


# ------------------------------------------- the authors' computation
def test_par_sees_the_8_bit_image():
    """PAR compares the input de-normalised and truncated to 8 bits (the
    authors' denormalize_img2): 100.7 -> 100, 255.3 -> 255, -0.2 -> 0."""
    model = build()
    pre = model.data_preprocessor
    raw = torch.tensor([100.7, 255.3, -0.2, 0.0]).view(1, 1, 1, 4).expand(
        1, 3, 1, 4)
    normalised = (raw - pre.mean) / pre.std
    out = to_8bit_rgb(normalised, pre.mean, pre.std)
    expected = torch.tensor([100., 255., 0., 0.]) / 255
    torch.testing.assert_close(out[0, :, 0], expected.expand(3, 4),
                               rtol=0, atol=1e-7)


@pytest.mark.parametrize('stochastic_targets', [True, False])
def test_drop_path_acts_on_targets_as_in_the_authors_code(
        stochastic_targets):
    model = build(
        backbone=dict(drop_path_rate=0.5),
        stochastic_targets=stochastic_targets).train()
    inputs, samples = two_view_batch([[0], [1]])
    cam_calls = []
    labeller = model.pseudo_labeller
    original = labeller.multi_scale_cams

    def recording(backbone, *args):
        cam_calls.append(backbone.training)
        return original(backbone, *args)

    labeller.multi_scale_cams = recording
    model.loss(inputs, samples)
    assert cam_calls == [stochastic_targets]
    assert model.backbone.training  # restored after the CAM pass
    teacher = model.teacher['backbone']
    tokens = [teacher.forward_with_tokens(inputs[:, 1])[1] for _ in range(2)]
    assert (not torch.equal(*tokens)) == stochastic_targets
    model.eval()  # inference is always deterministic
    assert torch.equal(
        model.teacher['backbone'].forward_with_tokens(inputs[:, 1])[1],
        model.teacher['backbone'].forward_with_tokens(inputs[:, 1])[1])


def test_certain_token_uses_class_token_query_and_final_norm():
    """L_c reaches the backbone's class token (the aggregation query) and
    its final norm, which the aggregated token shares with the patches."""
    model = build(uncertain_loss=None, affinity_loss=None,
                  loss_start_iters=dict(seg=950, aff=0, fsr=0)).train()
    inputs, samples = two_view_batch([[0], [1, 2]])
    model.loss(inputs, samples)['loss_fsr_c'].backward()
    assert model.backbone.cls_token.grad.abs().sum() > 0
    assert model.backbone.ln1.weight.grad.abs().sum() > 0
    blocks = model.aggregation_head.blocks
    assert blocks[0].attn.in_proj_weight.grad.abs().sum() > 0


def test_patch_center_follows_every_teacher_token_of_view_2():
    """DINO / iBOT centering: the L_u center moves towards the mean of all
    of the teacher's projected view-2 patch tokens, masked or not."""
    model = build(certain_loss=None).train()
    inputs, samples = two_view_batch([[0], [1, 2]])
    with torch.no_grad():
        outs, _ = model.teacher['backbone'].forward_with_tokens(inputs[:, 1])
        projected = model.teacher['aggregation_head'].project(
            outs[-1].flatten(2).transpose(1, 2))
    model.loss(inputs, samples)
    expected = 0.1 * projected.reshape(-1, projected.shape[-1]).mean(0)
    torch.testing.assert_close(model.uncertain_loss.center[0], expected,
                               rtol=0, atol=1e-6)


def test_energy_loss_starts_with_the_decoder():
    """The authors add the dense energy term together with the seg loss."""
    inputs, samples = two_view_batch([[0], [1, 2]])
    model = build(progress=(5, 100),
                  loss_start_iters=dict(seg=10, aff=0, fsr=0)).train()
    assert 'loss_reg' not in model.loss(inputs, samples)
    model.set_training_progress(10, 100)
    losses = model.loss(inputs, samples)
    assert losses['loss_reg'] < 0  # a (negative) energy
    losses['loss_reg'].backward()
    assert model.decode_head.conv_seg.weight.grad.abs().sum() > 0
    assert 'loss_reg' not in build(energy_loss=None).loss(inputs, samples)
