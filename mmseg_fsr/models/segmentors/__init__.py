from .fsr_segmentor import FSRSegmentor  # noqa: F401
from .crf_tta_model import CRFSegTTAModel  # noqa: F401
