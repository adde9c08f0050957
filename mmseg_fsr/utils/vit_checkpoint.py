"""Conversion of ImageNet ViT checkpoints to mmseg ``VisionTransformer`` keys.

FSR's encoder is ``MaskableViT``, a subclass of mmseg's
:class:`mmseg.models.backbones.VisionTransformer` that only adds a
``mask_token``. ImageNet weights come either from timm (the reference uses
``jx_vit_base_p16_224``) or from mmpretrain; both use other key names and a
224x224 positional grid. The functions here rename the keys (a key with no
counterpart is an error, never silently skipped) and resize the positional
embedding to the training grid, so the converted file loads into the backbone
with no missing or unexpected keys apart from ``mask_token``.

Converted key set (``L`` layers)::

    cls_token, pos_embed, patch_embed.projection.{weight,bias},
    [ln_pre.{weight,bias}],
    layers.{i}.ln1.{weight,bias}, layers.{i}.ln2.{weight,bias},
    layers.{i}.attn.attn.in_proj_{weight,bias},
    layers.{i}.attn.attn.out_proj.{weight,bias},
    layers.{i}.ffn.layers.0.0.{weight,bias},
    layers.{i}.ffn.layers.1.{weight,bias},
    ln1.{weight,bias}
"""
import math
import os.path as osp
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from ..models.backbones.pretrained import (  # noqa: F401 (re-exported)
    DEFAULT_PRETRAINED, TIMM_JX_VIT_B16_URL, check_pretrained,
    conversion_command)

StateDict = Dict[str, torch.Tensor]

# The name of every converted tensor in mmseg, timm and mmpretrain; ``{i}``
# stands for the layer index, ``{p}`` for weight / bias.
_KEY_NAMES = (
    ('cls_token', 'cls_token', 'cls_token'),
    ('pos_embed', 'pos_embed', 'pos_embed'),
    ('patch_embed.projection.{p}', 'patch_embed.proj.{p}',
     'patch_embed.projection.{p}'),
    ('ln_pre.{p}', 'norm_pre.{p}', 'pre_norm.{p}'),
    ('layers.{i}.ln1.{p}', 'blocks.{i}.norm1.{p}', 'layers.{i}.ln1.{p}'),
    ('layers.{i}.ln2.{p}', 'blocks.{i}.norm2.{p}', 'layers.{i}.ln2.{p}'),
    ('layers.{i}.attn.attn.in_proj_{p}', 'blocks.{i}.attn.qkv.{p}',
     'layers.{i}.attn.qkv.{p}'),
    ('layers.{i}.attn.attn.out_proj.{p}', 'blocks.{i}.attn.proj.{p}',
     'layers.{i}.attn.proj.{p}'),
    ('layers.{i}.ffn.layers.0.0.{p}', 'blocks.{i}.mlp.fc1.{p}',
     'layers.{i}.ffn.layers.0.0.{p}'),
    ('layers.{i}.ffn.layers.1.{p}', 'blocks.{i}.mlp.fc2.{p}',
     'layers.{i}.ffn.layers.1.{p}'),
    ('ln1.{p}', 'norm.{p}', 'ln1.{p}'),
)


def _rules(column: int) -> List[Tuple[str, str]]:
    """(pattern, replacement) pairs from source naming ``column`` (1 timm,
    2 mmpretrain) to mmseg's, for ``re.fullmatch``."""
    rules = []
    for names in _KEY_NAMES:
        pattern = re.escape(names[column]).replace(r'\{i\}', r'(\d+)')
        pattern = pattern.replace(r'\{p\}', '(weight|bias)')
        groups = iter(range(1, 3))
        repl = re.sub(r'\{[ip]\}', lambda _: f'\\{next(groups)}',
                      names[0])
        rules.append((pattern, repl))
    return rules


# Classification-only parts; a segmentation backbone has no use for them.
_TIMM_DROP = r'(head|pre_logits|fc_norm)\..*'
# ``ln2`` of an mmpretrain backbone normalises the pooled feature of the
# ``avg_featmap`` output type; mmseg's backbone has no such pooling.
_MMPRETRAIN_DROP = r'ln2\..*'

# Keys every converted layer must have.
_LAYER_KEYS = ('ln1.weight', 'ln1.bias', 'ln2.weight', 'ln2.bias',
               'attn.attn.in_proj_weight', 'attn.attn.in_proj_bias',
               'attn.attn.out_proj.weight', 'attn.attn.out_proj.bias',
               'ffn.layers.0.0.weight', 'ffn.layers.0.0.bias',
               'ffn.layers.1.weight', 'ffn.layers.1.bias')
_TOP_KEYS = ('cls_token', 'pos_embed', 'patch_embed.projection.weight',
             'ln1.weight', 'ln1.bias')


