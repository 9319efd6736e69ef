"""dynascope: training-dynamics diagnostics for deep networks, from Python.

This first step of the package offers :class:`Mlp` (a multilayer perceptron given by a spec string
or converted from a PyTorch ``nn.Sequential``) and :func:`ntk` (its empirical neural tangent
kernel) on the host backend. Arrays are NumPy arrays or PyTorch CPU tensors, float32 or float64,
C-contiguous; results come back in the caller's framework, and inputs are never copied.
"""

from __future__ import annotations

import os
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from ._core import Error, InvalidArgument, OutOfMemory, ShapeMismatch

__all__ = ["Mlp", "ntk", "Error", "InvalidArgument", "ShapeMismatch", "OutOfMemory", "__version__"]
__version__ = "0.1.0"

_NUMPY_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}


def _is_torch(a: Any) -> bool:
    # Checked by module name so that NumPy-only users never import torch.
    return type(a).__module__.split(".")[0] == "torch"


def _framework(a: Any, name: str) -> str:
    if isinstance(a, np.ndarray):
        return "numpy"
    if _is_torch(a):
        return "torch"
    raise InvalidArgument(
        f"{name}: expected a numpy.ndarray or a torch.Tensor, got {type(a).__module__}.{type(a).__name__} "
        f"(convert it with numpy.asarray({name}) or torch.as_tensor({name}))")


def _check_array(a: Any, name: str, ndim: int) -> Tuple[str, str]:
    """Checks one input array; returns (framework, dtype name). Never copies."""
    fw = _framework(a, name)
    if fw == "numpy":
        dtype = _NUMPY_DTYPES.get(a.dtype)
        contiguous = a.flags.c_contiguous
        fix = f"numpy.ascontiguousarray({name})"
        cast = f"{name}.astype(numpy.float64)"
    else:
        import torch
        dtype = {torch.float32: "float32", torch.float64: "float64"}.get(a.dtype)
        contiguous = a.is_contiguous()
        fix = f"{name}.contiguous()"
        cast = f"{name}.double()"
        if a.device.type != "cpu":
            raise InvalidArgument(
                f"{name}: this version of the package computes on the host only; the tensor is on "
                f"{a.device}: pass {name}.cpu()")
    if dtype is None:
        raise InvalidArgument(f"{name}: expected float32 or float64, got {a.dtype} (convert it, e.g. {cast})")
    if a.ndim != ndim:
        what = "[N, D] (one sample per row)" if ndim == 2 else "[P] (a flat vector)"
        raise ShapeMismatch(f"{name}: expected a {ndim}-D array {what}, got shape {tuple(a.shape)}")
    if not contiguous:
        raise InvalidArgument(f"{name}: the array is not C-contiguous (row-major); pass {fix} (one copy)")
    return fw, dtype


