from .crf_tta_model import CRFSegTTAModel
from .fsr_segmentor import FSRSegmentor
from .wsss_segmentor import WSSSSegmentor

__all__ = ['CRFSegTTAModel', 'FSRSegmentor', 'WSSSSegmentor']
