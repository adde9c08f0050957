"""mIoU of CAM pseudo labels, as WSSS papers report them."""
from typing import Sequence

from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import METRICS


@METRICS.register_module()
class PseudoLabelMetric(IoUMetric):
    """``IoUMetric`` on another prediction field of the data samples.

    ``FSRSegmentor`` with ``test_cfg.output_cams=True`` writes
    ``pred_cam_label`` (CAM) and ``pred_par_label`` (PAR-refined) beside the
    decoder's ``pred_sem_seg``; one evaluator can score all three, e.g.
    ``[dict(type='IoUMetric'), dict(type='PseudoLabelMetric',
    pred_key='pred_cam_label', prefix='cam'), dict(type='PseudoLabelMetric',
    pred_key='pred_par_label', prefix='par')]``. Ignored (255) pixels of a
    prediction count as wrong wherever the ground truth is valid.

    Args:
        pred_key (str): Data sample field to score.
            Default: 'pred_cam_label'.
        **kwargs: Arguments of :class:`IoUMetric`; give each metric of an
            evaluator its own ``prefix``.
    """

    def __init__(self, pred_key: str = 'pred_cam_label', **kwargs) -> None:
        super().__init__(**kwargs)
        self.pred_key = pred_key

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Score ``pred_key`` in place of ``pred_sem_seg``."""
        for data_sample in data_samples:
            if self.pred_key not in data_sample:
                raise KeyError(
                    f'data sample has no {self.pred_key!r}; set '
                    'model.test_cfg.output_cams=True to produce CAM labels')
        super().process(data_batch, [
            dict(data_sample, pred_sem_seg=data_sample[self.pred_key])
            for data_sample in data_samples
        ])
