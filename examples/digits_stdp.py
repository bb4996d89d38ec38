"""Learn deconvolutional filters from handwritten digits with trace STDP.

A small spiking model on scikit-learn's bundled 8x8 digits (``load_digits``), built around one
``convstdp.synapses.TraceSTDPDeconvSynapse`` stepped as a simulation steps it
(``advance_state``, ``evolve``, ``backtransmit`` every time step):

- **image layer** (the synapse's output side, ``(N, 8, 8, 1)``): every step each pixel spikes
  with probability ``p_max * intensity`` (Bernoulli rate code). These data spikes are the
  synapse's ``postSpike``.
- **latent layer** (the synapse's input side, ``(N, 3, 3, C)``: C channels at 3x3 positions):
  leaky integrators driven by the synapse's ``backtransmit`` of the data spikes
  (``dInputs = dX(W, postSpike)``: how well each filter matches the image at each position,
  divided by the filter's norm), with a k-winner-take-all firing rule: each step the ``k`` units
  with the highest potential spike. Their spikes and traces are the synapse's ``inputs``,
  ``preSpike`` and ``preTrace``.
- **the synapse** (``6x6`` filters, stride 1, ``VALID``: 3x3 -> 8x8): ``advance_state`` turns the
  latent spikes into a reconstruction ``outputs = deconv2d(s_lat, W)``; the image layer emits its
  own (model) spikes from that reconstruction, and their trace is ``postTrace``. ``evolve``
  applies the seed's rule unchanged::

      dW = A+ * dK(z_lat - x_tar, s_data) - A- * dK(s_lat, z_model)

  LTP pairs latent activity with the data spikes, LTD pairs latent spikes with the model's own
  output spikes (a teacher-vs-model pairing as in ReSuMe). With ``A+ = A-``, equal trace time
  constants and ``x_tar = 0`` its expectation is ``s_lat * (x - x_hat)``: a spiking delta rule,
  so the filters learn to reconstruct the digits from a few latent spikes. ``w_bound`` keeps the
  filters in ``[0.01, 0.99]`` (non-negative parts).

``python examples/digits_stdp.py --help``. Writes ``filters.png``, ``curve.png``, ``filters.npy``
and ``summary.json`` into ``--out``. Deterministic for a seed on a given backend.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

LATENT = 3  # latent map 3x3
KSIZE = 6  # 6x6 filters, stride 1, VALID: (3 - 1) * 1 + 6 = 8


def load_data(n_train: int, n_test: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Digits as ``(N, 8, 8, 1)`` float32 intensities in [0, 1]: a shuffled train / held-out split."""
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.float32) / 16.0
    if n_train + n_test > len(images):
        raise ValueError(f"n_train + n_test must be at most {len(images)}, got {n_train} + {n_test}")
    order = rng.permutation(len(images))
    return images[order[:n_train], :, :, None], images[order[len(images) - n_test :], :, :, None]


