"""The single-stage WSSS framework of FSR (Figure 2 of the paper)."""
from typing import Dict, Optional, Tuple

import torch
from mmengine.structures import PixelData
from mmseg.models.segmentors import EncoderDecoder
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import (ConfigType, OptConfigType, OptMultiConfig,
                         OptSampleList, SampleList, add_prefix)
from torch import Tensor

from ..pseudo_labellers import stops_early, to_8bit_rgb
from ..utils import (EMATeacher, ViewFeatures, iteration_of, split_views,
                     stack_image_labels)

LOSS_STAGES = ('seg', 'aff', 'fsr')
FSR_BACKBONE_API = ('forward_with_tokens', 'normalize_tokens', 'cls_token')


@MODELS.register_module()
class FSRSegmentor(EncoderDecoder):
    """Single-stage WSSS segmentor with feature self-reinforcement.

    One training iteration from image-level labels (:meth:`loss`): CAM pass
    -> pseudo labels; EMA teacher on the unmasked views; uncertain tokens of
    view 2 masked; student on view 1 and masked view 2; classification,
    decoder, affinity and self-distillation losses. Without
    ``uncertain_loss`` and ``certain_loss`` it is the ToCo-style baseline.
    Inference is the stock ``EncoderDecoder`` on the decoder.

    The backbone returns ``(aux, ..., final)`` maps (B, D, h, w); for FSR it
    also provides ``forward_with_tokens``, ``normalize_tokens``, a
    ``cls_token`` (the aggregation query) and, for
    ``mask_cam_source='multi_scale'``, ``forward(..., full_depth_rows)``,
    like ``MaskableViT`` (docs/extending.md). Batches hold two views,
    (B, 2, 3, H, W), with ``gt_class_labels`` (``WSSSDataPreProcessor``).

    Args:
        backbone (dict): Backbone config.
        decode_head (dict): Any mmseg decode head; ``num_classes`` counts
            background.
        cam_head (dict): ``CAMHead`` config; its ``num_classes`` defaults
            to the foreground classes.
        pseudo_labeller (dict): ``CAMPseudoLabeller`` config.
        mask_neck, aggregation_head (dict, optional): FSR's
            ``UncertaintyMaskingNeck`` and ``MCAAggregationHead``.
        uncertain_loss, certain_loss (dict, optional): Eq. 8 and Eq. 9.
        affinity_loss, energy_loss (dict, optional): Patch token contrast
            and the dense energy regulariser (from the decoder's start).
        loss_start_iters (dict, optional): First iteration (int) or fraction
            of the run (float) of the ``seg``, ``aff`` and ``fsr`` losses.
        mask_cam_source (str): 'multi_scale' (the authors: multi-scale
            auxiliary CAM of view 2) or 'single_scale' (Eq. 2 on the
            teacher's pass of view 2, no extra CAM pass).
        stochastic_targets (bool): CAM passes and teacher in train mode
            (drop path on), as the authors' code; False: eval mode.
    """

    def __init__(self,
                 backbone: ConfigType,
                 decode_head: ConfigType,
                 cam_head: ConfigType,
                 pseudo_labeller: ConfigType = dict(type='CAMPseudoLabeller'),
                 mask_neck: OptConfigType = None,
                 aggregation_head: OptConfigType = None,
                 uncertain_loss: OptConfigType = None,
                 certain_loss: OptConfigType = None,
                 affinity_loss: OptConfigType = dict(
                     type='PatchTokenContrastLoss', loss_weight=0.2),
                 energy_loss: OptConfigType = None,
                 loss_start_iters: OptConfigType = None,
                 mask_cam_source: str = 'multi_scale',
                 stochastic_targets: bool = True,
                 train_cfg: OptConfigType = None,
                 test_cfg: OptConfigType = None,
                 data_preprocessor: OptConfigType = None,
                 pretrained: Optional[str] = None,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(backbone=backbone, decode_head=decode_head,
                         train_cfg=train_cfg, test_cfg=test_cfg,
                         data_preprocessor=data_preprocessor,
                         pretrained=pretrained, init_cfg=init_cfg)
        self.cam_head = MODELS.build(
            dict(dict(num_classes=self.num_classes - 1), **cam_head))
        if self.cam_head.num_classes != self.num_classes - 1:
            raise ValueError(
                'wrong class count: cam_head.num_classes must be the number '
                'of foreground classes, decode_head.num_classes - 1 = '
                f'{self.num_classes - 1}, got {self.cam_head.num_classes}')
        if hasattr(self.data_preprocessor, 'num_classes'):
            self.data_preprocessor.num_classes = self.num_classes
        self.pseudo_labeller = MODELS.build(pseudo_labeller)
        self.affinity_loss, self.energy_loss, self.uncertain_loss, \
            self.certain_loss = (MODELS.build(c) if c else None
                                 for c in (affinity_loss, energy_loss,
                                           uncertain_loss, certain_loss))
        unknown = set(loss_start_iters or {}) - set(LOSS_STAGES)
        if unknown or mask_cam_source not in ('multi_scale', 'single_scale'):
            raise ValueError(
                f'unknown loss_start_iters keys {unknown} (expected a subset '
                f'of {LOSS_STAGES}) or mask_cam_source {mask_cam_source!r}')
        self.loss_start_iters = dict(dict.fromkeys(LOSS_STAGES, 0),
                                     **(loss_start_iters or {}))
        self.mask_cam_source = mask_cam_source
        self.stochastic_targets = stochastic_targets
        self.set_training_progress(0, 1)
        if self.with_fsr:
            self._init_fsr(mask_neck, aggregation_head)

    def _init_fsr(self, mask_neck: OptConfigType,
                  aggregation_head: OptConfigType) -> None:
        name = type(self.backbone).__name__
        missing = [a for a in FSR_BACKBONE_API
                   if getattr(self.backbone, a, None) is None]
        if mask_neck is None or aggregation_head is None or missing:
            raise TypeError(f'FSR losses need mask_neck, aggregation_head '
                            f'and a backbone with {FSR_BACKBONE_API}; {name} '
                            f'lacks {missing} (see MaskableViT)')
        if (self.mask_cam_source == 'multi_scale'
                and not stops_early(self.backbone)):
            raise TypeError(f"{name} cannot pick the mask with "
                            "mask_cam_source='multi_scale': its forward must "
                            'take full_depth_rows (see MaskableViT.forward)')
        patch_size = self.backbone.patch_size
        self.mask_neck = MODELS.build(
            dict(dict(patch_size=patch_size), **mask_neck))
        if self.mask_neck.patch_size != patch_size:
            raise ValueError(
                f'mask_neck.patch_size={self.mask_neck.patch_size} differs '
                f'from the backbone patch size {patch_size}')
        self.aggregation_head = MODELS.build(aggregation_head)
        self.teacher = EMATeacher(self._students(), self.stochastic_targets)

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
        """EMA step of the teacher (``FSRTeacherHook`` calls it)."""
        self.teacher.momentum_update(self._students(), momentum)

    def set_training_progress(self, cur_iter: int, max_iters: int) -> None:
        """Where training stands (``FSRTeacherHook`` sets it every iter).

        Raises:
            ValueError: If a loss would start after the last iteration.
        """
        self.cur_iter, self.max_iters = cur_iter, max_iters
        self.loss_starts = {k: iteration_of(v, max_iters)
                            for k, v in self.loss_start_iters.items()}
        late = {k: v for k, v in self.loss_starts.items() if v > max_iters}
        if late and max_iters > 1:
            raise ValueError(f'loss_start_iters {late} lie past max_iters='
                             f'{max_iters}: those losses would never start')

    # ------------------------------------------------------------ training
    def loss(self, inputs: Tensor, data_samples: SampleList) -> dict:
        """All training losses from image-level labels (Figure 2).

        Args:
            inputs (Tensor): Two views, (B, 2, 3, H, W).
            data_samples (list[SegDataSample]): With ``gt_class_labels``.

        Returns:
            dict[str, Tensor]: Every loss term, logged separately.
        """
        view1, view2 = self._views(inputs)
        labels = stack_image_labels(data_samples, self.num_classes)
        on = self._started_losses()
        cams, aux_cams, mask_cams = self._pseudo_label_cams(view1, view2, on)
        targets = self._teacher_targets(view1, view2) if on['fsr'] else {}
        token_mask = self._token_mask(mask_cams, targets, labels, on)
        student1, student2 = self._student(view1, view2, token_mask)
        losses = self.cam_head.loss(student1.final, student1.aux, labels)
        if on['seg']:
            losses.update(self._decoder_losses(view1, student1, cams, labels,
                                               data_samples))
        if on['aff']:
            losses.update(self._affinity_loss(student1, aux_cams, labels))
        if on['fsr']:
            losses.update(self._fsr_losses(student2, token_mask, targets))
        return losses

    def _views(self, inputs: Tensor) -> Tuple[Tensor, Tensor]:
        if inputs.dim() != 5 or inputs.shape[1] != 2:
            raise ValueError('FSRSegmentor trains on two views, (B, 2, 3, H, '
                             f'W), got {tuple(inputs.shape)}: use '
                             'WSSSDataPreProcessor')
        patch = getattr(self.backbone, 'patch_size', 1)
        if inputs.shape[-2] % patch or inputs.shape[-1] % patch:
            raise ValueError(f'crop size {tuple(inputs.shape[-2:])} is not a '
                             f'multiple of the backbone patch size {patch}')
        return inputs[:, 0], inputs[:, 1]

    def _started_losses(self) -> Dict[str, bool]:
        on = {k: self.cur_iter >= v for k, v in self.loss_starts.items()}
        on['aff'] &= self.affinity_loss is not None
        on['fsr'] &= self.with_fsr
        on['mask_cams'] = on['fsr'] and self.mask_neck.uses_cam(
            self.cur_iter, self.max_iters)
        return on

    def _pseudo_label_cams(self, view1: Tensor, view2: Tensor,
                           on: dict) -> Tuple[Optional[Tensor], ...]:
        """One CAM pass over what a started loss reads: view 1 (final CAM
        for the decoder, auxiliary for affinity), view 2's auxiliary CAM for
        the mask."""
        from_view2 = on['mask_cams'] and self.mask_cam_source == 'multi_scale'
        images = [view1] * (on['seg'] or on['aff']) + [view2] * from_view2
        if not images:
            return None, None, None
        was_training = self.backbone.training
        self.backbone.train(was_training and self.stochastic_targets)
        cams, aux_cams = self.pseudo_labeller.multi_scale_cams(
            self.backbone, self.cam_head, torch.cat(images),
            len(view1) if on['seg'] else 0)
        self.backbone.train(was_training)
        return cams, aux_cams, aux_cams[-len(view2):] if from_view2 else None

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

    def _decoder_losses(self, images: Tensor, student: ViewFeatures,
                        cams: Tensor, labels: Tensor,
                        data_samples: SampleList) -> Dict[str, Tensor]:
        """Decoder (and energy) losses against PAR-refined pseudo labels."""
        mean, std = self._input_mean_std()
        pseudo = self.pseudo_labeller.pseudo_labels(
            to_8bit_rgb(images, mean, std), cams, labels)
        for label, sample in zip(pseudo, data_samples):
            height, width = sample.metainfo.get('img_shape', label.shape)[:2]
            label[height:] = label[:, width:] = (  # batch padding
                self.pseudo_labeller.ignore_index)
        seg_logits = self.decode_head(student.maps)
        losses = add_prefix(
            self.decode_head.loss_by_feat(seg_logits, [
                SegDataSample(gt_sem_seg=PixelData(data=p[None]))
                for p in pseudo
            ]), 'decode')
        if self.energy_loss is not None:
            losses[self.energy_loss.loss_name] = self.energy_loss(
                images, resize(seg_logits, images.shape[-2:], mode='bilinear',
                               align_corners=self.align_corners), pseudo,
                mean, std)
        return losses

    def _affinity_loss(self, student: ViewFeatures, aux_cams: Tensor,
                       labels: Tensor) -> Dict[str, Tensor]:
        token_labels = self.pseudo_labeller.token_labels(
            aux_cams[:len(student.final)], labels, student.final.shape[-2:])
        return {self.affinity_loss.loss_name:
                self.affinity_loss(student.final, token_labels)}

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

    def _input_mean_std(self) -> Tuple[Tensor, Tensor]:
        """The pre-processor's normalisation, (3, 1, 1) each."""
        pre = self.data_preprocessor
        if getattr(pre, '_enable_normalize', False):
            return pre.mean, pre.std
        one = self.cam_head.classifier.weight.new_ones(3, 1, 1)
        return one * 0, one

    # ----------------------------------------------------------- inference
    def predict(self,
                inputs: Tensor,
                data_samples: OptSampleList = None) -> SampleList:
        """Decoder segmentation, plus CAM labels on request.

        With ``test_cfg.output_cams=True`` every sample also gets, at its
        original size and from its image-level labels, ``pred_cams``
        (C, H, W), ``pred_cam_label`` and ``pred_aux_cam_label`` (CAMs as
        labels) and ``pred_par_label`` (the decoder's PAR pseudo label).
        """
        results = super().predict(inputs, data_samples)
        if self.test_cfg.get('output_cams', False):
            labels = stack_image_labels(results, self.num_classes,
                                        allow_empty=True)
            self.pseudo_labeller.add_predictions(self.backbone, self.cam_head,
                                                 inputs, results, labels,
                                                 *self._input_mean_std())
        return results

    def _forward(self,
                 inputs: Tensor,
                 data_samples: OptSampleList = None) -> Tensor:
        """Decoder logits of view 1 (tensor mode), (B, K, h, w)."""
        if inputs.dim() == 5:
            inputs = inputs[:, 0]
        return super()._forward(inputs, data_samples)
