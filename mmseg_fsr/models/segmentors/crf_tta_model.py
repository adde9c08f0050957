"""Multi-scale + flip test-time augmentation with dense-CRF refinement."""
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from mmengine.structures import PixelData
from mmseg.models.segmentors.seg_tta import SegTTAModel
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import SampleList

from ..utils.dense_crf import crf_from_image_file, import_pydensecrf

_MERGE_MODES = ('max', 'mean')
# Fields the merge writes itself; every other data field of the first
# augmented view (ground truth, CAM outputs) is carried over.
_MERGED_FIELDS = ('seg_logits', 'seg_probs', 'pred_sem_seg')
_LABEL_FIELDS = ('gt_sem_seg', 'gt_class_labels')


def _unlabelled(sample: SegDataSample) -> SegDataSample:
    """A view without labels: the merged sample keeps the first view's
    labels and CAM outputs, so the segmentor runs its CAM pass for that view
    alone instead of once per view."""
    view = SegDataSample(metainfo=sample.metainfo)
    for key in sample.keys():
        if key not in _LABEL_FIELDS:
            view.set_field(sample.get(key), key)
    return view


@MODELS.register_module()
class CRFSegTTAModel(SegTTAModel):
    """FSR's test: multi-scale + flip inference, then a dense CRF.

    Used by ``tools/test.py --tta`` with a ``tta_pipeline`` built from
    mmseg's ``TestTimeAug`` (scales x flips). The wrapped segmentor's
    ``postprocess_result`` already returns every augmented view's logits
    un-padded, un-flipped and resized to the original image size, so the
    views are merged pixel-wise:

    - ``merge='max'`` (the reference): the logits of the views with the same
      scale (an image and its flip) are summed, scales are fused by an
      element-wise max, then softmax;
    - ``merge='mean'`` (mmseg's ``SegTTAModel``): mean of the views'
      softmax.

    The merged probabilities then go through a dense CRF
    (:func:`~mmseg_fsr.models.utils.dense_crf.dense_crf`) per image at
    image size, against the RGB image read again from the sample's
    ``img_path``: the pipeline's tensors are resized, flipped and padded,
    and the original pixels are not kept in the data samples.

    Each image of a batch goes through the network on its own, as in the
    reference (no padding to a batch-mate's size), its views of one shape
    (a scale and its flip) as one batch; with ``crf_workers > 0``
    its CRF is handed to a process pool at once, so it runs while the next
    images of the batch are inferred. The loader's batch size is thus the
    number of CRFs in flight: use e.g. ``crf_workers`` images per batch.

    Merged samples carry ``seg_logits`` (merged logits before the CRF;
    their softmax is the CRF input), ``seg_probs`` (final probabilities,
    after the CRF when on) and ``pred_sem_seg`` (their argmax), with the
    meta information and other fields (ground truth, image labels, CAM
    outputs) of the first augmented view, the unflipped first scale.

    Args:
        module (dict | nn.Module): The segmentor (multi-class decoder).
        merge (str): 'max' or 'mean', see above. Defaults to 'max'.
        crf (bool): Refine with a dense CRF. Defaults to True.
        crf_cfg (dict, optional): Keyword arguments of ``dense_crf``
            (``num_iters``, ``gaussian_sxy``, ...); unset ones keep the FSR
            settings.
        crf_workers (int): CRF worker processes; 0 runs the CRF in this
            process. Defaults to 0.
        crf_start_method (str, optional): ``multiprocessing`` start method
            of the pool ('fork', 'spawn', 'forkserver'); None uses the
            platform default. Workers only run numpy and pydensecrf.
        data_preprocessor (dict | nn.Module, optional): See
            ``BaseTTAModel``.

    Raises:
        ValueError: On an unknown ``merge``, a negative ``crf_workers`` or a
            single-channel (binary) decoder.
        ImportError: If ``crf=True`` and pydensecrf2 is not installed.
    """

    def __init__(self,
                 module: Union[dict, nn.Module],
                 merge: str = 'max',
                 crf: bool = True,
                 crf_cfg: Optional[dict] = None,
                 crf_workers: int = 0,
                 crf_start_method: Optional[str] = None,
                 data_preprocessor: Union[dict, nn.Module, None] = None
                 ) -> None:
        super().__init__(module=module, data_preprocessor=data_preprocessor)
        if merge not in _MERGE_MODES:
            raise ValueError(
                f'merge must be one of {_MERGE_MODES}, got {merge!r}')
        if crf_workers < 0:
            raise ValueError(f'crf_workers must be >= 0, got {crf_workers}')
        if self.module.out_channels < 2:
            raise ValueError('CRFSegTTAModel needs a multi-class decoder '
                             '(out_channels >= 2)')
        if crf:
            # Fail before the first batch, not after a model pass.
            import_pydensecrf()
        self.merge = merge
        self.crf = crf
        self.crf_cfg = dict(crf_cfg or {})
        self.crf_workers = crf_workers
        self.crf_start_method = crf_start_method
        self._crf_pool: Optional[ProcessPoolExecutor] = None

    # ----------------------------------------------------------- testing
    def test_step(self, data: dict) -> SampleList:
        """Infer every augmented view of every image, merge, refine.

        Args:
            data (dict): A ``TestTimeAug`` batch: ``inputs`` and
                ``data_samples``, each a list over augmentations of lists
                over images.

        Returns:
            list[SegDataSample]: One merged prediction per image.
        """
        if not isinstance(data, dict):
            raise TypeError('CRFSegTTAModel expects the dict batches of '
                            f'pseudo_collate, got {type(data).__name__}')
        num_augs, num_images = len(data['inputs']), len(data['inputs'][0])
        jobs = []
        for i in range(num_images):
            inputs = [data['inputs'][j][i] for j in range(num_augs)]
            samples = [data['data_samples'][0][i]] + [
                _unlabelled(data['data_samples'][j][i])
                for j in range(1, num_augs)
            ]
            jobs.append(self._merge_image(self._infer_views(inputs,
                                                            samples)))
        return [self._finish(*job) for job in jobs]

    def _infer_views(self, inputs: List[torch.Tensor],
                     samples: SampleList) -> SampleList:
        """Predictions of one image's views, in their order.

        Views of one shape (a scale and its flip) go through the network as
        one batch: same size, so no padding changes either prediction.
        """
        by_shape: Dict[tuple, List[int]] = {}
        for j, view in enumerate(inputs):
            by_shape.setdefault(tuple(view.shape), []).append(j)
        predictions: List[Optional[SegDataSample]] = [None] * len(inputs)
        for views in by_shape.values():
            batch = self.module.test_step({
                'inputs': [inputs[j] for j in views],
                'data_samples': [samples[j] for j in views]
            })
            for j, prediction in zip(views, batch):
                predictions[j] = prediction
        return predictions

    def merge_preds(self, data_samples_list: List[SampleList]) -> SampleList:
        """Merge (and refine) the predictions of each image's views.

        Args:
            data_samples_list (list[list[SegDataSample]]): Per image, the
                predictions of its augmented views.

        Returns:
            list[SegDataSample]: One merged prediction per image.
        """
        jobs = [self._merge_image(views) for views in data_samples_list]
        return [self._finish(*job) for job in jobs]

    # ----------------------------------------------------------- helpers
    def merge_logits(self, views: SampleList) -> torch.Tensor:
        """Merged logits of one image's views.

        Args:
            views (list[SegDataSample]): Predictions with ``seg_logits``
                (C, H, W) at the original image size.

        Returns:
            Tensor: Logits (C, H, W) whose softmax is the merged
            probability ('mean' returns the log of the mean probability).
        """
        logits = [view.seg_logits.data.float() for view in views]
        if self.merge == 'mean':
            probs = torch.stack([x.softmax(dim=0) for x in logits]).mean(0)
            return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()
        # Views of one scale share img_shape: an image and its flip.
        per_scale: Dict[tuple, torch.Tensor] = {}
        for view, x in zip(views, logits):
            key = tuple(view.metainfo['img_shape'][:2])
            per_scale[key] = per_scale[key] + x if key in per_scale else x
        return torch.stack(list(per_scale.values())).amax(dim=0)

    def _merge_image(self, views: SampleList
                     ) -> Tuple[SegDataSample, torch.Tensor, Future]:
        """Merge one image's views and start its CRF."""
        logits = self.merge_logits(views)
        probs = logits.softmax(dim=0)
        first = views[0]
        merged = SegDataSample(metainfo=first.metainfo)
        for key in first.keys():
            if key not in _MERGED_FIELDS:
                merged.set_field(first.get(key), key)
        merged.seg_logits = PixelData(data=logits)
        if self.crf:
            refined = self._submit_crf(first.metainfo['img_path'],
                                       probs.cpu().numpy())
        else:
            refined = Future()
            refined.set_result(None)
        return merged, probs, refined

    def _finish(self, merged: SegDataSample, probs: torch.Tensor,
                refined: Future) -> SegDataSample:
        """Wait for the CRF and write the final probabilities and labels."""
        crf_probs = refined.result()
        if crf_probs is not None:
            probs = torch.from_numpy(crf_probs).to(probs.device)
        merged.seg_probs = PixelData(data=probs)
        merged.pred_sem_seg = PixelData(data=probs.argmax(dim=0, keepdim=True))
        return merged

    def _submit_crf(self, img_path: str, probs: np.ndarray) -> Future:
        if self.crf_workers == 0:
            future = Future()
            future.set_result(
                crf_from_image_file(img_path, probs, self.crf_cfg))
            return future
        if self._crf_pool is None:
            context = multiprocessing.get_context(self.crf_start_method)
            self._crf_pool = ProcessPoolExecutor(
                max_workers=self.crf_workers, mp_context=context)
        return self._crf_pool.submit(crf_from_image_file, img_path, probs,
                                     self.crf_cfg)
