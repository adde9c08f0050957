"""The single-stage WSSS framework of FSR (Figure 2 of the paper)."""
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from mmseg.utils import OptConfigType, SampleList
from torch import Tensor

from ..backbones import check_fsr_backbone
from ..utils import EMATeacher, ViewFeatures, split_views, stack_image_labels
from .wsss_segmentor import WSSSSegmentor


@MODELS.register_module()
class FSRSegmentor(WSSSSegmentor):
    """Single-stage WSSS segmentor with feature self-reinforcement.

    :meth:`loss` is one training iteration from image-level labels, as in
    Figure 2; without ``uncertain_loss`` and ``certain_loss`` it is the
    ToCo-style baseline. Inference is the stock ``EncoderDecoder`` on the
    decoder. For FSR the backbone provides ``FSR_BACKBONE_API`` like
    ``MaskableViT`` (docs/extending.md).

    Args:
        mask_neck, aggregation_head (dict, optional): FSR's
            ``UncertaintyMaskingNeck`` (its patch size is the backbone's)
            and ``MCAAggregationHead``.
        uncertain_loss, certain_loss (dict, optional): Eq. 8 and Eq. 9.
        mask_cam_source (str): 'multi_scale' (the authors: multi-scale
            auxiliary CAM of view 2) or 'single_scale' (Eq. 2 on the
            teacher's pass of view 2, no extra CAM pass).
        teacher_cfg (dict): The EMA teacher's ``momentum`` at the first
            step and ``end_momentum`` approached at the last (cosine, the
            authors' 0.9995 -> 1; the weight of the old teacher).
        **kwargs: Arguments of :class:`WSSSSegmentor`; its
            ``stochastic_targets`` also runs the teacher in train mode;
            ``loss_start_iters`` also takes ``fsr``.
    """

    loss_stages = ('seg', 'aff', 'fsr')

    def __init__(self,
                 mask_neck: OptConfigType = None,
                 aggregation_head: OptConfigType = None,
                 uncertain_loss: OptConfigType = None,
                 certain_loss: OptConfigType = None,
                 mask_cam_source: str = 'multi_scale',
                 teacher_cfg: dict = dict(momentum=0.9995, end_momentum=1.0),
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if mask_cam_source not in ('multi_scale', 'single_scale'):
            raise ValueError("mask_cam_source must be 'multi_scale' or "
                             f"'single_scale', got {mask_cam_source!r}")
        self.mask_cam_source = mask_cam_source
        self.uncertain_loss = MODELS.build(
            uncertain_loss) if uncertain_loss else None
        self.certain_loss = MODELS.build(
            certain_loss) if certain_loss else None
        if not self.with_fsr:
            return
        if mask_neck is None or aggregation_head is None:
            raise TypeError('FSR losses need mask_neck, aggregation_head')
        check_fsr_backbone(self.backbone, mask_cam_source == 'multi_scale')
        patch_size = self.backbone.patch_size
        self.mask_neck = MODELS.build(
            dict(dict(patch_size=patch_size), **mask_neck))
        if self.mask_neck.patch_size != patch_size:
            raise ValueError(
                f'mask_neck.patch_size={self.mask_neck.patch_size} is not '
                f'the backbone patch size {patch_size}')
        self.aggregation_head = MODELS.build(aggregation_head)
        self.teacher = EMATeacher(self._students(), self.stochastic_targets,
                                  **teacher_cfg)

    @property
    def with_fsr(self) -> bool:
        """bool: Whether any feature self-reinforcement loss is on."""
        return self.uncertain_loss is not None or self.certain_loss is not None

    def _students(self) -> dict:
        return dict(backbone=self.backbone,
                    aggregation_head=self.aggregation_head)

    def init_weights(self) -> None:
        """Initialise the student, then start the teacher as its copy."""
        super().init_weights()
        if self.with_fsr:
            self.teacher.load_students(self._students())

    def update_teacher(self, momentum: float) -> None:
        """One EMA step of the teacher with the given momentum."""
        self.teacher.momentum_update(self._students(), momentum)

    def advance_teacher(self, step: int, max_steps: int) -> None:
        """Fold the student after optimiser step ``step`` into the teacher,
        at that step's scheduled momentum, once (:meth:`EMATeacher.follow`).

        Under a Runner, :meth:`update_training_progress` calls it for the
        previous step, so the teacher moves once per optimiser step whatever
        hooks a config lists; ``FSRTeacherHook`` calls it right after the
        step.
        """
        if self.with_fsr:
            self.teacher.follow(self._students(), step, max_steps)

    def update_training_progress(self) -> None:
        """:meth:`WSSSSegmentor.update_training_progress`; under a Runner
        also fold the previous step into the teacher. With progress given
        by :meth:`set_training_progress`, the caller moves the teacher
        (:meth:`update_teacher`)."""
        super().update_training_progress()
        if not self._progress_given:
            self.advance_teacher(self.cur_iter - 1, self.max_iters)

    @torch.no_grad()
    def training_maps(self, images: Tensor,
                      img_labels: Tensor) -> Dict[str, Tensor]:
        """:meth:`WSSSSegmentor.training_maps`, plus (with FSR losses)
        ``token_mask``, (B, H, W) bool: the tokens the mask neck would mask
        in this view at the current iteration, from its multi-scale
        auxiliary CAM (random during the neck's warm-up)."""
        maps = super().training_maps(images, img_labels)
        if self.with_fsr:
            grid = [s // self.backbone.patch_size for s in images.shape[-2:]]
            uses_cam = self.mask_neck.uses_cam(self.cur_iter, self.max_iters)
            mask = self.mask_neck(maps['aux_cams'] if uses_cam else None,
                                  img_labels, grid)
            maps['token_mask'] = F.interpolate(
                mask.view(-1, 1, *grid).float(), size=images.shape[-2:],
                mode='nearest')[:, 0].bool()
        return maps

    def loss(self, inputs: Tensor, data_samples: SampleList) -> dict:
        """All training losses from image-level labels (Figure 2).

        Args:
            inputs (Tensor): Two views, (B, 2, 3, H, W).
            data_samples (list[SegDataSample]): With ``gt_class_labels``.

        Returns:
            dict[str, Tensor]: Every loss term, logged separately.
        """
        view1, view2 = self._views(inputs)
        self.update_training_progress()
        labels = stack_image_labels(data_samples, self.num_classes)
        on = self._started_losses()
        cams, aux_cams, mask_cams = self._pseudo_label_cams(
            view1, on, view2 if self._mask_cams_from_view2(on) else None)
        targets = self._teacher_targets(view1, view2) if on['fsr'] else {}
        token_mask = self._token_mask(mask_cams, targets, labels, on)
        student1, student2 = self._student(view1, view2, token_mask)
        losses = self._baseline_losses(view1, student1, cams, aux_cams,
                                       labels, data_samples, on)
        if on['fsr']:
            losses.update(self._fsr_losses(student2, token_mask, targets))
        return losses

    def _started_losses(self) -> Dict[str, bool]:
        on = super()._started_losses()
        on['fsr'] &= self.with_fsr
        on['mask_cams'] = on['fsr'] and self.mask_neck.uses_cam(
            self.cur_iter, self.max_iters)
        return on

    def _mask_cams_from_view2(self, on: Dict[str, bool]) -> bool:
        return on['mask_cams'] and self.mask_cam_source == 'multi_scale'

    def _teacher_targets(self, view1: Tensor, view2: Tensor) -> dict:
        single_scale = self.mask_cam_source == 'single_scale'
        return self.teacher.targets(
            view1, view2, certain=self.certain_loss is not None,
            patches=self.uncertain_loss is not None,
            cam_head=self.cam_head if single_scale else None)

    def _token_mask(self, mask_cams: Optional[Tensor], targets: dict,
                    labels: Tensor, on: dict) -> Optional[Tensor]:
        if not on['fsr']:
            return None
        if on['mask_cams'] and self.mask_cam_source == 'single_scale':
            mask_cams = targets['aux_cams']
        return self.mask_neck(mask_cams, labels, targets['grid'])

    def _student(self, view1: Tensor, view2: Tensor,
                 token_mask: Optional[Tensor]) -> Tuple[ViewFeatures, ...]:
        if token_mask is None:
            return ViewFeatures(self.backbone(view1)), None
        maps, tokens = self.backbone.forward_with_tokens(
            torch.cat([view1, view2]),
            torch.cat([torch.zeros_like(token_mask), token_mask]))
        return split_views(maps, tokens, [len(view1)] * 2)

    def _fsr_losses(self, student: ViewFeatures, token_mask: Tensor,
                    targets: dict) -> Dict[str, Tensor]:
        """Eq. 9 on the aggregated token and Eq. 8 on the masked tokens of
        the masked view 2."""
        losses, head = {}, self.aggregation_head
        progress = (self.cur_iter, self.max_iters)
        if self.certain_loss is not None:
            certain = head.aggregate_and_project(
                student.tokens, self.backbone.cls_token[:, 0], token_mask,
                self.backbone.normalize_tokens)
            losses[self.certain_loss.loss_name] = self.certain_loss(
                certain, targets['certain'], *progress)
        if self.uncertain_loss is not None:
            masked = head.project(student.patches[token_mask])
            losses[self.uncertain_loss.loss_name] = self.uncertain_loss(
                masked, targets['patches'], token_mask, *progress)
        return losses