def load_state_dict_file(path: str, allow_pickle: bool = False) -> StateDict:
    """Read a checkpoint file and return its (unwrapped) state dict.

    Args:
        path (str): ``.pth``/``.bin``/``.pt`` (torch) or ``.safetensors``.
        allow_pickle (bool): Load torch files with ``weights_only=False``.
            Only for trusted files whose metadata holds arbitrary objects
            (some mmengine checkpoints do). Defaults to False.

    Returns:
        dict[str, Tensor]: The model weights, taken from the ``state_dict``,
        ``model`` or ``module`` entry when the file wraps them.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        RuntimeError: If the file cannot be read safely.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    if path.endswith('.safetensors'):
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise ImportError(f'reading {path} needs `pip install '
                              'safetensors`') from e
        return dict(load_file(path, device='cpu'))
    try:
        ckpt = torch.load(
            path, map_location='cpu', weights_only=not allow_pickle)
    except Exception as e:  # torch raises several types for unsafe pickles
        if allow_pickle:
            raise
        raise RuntimeError(
            f'cannot read {path} with weights_only=True ({e}). If you trust '
            'the file, pass --allow-pickle.') from e
    for wrapper in ('state_dict', 'model', 'module'):
        if isinstance(ckpt, dict) and isinstance(ckpt.get(wrapper), dict):
            ckpt = ckpt[wrapper]
    return {k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}


def detect_format(state_dict: StateDict) -> str:
    """Guess whether a ViT state dict uses timm or mmpretrain key names.

    Args:
        state_dict (dict[str, Tensor]): Source weights.

    Returns:
        str: ``'timm'`` or ``'mmpretrain'``.

    Raises:
        ValueError: If the keys match neither layout.
    """
    keys = list(state_dict)
    if any(k.startswith('blocks.') for k in keys):
        return 'timm'
    if any(re.match(r'(backbone\.)?layers\.\d+\.attn\.qkv\.', k)
           for k in keys):
        return 'mmpretrain'
    raise ValueError('cannot tell the checkpoint format: neither timm '
                     '("blocks.N.attn.qkv") nor mmpretrain '
                     '("[backbone.]layers.N.attn.qkv") keys found; first '
                     f'keys: {keys[:5]}')


def _rename(state_dict: StateDict, rules: Sequence[Tuple[str, str]],
            drop: str) -> 'OrderedDict[str, torch.Tensor]':
    """Rename keys by ``rules``; drop keys matching ``drop``.

    Raises:
        ValueError: Listing every key that matches no rule, since silently
            skipping e.g. layer-scale or distillation weights would give a
            backbone that differs from the checkpoint.
    """
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    unknown = []
    for key, value in state_dict.items():
        for pattern, repl in rules:
            if re.fullmatch(pattern, key):
                out[re.sub(pattern, repl, key)] = value
                break
        else:
            if not re.fullmatch(drop, key):
                unknown.append(key)
    if unknown:
        raise ValueError(
            'keys with no counterpart in mmseg VisionTransformer (layer '
            'scale, distillation token, qk-norm, ... are not supported): '
            f'{unknown[:10]}{" ..." if len(unknown) > 10 else ""}')
    return out


def convert_timm_vit(
        state_dict: StateDict) -> 'OrderedDict[str, torch.Tensor]':
    """Rename timm ViT keys to mmseg ``VisionTransformer`` keys.

    timm's fused ``qkv`` linear stores q, k and v as consecutive blocks of
    rows, each split by heads, which is exactly the ``in_proj_weight`` layout
    of ``nn.MultiheadAttention``; the tensors are therefore moved unchanged.
    ``head.*``, ``pre_logits.*`` and ``fc_norm.*`` are dropped.

    Args:
        state_dict (dict[str, Tensor]): timm weights.

    Returns:
        OrderedDict[str, Tensor]: Weights under mmseg key names, positional
        embedding not resized.
    """
    return _rename(state_dict, _rules(1), _TIMM_DROP)


def convert_mmpretrain_vit(
        state_dict: StateDict) -> 'OrderedDict[str, torch.Tensor]':
    """Rename mmpretrain (or mmcls) ViT keys to mmseg ``VisionTransformer``.

    A full classifier checkpoint is reduced to its ``backbone.`` entries
    (``head``/``neck``/``data_preprocessor`` dropped); a bare backbone state
    dict is accepted too.

    Args:
        state_dict (dict[str, Tensor]): mmpretrain weights.

    Returns:
        OrderedDict[str, Tensor]: Weights under mmseg key names, positional
        embedding not resized.
    """
    if any(k.startswith('backbone.') for k in state_dict):
        state_dict = {
            k[len('backbone.'):]: v
            for k, v in state_dict.items() if k.startswith('backbone.')
        }
    return _rename(state_dict, _rules(2), _MMPRETRAIN_DROP)


def resize_pos_embed(pos_embed: torch.Tensor,
                     dst_hw: Tuple[int, int],
                     src_hw: Optional[Tuple[int, int]] = None,
                     mode: str = 'bicubic') -> torch.Tensor:
    """Resize a ``(1, 1 + H*W, C)`` positional embedding to a new grid.

    The class-token entry is kept as is; the patch entries are interpolated
    as an image (``align_corners=False``, as mmseg does at run time).

    Args:
        pos_embed (Tensor): Embedding with one leading class-token entry.
        dst_hw (tuple[int, int]): Target grid (rows, cols).
        src_hw (tuple[int, int], optional): Source grid; inferred as a square
            when omitted.
        mode (str): Interpolation mode. Defaults to ``'bicubic'``.

    Returns:
        Tensor: ``(1, 1 + dst_h * dst_w, C)``, same dtype as the input.

    Raises:
        ValueError: If the source length is not ``1 + src_h * src_w``.
    """
    num_patches = pos_embed.shape[1] - 1
    if src_hw is None:
        side = math.isqrt(num_patches)
        src_hw = (side, side)
    if pos_embed.ndim != 3 or src_hw[0] * src_hw[1] != num_patches:
        raise ValueError(f'pos_embed of shape {tuple(pos_embed.shape)} is not '
                         f'1 class token + a {src_hw[0]}x{src_hw[1]} grid')
    if tuple(src_hw) == tuple(dst_hw):
        return pos_embed
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    dim = pos_embed.shape[2]
    grid = patch_pos.reshape(1, src_hw[0], src_hw[1], dim).permute(0, 3, 1, 2)
    # Interpolate in float32: bicubic is not implemented for half on CPU.
    grid = F.interpolate(
        grid.float(), size=tuple(dst_hw), mode=mode, align_corners=False)
    patch_pos = grid.flatten(2).transpose(1, 2).to(pos_embed.dtype)
    return torch.cat([cls_pos, patch_pos], dim=1)


def _check_complete(state_dict: StateDict) -> int:
    """Check a converted dict has every key of a plain ViT; return depth."""
    layer_ids = {
        int(m.group(1))
        for m in (re.match(r'layers\.(\d+)\.', k) for k in state_dict) if m
    }
    num_layers = max(layer_ids) + 1 if layer_ids else 0
    missing = [k for k in _TOP_KEYS if k not in state_dict]
    missing += [
        f'layers.{i}.{k}' for i in range(num_layers) for k in _LAYER_KEYS
        if f'layers.{i}.{k}' not in state_dict
    ]
    if num_layers == 0 or missing:
        raise ValueError('converted checkpoint is incomplete; missing: '
                         f'{missing[:10] or "all transformer layers"}')
    return num_layers


def convert_vit_checkpoint(
        state_dict: StateDict,
        src_format: str = 'auto',
        img_size: Union[int, Tuple[int, int]] = 448,
        patch_size: int = 16) -> 'OrderedDict[str, torch.Tensor]':
    """Convert a timm/mmpretrain ViT state dict for ``MaskableViT``.

    Args:
        state_dict (dict[str, Tensor]): Source weights.
        src_format (str): ``'timm'``, ``'mmpretrain'`` or ``'auto'``.
        img_size (int | tuple[int, int]): Training input size the positional
            embedding is resized for. Defaults to 448 (28x28 grid).
        patch_size (int): Patch size of the model. Defaults to 16.

    Returns:
        OrderedDict[str, Tensor]: mmseg ``VisionTransformer`` weights.

    Raises:
        ValueError: On an unknown format, unsupported keys, an incomplete
            result, or a patch size that does not match the checkpoint.
    """
    if src_format == 'auto':
        src_format = detect_format(state_dict)
    converters = {'timm': convert_timm_vit,
                  'mmpretrain': convert_mmpretrain_vit}
    if src_format not in converters:
        raise ValueError(f'unknown src_format {src_format!r}; expected one '
                         f'of {sorted(converters)} or "auto"')
    out = converters[src_format](state_dict)
    _check_complete(out)
    kernel = tuple(out['patch_embed.projection.weight'].shape[2:])
    if kernel != (patch_size, patch_size):
        raise ValueError(f'checkpoint patch size {kernel} != patch_size '
                         f'{patch_size}')
    if isinstance(img_size, int):
        img_size = (img_size, img_size)
    out['pos_embed'] = resize_pos_embed(
        out['pos_embed'],
        (img_size[0] // patch_size, img_size[1] // patch_size))
    return out
