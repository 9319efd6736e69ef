#!/usr/bin/python3
"""Local elasticity of an MLP 784-512-512-10 (ReLU), 256 sources x 4096 targets: the reference
per-source PyTorch loop of the papers' notebooks next to `dynascope elasticity` on the same
weights and data, the dynascope package called in the same process (dynascope.elasticity on
Mlp.from_torch(net), step and ntk forms, and dynascope.torch_elasticity on the module itself, the
generic path). Checks that the S_rel matrices agree and prints the times.

The reference (He & Su; Dan, Mukherjee, Das, Gampa): for each source x_i, deepcopy the model, take
one torch.optim.SGD step (lr = eta) on that sample's loss, forward the targets and the source
itself, and divide the targets' change by the source's own change:
  mse   (one-hot value targets, metric abs)  S_rel = ||f(x'; w+) - f(x'; w)||_2 / ||f(x; w+) - f(x; w)||_2
  xent  (labels, metric kl)       S_rel = KL(p_w(x') || p_w+(x')) / KL(p_w(x) || p_w+(x)), p = softmax f
        (metric kl-compat)        the notebooks' F.kl_div(p, q) (probabilities where log-probabilities
                                  belong): mean_k q_k (log q_k - p_k) in the same ratio
The notebooks loop over (source, target) pairs, one copy per pair; looping over sources and
forwarding all targets at once gives the same numbers N2 times faster, and is what is timed here
(--per-pair K times K literal pair iterations and extrapolates to all N1 * N2 pairs).
Every metric is taken in float64 from the float32 logits, as dynascope does, so the comparison
isolates the step and the forwards.

Also, where torch has it (torch.func, or functorch with torch 1.13):
  vmap  the vectorised alternative: per-sample gradients by vmap(grad), then the N1 updated
        parameter sets through vmap(functional_call) over the targets, in chunks of sources.
  jvp   the eta -> 0 limit that `--form ntk` computes: Delta_i(x') = -eta J(x') grad l_i, one
        Jacobian-vector product per source (vmapped); KL's limit is Delta'^T F' Delta' / Delta^T F Delta,
        F = diag p - p p^T.
  f64   the per-source loop and the jvp limit in float64 on the first --truth sources: the
        references both float32 results are measured against (which sits closer to the exact value).

Agreement (the script exits non-zero otherwise): abs and kl-compat, linear in the change, agree
with the loop to 1e-4 relative in every entry; the true KL, quadratic in a small change of the
probabilities, loses digits to float32 cancellation in both tools, so it must agree in the median
(1e-4) and sit no farther from the float64 reference than torch's own float32 result (99th
percentile, within a factor 2); the same for the ntk form against the jvp limit.

Data: the first N1 (sources) and the next N2 (targets) Fashion-MNIST training images (Debian's
dataset-fashion-mnist; uniform random pixels without it); the network is PyTorch-initialised
(seed 0) and trained --train-steps Adam steps first, so that the step is taken mid-training.

dynascope (times of the calls, the weights converted once before them):
  dynascope.elasticity(Mlp, form="step")   the library's batched steps (all sources at once)
  dynascope.elasticity(Mlp, form="ntk")    its eta -> 0 limit, against the jvp limit
  dynascope.torch_elasticity(net)          the generic path for any module: per-sample gradients
                                           and stepped forwards by torch.func, metrics in the library

Usage: torch_elasticity.py [--sources 256] [--targets 4096] [--eta 0.01] [--threads 2]
                           [--losses mse,xent] [--quick] [--per-pair K] [--truth K] [--no-vmap]
                           [--no-generic] [--keep DIR]
  environment: DYNASCOPE_BUILD (build folder, default ../../build).
Run with Debian's /usr/bin/python3 (torch 1.13 + functorch) or any python with torch."""
import argparse
import copy
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import dynascope_package, load_fashion_mnist, need_torch, relu_mlp, save_safetensors  # noqa: E402

need_torch()
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

try:
    from torch.func import functional_call, grad, jvp, vmap  # torch >= 2.0
