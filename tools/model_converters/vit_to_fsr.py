"""Convert ImageNet ViT weights (timm or mmpretrain) for FSR's backbone.

Example, after downloading the reference's weights (docs/dataset_prepare.md);
the output path is the one the FSR configs read::

    python tools/model_converters/vit_to_fsr.py \\
        pretrain/jx_vit_base_p16_224-80ecf9dd.pth \\
        pretrain/vit-b16_in1k_jx_448.pth
"""
import argparse
import os
import os.path as osp
import sys
from typing import List, Optional

import torch

from mmseg_fsr.utils.vit_checkpoint import (DEFAULT_PRETRAINED,
                                            convert_vit_checkpoint,
                                            detect_format,
                                            load_state_dict_file)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse command-line arguments.

    Args:
        argv (list[str], optional): Arguments; ``sys.argv[1:]`` when None.

    Returns:
        argparse.Namespace: Parsed arguments.
    """
    parser = argparse.ArgumentParser(
        description='Convert a timm or mmpretrain ImageNet ViT checkpoint to '
        'the key names of mmseg VisionTransformer (FSR MaskableViT), with the '
        'positional embedding resized to the training grid.')
    parser.add_argument(
        'src', help='source checkpoint (.pth/.bin/.safetensors)')
    parser.add_argument(
        'dst',
        nargs='?',
        default=DEFAULT_PRETRAINED,
        help=f'output path (default: {DEFAULT_PRETRAINED})')
    parser.add_argument(
        '--src-format',
        choices=['auto', 'timm', 'mmpretrain'],
        default='auto',
        help='key layout of src (default: detected from the keys)')
    parser.add_argument(
        '--img-size',
        type=int,
        nargs='+',
        default=[448],
        metavar='SIZE',
        help='training input size, one value or H W (default: 448 -> 28x28 '
        'positional grid)')
    parser.add_argument(
        '--patch-size', type=int, default=16, help='patch size (default 16)')
    parser.add_argument(
        '--allow-pickle',
        action='store_true',
        help='load src with torch.load(weights_only=False); trusted files '
        'only')
    args = parser.parse_args(argv)
    if len(args.img_size) not in (1, 2):
        parser.error('--img-size takes one value or two (H W)')
    return args


def main(argv: Optional[List[str]] = None) -> None:
    """Run the conversion and print what the backbone config needs."""
    args = parse_args(argv)
    img_size = tuple(args.img_size * 2)[:2]
    try:
        src_sd = load_state_dict_file(
            args.src, allow_pickle=args.allow_pickle)
        src_format = (
            detect_format(src_sd) if args.src_format == 'auto' else
            args.src_format)
        out = convert_vit_checkpoint(
            src_sd,
            src_format=src_format,
            img_size=img_size,
            patch_size=args.patch_size)
    except (OSError, ImportError, RuntimeError, ValueError) as e:
        sys.exit(f'error: {e}')

    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    meta = dict(
        source=osp.basename(args.src),
        src_format=src_format,
        img_size=list(img_size),
        patch_size=args.patch_size)
    torch.save(dict(meta=meta, state_dict=out), args.dst)

    num_layers = len({k.split('.')[1] for k in out if k.startswith('layers.')})
    embed_dims = out['cls_token'].shape[-1]
    grid = (img_size[0] // args.patch_size, img_size[1] // args.patch_size)
    print(f'{src_format} -> mmseg: {len(src_sd)} source tensors, {len(out)} '
          f'converted ({num_layers} layers, {embed_dims} dims); pos_embed '
          f'{grid[0]}x{grid[1]} + cls; saved to {args.dst}')
    # These backbone arguments differ from mmseg's defaults; a mismatch
    # shows up as missing/unexpected keys or, for the LayerNorm eps of timm
    # and mmpretrain ViTs, as silently different features.
    print('backbone config: '
          f'patch_bias={"patch_embed.projection.bias" in out}, '
          f'pre_norm={"ln_pre.weight" in out}, final_norm=True, '
          f'img_size={img_size[0] if img_size[0] == img_size[1] else img_size}'
          ", norm_cfg=dict(type='LN', eps=1e-6)")


if __name__ == '__main__':
    main()
