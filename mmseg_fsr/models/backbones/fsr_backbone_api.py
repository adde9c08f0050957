"""What a backbone must provide for FSR (see docs/extending.md)."""
import inspect

import torch.nn as nn

#: Needed for the FSR losses: the last layer's tokens before the final
#: norm, that norm, and the class token that queries the aggregation head.
FSR_BACKBONE_API = ('forward_with_tokens', 'normalize_tokens', 'cls_token')


def stops_early(backbone: nn.Module) -> bool:
    """Whether the backbone's ``forward`` takes ``full_depth_rows``, so
    images whose final CAM nobody reads can skip the last layers."""
    return 'full_depth_rows' in inspect.signature(
        backbone.forward).parameters


def check_fsr_backbone(backbone: nn.Module, needs_early_stop: bool) -> None:
    """Refuse a backbone that cannot run the FSR losses.

    Args:
        backbone (nn.Module): The segmentor's backbone.
        needs_early_stop (bool): The multi-scale mask CAM of view 2 needs
            ``forward(..., full_depth_rows)``.

    Raises:
        TypeError: Naming what the backbone lacks.
    """
    name = type(backbone).__name__
    missing = [
        a for a in FSR_BACKBONE_API if getattr(backbone, a, None) is None
    ]
    if missing:
        raise TypeError(f'{name} cannot run the FSR losses: it lacks '
                        f'{missing} of {FSR_BACKBONE_API} (see MaskableViT)')
    if needs_early_stop and not stops_early(backbone):
        raise TypeError(f"{name} cannot pick the mask with mask_cam_source="
                        "'multi_scale': its forward must take "
                        'full_depth_rows (see MaskableViT.forward)')
