"""Tab 9: the paper, live. Ho et al.'s (2020) own results recomputed on the picked model, one panel at a time: the bound
in bits/dim (Table 1), rate-distortion and progressive decoding (Figure 5), when the model decides (Figure 7), the
spectral lens, the ideal denoiser, DDPM as a flow, and Table 2 in 2-D (on two moons, the same for every model). The
package (ddpm/eval) computes; this module only draws.
Each panel opens on its default settings, computed once per model and kept (openers.py). `build()` lays it out."""
import contextlib
import math
import os
import sys
import time

import gradio as gr
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from ..eval.flow import flow_vs_ddim
from ..eval.ideal import ideal_model, x0_hat_gap
from ..eval.likelihood import bounds, estimate_plan
from ..eval.metrics import sliced_wasserstein
from ..eval.neighbours import index_images, load_index
from ..eval.paper import commitment, progressive_strip, rate_distortion
from ..eval.spectral import band_snr, settling, spectra
from ..eval.table2 import TARGETS, WEIGHTINGS, summary, table2
from ..plots import image_grid
from ..points import RECIPE, two_moons
from ..sampling import sample
from ..schedule import SCHEDULES, NoiseSchedule
from . import openers
from .cores import shares_cores
from .figures import FONT, plt_lock, to_image
from .jobs import Stopped, holds_session, stopper
from .playground import N_DATA                 # panel 7 trains on as many points as the playground
from .registry import registry, session_id
from .widgets import TQDM_PROGRESS, Parts, by_name, go_button, go_row, image, model_input, openers_job, sampling_job

# Okabe-Ito: told apart with every common colour-vision deficiency
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
PANELS = {"bits": "1. Bits per dimension (Table 1; Secs. 3.3, 4.3)",
          "rate": "2. Rate-distortion and progressive decoding (Figure 5; Sec. 4.3)",
          "decide": "3. When does the model decide? (Figure 7)",
          "spectral": "4. The spectral lens",
          "ideal": "5. The ideal denoiser vs the network",
          "flow": "6. DDPM is a flow: DDIM = Euler",
          "table2": "7. Table 2 in 2-D: what to predict, how to weigh the steps"}
DEFAULTS = dict(panel="bits", n_images=2, exact=False, K=4, guidance=3.0, seed=0)
DECIDE_TS = (900, 700, 500, 300, 100)     # Figure 7's frozen steps, as fractions of T = 1000
FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.4)
# panel 7's budgets (ddpm/eval/table2.py): quick, the live default (one seed); full, the table2 module's own
# defaults (three seeds; minutes: with progress and Stop), shipped in pretrained/playground
# (python -m ddpm.app.paper <models dir> table2)
TABLE2 = {"quick": dict(seeds=1, steps=100, n_samples=500), "full": dict(seeds=3, steps=1500, n_samples=1000)}
FLOW_STEPS = (2, 5, 10, 20)              # panel 6's step counts (tests/test_paper.py checks 2 ... 100)


def _figure(w=9.6, h=3.8, cols=2):
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, cols)
    for ax in np.atleast_1d(axes):
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=FONT - 3)
    return fig, axes


def _test_images(model, sid, n, seed):
    """n of the bundled held-out images of the model's dataset, picked with seed: ([n, C, H, W] in [-1, 1], labels)."""
    reg = registry()
    images, labels = reg.examples(reg.base_folder(model, sid))
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    x = images[pick].float().div(127.5).sub(1.0)
    return x[:, None] if x.dim() == 3 else x, labels[pick]


def _scaled(ddpm, t):
    """Step t of Ho et al.'s T = 1000 on this model's T (the tiny test models have T = 100)."""
    return min(ddpm.T - 1, round(t * ddpm.T / 1000))


