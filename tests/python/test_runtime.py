"""What every call shares: Ctrl-C stops long computations promptly (not only at progress reports),
the progress switches, and the argument checks common to all families."""

import _thread
import sys
import threading
import time
import warnings

import numpy as np
import pytest

import dynascope


def _interrupt_after(seconds):
    t = threading.Timer(seconds, _thread.interrupt_main)   # as if Ctrl-C were pressed
    t.start()
    return t


def _mlp(rng, arch="20-64-64-5"):
    return dynascope.Mlp(arch, rng.standard_normal(_n_params(arch)) * 0.3)


def _n_params(arch):
    w = [int(v) for v in arch.split("-")]
    return sum(a * b + b for a, b in zip(w[:-1], w[1:]))


def test_ctrl_c_stops_llc_between_progress_reports():
    # Progress every 100000 steps: only the per-step cancel check can see the interrupt.
    rng = np.random.default_rng(0)
    mlp = _mlp(rng)
    x = rng.standard_normal((256, 20))
    y = rng.integers(0, 5, 256)
    timer = _interrupt_after(0.3)
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        dynascope.llc(mlp, x, y, chains=4, draws=10 ** 7, epsilon=1e-5, threads=1, progress=False)
    elapsed = time.perf_counter() - t0
    timer.cancel()
    assert elapsed < 5, f"stopped {elapsed:.2f} s after the call began (interrupt at 0.3 s)"
    # The interpreter and the library keep working.
    assert np.isfinite(dynascope.ntk(mlp, x[:3], threads=1, progress=False)).all()


def test_ctrl_c_stops_lanczos_between_restarts():
    # A library operator (no Python matvec): the cancel check before each application sees it.
    rng = np.random.default_rng(1)
    mlp = _mlp(rng, "30-128-128-10")
    x = rng.standard_normal((512, 30))
    y = rng.integers(0, 10, 512)
    op = dynascope.curvature_operator(mlp, x, y, curvature="hessian")
    timer = _interrupt_after(0.3)
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        dynascope.eigsh(op, k=150, tol=1e-14, max_restarts=100000, threads=1, progress=False)
    elapsed = time.perf_counter() - t0
    timer.cancel()
    assert elapsed < 5, f"stopped {elapsed:.2f} s after the call began (interrupt at 0.3 s)"


def test_set_progress_takes_a_bool_only():
    with pytest.raises(ValueError, match=r"enabled: expected True or False, got 'x'"):
        dynascope.set_progress("x")
    dynascope.set_progress(False)
    dynascope.set_progress(True)