class DigitsModel:
    """Image layer, k-WTA latent layer and one ``TraceSTDPDeconvSynapse`` between them."""

    def __init__(
        self,
        backend: str,
        *,
        channels: int = 32,
        batch: int = 32,
        k: int = 6,
        p_max: float = 0.9,
        tau: float = 1.0,
        lr: float = 3e-4,
        seed: int = 0,
    ) -> None:
        from convstdp.synapses import TraceSTDPDeconvSynapse

        self.batch, self.k, self.p_max, self.channels = batch, k, p_max, channels
        self.decay = float(np.exp(-1.0 / tau))  # trace and potential decay per step
        # eta rescales the trace gain 1 / (1 - decay) and the spike rate p_max out of the rule, so
        # lr is the delta rule's step size (per image and latent spike)
        self.eta = lr * (1.0 - self.decay) / p_max
        w0 = np.random.default_rng(seed).uniform(0.05, 0.25, (KSIZE, KSIZE, channels, 1)).astype(np.float32)
        self.syn = TraceSTDPDeconvSynapse(
            "digits",
            shape=(KSIZE, KSIZE, channels, 1),
            x_shape=(LATENT, LATENT),
            A_plus=1.0,
            A_minus=1.0,
            eta=self.eta,
            pretrace_target=0.0,
            filter_init=w0,
            stride=1,
            padding="VALID",
            w_bound=1.0,
            batch_size=batch,
            backend=backend,
            seed=seed,
        )

    def weights(self) -> np.ndarray:
        return np.asarray(self.syn.weights.get(), dtype=np.float32)

    def present(self, x: np.ndarray, steps: int, learn: bool, rng: np.random.Generator) -> np.ndarray:
        """Show the batch ``x`` for ``steps`` steps; returns the mean reconstruction over the second half."""
        syn, n = self.syn, x.shape[0]
        lat_shape = (n, LATENT, LATENT, self.channels)
        flat = LATENT * LATENT * self.channels
        syn.reset()
        syn.eta.set(np.full((1, 1), self.eta if learn else 0.0))
        v = np.zeros(lat_shape, np.float32)  # latent potentials
        z_lat = np.zeros(lat_shape, np.float32)  # latent traces
        z_out = np.zeros(x.shape, np.float32)  # traces of the model's own output spikes
        drive = np.zeros(lat_shape, np.float32)
        recon = np.zeros(x.shape, np.float32)
        for t in range(steps):
            s_data = (rng.random(x.shape, dtype=np.float32) < self.p_max * x).astype(np.float32)
            # latent layer: leaky integration of the back-transmitted drive, k-WTA
            v = self.decay * v + drive
            top = np.argpartition(-v.reshape(n, flat), self.k - 1, axis=1)[:, : self.k]
            s_lat = np.zeros((n, flat), np.float32)
            np.put_along_axis(s_lat, top, 1.0, axis=1)
            s_lat = s_lat.reshape(lat_shape) * (v > 0)  # nothing fires before any drive arrived
            z_lat = self.decay * z_lat + s_lat
            # synapse forward: the reconstruction from this step's latent spikes
            syn.inputs.set(s_lat)
            syn.advance_state()
            x_hat = np.asarray(syn.outputs.get(), dtype=np.float32)
            s_model = (rng.random(x.shape, dtype=np.float32) < self.p_max * np.clip(x_hat, 0.0, 1.0)).astype(np.float32)
            z_out = self.decay * z_out + s_model
            if t >= steps // 2:
                recon += x_hat
            # trace STDP: pre = latent layer, post = image layer (data spikes, trace of the model's spikes)
            syn.preSpike.set(s_lat)
            syn.preTrace.set(z_lat)
            syn.postSpike.set(s_data)
            syn.postTrace.set(z_out)
            syn.evolve()
            syn.backtransmit()  # dInputs = dX(W, s_data): the latent layer's drive at the next step
            w = self.weights()
            drive = np.asarray(syn.dInputs.get(), dtype=np.float32) / np.sqrt((w * w).sum(axis=(0, 1, 3)))
        return recon / (steps - steps // 2)


def rel_error(recon: np.ndarray, x: np.ndarray) -> float:
    """Relative squared reconstruction error ``sum (x_hat - x)^2 / sum x^2``."""
    return float(np.sum((recon - x) ** 2) / np.sum(x**2))


def evaluate(model: DigitsModel, images: np.ndarray, steps: int, seed: int) -> tuple[float, np.ndarray]:
    """Reconstruction error on ``images`` with learning off (eta = 0) and fixed spike noise; and the reconstructions."""
    rng = np.random.default_rng([seed, 1])
    b = model.batch
    recon = np.concatenate([model.present(images[i : i + b], steps, False, rng) for i in range(0, len(images), b)])
    return rel_error(recon, images), recon


def train(
    backend: str = "numba",
    epochs: int = 8,
    steps: int = 12,
    seed: int = 0,
    *,
    n_train: int = 1536,
    n_test: int = 256,
    batch: int = 32,
    evals: int = 10,
    log: Callable[[str], Any] = print,
    **model_kw: Any,
) -> dict[str, Any]:
    """Train the model; returns the filters, the learning curves and the time taken."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    train_x, test_x = load_data(n_train, n_test, rng)
    n_train = len(train_x) - len(train_x) % batch
    test_x = test_x[: len(test_x) - len(test_x) % batch]
    if n_train == 0 or len(test_x) == 0:
        raise ValueError(f"n_train and n_test must be at least the batch size {batch}")
    model = DigitsModel(backend, batch=batch, seed=seed, **model_kw)
    w_init = model.weights().copy()
    per_epoch = n_train // batch
    total = epochs * per_epoch
    # held-out evaluations: at the start, then geometrically spaced (learning is fastest early on)
    eval_at = {0, *(int(v) for v in np.geomspace(per_epoch / 8, total, evals)[:-1])}
    curve_batches: list[int] = []
    curve_train: list[float] = []
    eval_batches: list[int] = []
    eval_test: list[float] = []
    done = 0
    every = max(1, epochs // 4)
    for epoch in range(epochs):
        order = rng.permutation(n_train)
        for b in range(per_epoch):
            if done in eval_at:
                eval_batches.append(done)
                eval_test.append(evaluate(model, test_x, steps, seed)[0])
            x = train_x[order[b * batch : (b + 1) * batch]]
            recon = model.present(x, steps, True, rng)
            done += 1
            curve_batches.append(done)
            curve_train.append(rel_error(recon, x))
        if (epoch + 1) % every == 0 or epoch + 1 == epochs:
            log(
                f"epoch {epoch + 1}/{epochs}: training error {np.mean(curve_train[-per_epoch:]):.3f}, "
                f"held-out error {eval_test[-1]:.3f} at batch {eval_batches[-1]} ({time.perf_counter() - t0:.1f} s)"
            )
    eval_batches.append(done)
    err, recon = evaluate(model, test_x, steps, seed)
    eval_test.append(err)
    mean_digit = rel_error(np.broadcast_to(train_x.mean(axis=0), test_x.shape), test_x)
    return {
        "backend": backend,
        "epochs": epochs,
        "steps": steps,
        "seed": seed,
        "n_train": n_train,
        "n_test": len(test_x),
        "batches": total,
        "filters": model.weights(),
        "filters_init": w_init,
        "curve_batches": curve_batches,
        "curve_train": curve_train,
        "eval_batches": eval_batches,
        "eval_test": eval_test,
        "mean_digit_error": mean_digit,
        "seconds": time.perf_counter() - t0,
        "test_examples": test_x[:8, :, :, 0],
        "test_reconstructions": recon[:8, :, :, 0],
    }


def save_outputs(result: dict[str, Any], out: str) -> dict[str, str]:
    """Write ``filters.png``, ``curve.png``, ``filters.npy`` and ``summary.json`` into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    paths = {name: os.path.join(out, name) for name in ("filters.png", "curve.png", "filters.npy", "summary.json")}
    w = result["filters"][:, :, :, 0]  # (6, 6, C)
    c = w.shape[2]
    cols = 8
    rows = -(-c // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.05, rows * 1.05 + 0.45))
    for i, ax in enumerate(np.ravel(axes)):
        ax.set_axis_off()
        if i < c:  # one shared grey scale: 0 white, the largest weight black
            ax.imshow(w[:, :, i], cmap="gray_r", vmin=0.0, vmax=float(w.max()), interpolation="nearest")
    fig.suptitle(
        f"{c} learned 6x6 deconv filters (trace STDP on 8x8 digits; backend {result['backend']}, "
        f"{result['batches']} batches)",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(paths["filters.png"], dpi=100)
    plt.close(fig)

    fig = plt.figure(figsize=(9.6, 3.6))
    grid = fig.add_gridspec(2, 2, width_ratios=(1.75, 1), height_ratios=(1, 1))
    ax = fig.add_subplot(grid[:, 0])
    tb = np.asarray(result["curve_batches"])
    tr = np.asarray(result["curve_train"])
    win = max(1, len(tr) // 25)
    ax.plot(tb, tr, color="0.82", lw=0.7, label="training batch (while learning)")
    ax.plot(tb[win - 1 :], np.convolve(tr, np.ones(win) / win, mode="valid"), color="C0", lw=1.5,
            label=f"training, mean of {win} batches")  # fmt: skip
    ax.plot(result["eval_batches"], result["eval_test"], "o-", ms=4, color="C3",
            label=f"{result['n_test']} held-out digits (learning off)")  # fmt: skip
    ax.axhline(result["mean_digit_error"], color="k", ls="--", lw=1, label="baseline: predict the mean digit")
    ax.set_xlabel(f"training batch (32 digits x {result['steps']} steps)")
    ax.set_ylabel(r"relative error $\|\hat{x}-x\|^2 / \|x\|^2$")
    ax.set_ylim(0, max(1.0, float(np.max(result["eval_test"])) * 1.05))
    ax.legend(fontsize=8)
    ax.set_title(f"reconstruction error (backend {result['backend']})", fontsize=9)
    # held-out digits (top) and their reconstructions from the latent spikes (bottom), after training
    rows = (("test_examples", "held-out digits"), ("test_reconstructions", "reconstructed"))
    for row, (key, label) in enumerate(rows):
        sub = grid[row, 1].subgridspec(1, 6, wspace=0.08)
        for j in range(6):
            a = fig.add_subplot(sub[0, j])
            a.imshow(np.clip(result[key][j], 0, 1), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
            a.set_xticks([])
            a.set_yticks([])
            if j == 0:
                a.set_ylabel(label, fontsize=8)
    fig.tight_layout()
    fig.savefig(paths["curve.png"], dpi=100)
    plt.close(fig)

    np.save(paths["filters.npy"], result["filters"])
    summary = {key: val for key, val in result.items() if isinstance(val, int | float | str | list)}
    with open(paths["summary.json"], "w") as fh:
        json.dump(summary, fh, indent=1)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Learn deconvolutional filters from 8x8 digits with trace STDP.")
    p.add_argument("--backend", default="numba", help="convstdp backend: reference, numba, jax, ngclearn... (numba)")
    p.add_argument("--epochs", type=int, default=8, help="passes over the training digits (8)")
    p.add_argument("--steps", type=int, default=12, help="simulation steps per presented batch (12)")
    p.add_argument("--train", type=int, default=1536, help="training digits (1536)")
    p.add_argument("--test", type=int, default=256, help="held-out digits for the learning curve (256)")
    p.add_argument("--seed", type=int, default=0, help="seeds the split, the initial filters and the spikes (0)")
    p.add_argument("--out", default="digits_out", help="output directory (./digits_out)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    res = train(args.backend, args.epochs, args.steps, args.seed, n_train=args.train, n_test=args.test)
    paths = save_outputs(res, args.out)
    e, w = res["eval_test"], res["filters"]
    print(
        f"{args.backend}: {res['batches']} batches x {args.steps} steps, {res['seconds']:.1f} s "
        f"({time.perf_counter() - t0:.1f} s with plots). Held-out reconstruction error {e[0]:.3f} -> {e[-1]:.3f} "
        f"(mean-digit baseline {res['mean_digit_error']:.3f}). Filters {w.shape} in [{w.min():.3f}, {w.max():.3f}]. "
        f"Wrote {', '.join(paths.values())}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