# --- 1. Table 1: the bound in bits/dim --------------------------------------------------------------------------------
def bits_panel(ddpm, x0, *, exact, seed, stop, progress):
    ts, weights = (None, None) if exact else estimate_plan(ddpm.T)
    result = bounds(ddpm, x0, ts=ts, weights=weights, generator=torch.Generator().manual_seed(seed),
                    progress=progress, stop=stop)
    beta, tilde = result["beta"], result["beta_tilde"]
    t = np.arange(ddpm.T) + 1.0                                       # the paper's t of column t-1 ... shown on log t
    with plt_lock:                          # matplotlib is not thread-safe (mathtext above all)
        fig, (ax1, ax2) = _figure()
        done = ~torch.isnan(beta.terms[0]).numpy()
        for b, symbol, color in ((beta, r"\beta", PALETTE[0]), (tilde, r"\tilde\beta", PALETTE[1])):
            per_t = b.terms.mean(0).numpy()[done]
            ax1.plot(t[done], per_t, "o-" if not exact else "-", ms=2.5, color=color, lw=1.6,
                     label=f"$L_{{t-1}}$, $\\sigma^2 = {symbol}$: {b.total.mean():.3f} bits/dim")
        stacked = np.cumsum(np.nan_to_num(beta.terms.mean(0).numpy()) * beta.weights.numpy())
        ax1b = ax1.twinx()
        ax1b.plot(t, stacked + float(beta.prior.mean()), color=PALETTE[2], lw=2, ls="--", label=r"cumulative, $\beta$")
        ax1b.set_ylabel("bits/dim sent up to t (stacked)", fontsize=FONT - 3)
        ax1b.tick_params(labelsize=FONT - 3)
        ax1.set_xscale("log")
        ax1.set_yscale("log")
        ax1.set_xlabel("t (log scale)", fontsize=FONT - 2)
        ax1.set_ylabel("bits/dim per term", fontsize=FONT - 3)
        ax1.set_title("Table 1: the bound's terms", fontsize=FONT - 1)
        ax1.legend(fontsize=FONT - 5, loc="lower left")
        ax2.plot(t[done], beta.eps_mse.mean(0).numpy()[done], "o-" if not exact else "-", ms=2.5, color=PALETTE[3], lw=1.6)
        ax2.set_xscale("log")
        ax2.set_xlabel("t (log scale)", fontsize=FONT - 2)
        ax2.set_title(r"Eq. (14): $L_\mathrm{simple}$ per t, $\|\epsilon - \epsilon_\theta\|^2 / D$", fontsize=FONT - 1)
        fig.tight_layout()
    how = (f"all T = {ddpm.T} terms" if exact else
           f"the fast estimate: every t < {min(100, ddpm.T)} exactly, {len(ts) - min(100, ddpm.T)} log-spaced strata above")
    share = 100 * beta.share_below(min(100, ddpm.T))
    stopped = "" if beta.complete else " **Stopped early: the totals are partial sums.**"
    report = (f"**The bound on {len(x0)} test image(s)** ({how}):{stopped}\n\n"
              f"| sigma_t^2 | bits/dim | L_T | L_0 (decoder) |\n|---|---|---|---|\n"
              f"| beta | {beta.total.mean():.3f} | {beta.prior.mean():.1e} | {beta.terms[:, 0].mean():.3f} |\n"
              f"| beta_tilde | {tilde.total.mean():.3f} | {tilde.prior.mean():.1e} | {tilde.terms[:, 0].mean():.3f} |\n\n"
              f"The steps t < {min(100, ddpm.T)} carry {share:.0f}% of the bound (sigma^2 = beta): most bits describe the "
              "last, imperceptible steps (Sec. 4.3). Ho et al. report <= 3.70 bits/dim on CIFAR10 (Table 1).")
    return fig, None, report


# --- 2. Figure 5: rate-distortion and progressive decoding --------------------------------------------------------
def rate_panel(ddpm, x0, *, seed, stop, progress):
    bound = bounds(ddpm, x0[:1], variances=("beta",), generator=torch.Generator().manual_seed(seed),
                   progress=progress, stop=stop)["beta"]
    if not bound.complete:
        raise Stopped("rate-distortion needs every term; it was stopped before all T were computed")
    curve = rate_distortion(bound)
    x0_hat, ts, rates, rmse = progressive_strip(ddpm, x0[:1], bound, fractions=FRACTIONS)
    with plt_lock:                          # matplotlib is not thread-safe (mathtext above all)
        fig, (ax1, ax2) = _figure()
        ax1.plot(curve.rate, curve.distortion, color=PALETTE[0], lw=2)
        ax1.plot(rates, rmse, "o", color=PALETTE[3], ms=6, label="the strip's steps")
        ax1.set_xlabel("rate: bits/dim received (x_T down to x_t)", fontsize=FONT - 3)
        ax1.set_ylabel("distortion: RMSE of x0_hat [0, 255]", fontsize=FONT - 3)
        ax1.set_title("Figure 5 (middle): distortion vs rate", fontsize=FONT - 1)
        ax1.legend(fontsize=FONT - 4)
        ax2.plot(curve.t, curve.distortion, color=PALETTE[1], lw=2)
        ax2.set_xlabel("reverse step t", fontsize=FONT - 2)
        ax2.invert_xaxis()
        ax2.set_title("Figure 5 (left): distortion vs t", fontsize=FONT - 1)
        fig.tight_layout()
    strip = image_grid(torch.cat([x0_hat.cpu(), x0[:1].cpu()]), len(ts) + 1, scale=4)
    before_decoder = curve.rate[-1] / curve.total                      # the share received with x_0's last step to go
    t_half = curve.at_fraction(0.5)
    half = (f"half of those bits have been received when the reverse process reaches t = {t_half}"
            + (" (x_0 here, the paper's x_1: only L_0, the decoder's bits, is still to come)" if t_half == 0 else "")
            if before_decoder >= 0.5 else
            f"the steps down to t = 0 bring {100 * before_decoder:.0f}% of those bits, so half is reached only with L_0, "
            "the decoder's bits for the last step to discrete pixels")
    cells = " | ".join(f"t={t}: {100 * f:g}% of the bits, RMSE {d:.1f}" for t, f, d in zip(ts, FRACTIONS, rmse, strict=True))
    report = (f"**Progressive decoding of one test image** (all T = {ddpm.T} terms, sigma^2 = beta): the whole bound is "
              f"{curve.total:.3f} bits/dim; {half}. The strip, left to right: {cells}; "
              "last: the image itself. Most bits go to detail the eye cannot see (Sec. 4.3).")
    return fig, strip, report


