from .uncertainty_masking_neck import (  # noqa: F401
    UncertaintyMaskingNeck, select_random_tokens, select_uncertain_tokens)
