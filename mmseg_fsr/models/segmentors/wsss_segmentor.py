"""Single-stage WSSS from image-level labels: the ToCo parts FSR builds on."""
import logging
from typing import Dict, Optional, Tuple

import torch
from mmengine.logging import print_log
from mmengine.structures import PixelData
from mmseg.models.segmentors import EncoderDecoder
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import (ConfigType, OptConfigType, OptMultiConfig,
                         OptSampleList, SampleList, add_prefix)
from torch import Tensor

from ..pseudo_labellers import to_8bit_rgb
from ..utils import (ViewFeatures, iteration_of, runner_training_progress,
                     stack_image_labels)


@MODELS.register_module()
class WSSSSegmentor(EncoderDecoder):
    """Classification, CAM pseudo labels, decoder and affinity losses.

    The single-stage machinery of ToCo, usable alone (the baseline) and
    extended by ``FSRSegmentor``: CAM classifiers, the pseudo labeller, the
    decoder trained on PAR pseudo labels (plus the dense energy term), the
    patch token contrast, losses that start late, and inference with CAM
    label maps.

    Under mmengine's Runner the model follows the run by itself: before
    every training step it reads the iteration and ``max_iters`` that the
    Runner publishes (:func:`runner_training_progress`), whatever hooks the
    config lists. Outside a Runner, :meth:`set_training_progress` says
    where training stands.

    Args:
        backbone, decode_head (dict): As ``EncoderDecoder``; the decoder's
            ``num_classes`` counts background.
        cam_head (dict): ``CAMHead``; ``num_classes`` is derived.
        pseudo_labeller (dict): ``CAMPseudoLabeller``.
        affinity_loss, energy_loss (dict, optional): Patch token contrast;
            the dense energy regulariser (from the decoder's start).
        loss_start_iters (dict, optional): First iteration (int) or fraction
            of the run (float) of each loss in ``loss_stages``.
        stochastic_targets (bool): CAM passes in train mode (drop path on),
            as the authors' code; False: eval mode.
        idle_decoder_steps (bool): Before the decoder's start, give its
            parameters zero gradients, so that the optimiser steps them
            (AdamW: weight decay, and the step count its bias correction
            reads), as the authors' loop does by computing the decoder
            loss at weight 0; False: the decoder joins the optimiser's
            steps at its start.
        train_cfg, test_cfg, data_preprocessor, pretrained, init_cfg: As
            ``EncoderDecoder``; ``test_cfg.output_cams`` adds CAM labels;
            ``test_cfg.max_tokens`` is the token budget of one image (see
            :meth:`inference`); the pre-processor is a
            ``WSSSDataPreProcessor``.
    """

    loss_stages: Tuple[str, ...] = ('seg', 'aff')

    def __init__(self,
                 backbone: ConfigType,
                 decode_head: ConfigType,
                 cam_head: ConfigType,
                 pseudo_labeller: ConfigType = dict(type='CAMPseudoLabeller'),
                 affinity_loss: OptConfigType = dict(
                     type='PatchTokenContrastLoss', loss_weight=0.2),
                 energy_loss: OptConfigType = None,
                 loss_start_iters: OptConfigType = None,
                 stochastic_targets: bool = True,
                 idle_decoder_steps: bool = True,
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
                'wrong class count: cam_head.num_classes must be '
                f'decode_head.num_classes - 1 = {self.num_classes - 1}, got '
                f'{self.cam_head.num_classes}')
        self.data_preprocessor.num_classes = self.num_classes
        self.pseudo_labeller = MODELS.build(pseudo_labeller)
        self.affinity_loss = MODELS.build(
            affinity_loss) if affinity_loss else None
        self.energy_loss = MODELS.build(energy_loss) if energy_loss else None
        unknown = set(loss_start_iters or {}) - set(self.loss_stages)
        if unknown:
            raise ValueError(f'unknown loss_start_iters keys {unknown}, '
                             f'expected a subset of {self.loss_stages}')
        self.loss_start_iters = dict(
            dict.fromkeys(self.loss_stages, 0), **(loss_start_iters or {}))
        self.stochastic_targets = stochastic_targets
        self.idle_decoder_steps = idle_decoder_steps
        self._progress_given = False
        self._checked_dataset_meta = None
        self._apply_progress(0, 1)
        if self.test_cfg and self.test_cfg.get('max_tokens') and (
                'crop_size' not in self.test_cfg
                or 'stride' not in self.test_cfg):
            raise ValueError(
                'test_cfg.max_tokens needs test_cfg.crop_size and '
                'test_cfg.stride: the windows of the sliding-window '
                'inference used beyond the budget')

    def set_training_progress(self, cur_iter: int, max_iters: int) -> None:
        """Say where training stands, for training outside mmengine's
        Runner (tools, tests); from then on it replaces the Runner's.

        Args:
            cur_iter (int): The 0-based iteration about to run.
            max_iters (int): The length of the run.
        """
        self._progress_given = True
        self._apply_progress(cur_iter, max_iters)

    def update_training_progress(self) -> None:
        """Before a training step, take the Runner's iteration (unless
        :meth:`set_training_progress` gave one) and, once per run, check the
        class count against the training data set's.

        Raises:
            RuntimeError: Outside a Runner's training loop without
                :meth:`set_training_progress`.
            ValueError: On a class count that differs from the data's.
        """
        if self._progress_given:
            return
        progress = runner_training_progress()
        if progress is None:
            raise RuntimeError(
                f'{type(self).__name__} trains from the iteration that '
                "mmengine's Runner publishes (RuntimeInfoHook: MessageHub "
                "info 'iter' and 'max_iters') and found none: train it with "
                "the Runner and keep default_hooks' runtime_info, or call "
                'model.set_training_progress(cur_iter, max_iters) before '
                'each step')
        if progress.dataset_meta is not self._checked_dataset_meta:
            self._check_class_count(progress.dataset_meta or {})
            self._checked_dataset_meta = progress.dataset_meta
        self._apply_progress(progress.cur_iter, progress.max_iters)

    def _check_class_count(self, dataset_meta: dict) -> None:
        classes = dataset_meta.get('classes')
        if classes is not None and len(classes) != self.num_classes:
            raise ValueError(
                f'wrong class count: the training data has {len(classes)} '
                f'classes (background included), the model '
                f'num_classes={self.num_classes}')

    def _apply_progress(self, cur_iter: int, max_iters: int) -> None:
        """Resolve the loss starts for this run.

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

    def _views(self, inputs: Tensor) -> Tuple[Tensor, Tensor]:
        patch = getattr(self.backbone, 'patch_size', 1)
        if inputs.dim() != 5 or inputs.shape[1] != 2 or \
                inputs.shape[-2] % patch or inputs.shape[-1] % patch:
            raise ValueError(
                f'{type(self).__name__} trains on two views (B, 2, 3, H, W) '
                '(WSSSDataPreProcessor) with a crop size that is a multiple '
                f'of the backbone patch size {patch}, got '
                f'{tuple(inputs.shape)}')
        return inputs[:, 0], inputs[:, 1]

    def loss(self, inputs: Tensor, data_samples: SampleList) -> dict:
        """The baseline's training losses from image-level labels.

        Args:
            inputs (Tensor): Two views, (B, 2, 3, H, W); the baseline
                trains on the first.
            data_samples (list[SegDataSample]): With ``gt_class_labels``.

        Returns:
            dict[str, Tensor]: Every loss term, logged separately.
        """
        view1, _ = self._views(inputs)
        self.update_training_progress()
        labels = stack_image_labels(data_samples, self.num_classes)
        on = self._started_losses()
        cams, aux_cams, _ = self._pseudo_label_cams(view1, on)
        student = ViewFeatures(self.backbone(view1))
        return self._baseline_losses(view1, student, cams, aux_cams, labels,
                                     data_samples, on)

    def _baseline_losses(self, view1: Tensor, student: ViewFeatures,
                         cams: Optional[Tensor], aux_cams: Optional[Tensor],
                         labels: Tensor, data_samples: SampleList,
                         on: Dict[str, bool]) -> Dict[str, Tensor]:
        """Classification of view 1, then its decoder and affinity losses
        once they have started."""
        losses = self.cam_head.loss(student.final, student.aux, labels)
        if on['seg']:
            losses.update(self._decoder_losses(view1, student, cams, labels,
                                               data_samples))
        elif self.idle_decoder_steps:
            # zero gradients, not none: AdamW steps the idle decoder as the
            # authors' weight-0 loss makes it (its first real updates then
            # reach several times the lr); folded into a logged term so the
            # loss keys stay the same
            first = next(k for k in losses if 'loss' in k)
            losses[first] = losses[first] + sum(
                p.sum() for p in self.decode_head.parameters()
                if p.requires_grad) * 0.0
        if on['aff']:
            losses.update(self._affinity_loss(student, aux_cams, labels))
        return losses

    def _started_losses(self) -> Dict[str, bool]:
        on = {k: self.cur_iter >= v for k, v in self.loss_starts.items()}
        on['aff'] &= self.affinity_loss is not None
        return on

    def _pseudo_label_cams(
            self,
            view1: Tensor,
            on: Dict[str, bool],
            view2: Optional[Tensor] = None) -> Tuple[Optional[Tensor], ...]:
        """One CAM pass over what a started loss reads: view 1 (final CAM
        for the decoder, auxiliary for affinity) and, when given, view 2's
        auxiliary CAM (FSR's mask)."""
        images = [view1] * (on['seg'] or on['aff']) + [view2] * (
            view2 is not None)
        if not images:
            return None, None, None
        was_training = self.backbone.training
        self.backbone.train(was_training and self.stochastic_targets)
        cams, aux_cams = self.pseudo_labeller.multi_scale_cams(
            self.backbone, self.cam_head, torch.cat(images),
            len(view1) if on['seg'] else 0)
        self.backbone.train(was_training)
        return cams, aux_cams, (aux_cams[-len(view2):]
                                if view2 is not None else None)

    def _decoder_losses(self, images: Tensor, student: ViewFeatures,
                        cams: Tensor, labels: Tensor,
                        data_samples: SampleList) -> Dict[str, Tensor]:
        """Decoder (and energy) losses against PAR-refined pseudo labels."""
        mean, std = self.data_preprocessor.mean_std()
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

    @torch.no_grad()
    def training_maps(self, images: Tensor,
                      img_labels: Tensor) -> Dict[str, Tensor]:
        """What training derives from one view, to look at.

        Runs in the model's current mode; ``WSSSVisualizationHook`` calls it
        in eval mode.

        Args:
            images (Tensor): Normalised images of one view, (B, 3, H, W).
            img_labels (Tensor): Multi-hot labels, (B, C).

        Returns:
            dict[str, Tensor]: ``cams`` and ``aux_cams``, the multi-scale
            final and auxiliary CAMs in [0, 1], (B, C, H, W);
            ``pseudo_label``, the decoder's PAR-refined target (ignore band
            included), and ``prediction``, the decoder's argmax, (B, H, W).
        """
        cams, aux_cams = self.pseudo_labeller.multi_scale_cams(
            self.backbone, self.cam_head, images)
        pseudo = self.pseudo_labeller.pseudo_labels(
            to_8bit_rgb(images, *self.data_preprocessor.mean_std()), cams,
            img_labels)
        logits = self.encode_decode(
            images, [dict(img_shape=images.shape[-2:])] * len(images))
        return dict(cams=cams, aux_cams=aux_cams, pseudo_label=pseudo,
                    prediction=logits.argmax(1))

    def _over_budget(self, inputs: Tensor) -> bool:
        """Whether ``inputs`` hold more patch tokens per image than
        ``test_cfg.max_tokens``."""
        max_tokens = self.test_cfg.get('max_tokens')
        patch = getattr(self.backbone, 'patch_size', 1)
        height, width = inputs.shape[-2:]
        return bool(max_tokens) and \
            (height // patch) * (width // patch) > max_tokens

    def inference(self, inputs: Tensor, batch_img_metas: list) -> Tensor:
        """``EncoderDecoder.inference``; in 'whole' mode an input beyond the
        token budget ``test_cfg.max_tokens`` goes through the sliding
        window (``test_cfg.crop_size``, ``test_cfg.stride``) instead.

        Attention memory grows with the square of the token count (a
        4000x3000 image at patch 16 would need hundreds of GB), so the
        budget bounds what one image can ask for. Inputs within the budget
        are predicted exactly as without it.
        """
        if self.test_cfg.get('mode', 'whole') == 'whole' and \
                self._over_budget(inputs):
            print_log(
                f'{", ".join(str(m.get("img_path")) for m in batch_img_metas)}'
                f': {tuple(inputs.shape[-2:])} px is beyond test_cfg.'
                f'max_tokens={self.test_cfg["max_tokens"]}: sliding-window '
                f'inference (crop {self.test_cfg["crop_size"]}, stride '
                f'{self.test_cfg["stride"]})',
                logger='current', level=logging.INFO)
            return self.slide_inference(inputs, batch_img_metas)
        return super().inference(inputs, batch_img_metas)

    def predict(self,
                inputs: Tensor,
                data_samples: OptSampleList = None) -> SampleList:
        """Decoder segmentation, plus (``test_cfg.output_cams``) the CAM
        label maps of ``CAMPseudoLabeller.add_predictions`` for the images
        with image-level labels (or masks); bare images get the decoder's
        segmentation alone. An error names the images it happened on."""
        try:
            return self._predict(inputs, data_samples)
        except Exception as err:
            names = [str(s.metainfo.get('img_path')) for s in data_samples
                     ] if data_samples else ['(no data samples)']
            err.add_note(f'{type(self).__name__}.predict: while predicting '
                         f'{", ".join(names)} (input '
                         f'{tuple(inputs.shape)})')
            raise

    def _predict(self, inputs: Tensor,
                 data_samples: OptSampleList) -> SampleList:
        results = super().predict(inputs, data_samples)
        if not self.test_cfg.get('output_cams', False):
            return results
        rows = [
            i for i, result in enumerate(results)
            if {'gt_class_labels', 'gt_sem_seg'} & set(result.keys())
        ]
        if rows:
            labelled = [results[i] for i in rows]
            labels = stack_image_labels(labelled, self.num_classes,
                                        allow_empty=True)
            self.pseudo_labeller.add_predictions(
                self.backbone, self.cam_head, inputs[rows], labelled, labels,
                *self.data_preprocessor.mean_std(),
                max_tokens=self.test_cfg.get('max_tokens'))
        return results

    def _forward(self,
                 inputs: Tensor,
                 data_samples: OptSampleList = None) -> Tensor:
        """Decoder logits of view 1 (tensor mode), (B, K, h, w)."""
        if inputs.dim() == 5:
            inputs = inputs[:, 0]
        return super()._forward(inputs, data_samples)