# --- 3. Figure 7: when does the model decide? -----------------------------------------------------------------------
def decide_panel(ddpm, judge, *, K, guidance, seed):
    if judge is None:
        raise gr.Error("this panel needs the model's judge classifier to read the class of each continuation; this "
                       "model has none (the bundled mnist and fashion_mnist do)")
    ts = [_scaled(ddpm, t) for t in DECIDE_TS]
    runs = {"no guidance": commitment(ddpm, judge, ts=ts, K=K, generator=torch.Generator().manual_seed(seed),
                                      trunk_steps=25, branch_steps=5)}
    if ddpm.num_classes:
        y = seed % ddpm.num_classes
        runs[f"guidance s = {guidance:g}, class {y}"] = commitment(
            ddpm, judge, ts=ts, K=K, y=y, guidance_scale=guidance, generator=torch.Generator().manual_seed(seed),
            trunk_steps=25, branch_steps=5)
    with plt_lock:                          # matplotlib is not thread-safe (mathtext above all)
        fig, axes = _figure(cols=1, w=9.6)
        for (name, c), color in zip(runs.items(), PALETTE, strict=False):
            axes.plot(c.ts, c.agreement, "o-", color=color, lw=2, label=f"{name} (committed at t = {c.committed_t})")
            axes.fill_between(c.ts, c.low, c.high, color=color, alpha=0.2)
        first = next(iter(runs.values()))
        axes.axhline(first.chance, color="grey", ls=":", label="chance")
        axes.invert_xaxis()
        axes.set_ylim(-0.02, 1.02)
        axes.set_xlabel("t at which x_t is frozen", fontsize=FONT - 2)
        axes.set_ylabel("share of continuations in the trunk's class", fontsize=FONT - 4)
        axes.set_title(f"Figure 7: K = {K} continuations from a frozen x_t (95% Wilson intervals)", fontsize=FONT - 1)
        axes.legend(fontsize=FONT - 4)
        fig.tight_layout()
    rows = torch.cat([torch.cat([first.frozen[k:k + 1].clamp(-1, 1).cpu(), first.branches[k].cpu()])
                      for k in range(len(first.ts))])
    strip = image_grid(rows, K + 1, scale=3)
    report = ("**Samples sharing x_t (Figure 7).** Each row of the strip: the frozen x_t at t = "
              f"{', '.join(map(str, first.ts))} (top to bottom), then {K} continuations with fresh noise (no guidance). "
              + " ".join(f"{name}: the trunk ends in class {c.trunk_class}; agreement "
                         f"{', '.join(f'{a:.2f}' for a in c.agreement)}; committed at t = {c.committed_t}."
                         for name, c in runs.items()))
    return fig, strip, report


