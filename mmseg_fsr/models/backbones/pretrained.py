"""Where FSR's ImageNet ViT-B/16 weights come from, checked before use."""
import os.path as osp

#: Path the FSR configs read the converted ImageNet ViT-B/16 weights from.
DEFAULT_PRETRAINED = 'pretrain/vit-b16_in1k_jx_448.pth'
#: timm's ``vit_base_patch16_224`` ImageNet weights used by the reference
#: (in timm >= 0.9: ``vit_base_patch16_224.orig_in21k_ft_in1k``).
TIMM_JX_VIT_B16_URL = ('https://github.com/rwightman/pytorch-image-models/'
                       'releases/download/v0.1-vitjx/'
                       'jx_vit_base_p16_224-80ecf9dd.pth')


def conversion_command(src: str = 'pretrain/jx_vit_base_p16_224-80ecf9dd.pth',
                       dst: str = DEFAULT_PRETRAINED) -> str:
    """Shell commands that download and convert the reference weights.

    Args:
        src (str): Where the downloaded timm checkpoint is stored.
        dst (str): Where the converted checkpoint is written.

    Returns:
        str: Newline-separated shell commands.
    """
    return (f'mkdir -p {osp.dirname(src) or "."}\n'
            f'wget -O {src} {TIMM_JX_VIT_B16_URL}\n'
            f'python tools/model_converters/vit_to_fsr.py {src} {dst}')


def check_pretrained(path: str) -> str:
    """Make sure converted ImageNet weights exist before training starts.

    Args:
        path (str): Path of the converted checkpoint the config points at.

    Returns:
        str: ``path`` unchanged, so the call can wrap a config value.

    Raises:
        FileNotFoundError: If ``path`` is not a file; the message holds the
            commands that download and convert the weights.
    """
    if osp.isfile(path):
        return path
    raise FileNotFoundError(
        f'ImageNet ViT-B/16 weights not found at "{path}". FSR starts from '
        'timm\'s jx_vit_base_p16_224-80ecf9dd.pth (timm >= 0.9: '
        '"vit_base_patch16_224.orig_in21k_ft_in1k") converted to mmseg key '
        'names with a 28x28 positional grid. From the repository root run:\n'
        f'{conversion_command(dst=path)}\n'
        'See docs/dataset_prepare.md ("Pretrained weights").')