class Mlp:
    """A multilayer perceptron: an architecture and its flat parameter vector.

    ``Mlp("784-512-10", params, activation="relu", parameterization="standard", bias=True)``

    * ``spec``: layer widths from input to outputs, e.g. ``"784-512-10"``.
    * ``params``: 1-D float32/float64 NumPy array or torch CPU tensor, C-contiguous, in
      ``torch.nn.utils.parameters_to_vector`` order of the equivalent ``nn.Sequential``
      (W1, b1, W2, b2, ...; each W is [out, in] row-major). It is kept, not copied.
    * ``activation``: one for every hidden layer: relu, leaky_relu[:slope], abs, tanh, gelu (erf),
      softplus (beta 1, threshold 20), sigmoid, identity.
    * ``parameterization``: "standard" or "ntk".
    * ``bias``: True/False for every layer, or one bool per layer.
    """

    def __init__(self, spec: str, params: Any, activation: str = "relu", parameterization: str = "standard",
                 bias: Union[bool, Sequence[bool]] = True) -> None:
        s = _core.MlpSpec.from_arch(spec, activation, parameterization)
        if isinstance(bias, bool):
            if not bias:
                s.set_bias([False] * (len(s.widths) - 1))
        else:
            s.set_bias([bool(b) for b in bias])
        self._init(s, params)

    @classmethod
    def _from_spec(cls, spec: "_core.MlpSpec", params: Any) -> "Mlp":
        self = cls.__new__(cls)
        self._init(spec, params)
        return self

    def _init(self, spec: "_core.MlpSpec", params: Any) -> None:
        _, dtype = _check_array(params, "params", 1)
        if params.shape[0] != spec.num_params:
            raise ShapeMismatch(f"params: the network {spec.arch} has {spec.num_params} parameters, "
                                f"got {params.shape[0]}")
        self._spec = spec
        self.params = params
        self.dtype = dtype

    @classmethod
    def from_torch(cls, model: Any) -> "Mlp":
        """Converts a ``torch.nn.Sequential`` of ``Linear`` layers and supported activations.

        Supported: ``Linear`` (with or without bias), ``ReLU``, ``LeakyReLU``, ``Tanh``,
        ``GELU(approximate='none')``, ``Softplus(beta=1, threshold=20)``, ``Sigmoid`` and
        ``Identity``. Two ``Linear`` layers in a row have an identity activation between them. The
        parameters are copied once into a flat vector (``parameters_to_vector`` order), detached,
        in the model's dtype; the ``Mlp`` does not follow later changes to the model.
        """
        import torch
        from torch import nn

        if not isinstance(model, nn.Sequential):
            raise InvalidArgument(f"model: expected a torch.nn.Sequential, got {type(model).__name__}")
        widths: List[int] = []
        bias: List[bool] = []
        activations: List[str] = []
        pending: Optional[str] = None   # the activation after the last Linear, if any
        linears: List[Any] = []
        for i, layer in enumerate(model):
            where = f"model[{i}] ({layer!r})"
            if isinstance(layer, nn.Linear):
                if linears:
                    if layer.in_features != widths[-1]:
                        raise ShapeMismatch(f"{where}: in_features {layer.in_features} does not match the "
                                            f"previous layer's {widths[-1]} outputs")
                    activations.append(pending or "identity")
                else:
                    widths.append(layer.in_features)
                pending = None
                widths.append(layer.out_features)
                bias.append(layer.bias is not None)
                linears.append(layer)
                continue
            if isinstance(layer, nn.Identity):
                continue
            name = _torch_activation(layer, where)
            if not linears:
                raise InvalidArgument(f"{where}: the network must start with a Linear layer")
            if pending is not None:
                raise InvalidArgument(f"{where}: two activations in a row ({pending}, {name}) are not an MLP")
            pending = name
        if not linears:
            raise InvalidArgument("model: the Sequential has no Linear layer")
        if pending is not None:
            raise InvalidArgument(f"model: ends with an activation ({pending}); the MLP's outputs are the last "
                                  f"Linear layer's (apply the activation to the outputs yourself)")
        dtypes = {p.dtype for p in model.parameters()}
        if len(dtypes) != 1:
            raise InvalidArgument(f"model: parameters of mixed dtypes {sorted(map(str, dtypes))}; convert with "
                                  f"model.double() or model.float()")
        with torch.no_grad():
            params = torch.nn.utils.parameters_to_vector(model.parameters()).detach().cpu().contiguous()
        spec = _core.MlpSpec(widths, bias, activations, "standard", 1.0)
        return cls._from_spec(spec, params)

    @property
    def arch(self) -> str:
        """Layer widths, e.g. "784-512-10"."""
        return self._spec.arch

    @property
    def widths(self) -> List[int]:
        return list(self._spec.widths)

    @property
    def bias(self) -> List[bool]:
        return list(self._spec.bias)

    @property
    def activations(self) -> List[str]:
        """One per hidden layer."""
        return list(self._spec.activations)

    @property
    def parameterization(self) -> str:
        return self._spec.parameterization

    @property
    def num_params(self) -> int:
        return self._spec.num_params

    def __repr__(self) -> str:
        acts = ",".join(sorted(set(self.activations))) or "none"
        return (f"dynascope.Mlp({self.arch!r}, activations={acts}, parameterization={self.parameterization!r}, "
                f"params={self.num_params} {self.dtype})")