# --- 4. The spectral lens -----------------------------------------------------------------------------------------------
def spectral_panel(ddpm, reference, *, seed):
    generator = torch.Generator().manual_seed(seed)
    mid = ddpm.T // 2
    power = spectra(reference, float(ddpm.schedule.alpha_bar[mid]), generator=generator)
    run = settling(ddpm, reference, n=4, steps=min(20, ddpm.T), generator=generator)
    with plt_lock:                          # matplotlib is not thread-safe (mathtext above all)
        fig = Figure(figsize=(12, 3.8), dpi=100)
        FigureCanvasAgg(fig)
        ax1, ax2, ax3 = fig.subplots(1, 3)
        for (name, p), color in zip(power.items(), PALETTE, strict=False):
            ax1.semilogy(p, color=color, lw=2, label=name if name != "x_t" else f"x_t, t = {mid}")
        ax1.set_title("radially averaged power", fontsize=FONT - 2)
        ax1.set_xlabel("band (cycles per image)", fontsize=FONT - 3)
        ax1.legend(fontsize=FONT - 5)
        snr = band_snr(power["x0"], ddpm.schedule.alpha_bar.double().numpy())
        ax2.imshow(np.log10(snr).T, aspect="auto", origin="lower", cmap="cividis", extent=(0, ddpm.T, 0, snr.shape[1]))
        ax2.contour(np.arange(ddpm.T), np.arange(snr.shape[1]) + 0.5, np.log10(snr).T, levels=[0], colors="white")
        for (name, color) in zip(SCHEDULES, PALETTE[1:], strict=False):
            ab = NoiseSchedule(name, ddpm.T).alpha_bar.double().numpy()
            cross = np.argmax(band_snr(power["x0"], ab) < 1, 0)
            ax2.plot(cross, np.arange(len(cross)) + 0.5, color=color, lw=1.5, ls="--", label=f"SNR = 1, {name}")
        ax2.set_title(f"log10 SNR per band ({ddpm.schedule.name})", fontsize=FONT - 2)
        ax2.set_xlabel("t", fontsize=FONT - 3)
        ax2.set_ylabel("band", fontsize=FONT - 3)
        ax2.legend(fontsize=FONT - 6, loc="upper right")
        bands = np.arange(len(run.settled_t))
        ax3.plot(bands, run.predicted_t, "s-", color=PALETTE[0], label="predicted (SNR = 1)")
        ax3.plot(bands, run.settled_t, "o-", color=PALETTE[3], label="settled in a reverse run")
        ax3.set_title(f"when each band is decided (Spearman {run.rho:+.2f})", fontsize=FONT - 2)
        ax3.set_xlabel("band", fontsize=FONT - 3)
        ax3.set_ylabel("t", fontsize=FONT - 3)
        ax3.legend(fontsize=FONT - 5)
        for ax in (ax1, ax2, ax3):
            ax.tick_params(labelsize=FONT - 4)
        fig.tight_layout()
    report = ("**The spectral lens.** Images have power falling with frequency; the noise is white, so the forward "
              "process drowns fine bands first and the reverse process decides coarse bands first. Left: spectra of "
              "x0, eps and x_t; middle: per-band SNR over t with its SNR = 1 contour (white) and each schedule's "
              f"(dashed); right: the step where each band of x0_hat settles in {len(run.samples)} reverse runs "
              f"(DDIM, {len(run.ts)} steps) against the prediction from the data spectrum alone; Spearman's rho of "
              f"settling step vs band = {run.rho:+.2f} (-1: strictly coarse to fine).")
    return fig, None, report


# --- 5. The ideal denoiser ----------------------------------------------------------------------------------------------
def ideal_panel(ddpm, train, held_out, *, seed):
    n = 4
    ideal = ideal_model(train, like=ddpm)
    start = time.perf_counter()
    copies = sample(ideal, n, sampler="ddim", steps=20, generator=torch.Generator().manual_seed(seed)).float().cpu()
    seconds = time.perf_counter() - start
    net = sample(ddpm, n, sampler="ddim", steps=20, generator=torch.Generator().manual_seed(seed)).cpu()

    def nearest(x):
        d = torch.cdist(x.flatten(1), train.flatten(1))
        dist, k = d.min(1)
        return train[k], dist / math.sqrt(x[0].numel())

    near_ideal, d_ideal = nearest(copies)
    near_net, d_net = nearest(net)
    _, d_real = nearest(held_out)
    gap_ts = [_scaled(ddpm, t) for t in (20, 100, 300, 600, 900)]
    gap = x0_hat_gap(ddpm, ideal, held_out[:8].to(ddpm.device), gap_ts, generator=torch.Generator().manual_seed(seed))
    with plt_lock:                          # matplotlib is not thread-safe (mathtext above all)
        fig, axes = _figure(cols=1)
        for (key, label), color in zip((("net_vs_ideal", "network vs ideal"), ("net", "network vs true x0"),
                                        ("ideal", "ideal vs true x0")), PALETTE, strict=False):
            axes.plot(gap_ts, gap[key], "o-", color=color, lw=2, label=label)
        axes.set_xlabel("t", fontsize=FONT - 2)
        axes.set_ylabel("RMSE of x0_hat [0, 255]", fontsize=FONT - 3)
        axes.set_title("held-out images: the network's x0_hat against the ideal denoiser's", fontsize=FONT - 1)
        axes.legend(fontsize=FONT - 4)
        fig.tight_layout()
    strip = image_grid(torch.cat([copies, near_ideal, net, near_net]), n, scale=3)
    report = (f"**The ideal denoiser** of {len(train)} training images (the closed-form E[x0 | x_t]) used as the "
              f"eps-model, {n} DDIM-20 samples in {seconds:.2f} s. Strip rows: its samples, their nearest training "
              "images, the network's samples, theirs. RMS pixel distance (in [-1, 1]) to the nearest training image: "
              f"ideal {d_ideal.mean():.3f} (it copies), network {d_net.mean():.3f}, held-out real images "
              f"{d_real.mean():.3f}. The network generalises: what it did *not* learn is the training set.")
    return fig, strip, report