def test_progress_true_without_tqdm_warns_once(monkeypatch):
    import dynascope._runtime as rt
    monkeypatch.setitem(sys.modules, "tqdm", None)        # import tqdm fails
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    monkeypatch.setattr(rt, "_warned_no_tqdm", False)
    rng = np.random.default_rng(2)
    mlp = _mlp(rng)
    x = rng.standard_normal((4, 20))
    with pytest.warns(RuntimeWarning, match="tqdm, which is not installed"):
        dynascope.ntk(mlp, x, threads=1, progress=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dynascope.ntk(mlp, x, threads=1, progress=True)     # once only
        dynascope.ntk(mlp, x, threads=1)                    # the default never warns


def test_threads_argument():
    rng = np.random.default_rng(3)
    mlp = _mlp(rng)
    x = rng.standard_normal((6, 20))
    k1 = dynascope.ntk(mlp, x, threads=1, progress=False)
    k0 = dynascope.ntk(mlp, x, threads=0, progress=False)    # OpenMP's default
    np.testing.assert_allclose(k0, k1, rtol=1e-12, atol=0)
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(ValueError, match="threads: expected None or an integer >= 0"):
            dynascope.ntk(mlp, x, threads=bad)


def test_nan_and_empty_inputs_are_refused_where_they_would_pass_silently():
    rng = np.random.default_rng(4)
    mlp = _mlp(rng)
    x = rng.standard_normal((3, 20))
    x[1, 2] = np.nan
    with pytest.raises(ValueError, match="x1: contains NaN or infinite values"):
        dynascope.ntk(mlp, x)
    with pytest.raises(ValueError, match="x2: contains NaN or infinite values"):
        dynascope.ntk(mlp, np.ones((2, 20)), x)
    with pytest.raises(ValueError, match=r"x1: no samples \(shape \(0, 20\)\)"):
        dynascope.ntk(mlp, np.zeros((0, 20)))
    with pytest.raises(ValueError, match=r"x: no samples"):
        dynascope.local_complexity(mlp, np.zeros((0, 20)), radius=0.1)
    p = np.ones(_n_params("3-4-2"))
    p[5] = np.inf
    with pytest.raises(ValueError, match="params: contains NaN or infinite values"):
        dynascope.Mlp("3-4-2", p)


def test_jax_tracers_get_a_clear_error():
    jax = pytest.importorskip("jax")
    rng = np.random.default_rng(5)
    mlp = dynascope.Mlp("3-4-2", rng.standard_normal(_n_params("3-4-2")).astype(np.float32))
    with pytest.raises(ValueError, match="x1: a JAX tracer .* computes eagerly"):
        jax.jit(lambda x: dynascope.ntk(mlp, x))(jax.numpy.ones((2, 3), dtype=jax.numpy.float32))


def test_jax_outputs_are_adopted_without_a_copy_and_nothing_else_goes_through_dlpack(monkeypatch):
    # jaxlib 0.4 copies a DLPack buffer it cannot adopt on a worker thread and releases the NumPy
    # array there under the GIL; at interpreter shutdown that hangs the process at exit. So outputs
    # are allocated where JAX adopts them, and anything else goes through jax.numpy.asarray.
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    from jax.experimental import enable_x64
    from dynascope import _arrays
    for shape, dtype in (((300, 257), "float32"), ((3, 5, 7), "float64"), ((0, 4), "float32"), ((1,), "int64")):
        with enable_x64():   # JAX without x64 turns 64-bit arrays into 32-bit copies
            out = _arrays.empty("jax", shape, dtype)
            assert out.shape == shape and out.dtype == np.dtype(dtype) and out.flags.c_contiguous
            assert out.size == 0 or out.ctypes.data % 64 == 0
            out[...] = np.arange(out.size).reshape(shape)
            x = _arrays.to_framework("jax", out)
            assert isinstance(x, jax.Array) and x.shape == shape and x.dtype == out.dtype
            np.testing.assert_array_equal(np.asarray(x), out)
            if out.size:
                assert x.unsafe_buffer_pointer() == out.ctypes.data   # adopted, not copied
    calls = []
    real = jnp.from_dlpack
    monkeypatch.setattr(jnp, "from_dlpack", lambda a, *args, **kw: calls.append(a) or real(a, *args, **kw))
    base = np.random.default_rng(0).standard_normal(40_008)
    with enable_x64():
        for a in (base[1:40_001], base[:40_000].reshape(200, 200)[:, ::2], base.astype(np.float32)[3:30_003]):
            x = _arrays.to_framework("jax", a)   # unaligned or strided: a copy, never through DLPack
            assert x.dtype == a.dtype
            np.testing.assert_array_equal(np.asarray(x), a)
    assert calls == []


def test_a_script_ending_with_jax_results_exits():
    # The hang this guards against (see the test above) came 1 run in 5 on an idle machine, so a
    # few runs of each script catch a regression almost surely; each run takes about a second.
    pytest.importorskip("jax")
    import os
    import subprocess
    script = ("import jax, jax.numpy as jnp, numpy as np, dynascope\n"
              "jax.config.update('jax_enable_x64', True)\n"
              "h = jnp.asarray([0.5, 1.0, 2.0])\n"
              "vg = jax.jit(jax.vmap(jax.value_and_grad(lambda w: 0.5 * jnp.sum(h * w ** 2))))\n"
              "r = dynascope.llc(lambda p, b: vg(p), w_star=jnp.zeros(3), n=1000, nbeta=100.0, epsilon=1e-3,\n"
              "                  chains=8, draws=2000, burnin=10, progress=False)\n"
              "x = jnp.asarray(np.random.default_rng(0).standard_normal((200, 300)))\n"
              "k = dynascope.ntk(dynascope.Mlp('300-64-10', jnp.zeros(300 * 64 + 64 + 64 * 10 + 10)), x)\n")
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(dynascope.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in [package_root, env.get("PYTHONPATH", "")] if p)
    for _ in range(4):
        r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