except ImportError:
    try:
        from functorch import grad, jvp, vmap  # torch 1.13
        from torch.nn.utils.stateless import functional_call
    except ImportError:
        functional_call = None

WIDTHS = [784, 512, 512, 10]


def build_net():
    return relu_mlp(WIDTHS)


def loss_fn(loss):
    return F.mse_loss if loss == "mse" else F.cross_entropy


# ---------------------------------------------------------------------------------------------
# Metrics: m(x'; i) from base logits [.., O] and changed logits, in float64

def measure(metric, base, new):
    base, new = base.double(), new.double()
    if metric == "abs":
        return (new - base).norm(dim=-1)
    lp, lq = F.log_softmax(base, dim=-1), F.log_softmax(new, dim=-1)
    if metric == "kl":
        return (lp.exp() * (lp - lq)).sum(dim=-1)
    # kl-compat, as the notebooks write it: F.kl_div(p, q) with p, q probabilities; reduction
    # 'mean' over the C classes of one sample.
    p, q = lp.exp(), lq.exp()
    return F.kl_div(p, q, reduction="none").mean(dim=-1)


def measure_limit(metric, base, delta):
    """The eta -> 0 limit of m for an output change delta (up to the factor eta^2 or eta that cancels)."""
    base, delta = base.double(), delta.double()
    if metric == "abs":
        return delta.norm(dim=-1)
    p = F.softmax(base, dim=-1)
    # Delta^T (diag p - p p^T) Delta
    return (p * delta * delta).sum(dim=-1) - (p * delta).sum(dim=-1) ** 2


# ---------------------------------------------------------------------------------------------
# The reference: one model copy and one optimizer step per source

def stepped_copy(net, fn, xi, yi, eta):
    """A copy of net after one SGD step of size eta on the loss fn of (xi, yi); net is unchanged."""
    m_i = copy.deepcopy(net)
    opt = torch.optim.SGD(m_i.parameters(), lr=eta)
    opt.zero_grad()
    fn(m_i(xi), yi).backward()
    opt.step()
    return m_i


def reference_loop(net, x1, y1, x2, eta, loss, metrics, sources=None):
    fn = loss_fn(loss)
    n1 = x1.shape[0] if sources is None else sources
    with torch.no_grad():
        base1, base2 = net(x1[:n1]), net(x2)
    s = {m: np.empty((n1, x2.shape[0])) for m in metrics}
    for i in range(n1):
        m_i = stepped_copy(net, fn, x1[i:i + 1], y1[i:i + 1], eta)
        with torch.no_grad():
            new2, new1 = m_i(x2), m_i(x1[i:i + 1])
        for m in metrics:
            s[m][i] = (measure(m, base2, new2) / measure(m, base1[i:i + 1], new1)).numpy()
    return s


def per_pair_seconds(net, x1, y1, x2, eta, loss, metric, pairs):
    """The notebooks' literal loop: one copy, step and two single-sample forwards per pair."""
    fn = loss_fn(loss)
    t0 = time.perf_counter()
    for k in range(pairs):
        i, j = k % x1.shape[0], (k * 7) % x2.shape[0]
        with torch.no_grad():
            b1, b2 = net(x1[i:i + 1]), net(x2[j:j + 1])
        m_i = stepped_copy(net, fn, x1[i:i + 1], y1[i:i + 1], eta)
        with torch.no_grad():
            _ = measure(metric, b2, m_i(x2[j:j + 1])) / measure(metric, b1, m_i(x1[i:i + 1]))
    return (time.perf_counter() - t0) / pairs


# ---------------------------------------------------------------------------------------------
# The vectorised alternatives (torch.func / functorch)

def per_sample_grads(net, params, x1, y1, loss):
    fn = loss_fn(loss)

    def sample_loss(p, xi, yi):
        return fn(functional_call(net, p, (xi.unsqueeze(0),)), yi.unsqueeze(0))

    return vmap(grad(sample_loss), (None, 0, 0))(params, x1, y1)


