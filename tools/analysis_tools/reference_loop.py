"""Emulation of the FSR reference training iteration, for speed comparisons.

The paper's reference code is a standalone script (built on ToCo); this
module re-creates the *work* one of its training iterations does, using this
project's modules (``FSRSegmentor`` and its heads, losses, PAR) at identical
model, input and batch, so that ``benchmark_fsr_loop.py`` can time it against
``FSRSegmentor.loss``. It is an emulation, not a port: the losses are
this project's and no number from it is meant to match the reference's.

Per iteration the reference script

1. computes the multi-scale CAM of view 2 to choose the masked tokens,
2. runs the student on both views in one batch (view 2 masked) and the
   projector on *every* token (class and patch tokens) of both views,
3. runs the teacher the same way on both unmasked views,
4. computes the multi-scale CAMs of view 1 (pseudo labels for the decoder,
   auxiliary CAM for the affinity labels) and of view 2 *again*,
5. refines pseudo labels with PAR for view 1 *and* view 2, although no loss
   reads view 2's,
6. then backward, optimiser step and a per-parameter Python loop for the EMA.

So it runs three multi-scale CAM passes of B images each, where
``FSRSegmentor`` runs one pass (of 2B images with
``mask_cam_source='multi_scale'``, B with 'single_scale'), and PAR on 2B
images instead of B. The reference does a little more than emulated here (its
CAM passes also run the projector, its teacher also runs the decoder and
classifiers), so the emulation is a lower bound of the reference's cost and
ratios against it are conservative.
"""
from typing import Dict

import torch
from mmseg.models.utils import resize
from mmseg.utils import SampleList
from torch import Tensor

from mmseg_fsr.models.segmentors import FSRSegmentor
from mmseg_fsr.models.utils import cams_to_pseudo_labels, refine_pseudo_labels


def _project_all_tokens(head, final: Tensor, cls_tokens: Tensor,
                        token_mask: Tensor) -> Dict[str, Tensor]:
    """Aggregate, then project the class and all patch tokens (reference)."""
    patches = final.flatten(2).transpose(1, 2)
    aggregated = head.aggregate(patches, cls_tokens, token_mask)
    projected = head.project(torch.cat([aggregated[:, None], patches], dim=1))
    return dict(certain=projected[:, 0], patches=projected[:, 1:])


def reference_loss(model: FSRSegmentor, inputs: Tensor,
                   data_samples: SampleList) -> Dict[str, Tensor]:
    """All losses of one iteration, computed the way the reference does.

    Every loss is on (the reference's staged start iterations are not
    emulated), as in ``FSRSegmentor.loss`` outside a Runner.

    Args:
        model (FSRSegmentor): A model with FSR, affinity and decoder losses.
        inputs (Tensor): Two views, shape (B, 2, 3, H, W).
        data_samples (list[SegDataSample]): With ``gt_class_labels``.

    Returns:
        dict[str, Tensor]: The same loss keys as ``FSRSegmentor.loss``.
    """
    if not (model.with_fsr and model.affinity_loss is not None):
        raise ValueError('the reference loop needs a model with FSR and '
                         'affinity losses')
    if inputs.dim() != 5:
        raise ValueError('the reference loop needs two-view inputs '
                         f'(B, 2, 3, H, W), got {tuple(inputs.shape)}')
    cfg = model.pseudo_label_cfg
    img_labels = model._image_labels(data_samples)
    _, progress = model._training_progress()
    view1, view2 = inputs[:, 0], inputs[:, 1]
    batch_size = view1.shape[0]
    patch_size = model.backbone.patch_size
    grid = (view1.shape[-2] // patch_size, view1.shape[-1] // patch_size)
    views = torch.cat([view1, view2])

    # 1. CAM pass of view 2, for the mask only.
    _, mask_cams = model.multi_scale_cams(view2)
    token_mask = model.mask_neck(mask_cams, img_labels, grid, progress)
    full_mask = torch.cat([torch.zeros_like(token_mask), token_mask])

    # 2. Student on both views in one batch, every token projected.
    outs, cls_tokens = model.backbone.forward_with_cls_token(views, full_mask)
    student = _project_all_tokens(model.aggregation_head, outs[-1],
                                  cls_tokens, full_mask)
    feats = tuple(out[:batch_size] for out in outs)

    # 3. Teacher likewise, unmasked.
    with torch.no_grad():
        t_outs, t_cls = model.teacher['backbone'].forward_with_cls_token(views)
        teacher = _project_all_tokens(model.teacher['aggregation_head'],
                                      t_outs[-1], t_cls, None)

    # 4. CAM passes of view 1 and, again, of view 2.
    cams1, aux_cams1 = model.multi_scale_cams(view1)
    cams2, _ = model.multi_scale_cams(view2)

    # 5. PAR for view 2 too; the reference only logs these labels.
    refine_pseudo_labels(model.refiner, view2, cams2, img_labels,
                         cfg['high_thr'], cfg['low_thr'], cfg['ignore_index'],
                         cfg['par_down_scale'])

    losses = model.cam_head.loss(feats[-1], feats[0], img_labels)
    # view 1's PAR runs inside, as in FSRSegmentor.loss
    losses.update(
        model._seg_loss(view1, feats, cams1, aux_cams1, img_labels, None))
    token_labels = cams_to_pseudo_labels(
        resize(aux_cams1, feats[-1].shape[-2:], mode='bilinear',
               align_corners=False), img_labels, cfg['high_thr'],
        cfg['low_thr'], cfg['ignore_index'])
    losses[model.affinity_loss.loss_name] = model.affinity_loss(
        feats[-1], token_labels)
    if model.certain_loss is not None:
        losses[model.certain_loss.loss_name] = model.certain_loss(
            student['certain'][batch_size:], teacher['certain'][:batch_size],
            progress)
    if model.uncertain_loss is not None:
        losses[model.uncertain_loss.loss_name] = model.uncertain_loss(
            student['patches'][batch_size:], teacher['patches'][batch_size:],
            token_mask, progress)
    return losses


@torch.no_grad()
def reference_update_teacher(model: FSRSegmentor, momentum: float) -> None:
    """The reference's EMA: one ``mul_``/``add_`` pair per parameter.

    Args:
        model (FSRSegmentor): Model with a teacher.
        momentum (float): Weight of the old teacher.
    """
    for student, teacher in model._teacher_pairs():
        for p_s, p_t in zip(student.parameters(), teacher.parameters()):
            p_t.mul_(momentum).add_((1.0 - momentum) * p_s.detach())
