"""dynascope.Mlp: a multilayer perceptron's architecture and flat parameter vector."""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from ._arrays import check_array, check_finite, device_of, framework, host_view
from ._core import InvalidArgument, ShapeMismatch

__all__ = ["Mlp"]


class Mlp:
    """A multilayer perceptron: an architecture and its flat parameter vector.

    ``Mlp("784-512-10", params, activation="relu", parameterization="standard", bias=True)``

    * ``spec``: layer widths from input to outputs, e.g. ``"784-512-10"``.
    * ``params``: 1-D float32/float64 NumPy array, torch tensor (CPU or CUDA) or JAX CPU array,
      C-contiguous, in ``torch.nn.utils.parameters_to_vector`` order of the equivalent
      ``nn.Sequential`` (W1, b1, W2, b2, ...; each W is [out, in] row-major). It is kept, not
      copied. An ``Mlp`` whose parameters are on a CUDA device (see :attr:`device`) works with
      :func:`dynascope.ntk` on inputs on that device; the other functions compute on the host
      and ask for :meth:`cpu`.
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
        _, dtype = check_array(params, "params", 1, allow_cuda=True)
        if params.shape[0] != spec.num_params:
            raise ShapeMismatch(f"params: the network {spec.arch} has {spec.num_params} parameters, "
                                f"got {params.shape[0]}")
        check_finite(params, "params")
        self._spec = spec
        self.params = params
        self._view = host_view(params, "params")   # what the core reads (JAX: a NumPy view)
        self.dtype = dtype

    @property
    def params_view(self) -> Any:
        """The parameters as the host computations read them (JAX: a NumPy view of the same
        memory). Parameters on a CUDA device are refused with the fix: only :func:`dynascope.ntk`
        computes there (it reads :attr:`device_params_view`)."""
        if self.device != "cpu":
            raise InvalidArgument(f"model: the Mlp's parameters are on {self.device}, and this function computes on "
                                  f"the host only (dynascope.ntk also computes on CUDA): pass model.cpu()")
        return self._view

    @property
    def device_params_view(self) -> Any:
        """The parameters where they are (host or CUDA), for the computations that run there."""
        return self._view

    @property
    def device(self) -> str:
        """Where the parameters are: "cpu" or "cuda:N" (torch tensors on a CUDA device)."""
        return device_of(self.params)

    def cpu(self) -> "Mlp":
        """This model with its parameters on the host: ``self`` when they are there already, else
        a new ``Mlp`` over one copy (``params.cpu()``)."""
        if self.device == "cpu":
            return self
        return Mlp._from_spec(self._spec, self.params.cpu())

    def to(self, device: Any) -> "Mlp":
        """This model with torch parameters on ``device`` ("cpu", "cuda", "cuda:1", a
        ``torch.device``): ``self`` when they are there already, else a new ``Mlp`` over one copy."""
        from ._arrays import is_torch
        if not is_torch(self.params):
            raise InvalidArgument(f"device: only torch parameters move between devices; these are "
                                  f"{type(self.params).__module__}.{type(self.params).__name__}")
        moved = self.params.to(device)
        return self if moved.data_ptr() == self.params.data_ptr() else Mlp._from_spec(self._spec, moved.contiguous())

    @classmethod
    def from_pairs(cls, pairs: Sequence[Tuple[Any, Any]], activation: str = "relu",
                   parameterization: str = "standard", layout: str = "out_in") -> "Mlp":
        """From a list of ``(W, b)`` pairs, input layer first (``b`` may be None): NumPy arrays,
        torch tensors or JAX arrays, all of one dtype.

        ``layout``: "out_in" when each W is [out, in] (PyTorch's ``Linear.weight``), "in_out" when
        it is [in, out] (Flax's ``Dense`` kernel, ``x @ W`` conventions). The parameters are copied
        once into a flat vector in the framework of the first W (NumPy for JAX).
        """
        if layout not in ("out_in", "in_out"):
            raise InvalidArgument(f"layout: expected 'out_in' or 'in_out', got {layout!r}")
        if len(pairs) == 0:
            raise InvalidArgument("pairs: expected at least one (W, b) pair")
        widths: List[int] = []
        bias: List[bool] = []
        flat: List[Any] = []
        fw0 = None
        dtype0 = None
        for i, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise InvalidArgument(f"pairs[{i}]: expected a (W, b) pair, got {type(pair).__name__}")
            w, b = pair
            fw = framework(w, f"pairs[{i}][0]")
            wv = host_view(w, f"pairs[{i}][0]")
            if wv.ndim != 2:
                raise ShapeMismatch(f"pairs[{i}][0]: expected a 2-D weight matrix, got shape {tuple(wv.shape)}")
            if fw0 is None:
                fw0, dtype0 = fw, str(wv.dtype).replace("torch.", "")
            elif str(wv.dtype).replace("torch.", "") != dtype0:
                raise InvalidArgument(f"pairs[{i}][0]: dtype {wv.dtype} differs from pairs[0][0]'s {dtype0}")
            if layout == "in_out":
                wv = wv.T
            n_out, n_in = int(wv.shape[0]), int(wv.shape[1])
            if not widths:
                widths.append(n_in)
            elif n_in != widths[-1]:
                raise ShapeMismatch(f"pairs[{i}][0]: takes {n_in} inputs, but the previous layer has "
                                    f"{widths[-1]} outputs (is layout={layout!r} right?)")
            widths.append(n_out)
            flat.append(_flatten(wv, fw0))
            if b is None:
                bias.append(False)
            else:
                bv = host_view(b, f"pairs[{i}][1]")
                if tuple(bv.shape) != (n_out,):
                    raise ShapeMismatch(f"pairs[{i}][1]: expected a bias of shape ({n_out},), got {tuple(bv.shape)}")
                bias.append(True)
                flat.append(_flatten(bv, fw0))
        if fw0 == "torch":
            import torch
            params = torch.cat([f.to(flat[0].dtype) for f in flat]).contiguous()
        else:
            params = np.concatenate([np.asarray(f, dtype=flat[0].dtype) for f in flat])
        n_hidden = len(widths) - 2
        spec = _core.MlpSpec(widths, bias, [activation] * n_hidden, parameterization, 1.0)
        return cls._from_spec(spec, params)

    @classmethod
    def from_torch(cls, model: Any) -> "Mlp":
        """Converts a ``torch.nn.Sequential`` of ``Linear`` layers and supported activations.

        Supported: ``Linear`` (with or without bias), ``ReLU``, ``LeakyReLU``, ``Tanh``,
        ``GELU(approximate='none')``, ``Softplus(beta=1, threshold=20)``, ``Sigmoid`` and
        ``Identity``. Two ``Linear`` layers in a row have an identity activation between them. The
        parameters are copied once into a flat vector (``parameters_to_vector`` order), detached,
        in the model's dtype and on the model's device (a CUDA model's vector stays on its GPU,
        never passing through the host); the ``Mlp`` does not follow later changes to the model.
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
        devices = {str(p.device) for p in model.parameters()}
        if len(devices) != 1:
            raise InvalidArgument(f"model: parameters on several devices {sorted(devices)}; move the model to one "
                                  f"with model.to(device)")
        with torch.no_grad():
            params = torch.nn.utils.parameters_to_vector(model.parameters()).detach().contiguous()
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
        where = "" if self.device == "cpu" else f" on {self.device}"
        return (f"dynascope.Mlp({self.arch!r}, activations={acts}, parameterization={self.parameterization!r}, "
                f"params={self.num_params} {self.dtype}{where})")


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


def _flatten(a: Any, fw: str) -> Any:
    if fw == "torch":
        import torch
        return torch.as_tensor(a).detach().reshape(-1)
    return np.asarray(a).reshape(-1)
