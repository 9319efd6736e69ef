"""dynascope on CUDA: what the build reports, device arrays at the binding, and dynascope.ntk on
CUDA tensors.

The host-side tests run everywhere: the CUDA status against independent evidence (the build's
CMake cache, /dev/nvidia*, torch's view of the devices), and the binding's device checks through
hand-made DLPack capsules that claim CUDA memory (their pointers are never dereferenced: every
call is refused before any memory is touched).

The GPU tests need a CUDA device that both torch and the library can use; they compare the
kernel computed on CUDA tensors with one computed from per-sample Jacobians taken with
torch.autograd on the host in float64 (no dynascope code involved), and check that the result is
on the inputs' device, that nothing is copied (data pointers, torch's allocation count) and that
the library's work is ordered on the caller's stream.
"""
import ctypes
import os
import re
from pathlib import Path

import numpy as np
import pytest

import dynascope
from dynascope import _core, _runtime
from helpers import assert_close, jacobians
from helpers import ntk_reference as reference

torch = pytest.importorskip("torch")
nn = torch.nn


# ---- The build's CUDA status -------------------------------------------------------------------

def _expected_built():
    """Whether this build has the CUDA backend, read from the CMake cache of the build tree the
    package was imported from (PYTHONPATH=<build>/python), or None for an installed package."""
    # not resolved: the build tree links the package's .py files to the sources
    cache = Path(os.path.abspath(dynascope.__file__)).parent.parent.parent / "CMakeCache.txt"
    if not cache.exists():
        return None
    text = cache.read_text(errors="replace")
    mode = re.search(r"^DYNASCOPE_CUDA:\w+=(\w+)$", text, re.M)
    if mode is None:
        return None
    if mode.group(1) == "OFF":
        return False
    compiler = re.search(r"^CMAKE_CUDA_COMPILER:\w+=(.*)$", text, re.M)
    return bool(compiler and compiler.group(1) and not compiler.group(1).endswith("NOTFOUND"))


def test_cuda_status_is_consistent():
    st = dynascope.cuda_status()
    assert set(st) == {"built", "device_count", "reason"}
    assert isinstance(st["built"], bool) and isinstance(st["device_count"], int) and isinstance(st["reason"], str)
    assert dynascope.cuda_available() == (st["built"] and st["device_count"] > 0)
    if not st["built"]:
        assert st["device_count"] == 0
        assert "without CUDA" in st["reason"]
    if st["device_count"] == 0:
        assert st["reason"], "no device but no reason"
    # a fresh dict each call: the caller may change it
    st["built"] = not st["built"]
    assert dynascope.cuda_status()["built"] != st["built"]


def test_cuda_status_matches_the_build():
    expected = _expected_built()
    if expected is None:
        pytest.skip("not imported from a CMake build tree (an installed package): nothing to compare with")
    assert dynascope.cuda_status()["built"] == expected


def test_no_device_without_a_gpu():
    if any(Path("/dev").glob("nvidia[0-9]*")):
        pytest.skip("this machine has NVIDIA device nodes")
    st = dynascope.cuda_status()
    assert st["device_count"] == 0
    assert not dynascope.cuda_available()
    assert st["reason"]


def test_device_count_agrees_with_torch():
    if torch.version.cuda is None:
        pytest.skip("torch was built without CUDA: it cannot count devices")
    if not dynascope.cuda_status()["built"]:
        pytest.skip("dynascope was built without CUDA")
    assert dynascope.cuda_status()["device_count"] == torch.cuda.device_count()


# ---- Device arrays at the binding, without a GPU -----------------------------------------------

class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]


_PyCapsule_New = ctypes.pythonapi.PyCapsule_New
_PyCapsule_New.restype = ctypes.py_object
_PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]

_KDL_CPU, _KDL_CUDA, _KDL_CUDA_MANAGED = 1, 2, 13
_FAKE_ADDRESS = 0x7F0000001000   # never dereferenced


