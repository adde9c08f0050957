"""Optimiser constructor: head lr multipliers that keep the no-decay rules."""
from typing import List, Optional

import torch.nn as nn
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.utils.dl_utils.parrots_wrapper import _BatchNorm, _InstanceNorm
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS

_NORMS = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class WSSSOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` where custom keys stack with
    ``norm_decay_mult`` / ``bias_decay_mult`` / ``flat_decay_mult``.

    mmengine ignores the norm and bias rules for a parameter matched by a
    ``custom_keys`` entry, so ``custom_keys={'decode_head': dict(lr_mult=10)}``
    would silently put weight decay back on the heads' biases and norms.
    Here a custom key that sets no ``decay_mult`` of its own leaves those
    rules in force. The frozen ``teacher`` of ``FSRSegmentor`` is left out
    quietly; everything else is the default behaviour.
    """

    def add_params(self,
                   params: List[dict],
                   module: nn.Module,
                   prefix: str = '',
                   is_dcn_module: Optional[bool] = None) -> None:
        """Add parameter groups, then re-apply the norm / bias decay rules.

        Args:
            params (list[dict]): Parameter groups being built.
            module (nn.Module): Module whose parameters are added.
            prefix (str): Name prefix of ``module``; '' at the root.
            is_dcn_module (bool, optional): See the parent class.
        """
        if prefix == 'teacher':
            # The EMA teacher (FSRSegmentor) is frozen and updated by
            # FSRTeacherHook; mmengine would skip its tensors anyway, logging
            # one warning for each of them.
            return
        super().add_params(params, module, prefix, is_dcn_module)
        if prefix or self.base_wd is None:
            return  # the parent recurses; fix up once, at the root
        custom_keys = self.paramwise_cfg.get('custom_keys', {})
        decay_mults = {}
        for mod_name, mod in module.named_modules():
            for name, param in mod.named_parameters(recurse=False):
                full_name = f'{mod_name}.{name}' if mod_name else name
                key = next((k for k in sorted(custom_keys, key=len,
                                              reverse=True)
                            if k in f'.{full_name}'), None)
                if key is None or 'decay_mult' in custom_keys[key]:
                    continue
                if isinstance(mod, _NORMS):
                    mult = self.paramwise_cfg.get('norm_decay_mult')
                elif name == 'bias':
                    mult = self.paramwise_cfg.get('bias_decay_mult')
                elif param.ndim == 1:
                    mult = self.paramwise_cfg.get('flat_decay_mult')
                else:
                    continue
                if mult is not None:
                    decay_mults[id(param)] = mult
        for group in params:
            mult = decay_mults.get(id(group['params'][0]))
            if mult is not None:
                group['weight_decay'] = self.base_wd * mult
