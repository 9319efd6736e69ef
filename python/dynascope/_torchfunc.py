"""The functional transforms the generic torch paths use: torch.func on torch >= 2, functorch with
``torch.nn.utils.stateless.functional_call`` on torch 1.13 (which has no torch.func)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from ._core import InvalidArgument, ShapeMismatch


def func_api(missing: str) -> SimpleNamespace:
    """``vmap``, ``grad``, ``grad_and_value``, ``jacrev`` and ``functional_call`` as attributes;
    InvalidArgument(``missing``) when neither torch.func nor functorch is installed."""
    import torch
    func = getattr(torch, "func", None)
    if func is not None and hasattr(func, "functional_call"):
        return SimpleNamespace(vmap=func.vmap, grad=func.grad, grad_and_value=func.grad_and_value,
                               jacrev=func.jacrev, functional_call=func.functional_call)
    try:
        import functorch
    except ImportError as e:   # pragma: no cover - torch 1.13 ships functorch
        raise InvalidArgument(missing) from e
    from torch.nn.utils.stateless import functional_call
    return SimpleNamespace(vmap=functorch.vmap, grad=functorch.grad, grad_and_value=functorch.grad_and_value,
                           jacrev=functorch.jacrev, functional_call=functional_call)


def check_batch(t: Any, name: str, dtype: Any, noun: str) -> None:
    """The checks of a batch of samples on its way into a torch model: the model's dtype, a batch
    [N, ...] with N >= 1 (``noun`` names it in the message), finite values."""
    import torch
    if t.dtype != dtype:
        raise InvalidArgument(f"{name}: dtype {str(t.dtype).replace('torch.', '')} differs from the model's parameters "
                              f"({str(dtype).replace('torch.', '')}); convert {name} or the model")
    if t.ndim < 1 or t.shape[0] == 0:
        raise ShapeMismatch(f"{name}: expected {noun} [N, ...] with N >= 1, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise InvalidArgument(f"{name}: contains NaN or infinite values")
