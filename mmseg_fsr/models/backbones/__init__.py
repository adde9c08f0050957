from .fsr_backbone_api import (FSR_BACKBONE_API, check_fsr_backbone,
                               stops_early)
from .maskable_vit import MaskableViT
from .mmpretrain_vit_adapter import MMPretrainViTAdapter

__all__ = [
    'FSR_BACKBONE_API', 'MaskableViT', 'MMPretrainViTAdapter',
    'check_fsr_backbone', 'stops_early'
]
