"""Tests for the timm/mmpretrain -> mmseg ViT checkpoint conversion."""
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from mmseg.models.backbones import VisionTransformer

from mmseg_fsr.utils.vit_checkpoint import (TIMM_JX_VIT_B16_URL,
                                            check_pretrained,
                                            convert_vit_checkpoint,
                                            detect_format,
                                            load_state_dict_file,
                                            resize_pos_embed)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(REPO, 'tools', 'model_converters', 'vit_to_fsr.py')

# Small ViT: 2 layers, 48 dims, 3 heads; source grid 4x4 (64 px input).
DIM, DEPTH, HEADS, PATCH, SRC_GRID = 48, 2, 3, 16, 4
EPS = 1e-6  # timm's LayerNorm eps


def fake_timm_state_dict() -> dict:
    """A timm ``VisionTransformer`` state dict with real key names."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    sd = {
        'cls_token': rand(1, 1, DIM),
        'pos_embed': rand(1, 1 + SRC_GRID**2, DIM),
        'patch_embed.proj.weight': rand(DIM, 3, PATCH, PATCH) * 0.1,
        'patch_embed.proj.bias': rand(DIM),
    }
    for i in range(DEPTH):
        p = f'blocks.{i}.'
        sd.update({
            p + 'norm1.weight': 1 + rand(DIM), p + 'norm1.bias': rand(DIM),
            p + 'attn.qkv.weight': rand(3 * DIM, DIM),
            p + 'attn.qkv.bias': rand(3 * DIM),
            p + 'attn.proj.weight': rand(DIM, DIM),
            p + 'attn.proj.bias': rand(DIM),
            p + 'norm2.weight': 1 + rand(DIM), p + 'norm2.bias': rand(DIM),
            p + 'mlp.fc1.weight': rand(4 * DIM, DIM),
            p + 'mlp.fc1.bias': rand(4 * DIM),
            p + 'mlp.fc2.weight': rand(DIM, 4 * DIM),
            p + 'mlp.fc2.bias': rand(DIM),
        })
    sd.update({
        'norm.weight': 1 + rand(DIM), 'norm.bias': rand(DIM),
        'head.weight': rand(10, DIM), 'head.bias': rand(10),
    })
    return sd


def timm_reference_forward(sd: dict, img: torch.Tensor) -> torch.Tensor:
    """timm ViT forward written out by hand; returns (B, C, h, w) tokens."""
    x = F.conv2d(img, sd['patch_embed.proj.weight'],
                 sd['patch_embed.proj.bias'], stride=PATCH)
    b, c, h, w = x.shape
    x = x.flatten(2).transpose(1, 2)
    pos = sd['pos_embed']
    grid = pos[:, 1:].reshape(1, SRC_GRID, SRC_GRID, c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(h, w), mode='bicubic',
                         align_corners=False)
    pos = torch.cat([pos[:, :1], grid.flatten(2).transpose(1, 2)], 1)
    x = torch.cat([sd['cls_token'].expand(b, -1, -1), x], 1) + pos

    def ln(t, name):
        return F.layer_norm(t, (c, ), sd[name + '.weight'], sd[name + '.bias'],
                            EPS)

    for i in range(DEPTH):
        p = f'blocks.{i}.'
        qkv = F.linear(ln(x, p + 'norm1'), sd[p + 'attn.qkv.weight'],
                       sd[p + 'attn.qkv.bias'])
        q, k, v = qkv.reshape(b, -1, 3, HEADS, c // HEADS).permute(
            2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * (c // HEADS)**-0.5).softmax(-1)
        out = (attn @ v).transpose(1, 2).reshape(b, -1, c)
        x = x + F.linear(out, sd[p + 'attn.proj.weight'],
                         sd[p + 'attn.proj.bias'])
        hid = F.gelu(
            F.linear(ln(x, p + 'norm2'), sd[p + 'mlp.fc1.weight'],
                     sd[p + 'mlp.fc1.bias']))
        x = x + F.linear(hid, sd[p + 'mlp.fc2.weight'], sd[p + 'mlp.fc2.bias'])
    x = ln(x, 'norm')
    return x[:, 1:].transpose(1, 2).reshape(b, c, h, w)


def build_mmseg_vit(img_size: int) -> VisionTransformer:
    """The mmseg backbone FSR's MaskableViT derives from, at small scale."""
    # ``train()`` of these backbones returns None, so no ``.eval()`` chaining.
    model = VisionTransformer(
        img_size=img_size,
        patch_size=PATCH,
        embed_dims=DIM,
        num_layers=DEPTH,
        num_heads=HEADS,
        patch_bias=True,
        final_norm=True,
        norm_cfg=dict(type='LN', eps=EPS))
    model.eval()
    return model