class FakeDeviceArray:
    """A C-contiguous float64 array that claims to live in `device_type` memory, exported through
    DLPack (unversioned capsules, no deleter). Its data pointer is a made-up address."""

    def __init__(self, shape, device_type=_KDL_CUDA, device_id=0, address=_FAKE_ADDRESS):
        self.shape = tuple(shape)
        self.address = address
        self._keep = []
        n = len(shape)
        dims = (ctypes.c_int64 * n)(*shape)
        mt = _DLManagedTensor()
        mt.dl_tensor.data = address
        mt.dl_tensor.device = _DLDevice(device_type, device_id)
        mt.dl_tensor.ndim = n
        mt.dl_tensor.dtype = _DLDataType(2, 64, 1)   # kDLFloat, 64 bits
        mt.dl_tensor.shape = dims
        mt.dl_tensor.strides = None                  # compact row-major
        mt.dl_tensor.byte_offset = 0
        self._mt = mt
        self._keep.append(dims)

    def __dlpack__(self, **kwargs):
        return _PyCapsule_New(ctypes.addressof(self._mt), b"dltensor", None)

    def __dlpack_device__(self):
        return (self._mt.dl_tensor.device.device_type, self._mt.dl_tensor.device.device_id)


def small_spec():
    return _core.MlpSpec.from_arch("3-4-2", "tanh", "standard")


def call_ntk_into(params, x1, out, x2=None, per_layer=()):
    return _core.ntk_into(small_spec(), params, x1, x2, "trace", "auto", 1, None, out, list(per_layer), 0)


def test_binding_takes_device_arrays_in_place():
    a = FakeDeviceArray((5, 3))
    assert _core.input_address(a) == _FAKE_ADDRESS        # accepted as it is: no conversion, no copy
    b = FakeDeviceArray((7,), device_id=1, address=_FAKE_ADDRESS + 4096)
    assert _core.input_address(b) == _FAKE_ADDRESS + 4096


def test_binding_refuses_arrays_on_different_devices():
    p = np.zeros(small_spec().num_params)
    x_host = np.zeros((5, 3))
    out_host = np.empty((5, 5))
    with pytest.raises(dynascope.InvalidArgument, match=r"params: on cpu, but x1 is on cuda:0; every array"):
        call_ntk_into(p, FakeDeviceArray((5, 3)), out_host)
    with pytest.raises(dynascope.InvalidArgument, match=r"out: on cuda:0, but x1 is on cpu"):
        call_ntk_into(p, x_host, FakeDeviceArray((5, 5)))
    with pytest.raises(dynascope.InvalidArgument, match=r"x2: on cuda:1, but x1 is on cuda:0"):
        call_ntk_into(FakeDeviceArray((p.size,)), FakeDeviceArray((5, 3)), FakeDeviceArray((5, 4)),
                      x2=FakeDeviceArray((4, 3), device_id=1))
    with pytest.raises(dynascope.InvalidArgument, match=r"per_layer: on cuda:0, but x1 is on cpu"):
        call_ntk_into(p, x_host, out_host, per_layer=[np.empty((5, 5)), FakeDeviceArray((5, 5))])


def test_binding_refuses_other_memory_kinds():
    p = np.zeros(small_spec().num_params)
    with pytest.raises(dynascope.InvalidArgument, match=r"x1: the array is in CUDA managed memory"):
        call_ntk_into(p, FakeDeviceArray((5, 3), device_type=_KDL_CUDA_MANAGED), np.empty((5, 5)))


def test_cuda_arrays_without_a_usable_device_are_refused_before_any_work():
    if dynascope.cuda_available():
        pytest.skip("a usable device: the fake pointers would be read")
    n = small_spec().num_params
    with pytest.raises(dynascope.Error) as e:
        call_ntk_into(FakeDeviceArray((n,)), FakeDeviceArray((5, 3)), FakeDeviceArray((5, 5)))
    if dynascope.cuda_status()["built"]:
        assert "no usable CUDA device" in str(e.value)
    else:
        assert "built without the CUDA backend" in str(e.value)


