from .fsr_segmentor import FSRSegmentor  # noqa: F401
