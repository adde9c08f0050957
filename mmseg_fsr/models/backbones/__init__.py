from .maskable_vit import MaskableViT  # noqa: F401
