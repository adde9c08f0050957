"""Optimiser constructor: head lr multipliers that keep the no-decay rules."""
import logging
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator, List, Optional

import torch.nn as nn
from mmengine.logging import MMLogger, print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.utils.dl_utils.parrots_wrapper import _BatchNorm, _InstanceNorm
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS
from prettytable import PrettyTable

_NORMS = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm)
# what DefaultOptimWrapperConstructor.add_params logs for every parameter
_PER_PARAM_LINE = 'paramwise_options -- '


class _DropPerParamLines(logging.Filter):

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_PER_PARAM_LINE)


@contextmanager
def _without_per_param_lines() -> Iterator[None]:
    """Drop mmengine's one log line per parameter and setting; its warnings
    (e.g. parameters skipped for ``requires_grad=False``) still pass."""
    logger = MMLogger.get_current_instance()
    drop = _DropPerParamLines()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class WSSSOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` where custom keys stack with
    ``norm_decay_mult`` / ``bias_decay_mult`` / ``flat_decay_mult``.

    mmengine ignores the norm and bias rules for a parameter matched by a
    ``custom_keys`` entry, so ``custom_keys={'decode_head': dict(lr_mult=10)}``
    would silently put weight decay back on the heads' biases and norms.
    Here a custom key that sets no ``decay_mult`` of its own leaves those
    rules in force. The frozen ``teacher`` of ``FSRSegmentor`` is left out
    quietly. Instead of mmengine's log line per parameter and setting
    (hundreds per run), one table of the parameter groups is logged
    (:meth:`summary`); everything else is the default behaviour.
    """

    def add_params(self,
                   params: List[dict],
                   module: nn.Module,
                   prefix: str = '',
                   is_dcn_module: Optional[bool] = None) -> None:
        """Add parameter groups, re-apply the norm / bias decay rules and
        log the groups once.

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
        if prefix:  # the parent's recursion into submodules
            super().add_params(params, module, prefix, is_dcn_module)
            return
        with _without_per_param_lines():
            super().add_params(params, module, prefix, is_dcn_module)
        if self.base_wd is not None:
            self._stack_decay_rules(params, module)
        print_log('Parameter groups:\n' + self.summary(params, module),
                  logger='current')

    def _custom_key(self, full_name: str) -> Optional[str]:
        """The ``custom_keys`` entry of a parameter, matched as mmengine
        does: the longest key (then the first in sorted order) in
        ``.<full name>``."""
        keys = self.paramwise_cfg.get('custom_keys', {})
        return next((k for k in sorted(sorted(keys), key=len, reverse=True)
                     if k in f'.{full_name}'), None)

    @staticmethod
    def _decay_rule(module: nn.Module, name: str,
                    param: nn.Parameter) -> Optional[str]:
        """'norm', 'bias' or 'flat' (1-D): the ``<rule>_decay_mult`` that
        mmengine applies to a parameter outside ``custom_keys``."""
        if isinstance(module, _NORMS):
            return 'norm'
        if name == 'bias':
            return 'bias'
        return 'flat' if param.ndim == 1 else None

    def _stack_decay_rules(self, params: List[dict],
                           module: nn.Module) -> None:
        """Apply the decay rules to custom-key parameters whose key sets no
        ``decay_mult`` of its own."""
        custom_keys = self.paramwise_cfg.get('custom_keys', {})
        decay_mults = {}
        for mod_name, mod in module.named_modules():
            for name, param in mod.named_parameters(recurse=False):
                full_name = f'{mod_name}.{name}' if mod_name else name
                key = self._custom_key(full_name)
                rule = self._decay_rule(mod, name, param)
                if key is None or 'decay_mult' in custom_keys[key] or \
                        rule is None:
                    continue
                mult = self.paramwise_cfg.get(f'{rule}_decay_mult')
                if mult is not None:
                    decay_mults[id(param)] = mult
        for group in params:
            mult = decay_mults.get(id(group['params'][0]))
            if mult is not None:
                group['weight_decay'] = self.base_wd * mult

    def summary(self, params: List[dict], module: nn.Module) -> str:
        """A table of the parameter groups, one row per custom key and
        decay rule (e.g. ``decode_head / bias``) with its tensor and
        parameter counts, lr and weight decay.

        Args:
            params (list[dict]): The groups built by :meth:`add_params`.
            module (nn.Module): The model they were built from.

        Returns:
            str: The table.
        """
        described = {}
        for mod_name, mod in module.named_modules():
            for name, param in mod.named_parameters(recurse=False):
                full_name = f'{mod_name}.{name}' if mod_name else name
                parts = (self._custom_key(full_name) or 'default',
                         self._decay_rule(mod, name, param))
                described[id(param)] = ' / '.join(p for p in parts if p)
        rows = defaultdict(lambda: [0, 0])  # insertion-ordered
        for group in params:
            row = (described[id(group['params'][0])],
                   group.get('lr', self.base_lr),
                   group.get('weight_decay', self.base_wd))
            rows[row][0] += len(group['params'])
            rows[row][1] += sum(p.numel() for p in group['params'])
        table = PrettyTable(
            ['group', 'tensors', 'params', 'lr', 'weight_decay'])
        for (name, lr, decay), (tensors, numel) in rows.items():
            table.add_row([name, tensors, f'{numel:,}', f'{lr:g}',
                           f'{decay:g}' if decay is not None else '-'])
        table.align['group'] = 'l'
        return table.get_string()