# --- 6. DDPM is a flow --------------------------------------------------------------------------------------------------
def flow_panel(ddpm, *, seed):
    rows, straight = [], None
    for steps in FLOW_STEPS:
        r = flow_vs_ddim(ddpm, n=4, steps=min(steps, ddpm.T), generator=torch.Generator().manual_seed(seed))
        rows.append((steps, r["max_difference"]))
        straight = r if steps == FLOW_STEPS[-1] else straight
    single = flow_vs_ddim(ddpm, n=4, steps=min(FLOW_STEPS[-1], ddpm.T), dtype=torch.float32,
                          generator=torch.Generator().manual_seed(seed))["max_difference"]
    with plt_lock:                          # matplotlib is not thread-safe (mathtext above all)
        fig, (ax1, ax2) = _figure()
        ax1.semilogy([s for s, _ in rows], [max(d, 1e-12) for _, d in rows], "o-", color=PALETTE[0], lw=2)
        ax1.semilogy([FLOW_STEPS[-1]], [max(single, 1e-12)], "s", color=PALETTE[3], ms=7, label="the same in float32")
        ax1.axhline(1e-5, color="grey", ls=":", label="1e-5")
        ax1.set_xlabel("steps", fontsize=FONT - 2)
        ax1.set_title("max |DDIM - Euler on the flow ODE|, float64 steps", fontsize=FONT - 1)
        ax1.legend(fontsize=FONT - 4)
        k = np.arange(len(straight["straightness_z"]))
        ax2.bar(k - 0.2, straight["straightness_z"].numpy(), 0.4, color=PALETTE[1], label="flow path in z")
        ax2.bar(k + 0.2, straight["straightness_x"].numpy(), 0.4, color=PALETTE[2], label="DDIM path in x")
        ax2.set_ylim(0, 1.05)
        ax2.set_xlabel("sample", fontsize=FONT - 2)
        ax2.set_title("straightness |end - start| / path length", fontsize=FONT - 1)
        ax2.legend(fontsize=FONT - 4)
        fig.tight_layout()
    strip = image_grid(torch.cat([straight["ddim"].cpu(), straight["flow"].cpu()]).clamp(-1, 1), 4, scale=3)
    report = ("**DDPM is a flow.** With z = x_t / (alpha + sigma), tau = sigma / (alpha + sigma), v = eps_hat - x0_hat, "
              "one Euler step of dz/dtau = v is DDIM's eta = 0 update. From the same x_T, largest difference at any step, "
              "both runs stepping in float64 (the network in float32): "
              + ", ".join(f"{d:.1e} ({s} steps)" for s, d in rows)
              + f"; stepping in float32 at {FLOW_STEPS[-1]} steps: {single:.1e} (rounding, grown by 1 / alpha_t). "
              f"Straightness at {FLOW_STEPS[-1]} steps: flow {straight['straightness_z'].mean():.3f}, DDIM in x "
              f"{straight['straightness_x'].mean():.3f}. Strip: DDIM (top) and Euler (bottom), {FLOW_STEPS[-1]} steps.")
    return fig, strip, report