def _torch_activation(layer: Any, where: str) -> str:
    from torch import nn

    if isinstance(layer, nn.ReLU):
        return "relu"
    if isinstance(layer, nn.LeakyReLU):
        return f"leaky_relu:{float(layer.negative_slope)!r}"
    if isinstance(layer, nn.Tanh):
        return "tanh"
    if isinstance(layer, nn.Sigmoid):
        return "sigmoid"
    if isinstance(layer, nn.GELU):
        if getattr(layer, "approximate", "none") != "none":
            raise InvalidArgument(f"{where}: only GELU(approximate='none') (the erf form) is supported")
        return "gelu"
    if isinstance(layer, nn.Softplus):
        if layer.beta != 1 or layer.threshold != 20:
            raise InvalidArgument(f"{where}: only Softplus(beta=1, threshold=20) is supported")
        return "softplus"
    raise InvalidArgument(
        f"{where}: unsupported module {type(layer).__name__}; Mlp.from_torch supports Linear, ReLU, LeakyReLU, "
        f"Tanh, GELU, Softplus, Sigmoid and Identity")


def _empty(fw: str, shape: Sequence[int], dtype: str) -> Any:
    if fw == "torch":
        import torch
        return torch.empty(tuple(shape), dtype=getattr(torch, dtype))
    return np.empty(tuple(shape), dtype=dtype)


def ntk(model: Mlp, x1: Any, x2: Any = None, outputs: str = "trace", method: str = "auto",
        per_layer: bool = False, threads: Optional[int] = None) -> Any:
    """The empirical neural tangent kernel of ``model`` between the rows of ``x1`` and ``x2``.

    * ``x1`` [N1, D], ``x2`` [N2, D] (None: ``x2 = x1``, computed on the symmetric path): NumPy
      arrays or torch CPU tensors with the model's dtype (float32 or float64), C-contiguous. They
      are read in place, never copied.
    * ``outputs``: "full" [N1, O, N2, O], "diagonal" [N1, N2, O], "trace" [N1, N2] (the sum over
      outputs) or "sum" [N1, N2] (the kernel of the summed output).
    * ``method``: "auto", "structured", "jvp" or "jacobian" (all give the same numbers).
    * ``per_layer``: also return one kernel per layer (they sum to the kernel).
    * ``threads``: host threads; None uses ``os.cpu_count()`` (explicitly, because importing
      torch lowers OpenMP's default thread count).

    Returns the kernel in ``x1``'s framework (NumPy in, NumPy out; torch in, torch out), or
    ``(kernel, [kernel_layer_1, ..., kernel_layer_L])`` when ``per_layer`` is true.
    """
    if not isinstance(model, Mlp):
        raise InvalidArgument(f"model: expected a dynascope.Mlp, got {type(model).__name__}")
    fw, dtype = _check_array(x1, "x1", 2)
    if x2 is not None:
        _, dtype2 = _check_array(x2, "x2", 2)
        if dtype2 != dtype:
            raise InvalidArgument(f"x2: dtype {dtype2} differs from x1's {dtype}; convert one of them")
    if dtype != model.dtype:
        raise InvalidArgument(f"x1: dtype {dtype} differs from the model's parameters ({model.dtype}); "
                              f"convert the inputs or the parameters")
    d = model.widths[0]
    for name, x in (("x1", x1), ("x2", x2)):
        if x is not None and x.shape[1] != d:
            raise ShapeMismatch(f"{name}: the network {model.arch} takes {d} inputs per sample, "
                                f"got shape {tuple(x.shape)}")
    if threads is None:
        threads = os.cpu_count() or 0
    n2 = x1.shape[0] if x2 is None else x2.shape[0]
    shape = _core.kernel_shape(outputs, x1.shape[0], n2, model.widths[-1])
    out = _empty(fw, shape, dtype)
    layers = [_empty(fw, shape, dtype) for _ in range(len(model.widths) - 1)] if per_layer else []
    _core.ntk_into(model._spec, model.params, x1, x2, outputs, method, int(threads), out, layers)
    return (out, layers) if per_layer else out
