#!/usr/bin/python3
"""The local learning coefficient by SGLD chains: devinterp (PyPI; 1.3.2's classic
estimate_learning_coeff_with_summary and 2.0.1's llc()) next to the dynascope package in the same
process, on the same model, data and hyperparameters. Prints, per problem and tool, the
chain-steps per second (chains * (burnin + draws * thin) / seconds; devinterp runs its chains one
after another) and the estimate (mean +- std over chains).

dynascope runs twice in each devinterp process, right after devinterp:
  Mlp    dynascope.llc(Mlp.from_torch(net), x, y): the library's batched engine, all chains in one pass
  torch  dynascope.llc(dynascope.torch_loss_grad(net, loss, x, y)): the generic path for any
         module, the loss and gradients of all chains by one functorch vmap(grad) call per step
(--dynascope picks them; with no devinterp run, dynascope runs in this script's own process).

Problems
  small  a 2-layer ReLU regression MLP 10-24-2 (314 parameters), n = 1000, full batch, trained
         briefly with Adam on a random 10-4-2 ReLU teacher plus noise.
  mnist  an MLP 784-1024-1024-10 (relu, cross-entropy) on the first n Fashion-MNIST training
         images (Debian's dataset-fashion-mnist; random data without it), minibatch m = 512,
         a few steps, trained briefly first.
  dln    a deep linear network 5-5-5-5 without biases at a true parameter of rank 2 (the teacher
         itself), n = 10000, m = 500: the estimates against Aoyagi's learning coefficient.

Both tools get nbeta explicitly (n / ln n by default) so that their conventions agree; devinterp's
own default is m / ln m. Differences that remain and that the printed numbers show:
  * 2.0.1 averages the loss over every step, burn-in and w* included; 1.3.2 and dynascope average
    the draws after burn-in. The "post-burn-in" column recomputes every tool's estimate one way:
    nbeta * (mean of the draws at steps burnin + k * thin - L_n(w*) on the whole dataset).
  * init loss: 1.3.2 averages the first `chains` minibatches of its shuffled loader, 2.0.1 32
    minibatches, dynascope the whole dataset (identical for full batch).
  * minibatches: devinterp draws without replacement within an epoch (1.3.2 reshuffles every
    epoch, 2.0.1 replays its first epoch's order and gives every chain the same order); dynascope
    draws each chain's batch independently, with replacement.
  * 1.3.2's std is over chains with ddof 1, 2.0.1's with ddof 0.
devinterp runs in its own virtual environment (Debian's torch 1.13 through --system-site-packages,
see the install lines below); this script re-runs itself there with --worker and imports the
dynascope package from <build>/python in that process too (both venvs are CPython 3.11, the
extension's Python; the package needs only numpy, which both have).

Usage: devinterp_llc.py [--problems small,mnist,dln] [--threads T] [--chains C] [--quick]
                        [--peers 1.3.2,2.0.1] [--dynascope mlp,torch]
  environment: DYNASCOPE_BUILD (build folder, default ../../build), DEVINTERP1_PYTHON,
  DEVINTERP2_PYTHON (default /work/venv-devinterp1/bin/python, /work/venv-devinterp2/bin/python).
Install the peers (no CUDA torch is downloaded):
  /usr/bin/python3 -m venv --system-site-packages V1 && V1/bin/pip install --no-deps devinterp==1.3.2 &&
  V1/bin/pip install -c <(echo numpy==1.24.2) einops tqdm cloudpickle "pandas<2.3" "matplotlib<3.10" "contourpy<1.3"
  /usr/bin/python3 -m venv --system-site-packages V2 && V2/bin/pip install --no-deps devinterp==2.0.1 &&
  V2/bin/pip install --only-binary=:all: numpy==1.26.4 tqdm "pydantic>=2" "xarray>=2024.1,<2025.7" "datasets>=2.14,<4"
    "transformers>=4.40,<4.50" "pandas<2.3" "pyarrow<20" numcodecs donfig crc32c "zarr>=3.1"
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import dynascope_package, load_fashion_mnist, need_torch  # noqa: E402

PEERS = {
    "1.3.2": os.environ.get("DEVINTERP1_PYTHON", "/work/venv-devinterp1/bin/python"),
    "2.0.1": os.environ.get("DEVINTERP2_PYTHON", "/work/venv-devinterp2/bin/python"),
}


# ---------------------------------------------------------------------------------------------
# Models (built the same way in the driver and in the devinterp workers)

def build_net(torch, widths, activation, bias):
    layers = []
    for i in range(len(widths) - 1):
        layers.append(torch.nn.Linear(widths[i], widths[i + 1], bias=bias))
        if activation == "relu" and i < len(widths) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def full_loss(torch, net, x, y, loss):
    """L_n(w) over the whole dataset in float64 (the reference init loss)."""
    with torch.no_grad():
        net64 = build_net(torch, *net_spec(net))
        net64.load_state_dict(net.state_dict())
        net64 = net64.double()
        out = net64(x.double())
        if loss == "mse":
            return torch.nn.functional.mse_loss(out, y.double()).item()
        return torch.nn.functional.cross_entropy(out, y).item()


def net_spec(net):
    import torch
    lin = [m for m in net if isinstance(m, torch.nn.Linear)]
    widths = [lin[0].in_features] + [m.out_features for m in lin]
    act = "relu" if any(isinstance(m, torch.nn.ReLU) for m in net) else "identity"
    return widths, act, lin[0].bias is not None


def aoyagi_deep_linear(widths, r):
    """Aoyagi (2024): the learning coefficient of a deep linear network with layer widths
    H_0..H_L at a true product of rank r. Σ is searched over all index sets; checked against
    Aoyagi & Watanabe (2005) for one hidden layer below."""
    import itertools
    delta = [h - r for h in widths]
    idx = range(len(widths))
    for size in range(2, len(widths) + 1):
        for sigma in itertools.combinations(idx, size):
            ell = size - 1
            inside = [delta[i] for i in sigma]
            outside = [delta[i] for i in idx if i not in sigma]
            s = sum(inside)
            if outside and not max(inside) < min(outside):
                continue
            if not s >= ell * max(inside):
                continue
            if outside and not s < ell * min(outside):
                continue
            m = math.ceil(s / ell)
            a = s - (m - 1) * ell
            pairs = sum(inside[i] * inside[j] for i in range(size) for j in range(i + 1, size))
            return (-r * r + r * (widths[0] + widths[-1])) / 2 + a * (ell - a) / (4 * ell) \
                - ell * (ell - 1) / 4 * (s / ell) ** 2 + pairs / 2
    raise ValueError(f"no index set meets Aoyagi's conditions for {widths}, r = {r}")


def reduced_rank(M, H, N, r):
    if M + H < N + r:
        return (H * M - H * r + N * r) / 2
    if N + H < M + r:
        return (H * N - H * r + M * r) / 2
    if M + N < H + r:
        return M * N / 2
    return (2 * (H + r) * (M + N) - (M - N) ** 2 - (H + r) ** 2 + (M + H + N + r) % 2) / 8


# ---------------------------------------------------------------------------------------------
# Problems: each writes weights.npz, x.npy, y.npy and problem.json into d

def make_problem(name, d, args, torch):
    g = torch.Generator().manual_seed(1234)
    torch.manual_seed(1234)
    if name == "small":
        n, widths = 1000, [10, 24, 2]
        teacher = build_net(torch, [10, 4, 2], "relu", True)
        x = torch.randn(n, 10, generator=g)
        with torch.no_grad():
            y = teacher(x) + 0.1 * torch.randn(n, 2, generator=g)
        net = build_net(torch, widths, "relu", True)
        train(torch, net, x, y, "mse", steps=args.train_steps or 2000, batch=0, lr=1e-2)
        hp = dict(loss="mse", batch=0, epsilon=1e-4, gamma=100.0, chains=args.chains or 8, draws=200, burnin=100,
                  thin=1)
        truth = None
    elif name == "mnist":
        n = args.mnist_n
        data = load_fashion_mnist(n)
        if data is None:
            print("  Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist): random data instead")
            x = torch.rand(n, 784, generator=g)
            y = torch.randint(0, 10, (n,), generator=g)
            source = "random"
        else:
            x, y = torch.from_numpy(data[0]), torch.from_numpy(data[1])
            source = "fashion-mnist"
        net = build_net(torch, [784, 1024, 1024, 10], "relu", True)
        train(torch, net, x, y, "xent", steps=args.train_steps or 60, batch=512, lr=1e-3)
        hp = dict(loss="xent", batch=512, epsilon=1e-5, gamma=100.0, chains=args.chains or 2, draws=10, burnin=5,
                  thin=1, data=source)
        truth = None
    elif name == "dln":
        n, widths, r = 10000, [5, 5, 5, 5], 2
        # A most singular true parameter of rank 2: the rank lives in the first two units of every
        # layer, all other weights are 0 (the global learning coefficient is attained there).
        net = build_net(torch, widths, "identity", False)
        with torch.no_grad():
            for m in net:
                m.weight.zero_()
            net[0].weight[:r, :] = torch.randn(r, 5, generator=g)
            net[1].weight[:r, :r] = torch.randn(r, r, generator=g)
            net[2].weight[:, :r] = torch.randn(5, r, generator=g)
            x = torch.randn(n, 5, generator=g)
            y = net(x) + torch.randn(n, 5, generator=g)
        # gamma = 1: with 100 the localization (radius 0.1) cuts off the quartic directions, whose
        # scale is nbeta^(-1/4) ~ 0.17, and both peers land near 6.8 instead of 11.
        hp = dict(loss="mse", batch=500, epsilon=1e-4, gamma=1.0, chains=args.chains or 8, draws=1000, burnin=500,
                  thin=1)
        truth = aoyagi_deep_linear(widths, r)
        check = aoyagi_deep_linear([5, 5, 5], r), reduced_rank(5, 5, 5, r)
        assert check[0] == check[1], f"Aoyagi's formula {check[0]} != Aoyagi-Watanabe {check[1]} for 5-5-5, r = 2"
    else:
        raise SystemExit(f"unknown problem '{name}' (known: small, mnist, dln)")
    for key in ("epsilon", "gamma", "draws", "burnin", "thin"):
        if getattr(args, key):
            hp[key] = getattr(args, key)
    if args.quick:
        hp["draws"], hp["burnin"] = max(4, hp["draws"] // 10), max(2, hp["burnin"] // 10)
    x_np, y_np = x.numpy().astype(np.float32), y.numpy()
    y_np = y_np.astype(np.int64) if hp["loss"] == "xent" else y_np.astype(np.float32)
    n = x_np.shape[0]
    hp.update(n=n, nbeta=args.nbeta if args.nbeta else n / math.log(n), seed=args.seed, threads=args.threads,
              full_loss=full_loss(torch, net, x, y, hp["loss"]), truth=truth,
              params=sum(p.numel() for p in net.parameters()))
    widths, act, bias = net_spec(net)
    hp.update(widths=widths, activation=act, bias=bias)
    state = {k: v.detach().numpy().astype(np.float32) for k, v in net.state_dict().items()}
    np.savez(os.path.join(d, "weights.npz"), **state)
    np.save(os.path.join(d, "x.npy"), x_np)
    np.save(os.path.join(d, "y.npy"), y_np)
    with open(os.path.join(d, "problem.json"), "w") as f:
        json.dump(hp, f)
    return hp


def train(torch, net, x, y, loss, steps, batch, lr):
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    fn = torch.nn.functional.mse_loss if loss == "mse" else torch.nn.functional.cross_entropy
    g = torch.Generator().manual_seed(7)
    for _ in range(steps):
        if batch:
            idx = torch.randint(0, x.shape[0], (batch,), generator=g)
            xb, yb = x[idx], y[idx]
        else:
            xb, yb = x, y
        opt.zero_grad()
        fn(net(xb), yb).backward()
        opt.step()


# ---------------------------------------------------------------------------------------------
# devinterp workers (run inside the peer's virtual environment)

def load_problem(torch, d):
    """(hp, net, x, y) as make_problem wrote them into d."""
    with open(os.path.join(d, "problem.json")) as f:
        hp = json.load(f)
    torch.set_num_threads(hp["threads"])
    x = torch.from_numpy(np.load(os.path.join(d, "x.npy")))
    y = torch.from_numpy(np.load(os.path.join(d, "y.npy")))
    net = build_net(torch, hp["widths"], hp["activation"], hp["bias"])
    w = np.load(os.path.join(d, "weights.npz"))
    net.load_state_dict({k: torch.from_numpy(w[k]) for k in w.files})
    return hp, net, x, y


def worker(version, d, paths):
    import warnings
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch
    hp, net, x, y = load_problem(torch, d)
    out = devinterp_run(torch, version, d, hp, net, x, y)
    out["dynascope"] = run_dynascope(torch, hp, net, x, y, paths)
    print("RESULT " + json.dumps(out))


def devinterp_run(torch, version, d, hp, net, x, y):
    n, m = x.shape[0], hp["batch"] or x.shape[0]
    C, D, B, K = hp["chains"], hp["draws"], hp["burnin"], hp["thin"]
    fn = torch.nn.functional.mse_loss if hp["loss"] == "mse" else torch.nn.functional.cross_entropy

    if version == "1.3.2":
        import contextlib
        # devinterp 1.3.2 enters torch.autocast(device_type="cpu", dtype=float16, enabled=False)
        # every step; torch 1.13 rejects float16 for CPU autocast even when it is disabled.
        autocast = torch.autocast
        torch.autocast = lambda *a, enabled=True, **k: autocast(*a, enabled=enabled, **k) if enabled \
            else contextlib.nullcontext()
        from devinterp.optim.sgld import SGLD
        from devinterp.slt.sampler import estimate_learning_coeff_with_summary
        from torch.utils.data import DataLoader, TensorDataset

        def evaluate(model, data):
            xb, yb = data
            return fn(model(xb), yb)

        loader = DataLoader(TensorDataset(x, y), batch_size=m, shuffle=True)
        t0 = time.perf_counter()
        r = estimate_learning_coeff_with_summary(
            net, loader, evaluate=evaluate, sampling_method=SGLD,
            optimizer_kwargs=dict(lr=hp["epsilon"], localization=hp["gamma"], nbeta=hp["nbeta"]),
            num_draws=D, num_chains=C, num_burnin_steps=B, num_steps_bw_draws=K, seed=hp["seed"], verbose=False)
        seconds = time.perf_counter() - t0
        per_chain = [r[f"llc-chain/{c}"] for c in range(C)]
        draws = np.asarray(r["loss/trace"], dtype=np.float64)  # [C, D]: steps B + K - 1 + k K
        # its init loss is not returned: llc_c = nbeta (mean_c - init) gives it back
        init = float(np.mean(draws.mean(axis=1) - np.asarray(per_chain) / hp["nbeta"]))
        out = dict(llc_mean=r["llc/mean"], llc_std=r["llc/std"], llc_per_chain=per_chain, init_loss=init)
    else:
        from devinterp.slt.llc import llc

        # 2.0.1 takes a language-model dataset: the rows carry their own index twice as
        # "input_ids" ([i, i], so one "token" of loss per row) and loss_fn looks the row up.
        # sample() only indexes it like a torch Dataset, so a plain one is used: a HuggingFace
        # Dataset (the documented type) costs ~8 ms more per 1000-row batch here, which would
        # dominate the small problems.
        rows = torch.arange(n)[:, None].repeat(1, 2)

        class Rows(torch.utils.data.Dataset):
            def __len__(self):
                return n

            def __getitem__(self, i):
                return {"input_ids": rows[i]}

        ids = Rows()

        def loss_fn(model, input_ids):
            idx = input_ids[:, 0]
            out = model(x[idx])
            if hp["loss"] == "mse":
                return ((out - y[idx]) ** 2).mean(dim=1, keepdim=True)
            return torch.nn.functional.cross_entropy(out, y[idx], reduction="none")[:, None]

        t0 = time.perf_counter()
        r = llc(net, ids, {}, lr=hp["epsilon"], n_beta=hp["nbeta"], localization=hp["gamma"], num_chains=C,
                num_draws=D, batch_size=m, num_burnin_steps=B, num_steps_bw_draws=K, init_seed=hp["seed"],
                loss_fn=loss_fn, device="cpu", output_path=os.path.join(d, "samples.zarr"),
                num_init_loss_batches=1 if m == n else 32)
        seconds = time.perf_counter() - t0
        trace = np.asarray(r["loss_trace"].values, dtype=np.float64)  # [C, B + D K]: every step
        draws = trace[:, B::K][:, :D]
        out = dict(llc_mean=float(r["llc_mean"]), llc_std=float(r["llc_std"]),
                   llc_per_chain=[float(v) for v in r["llc_per_chain"].values], init_loss=float(r["init_loss"]))
    post = hp["nbeta"] * (draws.mean(axis=1) - hp["full_loss"])
    out.update(seconds=seconds, post_burnin_mean=float(post.mean()), post_burnin_std=float(post.std(ddof=1)))
    return out


def run_peer(version, d, paths):
    py = PEERS[version]
    if not os.path.exists(py):
        return None, f"devinterp {version}: no interpreter at {py} (see the install lines in this script)"
    env = dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS=str(json.load(open(os.path.join(d, "problem.json")))["threads"]))
    p = subprocess.run([py, os.path.abspath(__file__), "--worker", version, "--dir", d, "--dynascope", ",".join(paths)],
                       capture_output=True, text=True, env=env)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:]), None
    return None, f"devinterp {version} failed (exit {p.returncode}):\n{p.stderr[-3000:]}"


DYNASCOPE_PATHS = {"mlp": "dynascope.llc(Mlp)", "torch": "dynascope.llc(torch_loss_grad)"}


def run_dynascope(torch, hp, net, x, y, paths):
    """{path: result or {"error": text}} of dynascope.llc in this process, on the problem's net and data
    with its hyperparameters; {} when the package cannot be imported here (the reason is on stderr)."""
    if not paths:
        return {}
    ds = dynascope_package(required=False)
    if ds is None:
        return {p: {"error": "the dynascope package is not importable in this process (see stderr)"} for p in paths}
    kw = dict(chains=hp["chains"], draws=hp["draws"], burnin=hp["burnin"], thin=hp["thin"], epsilon=hp["epsilon"],
              gamma=hp["gamma"], nbeta=hp["nbeta"], batch=hp["batch"], sampler="sgld", seed=hp["seed"],
              threads=hp["threads"], progress=False)
    results = {}
    for path in paths:
        # The model conversion copies the weights once (as the callback's w_star): outside the timing.
        if path == "mlp":
            model, args = ds.Mlp.from_torch(net), (x, y)
            kw_path = dict(kw, loss=hp["loss"])
        elif path == "torch":
            model, args, kw_path = ds.torch_loss_grad(net, hp["loss"], x, y), (), kw
        else:
            raise SystemExit(f"--dynascope: unknown path '{path}' (known: {', '.join(DYNASCOPE_PATHS)})")
        t0 = time.perf_counter()
        try:
            r = ds.llc(model, *args, **kw_path)
        except ds.Error as e:
            results[path] = {"error": f"{DYNASCOPE_PATHS[path]} failed: {e}"}
            continue
        seconds = time.perf_counter() - t0
        draws = np.asarray(r.loss_trace, dtype=np.float64)  # [C, D]
        post = hp["nbeta"] * (draws.mean(axis=1) - hp["full_loss"])
        results[path] = dict(llc_mean=r.llc_mean, llc_std=r.llc_std,
                             llc_per_chain=[float(v) for v in np.asarray(r.llc_per_chain)], init_loss=r.init_loss,
                             seconds=seconds, sampling_seconds=r.sampling_seconds, r_hat=r.r_hat, ess=r.ess,
                             mala=r.mala_acceptance, post_burnin_mean=float(post.mean()),
                             post_burnin_std=float(post.std(ddof=1)) if len(post) > 1 else float("nan"))
    return results


def print_dynascope(rows, name, hp, steps, results, tag, peer_seconds=None):
    """Prints dynascope's results of one process (tag: whose process, for the table) and adds their rows."""
    for path, res in results.items():
        if "error" in res:
            print(f"    {DYNASCOPE_PATHS[path]}: {res['error']}")
            continue
        rows.append((name, f"dynascope {path}{tag}", hp, steps, res))
        extra = f"init loss {res['init_loss']:.6g}, r_hat {res['r_hat']:.3g}, ess {res['ess']:.3g}, MALA {res['mala']:.3g}"
        if res.get("sampling_seconds"):
            extra += f", sampling alone {hp['chains'] * steps / res['sampling_seconds']:.0f} chain-steps/s"
        ratio = f" (devinterp / this = {peer_seconds / res['seconds']:.1f})" if peer_seconds else ""
        print(f"    {DYNASCOPE_PATHS[path]:32} {res['seconds']:.2f} s{ratio}, {extra}")
    ok = [r for r in results.values() if "error" not in r]
    if len(ok) == 2:
        # Same seed, same sampler: the two paths draw the same noise and minibatches; only the
        # float32 loss and gradient (library kernels vs torch) differ.
        d = np.max(np.abs(np.subtract(ok[0]["llc_per_chain"], ok[1]["llc_per_chain"])))
        print(f"    {'Mlp vs torch_loss_grad':32} max |difference| of the per-chain estimates {d:.3g} "
              f"(of max |llc| {np.max(np.abs(ok[0]['llc_per_chain'])):.3g})")


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", default="small,mnist,dln")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--chains", type=int, default=0, help="override every problem's chain count")
    ap.add_argument("--nbeta", type=float, default=0, help="default n / ln n")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mnist-n", type=int, default=10000, help="Fashion-MNIST training images used (max 60000)")
    ap.add_argument("--train-steps", type=int, default=0)
    ap.add_argument("--epsilon", type=float, default=0, help="override every problem's step size")
    ap.add_argument("--gamma", type=float, default=0, help="override every problem's localization")
    ap.add_argument("--draws", type=int, default=0)
    ap.add_argument("--burnin", type=int, default=0)
    ap.add_argument("--thin", type=int, default=0)
    ap.add_argument("--peers", default=",".join(PEERS), help="devinterp versions to run (1.3.2,2.0.1; empty: none)")
    ap.add_argument("--quick", action="store_true", help="a tenth of the draws and burn-in (a smoke run)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    ap.add_argument("--dynascope", default="mlp,torch",
                    help="dynascope paths to run in each process: mlp (the library's MLP), torch (torch_loss_grad); "
                         "empty: none")
    args = ap.parse_args()
    paths = [p for p in args.dynascope.split(",") if p]
    if args.worker:
        return worker(args.worker, args.dir, paths)

    need_torch()
    import torch
    torch.set_num_threads(args.threads)
    if paths and dynascope_package(required=False) is None:
        print("note: the dynascope half is skipped (above)")
        paths = []
    peers = [v for v in args.peers.split(",") if v]
    rows = []
    for name in args.problems.split(","):
        with tempfile.TemporaryDirectory(prefix=f"llc_{name}_") as d:
            t0 = time.perf_counter()
            hp = make_problem(name, d, args, torch)
            steps = hp["burnin"] + hp["draws"] * hp["thin"]
            print(f"\n== {name}: MLP {'-'.join(map(str, hp['widths']))} ({hp['activation']}, {hp['params']} parameters), "
                  f"n = {hp['n']}, batch {hp['batch'] or 'full'}, loss {hp['loss']}" + (f", data {hp['data']}" if 'data' in hp else ""))
            print(f"   epsilon {hp['epsilon']:g}, gamma {hp['gamma']:g}, nbeta {hp['nbeta']:.4g}, chains {hp['chains']}, "
                  f"draws {hp['draws']}, burnin {hp['burnin']}, thin {hp['thin']} -> {steps} steps per chain; "
                  f"L_n(w*) = {hp['full_loss']:.6g}; set up in {time.perf_counter() - t0:.1f} s"
                  + (f"; Aoyagi's lambda = {hp['truth']:g}" if hp["truth"] is not None else ""))
            ran_ours = False
            for v in peers:
                res, err = run_peer(v, d, paths)
                if err:
                    print("  " + err)
                    continue
                rows.append((name, f"devinterp {v}", hp, steps, res))
                print(f"  devinterp {v}: {res['seconds']:.2f} s, init loss {res['init_loss']:.6g}; in the same process:")
                print_dynascope(rows, name, hp, steps, res.get("dynascope", {}), f" @{v}", res["seconds"])
                ran_ours |= bool(res.get("dynascope"))
            if paths and not ran_ours:  # no devinterp ran: dynascope in this process
                print("  dynascope in this process:")
                _hp, net, x, y = load_problem(torch, d)
                print_dynascope(rows, name, hp, steps, run_dynascope(torch, hp, net, x, y, paths), "")

    print(f"\n{'problem':8} {'tool':22} {'chains':>6} {'steps':>6} {'seconds':>8} {'chain-steps/s':>13} "
          f"{'llc (own)':>20} {'post-burn-in':>20} {'truth':>6}")
    for name, tool, hp, steps, r in rows:
        own = f"{r['llc_mean']:.3f} ± {r['llc_std']:.3f}"
        post = f"{r['post_burnin_mean']:.3f} ± {r['post_burnin_std']:.3f}" if "post_burnin_mean" in r else "-"
        truth = f"{hp['truth']:g}" if hp["truth"] is not None else "-"
        print(f"{name:8} {tool:22} {hp['chains']:6d} {steps:6d} {r['seconds']:8.2f} "
              f"{hp['chains'] * steps / r['seconds']:13.1f} {own:>20} {post:>20} {truth:>6}")
    print("(seconds: the whole estimate call — devinterp's init loss and chains, one after another; dynascope's "
          "llc() call. 'dynascope PATH @V' ran in devinterp V's process right after it. post-burn-in: nbeta (mean "
          "draw after burn-in - L_n(w*)), std over chains with ddof 1.)")


if __name__ == "__main__":
    main()
