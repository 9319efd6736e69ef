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