def vmap_step(net, x1, y1, x2, eta, loss, metrics, chunk):
    params = {k: v.detach() for k, v in net.named_parameters()}
    g = per_sample_grads(net, params, x1, y1, loss)
    with torch.no_grad():
        base1, base2 = net(x1), net(x2)

    def fwd(p, x):
        return functional_call(net, p, (x,))

    s = {m: np.empty((x1.shape[0], x2.shape[0])) for m in metrics}
    for c0 in range(0, x1.shape[0], chunk):
        c1 = min(c0 + chunk, x1.shape[0])
        p_c = {k: params[k].unsqueeze(0) - eta * g[k][c0:c1] for k in params}
        new2 = vmap(fwd, (0, None))(p_c, x2)                             # [c, N2, O]
        new1 = vmap(fwd, (0, 0))(p_c, x1[c0:c1].unsqueeze(1))[:, 0]     # [c, O]
        for m in metrics:
            s[m][c0:c1] = (measure(m, base2.unsqueeze(0), new2) / measure(m, base1[c0:c1], new1)[:, None]).numpy()
    return s


def jvp_limit(net, x1, y1, x2, loss, metrics, chunk):
    """S_rel in the eta -> 0 limit: Delta_i(x) proportional to J(x) g_i, by forward-mode products."""
    params = {k: v.detach() for k, v in net.named_parameters()}
    g = per_sample_grads(net, params, x1, y1, loss)
    with torch.no_grad():
        base1, base2 = net(x1), net(x2)

    def push(tangent, x):
        return jvp(lambda p: functional_call(net, p, (x,)), (params,), (tangent,))[1]

    s = {m: np.empty((x1.shape[0], x2.shape[0])) for m in metrics}
    for c0 in range(0, x1.shape[0], chunk):
        c1 = min(c0 + chunk, x1.shape[0])
        t_c = {k: g[k][c0:c1] for k in params}
        d2 = vmap(push, (0, None))(t_c, x2)                             # [c, N2, O]
        d1 = vmap(push, (0, 0))(t_c, x1[c0:c1].unsqueeze(1))[:, 0]     # [c, O]
        for m in metrics:
            s[m][c0:c1] = (measure_limit(m, base2.unsqueeze(0), d2) / measure_limit(m, base1[c0:c1], d1)[:, None]).numpy()
    return s


# ---------------------------------------------------------------------------------------------

def run_dynascope(ds, model, x1, t1, x2, lab2, loss, metric, form, eta, threads):
    """(S_rel [N1, N2] as NumPy, seconds, error text or None) of one dynascope call in this process:
    dynascope.elasticity on an Mlp, or dynascope.torch_elasticity (form "generic") on the module."""
    kw = dict(x2=x2, targets2=lab2 if loss == "xent" else None, eta=eta, update="sgd", metric=metric, loss=loss,
              progress=False)
    t0 = time.perf_counter()
    try:
        if form == "generic":
            r = ds.torch_elasticity(model, x1, t1, **kw)
        else:
            r = ds.elasticity(model, x1, t1, form=form, threads=threads, **kw)
    except ds.Error as e:
        return None, None, f"dynascope {form} failed: {e}"
    seconds = time.perf_counter() - t0
    return np.asarray(r.s_rel), seconds, None


def compare(a, b):
    """max |a - b| / max |b|; the relative difference |a - b| / |b| (max, 99th percentile, median)
    over the entries with |b| >= 1e-2 median |b| (an S_rel near 0 has no relative precision); NaN
    entries must coincide."""
    if a.shape != b.shape:
        return f"shapes differ: {a.shape} vs {b.shape}", dict(max=np.inf, p99=np.inf, median=np.inf)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    if (nan_a != nan_b).any():
        return f"NaN in different places ({nan_a.sum()} vs {nan_b.sum()})", dict(max=np.inf, p99=np.inf, median=np.inf)
    ok = ~nan_b
    diff = np.abs(a[ok] - b[ok])
    big = np.abs(b[ok]) >= 1e-2 * np.median(np.abs(b[ok]))
    rel = diff[big] / np.abs(b[ok][big])
    stats = dict(max=rel.max(), p99=np.percentile(rel, 99), median=np.median(rel))
    return (f"max abs {diff.max():.2e} (of max |S| {np.abs(b[ok]).max():.3g}); rel: max {stats['max']:.2e}, "
            f"p99 {stats['p99']:.2e}, median {stats['median']:.2e} ({big.sum()} of {ok.sum()} entries)"), stats