# --- 7. Table 2 in 2-D --------------------------------------------------------------------------------------------------
def table2_panel(*, full, seed, stop=None, progress=None):
    """Every target x weighting of ddpm/eval/table2.py on two moons, at the quick or the full budget (TABLE2)."""
    budget = TABLE2["full" if full else "quick"]
    data = two_moons(N_DATA, generator=torch.Generator().manual_seed(seed))
    held_out = two_moons(N_DATA // 2, generator=torch.Generator().manual_seed(seed + 1))
    floor = sliced_wasserstein(two_moons(budget["n_samples"], generator=torch.Generator().manual_seed(seed + 2)),
                               held_out, generator=torch.Generator().manual_seed(0))
    runs, done = len(TARGETS) * len(WEIGHTINGS) * budget["seeds"], []

    def ran(row):
        done.append(row)
        if progress is not None:
            progress(len(done), runs)
    rows = table2(data, held_out, seeds=tuple(range(seed, seed + budget["seeds"])), steps=budget["steps"],
                  n_samples=budget["n_samples"], stop=stop, progress=ran)
    return table2_figure(summary(rows), floor, budget, runs_done=len(rows), runs=runs)


def table2_figure(cells, floor, budget, *, runs_done, runs):
    """(figure, None, report) of Table 2's cells {(target, weighting): (median, min, max)}; floor: the distance of
    fresh data to the held-out points (what a perfect model scores with as many samples)."""
    finite = {k: v for k, v in cells.items() if math.isfinite(v[0])}
    with plt_lock:                          # matplotlib is not thread-safe (mathtext above all)
        fig, axes = _figure(cols=1)
        x = np.arange(len(TARGETS))
        for i, (weighting, color) in enumerate(zip(WEIGHTINGS, PALETTE, strict=False)):
            got = [(j, finite[(kind, weighting)]) for j, kind in enumerate(TARGETS) if (kind, weighting) in finite]
            if not got:
                continue
            j, (med, low, high) = np.array([g[0] for g in got]), np.array([g[1] for g in got]).T
            axes.bar(j + (i - 0.5) * 0.38, med, 0.38, color=color,
                     label=("L_simple: plain MSE of the target" if weighting == "simple" else "the true bound's weights"),
                     yerr=np.clip([med - low, high - med], 0, None) if budget["seeds"] > 1 else None, capsize=3)
        axes.axhline(floor, color="grey", ls=":", label="fresh data vs held-out (the floor)")
        axes.set_xticks(x, [{"mu": "mu_tilde"}.get(k, k) for k in TARGETS], fontsize=FONT - 3)
        axes.set_ylabel("sliced Wasserstein to held-out", fontsize=FONT - 3)
        axes.set_title(f"two moons, {budget['steps']} Adam steps per run, " + (
            f"median and range of {budget['seeds']} seeds" if budget["seeds"] > 1 else "one seed"), fontsize=FONT - 1)
        axes.legend(fontsize=FONT - 5)
        fig.tight_layout()

    def cell(key):
        if key not in cells:
            return "not run"
        med, low, high = cells[key]
        if not math.isfinite(med):
            return "diverged"
        return f"{med:.3f}" + (f" [{low:.3f}, {high:.3f}]" if budget["seeds"] > 1 else "")
    table = ("| predict | " + " | ".join(WEIGHTINGS) + " |\n|---|---|---|\n"
             + "".join(f"| {kind} | " + " | ".join(cell((kind, w)) for w in WEIGHTINGS) + " |\n" for kind in TARGETS))
    ranked = sorted(finite, key=lambda k: finite[k][0])
    best = (f"Lowest here: predict {ranked[0][0]}, weighting {ranked[0][1]}; eps with L_simple ranks "
            f"{ranked.index(('eps', 'simple')) + 1} of {len(ranked)}. " if ("eps", "simple") in finite else "")
    stopped = "" if runs_done == runs else f" **Stopped after {runs_done} of {runs} runs.**"
    report = (f"**Table 2 in 2-D.** The playground's MLP, the same budget ({budget['steps']} Adam steps, batch "
              f"{RECIPE['batch']}) and seeds, trained to output each target under plain MSE (L_simple) or the true "
              f"bound's weighting, sampled with Algorithm 2 ({budget['n_samples']} points) and scored by sliced "
              f"Wasserstein distance to held-out points (lower is better; the floor, fresh data, is {floor:.3f})."
              f"{stopped}\n\n{table}\n{best}Ho et al. (Table 2, CIFAR10) found eps with L_simple best (FID 3.17; "
              "eps with the true bound 13.22; mu_tilde with the bound 13.51, with plain MSE it diverged); L_simple "
              "down-weights the easy small-t terms so the network can attend to the harder large t (Sec. 3.4). "
              "A point cloud is not CIFAR10: the ranking here is this budget's.")
    return fig, None, report


def _training_images(model, sid, held_out):
    """The bundled training images of the model's neighbours index, or, without one, the held-out examples."""
    index = load_index(registry().models_dir + "/" + registry().base_folder(model, sid))
    if index is None:
        return held_out
    return index_images(index, torch.arange(min(1000, len(index["images"]))))


@contextlib.contextmanager
def one_thread():
    """Torch on one thread in this block, then this thread's count again. The panels' network calls are small (the
    U-Net on 1 to 40 images of 28 x 28 but for the bound's, panel 7's 128-wide MLP): a second thread mostly waits, and
    on cores that other work shares it spins. On two cores at load 6.6, panel 3 took 3-5 s on one thread and 35 s on
    two; one of panel 7's training runs 0.6 s of CPU and 9 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def compute(model, sid, panel, n_images, exact, K, guidance, seed, *, stop=None, progress=None):
    """One panel: (main picture, strip picture or None, markdown report), with the compute time in the report."""
    with one_thread():
        return _compute(model, sid, panel, n_images, exact, K, guidance, seed, stop=stop, progress=progress)


def _compute(model, sid, panel, n_images, exact, K, guidance, seed, *, stop, progress):
    if panel not in PANELS:
        raise gr.Error(f"unknown panel {panel!r}; choose one of {list(PANELS)}")
    start = time.perf_counter()
    if panel == "table2":                   # points, not the picked model: the same panel for every model
        fig, _, report = table2_panel(full=bool(exact), seed=int(seed), stop=stop, progress=progress)
        with plt_lock:
            picture = to_image(fig)
        return picture, None, report + f"\n\n*{PANELS[panel]}, computed in {time.perf_counter() - start:.1f} s.*"
    reg = registry()
    ddpm = reg.model(model, sid)
    if ddpm.data_dim is not None:
        raise gr.Error(f"{model!r} is a model of points (data_dim={ddpm.data_dim}); these panels need an image model")
    n_images, K, seed = int(n_images), int(K), int(seed)
    if not 1 <= n_images <= 16 or not 2 <= K <= 16:
        raise gr.Error(f"test images must be 1..16 (got {n_images}) and continuations K 2..16 (got {K})")
    x0, _ = _test_images(model, sid, max(n_images, 8), seed)
    x0 = x0.to(ddpm.device)
    if panel == "bits":
        fig, strip, report = bits_panel(ddpm, x0[:n_images], exact=exact, seed=seed, stop=stop, progress=progress)
    elif panel == "rate":
        fig, strip, report = rate_panel(ddpm, x0, seed=seed, stop=stop, progress=progress)
    elif panel == "decide":
        fig, strip, report = decide_panel(ddpm, reg.judge(reg.base_folder(model, sid)), K=K, guidance=guidance, seed=seed)
    elif panel == "spectral":
        fig, strip, report = spectral_panel(ddpm, x0.cpu(), seed=seed)
    elif panel == "ideal":
        fig, strip, report = ideal_panel(ddpm, _training_images(model, sid, x0.cpu()).to(ddpm.device), x0, seed=seed)
    else:
        fig, strip, report = flow_panel(ddpm, seed=seed)
    with plt_lock:
        picture = to_image(fig)
    return picture, strip, report + f"\n\n*{PANELS[panel]} on `{model}`, computed in {time.perf_counter() - start:.1f} s.*"


@shares_cores
@holds_session("paper")
def paper_run(model, panel, n_images, exact, K, guidance, seed, request: gr.Request = None, progress=TQDM_PROGRESS):
    """The chosen panel on the chosen model: (figure, image strip, report). The exact bound shows its progress and
    stops with Stop, keeping the terms computed so far."""
    sid = session_id(request)
    stop = registry().session(sid).stops["paper"]

    def shown(done, total):
        progress(done / total, desc=f"Table 2: {done} of {total} runs" if panel == "table2" else
                 f"bound terms: {done} of {total} steps")

    try:
        picture, strip, report = compute(model, sid, panel, n_images, exact, K, guidance, seed, stop=stop.is_set,
                                         progress=shown)
    except Stopped as why:
        return gr.update(), gr.update(), f"**Stopped**: {why}."
    except (ValueError, RuntimeError) as err:
        raise gr.Error(str(err)) from err
    return picture, strip if strip is not None else gr.update(value=None), report


paper_stop = stopper("paper")


def shipped(folder, panel):
    """The panel's default result kept beside a bundled model (written by `python -m ddpm.app.paper`), or None."""
    files = [os.path.join(folder, f"paper_{panel}{end}") for end in (".png", "_strip.png", ".md")]
    if not (os.path.isfile(files[0]) and os.path.isfile(files[2])):
        return None
    with open(files[2], encoding="utf-8") as f:
        report = f.read()
    strip = Image.open(files[1]) if os.path.isfile(files[1]) else None
    return Image.open(files[0]), strip, report


def write_shipped(models_dir, model):
    """Compute every panel of bundled `model` at its default settings and keep it in its folder (paper_*); `model`
    "table2": panel 7, the same for every model, at its full budget, kept in the playground's folder."""
    folder = os.path.join(models_dir, "playground" if model == "table2" else model)
    for panel in ["table2"] if model == "table2" else [p for p in PANELS if p != "table2"]:
        picture, strip, report = compute(model, None, panel, DEFAULTS["n_images"], model == "table2", DEFAULTS["K"],
                                         DEFAULTS["guidance"], DEFAULTS["seed"])
        picture.save(os.path.join(folder, f"paper_{panel}.png"))
        if strip is not None:
            strip.save(os.path.join(folder, f"paper_{panel}_strip.png"))
        with open(os.path.join(folder, f"paper_{panel}.md"), "w", encoding="utf-8") as f:
            f.write(report.replace("computed in", f"computed (load {os.getloadavg()[0]:.1f}) in") + "\n")
        print(report, flush=True)


def paper_opening(model, panel, request: gr.Request = None):
    """The panel at its default settings for `model`: kept beside a bundled model (`shipped`), or made once per model
    and panel (openers.py)."""
    sid = session_id(request)
    if not model or panel not in PANELS:
        return gr.update(), gr.update(), gr.update()
    reg = registry()
    kept = None
    if panel == "table2":                                                  # points: the same for every model
        kept = shipped(os.path.join(reg.models_dir, "playground"), panel)
        note = (f"The full table, kept in the playground's folder (`python -m ddpm.app.paper <models dir> table2`); "
                f"Compute runs the quick budget ({TABLE2['quick']['steps']} steps, one seed), with 'exact / full' the "
                "full one (minutes).")
    elif model in reg.bundled() and openers.shared_key(model, sid) is not None:      # not a visitor's own model
        kept = shipped(os.path.join(reg.models_dir, model), panel)
        note = "Kept beside the model (`python -m ddpm.app.paper`); press Compute to redo it here."
    if kept is not None:
        picture, strip, report = kept
        return picture, strip if strip is not None else gr.update(value=None), report + f"\n\n*{note}*"

    def make():
        try:
            picture, strip, report = compute(model, sid, panel, DEFAULTS["n_images"], DEFAULTS["exact"], DEFAULTS["K"],
                                             DEFAULTS["guidance"], DEFAULTS["seed"])
        except gr.Error as err:
            return gr.update(value=None), gr.update(value=None), f"*{err.message}*"
        return picture, strip, report + "\n\n*The tab opens on this panel's default settings; press Compute to redo it.*"

    key = ((os.path.abspath(reg.models_dir), "paper", panel, tuple(DEFAULTS.items())) if panel == "table2"  # any model's
           else openers.shared_key(model, sid, "paper", panel, tuple(DEFAULTS.items())))
    return openers.cached(key, make)


def build():
    """The tab in the current Blocks, its events wired; returns its Parts (`model`, the picker)."""
    ui = Parts()
    with gr.Tab("9. The paper, live", id="paper"):
        gr.Markdown("**Ho et al. (2020), recomputed on this model.** Each panel redoes one of the paper's tables or "
                    "figures (or a lens on them) on the bundled test images; pick a panel, then Compute.",
                    elem_classes="lead")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                with go_row():
                    ui.go = go_button("paper", "▶ Compute")
                    ui.stop = gr.Button("Stop", variant="stop", elem_id="paper_stop", min_width=80)
                ui.model = model_input()
                ui.panel = gr.Radio([(label, key) for key, label in PANELS.items()], value=DEFAULTS["panel"],
                                    label="panel")
                ui.exact = gr.Checkbox(value=DEFAULTS["exact"], label="exact / full: all T terms (panel 1), the full "
                                       "Table 2 (panel 7); slow, with progress and Stop")
                ui.n_images = gr.Slider(1, 16, value=DEFAULTS["n_images"], step=1, label="test images (bits/dim)")
                ui.K = gr.Slider(2, 16, value=DEFAULTS["K"], step=1, label="continuations K from each frozen x_t (panel 3)")
                ui.guidance = gr.Slider(1, 8, value=DEFAULTS["guidance"], step=0.5, label="guidance scale s (panel 3)")
                ui.seed = gr.Number(value=DEFAULTS["seed"], precision=0, label="seed", minimum=0)
            with gr.Column(scale=3):
                ui.main = image("the panel's figure", main=True, height=380, elem_id="paper-main")
                ui.strip = image("images of the panel (if any)", height=200)
                ui.report = gr.Markdown("*Opening the panel on this model ...*")

    shown = [ui.main, ui.strip, ui.report]
    ui.run = ui.go.click(paper_run, inputs_kwargs=by_name(paper_run, ui.model, ui.panel, ui.n_images, ui.exact, ui.K,
                                                          ui.guidance, ui.seed),
                         outputs=shown, api_name="paper", **sampling_job())
    opening = dict(inputs_kwargs=by_name(paper_opening, ui.model, ui.panel), outputs=shown, api_name=False,
                   **openers_job())
    ui.model.change(paper_stop, api_name=False, queue=False, cancels=[ui.run]).then(paper_opening, **opening)
    ui.panel.change(paper_opening, **opening)
    ui.stop.click(paper_stop, api_name="paper_stop", queue=False)
    return ui


if __name__ == "__main__":      # python -m ddpm.app.paper <models dir> <model or table2> ...: the shipped openings
    from .registry import set_registry
    set_registry(sys.argv[1], use_judges=True)
    for name in sys.argv[2:]:
        write_shipped(sys.argv[1], name)