def test_python_layer_says_how_to_fix_a_cuda_tensor_without_cuda():
    if dynascope.cuda_available():
        pytest.skip("CUDA is usable here")
    with pytest.raises(dynascope.InvalidArgument) as e:
        _runtime.check_cuda("cuda:0", "x1")
    msg = str(e.value)
    assert msg.startswith("x1: the tensor is on cuda:0") and "x1.cpu()" in msg
    if dynascope.cuda_status()["built"]:
        assert "no usable CUDA device" in msg
    else:
        assert "built without the CUDA backend" in msg and "pip install ." in msg


class FakeCudaTensor(torch.Tensor):
    """A host tensor that says it is on cuda:0, to drive the Python layer's CUDA path without a
    GPU. Its memory is never read: every call below is refused before reaching the library."""

    @property
    def device(self):
        return torch.device("cuda", 0)

    @property
    def is_cuda(self):
        return True


FakeCudaTensor.__module__ = "torch.testing_fake"   # the package recognises torch by module name


def fake_cuda(*shape):
    return torch.zeros(*shape, dtype=torch.float64).as_subclass(FakeCudaTensor)


def test_cuda_tensor_without_a_usable_device_gets_the_fix():
    if dynascope.cuda_available():
        pytest.skip("CUDA is usable here: the fake tensor would reach the library")
    mlp = dynascope.Mlp("3-4-2", fake_cuda(26), activation="tanh")
    expected = ("no usable CUDA device" if dynascope.cuda_status()["built"] else
                "built without the CUDA backend")
    with pytest.raises(dynascope.InvalidArgument, match=r"x1: the tensor is on cuda:0, but .*" + expected):
        dynascope.ntk(mlp, fake_cuda(5, 3))
    # checked before the devices are compared: on such a build the fix is x1.cpu()
    host_mlp = dynascope.Mlp("3-4-2", torch.zeros(26, dtype=torch.float64), activation="tanh")
    with pytest.raises(dynascope.InvalidArgument, match=expected):
        dynascope.ntk(host_mlp, fake_cuda(5, 3))


def test_model_with_cuda_parameters():
    mlp = dynascope.Mlp("3-4-2", fake_cuda(26), activation="tanh")
    assert mlp.device == "cuda:0" and "on cuda:0" in repr(mlp)
    # the host computations refuse it with the fix
    with pytest.raises(dynascope.InvalidArgument, match=r"^model: the Mlp's parameters are on cuda:0, and this "
                                                        r"function computes on the host only .*model.cpu\(\)$"):
        mlp.params_view
    with pytest.raises(dynascope.InvalidArgument, match=r"model: the Mlp's parameters are on cuda:0"):
        dynascope.local_complexity(mlp, np.zeros((2, 3)), 0.1, threads=1, progress=False)
    # ntk on host inputs names the mismatch (checked before anything is computed)
    if not dynascope.cuda_available():
        with pytest.raises(dynascope.InvalidArgument, match=r"model: the Mlp's parameters are on cuda:0, but x1 is "
                                                            r"on cpu; pass model.to\(x1.device\)"):
            dynascope.ntk(mlp, np.zeros((5, 3)))


def test_tensors_on_other_torch_devices_are_refused():
    mlp = dynascope.Mlp("3-4-2", torch.zeros(26, dtype=torch.float64), activation="tanh")
    x = torch.empty(5, 3, dtype=torch.float64, device="meta")
    with pytest.raises(dynascope.InvalidArgument, match=r"x1: dynascope computes on the host or on CUDA devices; "
                                                        r"the tensor is on meta: pass x1.cpu\(\)"):
        dynascope.ntk(mlp, x)
    with pytest.raises(dynascope.InvalidArgument, match=r"params: .*the tensor is on meta"):
        dynascope.Mlp("3-4-2", torch.empty(26, dtype=torch.float64, device="meta"))


