
from .bg_fg_cross_entropy_loss import BgFgCrossEntropyLoss  # noqa: F401
from .dense_energy_loss import DenseEnergyLoss  # noqa: F401
from .fsr_loss import FSRCertainLoss, FSRUncertainLoss  # noqa: F401
from .patch_token_contrast_loss import PatchTokenContrastLoss  # noqa: F401