def test_timm_conversion_keys_values_and_features():
    src = fake_timm_state_dict()
    assert detect_format(src) == 'timm'
    out = convert_vit_checkpoint(src, img_size=96)  # 6x6 target grid

    assert not any(k.startswith('head') for k in out)
    assert out['pos_embed'].shape == (1, 1 + 36, DIM)
    assert torch.equal(out['pos_embed'][:, 0], src['pos_embed'][:, 0])
    assert torch.equal(out['layers.1.attn.attn.in_proj_weight'],
                       src['blocks.1.attn.qkv.weight'])
    assert torch.equal(out['layers.0.attn.attn.out_proj.bias'],
                       src['blocks.0.attn.proj.bias'])
    assert torch.equal(out['layers.0.ffn.layers.0.0.weight'],
                       src['blocks.0.mlp.fc1.weight'])
    assert torch.equal(out['layers.1.ffn.layers.1.bias'],
                       src['blocks.1.mlp.fc2.bias'])
    assert torch.equal(out['ln1.weight'], src['norm.weight'])

    model = build_mmseg_vit(96)
    model.load_state_dict(out, strict=True)
    img = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feat = model(img)[-1]
        ref = timm_reference_forward(src, img)
    assert feat.shape == (2, DIM, 6, 6)
    torch.testing.assert_close(feat, ref, rtol=1e-4, atol=1e-4)


def test_mmpretrain_conversion_matches_mmpretrain_features():
    from mmpretrain.models import VisionTransformer as PretrainViT
    torch.manual_seed(0)
    src_model = PretrainViT(
        arch=dict(
            embed_dims=DIM,
            num_layers=DEPTH,
            num_heads=HEADS,
            feedforward_channels=4 * DIM),
        img_size=64,
        patch_size=PATCH,
        out_type='featmap')
    src_model.eval()
    for p in src_model.parameters():  # non-trivial norms and biases
        p.data.normal_(0, 0.2)
    # A full classifier checkpoint: backbone + head under prefixes.
    src = {f'backbone.{k}': v for k, v in src_model.state_dict().items()}
    src['head.layers.head.weight'] = torch.zeros(10, DIM)
    assert detect_format(src) == 'mmpretrain'

    out = convert_vit_checkpoint(src, img_size=64)
    model = build_mmseg_vit(64)
    model.load_state_dict(out, strict=True)
    img = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            model(img)[-1], src_model(img)[-1], rtol=1e-4, atol=1e-4)


def test_resize_pos_embed_identity_and_errors():
    pos = torch.randn(1, 17, 8)
    assert resize_pos_embed(pos, (4, 4)) is pos
    assert resize_pos_embed(pos, (28, 28)).shape == (1, 785, 8)
    with pytest.raises(ValueError, match='grid'):
        resize_pos_embed(torch.randn(1, 18, 8), (4, 4))


def test_unsupported_and_incomplete_checkpoints():
    src = fake_timm_state_dict()
    src['blocks.0.ls1.gamma'] = torch.ones(DIM)  # layer scale: no home
    with pytest.raises(ValueError, match='ls1.gamma'):
        convert_vit_checkpoint(src)
    src = fake_timm_state_dict()
    del src['blocks.1.mlp.fc2.bias']
    with pytest.raises(ValueError, match='layers.1.ffn.layers.1.bias'):
        convert_vit_checkpoint(src)
    with pytest.raises(ValueError, match='format'):
        convert_vit_checkpoint({'foo': torch.zeros(1)})


def test_check_pretrained(tmp_path):
    missing = str(tmp_path / 'pretrain' / 'vit.pth')
    with pytest.raises(FileNotFoundError) as err:
        check_pretrained(missing)
    msg = str(err.value)
    assert TIMM_JX_VIT_B16_URL in msg
    assert 'jx_vit_base_p16_224-80ecf9dd.pth' in msg
    assert 'tools/model_converters/vit_to_fsr.py' in msg and missing in msg
    (tmp_path / 'pretrain').mkdir()
    open(missing, 'wb').close()
    assert check_pretrained(missing) == missing


def test_cli_converts_and_saves_loadable_file(tmp_path):
    src_path, dst_path = tmp_path / 'jx.pth', tmp_path / 'out' / 'vit.pth'
    torch.save(fake_timm_state_dict(), src_path)
    res = subprocess.run(
        [sys.executable, TOOL, str(src_path), str(dst_path),
         '--img-size', '96'],
        capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert 'patch_bias=True' in res.stdout
    ckpt = torch.load(dst_path, map_location='cpu', weights_only=True)
    assert ckpt['meta']['src_format'] == 'timm'
    assert ckpt['state_dict']['pos_embed'].shape == (1, 37, DIM)
    assert load_state_dict_file(str(dst_path)).keys() == \
        ckpt['state_dict'].keys()
    res = subprocess.run([sys.executable, TOOL, str(tmp_path / 'no.pth')],
                         capture_output=True, text=True, cwd=REPO)
    assert res.returncode != 0 and 'no.pth' in res.stderr