def test_host_model_reports_its_device():
    mlp = dynascope.Mlp("3-4-2", torch.zeros(26, dtype=torch.float64))
    assert mlp.device == "cpu"
    assert mlp.cpu() is mlp
    assert mlp.to("cpu") is mlp
    assert mlp.params_view is mlp.params
    with pytest.raises(dynascope.InvalidArgument, match="only torch parameters move"):
        dynascope.Mlp("3-4-2", np.zeros(26)).to("cpu")


# ---- On a GPU ------------------------------------------------------------------------------------

gpu = pytest.mark.skipif(
    not (torch.cuda.is_available() and dynascope.cuda_available()),
    reason="needs a CUDA device usable by torch and a dynascope built with CUDA "
           f"(torch: {torch.cuda.is_available()}, dynascope: {dynascope.cuda_status()})")


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6, bias=False), nn.GELU(),
                         nn.Linear(6, 3)).double()




@gpu
@pytest.mark.parametrize("outputs", ["full", "diagonal", "trace", "sum"])
@pytest.mark.parametrize("two_sets", [False, True])
@pytest.mark.parametrize("method", ["auto", "jvp", "jacobian"])
def test_ntk_on_cuda_tensors_matches_torch_float64(outputs, two_sets, method):
    model = make_model()
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(6, 5, generator=g, dtype=torch.float64)
    x2 = torch.randn(4, 5, generator=g, dtype=torch.float64) if two_sets else None
    expected = reference(jacobians(model, x1), jacobians(model, x2) if two_sets else jacobians(model, x1), outputs)
    dev = torch.device("cuda", torch.cuda.current_device())
    mlp = dynascope.Mlp.from_torch(model.to(dev))
    assert mlp.device == f"cuda:{dev.index}" and mlp.params.is_cuda
    k = dynascope.ntk(mlp, x1.to(dev), None if x2 is None else x2.to(dev), outputs=outputs, method=method,
                      progress=False)
    assert isinstance(k, torch.Tensor) and k.device == dev and k.dtype == torch.float64
    assert_close(k, expected, 1e-10)
    # and the same numbers as the host path on CPU copies, to rounding
    host = dynascope.ntk(mlp.cpu(), x1, x2, outputs=outputs, method=method, threads=1, progress=False)
    assert_close(k, host, 1e-12)


@gpu
def test_ntk_on_cuda_float32_and_per_layer():
    model = make_model(3)
    x = torch.randn(8, 5, dtype=torch.float64)
    j = jacobians(model, x)
    expected = reference(j, j, "trace")
    mlp = dynascope.Mlp.from_torch(model.float().cuda())
    k, layers = dynascope.ntk(mlp, x.float().cuda(), per_layer=True, progress=False)
    assert k.dtype == torch.float32 and k.is_cuda and all(l.is_cuda for l in layers) and len(layers) == 3
    assert_close(k, expected, 1e-5)
    assert_close(sum(l.double() for l in layers), expected, 1e-5)
    assert torch.equal(k, k.T)   # the symmetric path is exactly symmetric on CUDA too


