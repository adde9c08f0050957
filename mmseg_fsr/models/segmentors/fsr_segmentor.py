"""The single-stage WSSS framework of FSR (Figure 2 of the paper)."""
import copy
import inspect
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.models.segmentors import EncoderDecoder
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import (ConfigType, OptConfigType, OptMultiConfig,
                         OptSampleList, SampleList, add_prefix)
from torch import Tensor

from ..utils import (PixelAdaptiveRefiner, cams_to_labels,
                     cams_to_pseudo_labels, flip_fused_cam, min_max_normalize,
                     refine_pseudo_labels)

_LOSS_STAGES = ('seg', 'aff', 'fsr')
_MASK_CAM_SOURCES = ('multi_scale', 'single_scale')


@MODELS.register_module()
class FSRSegmentor(EncoderDecoder):
    """Single-stage WSSS segmentor with feature self-reinforcement.

    One training iteration, all from image-level labels:

    - view 1 -> backbone -> ``cam_head`` classification losses (final and
      auxiliary layer); its multi-scale CAMs give PAR-refined pseudo labels
      for ``decode_head`` and token labels for ``affinity_loss``;
    - view 2 -> ``mask_neck`` (uncertain tokens from its CAM) -> masked
      backbone -> ``aggregation_head``; compared with the EMA ``teacher`` on
      the unmasked views by ``uncertain_loss`` (Eq. 8) and ``certain_loss``
      (Eq. 9).

    Without ``uncertain_loss`` and ``certain_loss`` this is the ToCo-style
    baseline. Inference is the stock ``EncoderDecoder`` on the decoder.

    The backbone must return ``(aux_tokens, ..., final_tokens)`` maps of
    shape (B, D, h, w) (``out_indices`` = (auxiliary layer, last layer)) and,
    for FSR, provide ``forward_with_tokens(inputs, token_mask)``,
    ``normalize_tokens``, a ``cls_token`` parameter (the aggregation query)
    and (for ``mask_cam_source='multi_scale'``) ``forward(inputs,
    full_depth_rows=n)`` like ``MaskableViT``.

    Training batches come either from the two-view WSSS pipeline (inputs
    (B, 2, 3, H, W), ``gt_class_labels`` in every sample) or from any stock
    mmseg pipeline (inputs (B, 3, H, W) and ``gt_sem_seg``): then view 2 is
    a random resized crop and flip made on the device, and the label vector
    is the set of classes in each sample's mask (a background-only crop is a
    valid all-negative sample there).

    Args:
        backbone (dict): Backbone config.
        decode_head (dict): Decode head config (any mmseg decode head);
            ``num_classes`` counts background.
        cam_head (dict): ``CAMHead`` config; ``num_classes`` counts the
            foreground classes only.
        mask_neck (dict, optional): ``UncertaintyMaskingNeck`` config.
        aggregation_head (dict, optional): ``MCAAggregationHead`` config.
        uncertain_loss (dict, optional): ``FSRUncertainLoss`` config.
        certain_loss (dict, optional): ``FSRCertainLoss`` config.
        affinity_loss (dict, optional): ``PatchTokenContrastLoss`` config.
        energy_loss (dict, optional): ``DenseEnergyLoss`` config: the dense
            CRF regulariser of the decoder output, on from the decoder's
            start (the authors' ``w_reg``).
        pseudo_label_cfg (dict, optional): ``cam_scales``, ``high_thr``,
            ``low_thr``, ``ignore_index``, ``par`` (``PixelAdaptiveRefiner``
            kwargs) and ``par_down_scale``.
        loss_start_iters (dict, optional): First iteration of the ``seg``,
            ``aff`` and ``fsr`` losses; before it no work is done for them.
        mask_cam_source (str): CAM that picks the masked tokens of view 2:
            'multi_scale' (the reference: multi-scale auxiliary CAM of view
            2, batched with view 1's) or 'single_scale' (Eq. 2 on the
            teacher's unmasked forward pass of view 2, which FSR computes
            anyway, with the student's auxiliary classifier: no extra pass).
        second_view_cfg (dict, optional): ``scale`` and ``ratio`` ranges of
            the on-device crop made for single-view batches.
        stochastic_targets (bool): Run the CAM passes (mask, pseudo labels)
            and the teacher in train mode, so that drop path acts on them,
            as the authors' code does. False runs them in eval mode.
    """

    def __init__(self,
                 backbone: ConfigType,
                 decode_head: ConfigType,
                 cam_head: ConfigType,
                 mask_neck: OptConfigType = None,
                 aggregation_head: OptConfigType = None,
                 uncertain_loss: OptConfigType = None,
                 certain_loss: OptConfigType = None,
                 affinity_loss: OptConfigType = dict(
                     type='PatchTokenContrastLoss', loss_weight=0.2),
                 energy_loss: OptConfigType = None,
                 pseudo_label_cfg: OptConfigType = None,
                 loss_start_iters: OptConfigType = None,
                 mask_cam_source: str = 'multi_scale',
                 second_view_cfg: OptConfigType = None,
                 stochastic_targets: bool = True,
                 train_cfg: OptConfigType = None,
                 test_cfg: OptConfigType = None,
                 data_preprocessor: OptConfigType = None,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(
            backbone=backbone,
            decode_head=decode_head,
            train_cfg=train_cfg,
            test_cfg=test_cfg,
            data_preprocessor=data_preprocessor,
            init_cfg=init_cfg)
        self.cam_head = MODELS.build(cam_head)
        if self.cam_head.num_classes != self.num_classes - 1:
            raise ValueError(
                'wrong class count: cam_head.num_classes must be the number '
                'of foreground classes, decode_head.num_classes - 1 = '
                f'{self.num_classes - 1}, got {self.cam_head.num_classes}')
        self.affinity_loss = MODELS.build(
            affinity_loss) if affinity_loss else None
        self.energy_loss = MODELS.build(energy_loss) if energy_loss else None

        self.pseudo_label_cfg = dict(
            cam_scales=(1.0, 0.5, 1.5),
            high_thr=0.7,
            low_thr=0.25,
            ignore_index=255,
            par=dict(dilations=(1, 2, 4, 8, 12, 24), num_iter=10),
            par_down_scale=2)
        self.pseudo_label_cfg.update(pseudo_label_cfg or {})
        cfg = self.pseudo_label_cfg
        if not 0 <= cfg['low_thr'] < cfg['high_thr'] <= 1:
            raise ValueError('CAM thresholds out of order: need 0 <= low_thr '
                             f'< high_thr <= 1, got low_thr={cfg["low_thr"]}'
                             f', high_thr={cfg["high_thr"]}')
        self.refiner = PixelAdaptiveRefiner(**cfg['par'])

        self.loss_start_iters = dict.fromkeys(_LOSS_STAGES, 0)
        unknown = set(loss_start_iters or {}) - set(_LOSS_STAGES)
        if unknown:
            raise ValueError(f'unknown loss_start_iters keys {unknown}, '
                             f'expected a subset of {_LOSS_STAGES}')
        self.loss_start_iters.update(loss_start_iters or {})
        if mask_cam_source not in _MASK_CAM_SOURCES:
            raise ValueError(f'mask_cam_source must be one of '
                             f'{_MASK_CAM_SOURCES}, got {mask_cam_source!r}')
        self.mask_cam_source = mask_cam_source
        self.second_view_cfg = dict(scale=(0.32, 1.0), ratio=(3 / 4, 4 / 3))
        self.second_view_cfg.update(second_view_cfg or {})
        self.stochastic_targets = stochastic_targets
        self.set_training_progress(0, 1)

        # A backbone whose forward takes full_depth_rows lets images of which
        # only the auxiliary CAM is read skip the last layers.
        self._backbone_stops_early = 'full_depth_rows' in inspect.signature(
            self.backbone.forward).parameters

        self.uncertain_loss = MODELS.build(
            uncertain_loss) if uncertain_loss else None
        self.certain_loss = MODELS.build(
            certain_loss) if certain_loss else None
        if self.with_fsr:
            if mask_neck is None or aggregation_head is None:
                raise ValueError('FSR losses need both mask_neck and '
                                 'aggregation_head')
            missing = [
                name for name in ('forward_with_tokens', 'normalize_tokens',
                                  'cls_token')
                if getattr(self.backbone, name, None) is None
            ]
            if missing:
                raise TypeError(
                    f'{type(self.backbone).__name__} cannot run FSR: the '
                    f'backbone lacks {missing} (see MaskableViT)')
            if (mask_cam_source == 'multi_scale'
                    and not self._backbone_stops_early):
                raise TypeError(
                    f'{type(self.backbone).__name__} cannot pick the mask '
                    "with mask_cam_source='multi_scale': its forward must "
                    'take full_depth_rows (see MaskableViT.forward)')
            self.mask_neck = MODELS.build(mask_neck)
            self.aggregation_head = MODELS.build(aggregation_head)
            # The teacher lives inside the model so that checkpoints carry
            # it; it is a ModuleDict, which BaseModule.init_weights skips,
            # so pretrained weights are loaded once and copied over.
            self.teacher = nn.ModuleDict(
                dict(
                    backbone=copy.deepcopy(self.backbone),
                    aggregation_head=copy.deepcopy(self.aggregation_head)))
            self.teacher.requires_grad_(False)

    @property
    def with_fsr(self) -> bool:
        """bool: Whether any feature self-reinforcement loss is on."""
        return self.uncertain_loss is not None or self.certain_loss is not None

    # ----------------------------------------------------------- teacher
    def init_weights(self) -> None:
        """Initialise the student, then start the teacher as its copy."""
        super().init_weights()
        if self.with_fsr:
            for student, teacher in self._teacher_pairs():
                teacher.load_state_dict(student.state_dict())

    def _teacher_pairs(self) -> List[Tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.teacher['backbone']),
                (self.aggregation_head, self.teacher['aggregation_head'])]

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """EMA step: ``teacher = m * teacher + (1 - m) * student``.

        One fused ``foreach`` call over all tensors instead of a Python loop
        (mmengine's ``ExponentialMovingAverage`` loops per parameter).

        Args:
            momentum (float): m, the weight of the old teacher, in [0, 1].
        """
        teacher, student = [], []
        for src, dst in self._teacher_pairs():
            for s, t in zip(src.state_dict().values(),
                            dst.state_dict().values()):
                if t.is_floating_point():
                    teacher.append(t)
                    student.append(s.detach())
                else:
                    t.copy_(s)
        torch._foreach_lerp_(teacher, student, 1.0 - momentum)

    def train(self, mode: bool = True) -> 'FSRSegmentor':
        """Switch modes; with ``stochastic_targets=False`` the teacher stays
        in eval mode."""
        super().train(mode)
        if self.with_fsr and not self.stochastic_targets:
            self.teacher.eval()
        return self

    def set_training_progress(self, cur_iter: int, max_iters: int) -> None:
        """Tell the model where training stands (``FSRTeacherHook`` does).

        Loss start iterations, the masking warm-up and the teacher
        temperature read it.

        Args:
            cur_iter (int): 0-based iteration about to run.
            max_iters (int): Length of training.
        """
        self.cur_iter, self.max_iters = cur_iter, max_iters

    # ------------------------------------------------------------- CAMs
    @contextmanager
    def _target_mode(self) -> Iterator[None]:
        # Deterministic targets: CAM passes without drop path.
        was_training = self.backbone.training
        if not self.stochastic_targets:
            self.backbone.eval()
        try:
            yield
        finally:
            self.backbone.train(was_training)

    @torch.no_grad()
    def multi_scale_cams(self,
                         inputs: Tensor,
                         num_final: Optional[int] = None
                         ) -> Tuple[Tensor, Tensor]:
        """Multi-scale, flip-fused CAMs of the final and auxiliary layers.

        For each scale in ``pseudo_label_cfg['cam_scales']`` the images and
        their flips go through the backbone in one batch; flipped maps are
        fused by max, scales are summed, then min-max normalised (Eq. 2).

        Args:
            inputs (Tensor): Images, shape (B, 3, H, W).
            num_final (int, optional): Only the first ``num_final`` images
                need the final CAM; the others stop at the auxiliary layer
                (the backbone's ``full_depth_rows``), which saves the last
                layers' work. Defaults to None: every image.

        Returns:
            tuple[Tensor, Tensor]: CAMs in [0, 1]: final (num_final, C, H, W)
            (of every image if the backbone cannot stop early) and auxiliary
            (B, C, H, W).
        """
        size = inputs.shape[-2:]
        num_images = len(inputs)
        backbone_kwargs = {}
        if (self._backbone_stops_early and num_final is not None
                and num_final < num_images):
            # the images that go on, and their flips, lead the batch
            backbone_kwargs['full_depth_rows'] = 2 * num_final
        else:
            num_final = num_images
        group_sizes = [n for n in (num_final, num_images - num_final) if n]
        cam_sum = aux_sum = 0
        with self._target_mode():
            for scale in self.pseudo_label_cfg['cam_scales']:
                scaled = inputs if scale == 1.0 else F.interpolate(
                    inputs,
                    size=[int(scale * s) for s in size],
                    mode='bilinear',
                    align_corners=False)
                # [x, flip(x), y, flip(y)]: x full depth, y auxiliary only
                outs = self.backbone(
                    torch.cat([
                        view for group in scaled.split(group_sizes)
                        for view in (group, group.flip(-1))
                    ]), **backbone_kwargs)
                cam, aux_cam = self.cam_head.cams(outs[-1], outs[0])
                cam_sum = cam_sum + flip_fused_cam(cam.float(), size)
                aux_sum = aux_sum + torch.cat([
                    flip_fused_cam(group.float(), size)
                    for group in aux_cam.split([2 * n for n in group_sizes])
                ])
        return min_max_normalize(cam_sum), min_max_normalize(aux_sum)

    # ------------------------------------------------------------ inputs
    def _image_labels(self,
                      data_samples: SampleList,
                      allow_empty: bool = False) -> Tensor:
        """Stack the image-level label vectors, (B, C).

        An empty label set is an error in training (``allow_empty=False``)
        but a valid all-background image when scoring or exporting CAMs.
        """
        num_fg = self.cam_head.num_classes
        ignore_index = self.pseudo_label_cfg['ignore_index']
        labels = []
        for sample in data_samples:
            path = sample.metainfo.get('img_path', '<unknown image>')
            if 'gt_class_labels' in sample:
                label = sample.gt_class_labels.float()
                if label.numel() != num_fg:
                    raise ValueError(
                        f'wrong class count: {path} has a label vector of '
                        f'{label.numel()} classes, the model has {num_fg} '
                        'foreground classes')
                if not (allow_empty or label.any()):
                    raise ValueError(
                        f'empty label set: {path} has no foreground class; '
                        'WSSS training needs at least one')
            elif 'gt_sem_seg' in sample:
                ids = sample.gt_sem_seg.data.unique()
                ids = ids[(ids != 0) & (ids != ignore_index)]
                if ids.numel() and ids.max() > num_fg:
                    raise ValueError(
                        f'wrong class count: the mask of {path} has class '
                        f'{int(ids.max())}, the model has {num_fg} '
                        'foreground classes')
                label = torch.zeros(num_fg, device=ids.device)
                label[ids.long() - 1] = 1
            else:
                raise ValueError(f'{path} has neither gt_class_labels nor '
                                 'gt_sem_seg: no image-level label')
            labels.append(label)
        return torch.stack(labels)

    def _check_input_size(self, inputs: Tensor) -> None:
        patch_size = getattr(self.backbone, 'patch_size', 1)
        height, width = inputs.shape[-2:]
        if height % patch_size or width % patch_size:
            raise ValueError(
                f'crop size {height}x{width} is not a multiple of the '
                f'backbone patch size {patch_size}')

    def _make_second_view(self, inputs: Tensor) -> Tensor:
        """Random resized crop and flip of every image, on the device."""
        height, width = inputs.shape[-2:]
        scale_lo, scale_hi = self.second_view_cfg['scale']
        log_ratio = torch.tensor(self.second_view_cfg['ratio']).log()
        views = []
        for image in inputs:
            area = height * width * (scale_lo +
                                     (scale_hi - scale_lo) * torch.rand(1))
            ratio = torch.exp(log_ratio[0] +
                              (log_ratio[1] - log_ratio[0]) * torch.rand(1))
            crop_h = int(min(height, max(1, (area / ratio).sqrt().round())))
            crop_w = int(min(width, max(1, (area * ratio).sqrt().round())))
            top = int(torch.randint(height - crop_h + 1, ()))
            left = int(torch.randint(width - crop_w + 1, ()))
            view = image[None, :, top:top + crop_h, left:left + crop_w]
            view = F.interpolate(
                view, size=(height, width), mode='bilinear',
                align_corners=False)
            if torch.rand(1) < 0.5:
                view = view.flip(-1)
            views.append(view)
        return torch.cat(views)

    # ------------------------------------------------------------ losses
    def loss(self, inputs: Tensor, data_samples: SampleList) -> dict:
        """Compute all training losses from image-level labels.

        Args:
            inputs (Tensor): (B, 2, 3, H, W) two views, or (B, 3, H, W).
            data_samples (list[SegDataSample]): With ``gt_class_labels`` or
                (stock pipelines) ``gt_sem_seg``.

        Returns:
            dict[str, Tensor]: Every loss term, logged separately.
        """
        img_labels = self._image_labels(data_samples)
        cur_iter, max_iters = self.cur_iter, self.max_iters
        active = {
            stage: cur_iter >= start
            for stage, start in self.loss_start_iters.items()
        }
        need_seg = active['seg']
        need_aff = active['aff'] and self.affinity_loss is not None
        need_fsr = active['fsr'] and self.with_fsr

        if inputs.dim() == 5:
            view1, view2 = inputs[:, 0], inputs[:, 1]
            valid_area = None
        else:
            view1 = inputs
            view2 = self._make_second_view(inputs) if need_fsr else None
            valid_area = [s.metainfo.get('img_shape') for s in data_samples]
        self._check_input_size(view1)
        batch_size = view1.shape[0]

        mask_needs_cam = need_fsr and self.mask_neck.uses_cam(
            cur_iter, max_iters)
        cams_from_view2 = (
            mask_needs_cam and self.mask_cam_source == 'multi_scale')
        # One CAM pass over the images whose CAMs a started loss reads: the
        # final CAM of view 1 for seg labels, else auxiliary CAMs only.
        cam_images = [view1] if need_seg or need_aff else []
        if cams_from_view2:
            cam_images.append(view2)
        cams = aux_cams = None
        if cam_images:
            cams, aux_cams = self.multi_scale_cams(
                torch.cat(cam_images), batch_size if need_seg else 0)

        token_mask = teacher_out = None
        if need_fsr:
            teacher_out = self._teacher_forward(view1, view2)
            if not mask_needs_cam:
                mask_cams = None
            elif cams_from_view2:
                mask_cams = aux_cams[-batch_size:]
            else:
                mask_cams = teacher_out['aux_cams']
            token_mask = self.mask_neck(mask_cams, img_labels,
                                        teacher_out['grid'])
            outs, tokens = self.backbone.forward_with_tokens(
                torch.cat([view1, view2]),
                torch.cat([torch.zeros_like(token_mask), token_mask]))
        else:
            outs = self.backbone(view1)
        feats = tuple(out[:batch_size] for out in outs)

        losses = self.cam_head.loss(feats[-1], feats[0], img_labels)
        if need_seg:
            losses.update(
                self._seg_loss(view1, feats, cams, img_labels, valid_area))
        if need_aff:
            token_labels = cams_to_pseudo_labels(
                resize(aux_cams[:batch_size], feats[-1].shape[-2:],
                       mode='bilinear', align_corners=False), img_labels,
                self.pseudo_label_cfg['high_thr'],
                self.pseudo_label_cfg['low_thr'],
                self.pseudo_label_cfg['ignore_index'])
            losses[self.affinity_loss.loss_name] = self.affinity_loss(
                feats[-1], token_labels)
        if need_fsr:
            losses.update(
                self._fsr_losses(outs[-1][batch_size:],
                                 tokens[batch_size:], token_mask,
                                 teacher_out))
        return losses

    def _input_mean_std(self) -> Tuple[Tensor, Tensor]:
        """The data pre-processor's normalisation, (3, 1, 1) each."""
        pre = self.data_preprocessor
        if getattr(pre, '_enable_normalize', False):
            return pre.mean, pre.std
        one = torch.ones(3, 1, 1, device=self.cam_head.classifier.weight.device)
        return one * 0, one

    def _par_images(self, images: Tensor) -> Tensor:
        """The images PAR compares colours of: 8-bit RGB in [0, 1].

        The network input is de-normalised and truncated to 8 bits, as the
        authors' ``denormalize_img2`` does.
        """
        mean, std = self._input_mean_std()
        images = images * std + mean
        return images.clamp(0, 255).to(torch.uint8).float() / 255

    def _seg_loss(self, images: Tensor, feats: Tuple[Tensor, ...],
                  cams: Tensor, img_labels: Tensor,
                  valid_area: Optional[List[tuple]]) -> Dict[str, Tensor]:
        """Decoder losses against PAR-refined CAM pseudo labels."""
        cfg = self.pseudo_label_cfg
        pseudo_labels = refine_pseudo_labels(self.refiner,
                                             self._par_images(images),
                                             cams, img_labels,
                                             cfg['high_thr'], cfg['low_thr'],
                                             cfg['ignore_index'],
                                             cfg['par_down_scale'])
        samples = []
        for i, label in enumerate(pseudo_labels):
            if valid_area is not None and valid_area[i] is not None:
                # Padding added by a stock pipeline is not image content.
                height, width = valid_area[i][:2]
                label[height:, :] = cfg['ignore_index']
                label[:, width:] = cfg['ignore_index']
            samples.append(
                SegDataSample(gt_sem_seg=PixelData(data=label[None])))
        seg_logits = self.decode_head(feats)
        losses = add_prefix(
            self.decode_head.loss_by_feat(seg_logits, samples), 'decode')
        if self.energy_loss is not None:
            losses[self.energy_loss.loss_name] = self.energy_loss(
                images,
                resize(seg_logits, images.shape[-2:], mode='bilinear',
                       align_corners=self.align_corners), pseudo_labels,
                *self._input_mean_std())
        return losses

    def _certain_token(self, backbone: nn.Module, head: nn.Module,
                       tokens: Tensor,
                       token_mask: Optional[Tensor]) -> Tensor:
        """Projected aggregated token: P(norm(A(tokens))), (B, K).

        The backbone's class token is the query and its final norm is shared
        with the patch tokens, as the authors' encoder norms
        ``[class token; patch tokens]`` together.
        """
        aggregated = head.aggregate(tokens, backbone.cls_token[:, 0],
                                    token_mask)
        return head.project(backbone.normalize_tokens(aggregated))

    @torch.no_grad()
    def _teacher_forward(self, view1: Tensor, view2: Tensor) -> dict:
        """Teacher targets from the unmasked views, only those a loss reads.

        Returns:
            dict: ``grid`` (h, w); ``certain`` (B, K) projected aggregated
            token of view 1; ``patches`` (B, N, K) projected patch tokens of
            view 2; and, for ``mask_cam_source='single_scale'``,
            ``aux_cams`` (B, C, h, w) normalised CAMs of view 2.
        """
        backbone = self.teacher['backbone']
        head = self.teacher['aggregation_head']
        needs_view2 = (self.uncertain_loss is not None
                       or self.mask_cam_source == 'single_scale')
        views = [view1] if self.certain_loss is not None else []
        if needs_view2:
            views.append(view2)
        outs, tokens = backbone.forward_with_tokens(torch.cat(views))
        batch_size = view1.shape[0]
        result = dict(grid=tuple(outs[-1].shape[-2:]))
        if self.certain_loss is not None:
            result['certain'] = self._certain_token(backbone, head,
                                                    tokens[:batch_size], None)
        if self.uncertain_loss is not None:
            result['patches'] = head.project(
                outs[-1][-batch_size:].flatten(2).transpose(1, 2))
        if self.mask_cam_source == 'single_scale':
            _, aux_cam = self.cam_head.cams(outs[-1][-batch_size:],
                                            outs[0][-batch_size:])
            result['aux_cams'] = min_max_normalize(aux_cam)
        return result

    def _fsr_losses(self, final_v2: Tensor, tokens_v2: Tensor,
                    token_mask: Tensor,
                    teacher_out: dict) -> Dict[str, Tensor]:
        """Eq. 8 and Eq. 9 on the masked view 2.

        Args:
            final_v2 (Tensor): Final (normed) maps of view 2, (B, C, h, w).
            tokens_v2 (Tensor): Its last-layer tokens before the final norm,
                (B, N, C).
            token_mask (Tensor): Bool, (B, N).
            teacher_out (dict): See :meth:`_teacher_forward`.
        """
        losses = {}
        progress = (self.cur_iter, self.max_iters)
        if self.certain_loss is not None:
            student = self._certain_token(self.backbone,
                                          self.aggregation_head, tokens_v2,
                                          token_mask)
            losses[self.certain_loss.loss_name] = self.certain_loss(
                student, teacher_out['certain'], *progress)
        if self.uncertain_loss is not None:
            # Eq. 8 reads the masked tokens only: project just those.
            patches = final_v2.flatten(2).transpose(1, 2)
            student = self.aggregation_head.project(patches[token_mask])
            losses[self.uncertain_loss.loss_name] = self.uncertain_loss(
                student, teacher_out['patches'], token_mask, *progress)
        return losses

    # --------------------------------------------------------- inference
    def predict(self,
                inputs: Tensor,
                data_samples: OptSampleList = None) -> SampleList:
        """Decoder segmentation, plus CAM pseudo labels on request.

        With ``test_cfg.output_cams=True`` every sample also gets
        ``pred_cams`` (C, H, W) normalised multi-scale CAMs,
        ``pred_cam_label`` (the CAMs thresholded at
        ``test_cfg.cam_bg_thr``) and ``pred_par_label`` (PAR-refined pseudo
        label, ignore band included) at the original image size, from the
        sample's image-level labels (``gt_class_labels`` or ``gt_sem_seg``).

        Args:
            inputs (Tensor): Images, shape (B, 3, H, W).
            data_samples (list[SegDataSample], optional): Meta information.

        Returns:
            list[SegDataSample]: ``pred_sem_seg`` and ``seg_logits``, and
            the CAM labels when asked for.
        """
        results = super().predict(inputs, data_samples)
        if self.test_cfg.get('output_cams', False):
            self._add_cam_predictions(inputs, results)
        return results

    def _add_cam_predictions(self, inputs: Tensor,
                             data_samples: SampleList) -> None:
        cfg = self.pseudo_label_cfg
        img_labels = self._image_labels(data_samples, allow_empty=True)
        cams, _ = self.multi_scale_cams(inputs)
        for i, sample in enumerate(data_samples):
            left, right, top, bottom = sample.metainfo.get(
                'padding_size', [0] * 4)
            height, width = inputs.shape[-2:]
            unpadded = (slice(i, i + 1), slice(None),
                        slice(top, height - bottom),
                        slice(left, width - right))
            cam, image = (
                resize(x[unpadded], sample.metainfo['ori_shape'],
                       mode='bilinear', align_corners=False)
                for x in (cams, inputs))
            if sample.metainfo.get('flip', False):
                dims = (-1, ) if sample.metainfo.get(
                    'flip_direction') == 'horizontal' else (-2, )
                cam, image = cam.flip(dims), image.flip(dims)
            label = img_labels[i:i + 1]
            bg_thr = self.test_cfg.get('cam_bg_thr', 0.45)
            sample.pred_cams = PixelData(data=cam[0])
            sample.pred_cam_label = PixelData(
                data=cams_to_labels(cam, label, bg_thr))
            sample.pred_par_label = PixelData(
                data=refine_pseudo_labels(self.refiner,
                                          self._par_images(image), cam, label,
                                          cfg['high_thr'], cfg['low_thr'],
                                          cfg['ignore_index'],
                                          cfg['par_down_scale']))

    def _forward(self,
                 inputs: Tensor,
                 data_samples: OptSampleList = None) -> Tensor:
        """Decoder logits of view 1 (tensor mode), (B, K, h, w)."""
        if inputs.dim() == 5:
            inputs = inputs[:, 0]
        return super()._forward(inputs, data_samples)
