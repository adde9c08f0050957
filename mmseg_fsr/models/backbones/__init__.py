from .maskable_vit import MaskableViT  # noqa: F401
from .mmpretrain_vit_adapter import MMPretrainViTAdapter  # noqa: F401