@gpu
def test_ntk_on_cuda_copies_nothing():
    model = make_model(4).cuda()
    mlp = dynascope.Mlp.from_torch(model)
    x = torch.randn(16, 5, dtype=torch.float64, device="cuda")
    # inputs reach the library at the caller's addresses
    assert _core.input_address(x) == x.data_ptr()
    assert _core.input_address(mlp.params) == mlp.params.data_ptr()
    # the output the library writes is the tensor returned, and torch allocates nothing else
    seen = {}
    real = _core.ntk_into

    def spy(*args):
        seen["params"], seen["x1"], seen["out"] = args[1].data_ptr(), args[2].data_ptr(), args[8].data_ptr()
        return real(*args)

    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    _core.ntk_into = spy
    try:
        k = dynascope.ntk(mlp, x, outputs="full", progress=False)
    finally:
        _core.ntk_into = real
    grown = torch.cuda.memory_allocated() - before
    assert seen == {"params": mlp.params.data_ptr(), "x1": x.data_ptr(), "out": k.data_ptr()}
    assert k.is_cuda and k.shape == (16, 3, 16, 3)
    # torch's allocator rounds blocks up to 512 bytes: only the kernel itself was allocated
    assert grown == (k.numel() * k.element_size() + 511) // 512 * 512
    j = jacobians(model.cpu(), x.cpu())
    assert_close(k, reference(j, j, "full"), 1e-10)


@gpu
@pytest.mark.parametrize("side_stream", [False, True])
def test_ntk_is_ordered_on_the_callers_stream(side_stream):
    """The input is written by a copy queued behind a long GPU sleep on the caller's current stream;
    a library that computed on a stream of its own would read the zeros that are there before."""
    model = make_model(5)
    src = torch.randn(12, 5, dtype=torch.float64)
    j = jacobians(model, src)
    expected = reference(j, j, "trace")
    mlp = dynascope.Mlp.from_torch(model.cuda())
    src_gpu = src.cuda()
    x = torch.zeros_like(src_gpu)
    torch.cuda.synchronize()
    stream = torch.cuda.Stream() if side_stream else torch.cuda.default_stream()
    with torch.cuda.stream(stream):
        assert torch.cuda.current_stream().cuda_stream == stream.cuda_stream
        torch.cuda._sleep(200_000_000)   # ~0.1 s of GPU time ahead of the copy
        x.copy_(src_gpu)
        k = dynascope.ntk(mlp, x, progress=False)
        # the call waited for its work: the stream is idle when it returns
        assert stream.query()
    assert_close(k, expected, 1e-10)


@gpu
def test_ntk_refuses_mixed_devices_with_the_fix():
    model = make_model()
    x = torch.randn(4, 5, dtype=torch.float64)
    mlp_cpu = dynascope.Mlp.from_torch(model)
    mlp_gpu = dynascope.Mlp.from_torch(make_model().cuda())
    with pytest.raises(dynascope.InvalidArgument, match=r"model: the Mlp's parameters are on cpu, but x1 is on cuda:\d"):
        dynascope.ntk(mlp_cpu, x.cuda())
    with pytest.raises(dynascope.InvalidArgument, match=r"model: the Mlp's parameters are on cuda:\d, but x1 is on cpu"):
        dynascope.ntk(mlp_gpu, x)
    with pytest.raises(dynascope.InvalidArgument, match=r"x2: on cpu, but x1 is on cuda:\d"):
        dynascope.ntk(mlp_gpu, x.cuda(), x)
    # host-only functions name the fix for a model on the GPU
    with pytest.raises(dynascope.InvalidArgument, match=r"computes on\s+the host only .*model.cpu\(\)"):
        mlp_gpu.params_view
    assert mlp_gpu.cpu().device == "cpu"
    assert torch.equal(mlp_gpu.cpu().params, mlp_cpu.params)
    assert mlp_gpu.to(mlp_gpu.params.device) is mlp_gpu


@gpu
def test_ntk_on_a_second_device():
    if torch.cuda.device_count() < 2:
        pytest.skip("one CUDA device")
    model = make_model(6)
    x = torch.randn(5, 5, dtype=torch.float64)
    j = jacobians(model, x)
    dev = torch.device("cuda", 1)
    current = torch.cuda.current_device()
    k = dynascope.ntk(dynascope.Mlp.from_torch(model.to(dev)), x.to(dev), outputs="full", progress=False)
    assert k.device == dev
    assert torch.cuda.current_device() == current   # the caller's current device is left as it was
    assert_close(k, reference(j, j, "full"), 1e-10)