def verdict(ok, what):
    """Prints a failed check and returns whether it held."""
    if not ok:
        print(f"     DISAGREE: {what}")
    return ok


def uptime():
    try:
        with open("/proc/loadavg") as f:
            return "load " + " ".join(f.read().split()[:3])
    except OSError:
        return "load ?"


def make_problem(args, d):
    torch.manual_seed(0)
    n1, n2 = args.sources, args.targets
    data = load_fashion_mnist(n1 + n2 + 4096)
    if data is None:
        print("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist): random pixels instead")
        g = torch.Generator().manual_seed(1)
        x = torch.rand(n1 + n2 + 4096, 784, generator=g)
        y = torch.randint(0, 10, (x.shape[0],), generator=g)
    else:
        x, y = torch.from_numpy(data[0]), torch.from_numpy(data[1])
    net = build_net()
    # a few Adam steps on the images past the sources and targets, so the step is mid-training
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xt, yt = x[n1 + n2:], y[n1 + n2:]
    g = torch.Generator().manual_seed(2)
    for _ in range(args.train_steps):
        idx = torch.randint(0, xt.shape[0], (128,), generator=g)
        opt.zero_grad()
        F.cross_entropy(net(xt[idx]), yt[idx]).backward()
        opt.step()
    x1, x2 = x[:n1].contiguous(), x[n1:n1 + n2].contiguous()
    lab1, lab2 = y[:n1].contiguous(), y[n1:n1 + n2].contiguous()
    targets = {"xent": (lab1, lab2), "mse": (F.one_hot(lab1, 10).float(), F.one_hot(lab2, 10).float())}
    if d:  # --keep: the problem as the CLI reads it (dynascope elasticity --model ... --inputs x1.npy ...)
        os.makedirs(d, exist_ok=True)
        save_safetensors(os.path.join(d, "model.safetensors"),
                         {k: v.detach().numpy().astype(np.float32) for k, v in net.state_dict().items()},
                         {"activation": "relu"})
        np.save(os.path.join(d, "x1.npy"), x1.numpy())
        np.save(os.path.join(d, "x2.npy"), x2.numpy())
        for loss, (t1, t2) in targets.items():
            np.save(os.path.join(d, f"y1_{loss}.npy"), t1.numpy())
            np.save(os.path.join(d, f"y2_{loss}.npy"), t2.numpy())
    return net, x1, x2, targets, "fashion-mnist" if data is not None else "random"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sources", type=int, default=256)
    ap.add_argument("--targets", type=int, default=4096)
    ap.add_argument("--eta", type=float, default=0.01)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--losses", default="mse,xent")
    ap.add_argument("--train-steps", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="64 sources x 512 targets")
    ap.add_argument("--per-pair", type=int, default=50, help="literal per-pair iterations to time (0: none)")
    ap.add_argument("--truth", type=int, default=16, help="sources of the float64 reference loop (0: none)")
    ap.add_argument("--chunk", type=int, default=16, help="sources per vmap chunk")
    ap.add_argument("--no-vmap", action="store_true")
    ap.add_argument("--no-generic", action="store_true", help="skip dynascope.torch_elasticity")
    ap.add_argument("--keep", help="write the problem (model.safetensors, x1/x2/y .npy) and dynascope's S_rel "
                                   "matrices into this folder")
    args = ap.parse_args()
    if args.quick:
        args.sources, args.targets = 64, 512
    torch.set_num_threads(args.threads)
    ds = dynascope_package()
    vectorised = functional_call is not None and not args.no_vmap
    failed = False
    d = args.keep
    net, x1, x2, targets, source = make_problem(args, d)
    net.eval()
    mlp = ds.Mlp.from_torch(net)  # one copy of the weights, outside the timed calls
    n1, n2 = args.sources, args.targets
    print(f"local elasticity, MLP {'-'.join(map(str, WIDTHS))} (relu), {n1} sources x {n2} targets "
          f"({source}), float32, eta {args.eta:g}, torch {torch.__version__} on {args.threads} threads")
    for loss in args.losses.split(","):
        metrics = ["abs"] if loss == "mse" else ["kl", "kl-compat"]
        y1 = targets[loss][0]
        lab2 = targets[loss][1] if loss == "xent" else None
        print(f"\n== loss {loss}, metrics {', '.join(metrics)}")
        t0 = time.perf_counter()
        ref = reference_loop(net, x1, y1, x2, args.eta, loss, metrics)
        t_ref = time.perf_counter() - t0
        print(f"  torch per-source loop (deepcopy + SGD step + forward):  {t_ref:8.2f} s  "
              f"{n1 * n2 / t_ref:10.3g} pairs/s   [{uptime()}]")
        if args.per_pair:
            t_pair = per_pair_seconds(net, x1, y1, x2, args.eta, loss, metrics[0], args.per_pair)
            print(f"  torch per-pair loop (the notebooks'), {args.per_pair} pairs timed: {t_pair * 1e3:.2f} ms a pair "
                  f"-> {t_pair * n1 * n2:.0f} s for all {n1 * n2} pairs")
        vm = lim = None
        lim_metrics = [m for m in metrics if m != "kl-compat"]
        if vectorised:
            t0 = time.perf_counter()
            vm = vmap_step(net, x1, y1, x2, args.eta, loss, metrics, args.chunk)
            t_vm = time.perf_counter() - t0
            print(f"  torch vmap(grad) + vmap(functional_call):               {t_vm:8.2f} s  "
                  f"{n1 * n2 / t_vm:10.3g} pairs/s   [{uptime()}]")
            t0 = time.perf_counter()
            lim = jvp_limit(net, x1, y1, x2, loss, lim_metrics, args.chunk)
            t_lim = time.perf_counter() - t0
            print(f"  torch vmap(jvp), the eta -> 0 limit:                    {t_lim:8.2f} s  "
                  f"{n1 * n2 / t_lim:10.3g} pairs/s   [{uptime()}]")
        truth = lim_truth = None
        if args.truth:
            k = min(args.truth, n1)
            net64 = copy.deepcopy(net).double()
            y1t = y1 if loss == "xent" else y1.double()
            truth = reference_loop(net64, x1.double(), y1t, x2.double(), args.eta, loss, metrics, sources=k)
            if vectorised:
                lim_truth = jvp_limit(net64, x1[:k].double(), y1t[:k], x2.double(), loss, lim_metrics, args.chunk)
        for m in metrics:
            print(f"  -- metric {m}")
            if vm is not None:
                print(f"     vmap vs loop:              {compare(vm[m], ref[m])[0]}")
            ref_truth = None
            if truth is not None:
                text, ref_truth = compare(ref[m][:k], truth[m])
                print(f"     loop (f32) vs f64 loop:    {text}   (first {k} sources)")
            s_ours, sec, err = run_dynascope(ds, mlp, x1, y1, x2, lab2, loss, m, "step", args.eta, args.threads)
            if err:
                print("     " + err)
                failed = True
                continue
            if d:
                np.save(os.path.join(d, f"S_{loss}_{m}_step.npy"), s_ours)
            text, st = compare(s_ours, ref[m])
            print(f"     dynascope.elasticity step: {sec:8.2f} s  "
                  f"{n1 * n2 / sec:10.3g} pairs/s, {t_ref / sec:.1f}x the per-source loop"
                  + (f", {t_vm / sec:.1f}x vmap" if vm is not None else "") + f"   [{uptime()}]")
            print(f"     dynascope step vs loop:    {text}")
            # Two float32 computations of one step agree to rounding where S_rel is well
            # conditioned (abs, kl-compat: linear in the change). The true KL is quadratic in
            # a small change of the probabilities, so float32's cancellation leaves some pairs
            # with percent-level errors in both: there the criterion is the distance to the
            # float64 loop, no worse than torch's own float32 loop.
            if m == "kl":
                failed |= not verdict(st["median"] <= 1e-4, f"median relative difference {st['median']:.2e} > 1e-4")
            else:
                failed |= not verdict(st["max"] <= 1e-4, f"max relative difference {st['max']:.2e} > 1e-4")
            if truth is not None:
                text, ours_truth = compare(s_ours[:k], truth[m])
                print(f"     dynascope vs f64 loop:     {text}   (first {k} sources)")
                failed |= not verdict(ours_truth["p99"] <= 2 * ref_truth["p99"] + 1e-6,
                                      f"p99 distance to the float64 loop {ours_truth['p99']:.2e}, torch's float32 "
                                      f"loop {ref_truth['p99']:.2e}")
            if not args.no_generic:
                s_gen, sec_g, err = run_dynascope(ds, net, x1, y1, x2, lab2, loss, m, "generic", args.eta,
                                                  args.threads)
                if err:
                    print("     " + err)
                    failed = True
                else:
                    text, st = compare(s_gen, ref[m])
                    print(f"     dynascope.torch_elasticity:{sec_g:8.2f} s  {n1 * n2 / sec_g:10.3g} pairs/s, "
                          f"{t_ref / sec_g:.1f}x the per-source loop"
                          + (f", {t_vm / sec_g:.1f}x vmap" if vm is not None else "") + f"   [{uptime()}]")
                    print(f"     torch_elasticity vs loop:  {text}")
                    if m == "kl":
                        failed |= not verdict(st["median"] <= 1e-4,
                                              f"median relative difference {st['median']:.2e} > 1e-4")
                    else:
                        failed |= not verdict(st["max"] <= 1e-4, f"max relative difference {st['max']:.2e} > 1e-4")
            if m == "kl-compat":
                continue
            s_ntk, sec_n, err = run_dynascope(ds, mlp, x1, y1, x2, lab2, loss, m, "ntk", args.eta, args.threads)
            if err:
                print("     " + err)
                failed = True
                continue
            if d:
                np.save(os.path.join(d, f"S_{loss}_{m}_ntk.npy"), s_ntk)
            print(f"     dynascope.elasticity ntk:  {sec_n:8.2f} s  "
                  f"{n1 * n2 / sec_n:10.3g} pairs/s" + (f", {t_lim / sec_n:.1f}x vmap(jvp)"
                                                        if lim is not None else "") + f"   [{uptime()}]")
            if lim is not None:
                text, st = compare(s_ntk, lim[m])
                print(f"     dynascope ntk vs jvp:      {text}")
                failed |= not verdict(st["median"] <= 1e-4, f"median relative difference {st['median']:.2e} > 1e-4")
            if lim_truth is not None:
                text, jvp_truth = compare(lim[m][:k], lim_truth[m])
                print(f"     jvp (f32) vs f64 jvp:      {text}   (first {k} sources)")
                text, ntk_truth = compare(s_ntk[:k], lim_truth[m])
                print(f"     dynascope ntk vs f64 jvp:  {text}   (first {k} sources)")
                failed |= not verdict(ntk_truth["p99"] <= 2 * jvp_truth["p99"] + 1e-6,
                                      f"p99 distance to the float64 jvp {ntk_truth['p99']:.2e}, torch's float32 "
                                      f"jvp {jvp_truth['p99']:.2e}")
            print(f"     step vs ntk (eta = {args.eta:g}):  {compare(s_ours, s_ntk)[0]}")
    if failed:
        sys.exit("the matrices disagree, or a dynascope run failed (above)")


if __name__ == "__main__":
    main()
