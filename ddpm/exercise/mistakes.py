"""The catalogue of mistakes students make in the sheet's four functions, in the sheet's notation.

Each entry: the item it belongs to, the mistake as the student writes it, what it does to the output, and the line
that fixes it. The checks (forward.py, reverse.py, training.py) name an entry when its signature fits the
student's outputs; the numbers that prove it go into the report, not here.
Time index as in ddpm/schedule.py: t in {0, ..., T-1}; the paper's t is this t + 1.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Mistake:
    id: str
    item: str         # "sample_xt", "sample", "train" or "train_classconditional"
    notation: str     # the mistake as written, in the sheet's symbols
    effect: str       # what it does to the output
    fix: str          # the line that fixes it


_EQ4 = "x_t = sqrt(alpha_bar_t) * x0 + sqrt(1 - alpha_bar_t) * epsilon   # Eq. (4)"
_ALG2 = "x = 1 / sqrt(alpha_t) * (x - beta_t / sqrt(1 - alpha_bar_t) * eps) + sigma_t * z   # Alg. 2, line 4"

_ALL = [
    # --- sample_xt: Eq. (4), q(x_t | x_0) ---
    Mistake("xt_no_sqrt", "sample_xt", "alpha_bar_t * x0 + (1 - alpha_bar_t) * epsilon",
            "both square roots of Eq. (4) are missing: x_t keeps too little of the image and too little noise", _EQ4),
    Mistake("xt_no_sqrt_signal", "sample_xt", "alpha_bar_t * x0 + sqrt(1 - alpha_bar_t) * epsilon",
            "the image fades too fast: its weight is alpha_bar_t instead of sqrt(alpha_bar_t)", _EQ4),
    Mistake("xt_no_sqrt_noise", "sample_xt", "sqrt(alpha_bar_t) * x0 + (1 - alpha_bar_t) * epsilon",
            "the noise's variance (1 - alpha_bar_t) stands where its standard deviation belongs: too little noise", _EQ4),
    Mistake("xt_swapped", "sample_xt", "sqrt(1 - alpha_bar_t) * x0 + sqrt(alpha_bar_t) * epsilon",
            "the weights of image and noise are swapped: x_t is noise at t = 0 and the clean image at t = T-1", _EQ4),
    Mistake("xt_unscaled_x0", "sample_xt", "x0 + sqrt(1 - alpha_bar_t) * epsilon",
            "the image is never shrunk: x_t's variance grows above 1 instead of staying near 1", _EQ4),
    Mistake("xt_t_minus_one", "sample_xt", "alphaBars[t - 1]",
            "reads alpha_bar one step early; at t = 0 alphaBars[-1] is the last step, so x_0 comes out as pure noise",
            "alpha_bar_t = alphaBars[t]   # t is 0-based: alphaBars[0] belongs to the first step"),
    Mistake("xt_t_plus_one", "sample_xt", "alphaBars[t + 1]",
            "reads alpha_bar one step late; at t = T-1 the index runs past the end (IndexError)",
            "alpha_bar_t = alphaBars[t]"),
    Mistake("xt_broadcast", "sample_xt", "alphaBars[t] * x0  with t of shape [B] and x0 [B, C, H, W]",
            "alpha_bar_t of shape [B] lines up with the last axis (the width), not the batch: "
            "each column of an image gets another image's t",
            "alpha_bar_t = alphaBars[t].view(-1, 1, 1, 1)   # one value per image, broadcast over C, H, W"),
    Mistake("xt_own_noise", "sample_xt", "torch.randn_like(x0) instead of the given epsilon",
            "x_t has the right distribution but not the noise the caller gave, so the loss of Algorithm 1 "
            "compares eps_theta with noise that is not in x_t",
            "if epsilon is None: epsilon = torch.randn_like(x0)   # draw only when none is given"),
    Mistake("xt_epsilon_none", "sample_xt", "epsilon used without checking for None",
            "the sheet's epsilon is optional: sample_xt(x0, t, None, alphaBars) fails instead of drawing the noise",
            "if epsilon is None: epsilon = torch.randn_like(x0)"),
    Mistake("xt_scalar_t", "sample_xt", "math.sqrt(alphaBars[t]) (or float(alphaBars[t]))",
            "works for one t but fails for a batch of t's, which Algorithm 1 draws (one per image)",
            "alpha_bar_t = alphaBars[t].view(-1, 1, 1, 1); use torch.sqrt"),
    # --- sample: Algorithm 2 ---
    Mistake("sample_one_over_sqrt_alpha_bar", "sample", "1 / sqrt(alpha_bar_t) * (x - ...)",
            "divides by sqrt(alpha_bar_t) instead of sqrt(alpha_t): every step blows x up, samples explode", _ALG2),
    Mistake("sample_no_one_over_sqrt_alpha", "sample", "x - beta_t / sqrt(1 - alpha_bar_t) * eps (no 1 / sqrt(alpha_t))",
            "each step shrinks x a little too much: samples come out faded towards 0", _ALG2),
    Mistake("sample_eps_coef_no_sqrt", "sample", "beta_t / (1 - alpha_bar_t) * eps",
            "removes too much noise at small t (1 - alpha_bar_t is tiny there): samples overshoot", _ALG2),
    Mistake("sample_eps_coef_alpha", "sample", "beta_t / sqrt(1 - alpha_t) * eps",
            "sqrt(1 - alpha_t) where sqrt(1 - alpha_bar_t) belongs: removes far too much noise at large t", _ALG2),
    Mistake("sample_eps_coef_one_minus_alpha_bar", "sample", "(1 - alpha_bar_t) / sqrt(1 - alpha_bar_t) * eps",
            "1 - alpha_bar_t where beta_t belongs: each step removes all the noise at once and overshoots", _ALG2),
    Mistake("sample_sign_flipped", "sample", "x + beta_t / sqrt(1 - alpha_bar_t) * eps",
            "adds the predicted noise instead of removing it: samples stay noise and grow", _ALG2),
    Mistake("sample_sigma_beta", "sample", "sigma_t = beta_t",
            "sigma_t^2 = beta_t means sigma_t = sqrt(beta_t); with beta_t the steps add almost no noise and all "
            "samples collapse onto a few images",
            "sigma_t = sqrt(beta_t)"),
    Mistake("sample_no_noise", "sample", "x = 1 / sqrt(alpha_t) * (...) without + sigma_t * z",
            "no noise in the reverse steps: every run collapses onto the same few images", _ALG2),
    Mistake("sample_noise_at_last_step", "sample", "z ~ N(0, I) also at the last step (t = 0)",
            "the final image keeps a grain of noise (sigma_0 = sqrt(beta_0))",
            "z = torch.randn_like(x) if t > 0 else torch.zeros_like(x)   # Alg. 2, line 3, 0-based"),
    Mistake("sample_no_noise_at_t1", "sample", "z = 0 for t <= 1 (the paper's 'if t > 1' on the 0-based loop)",
            "the step t = 1 adds no noise: on a 0-based loop only the last step, t = 0, is the one without noise",
            "z = torch.randn_like(x) if t > 0 else torch.zeros_like(x)   # paper's t = this t + 1"),
    Mistake("sample_loop_T_to_1", "sample", "for t in range(T, 0, -1)",
            "the paper's t = T..1 on a 0-based schedule and network: t = T does not exist (IndexError), "
            "and every step is one off",
            "for t in range(T - 1, -1, -1):   # t = T-1, ..., 0"),
    Mistake("sample_loop_skips_zero", "sample", "for t in range(T - 1, 0, -1)",
            "the loop stops at t = 1: the last step (t = 0) never runs and the samples keep noise",
            "for t in range(T - 1, -1, -1):"),
    Mistake("sample_hardcoded_T", "sample", "range(1000) / range(999, -1, -1) instead of ddpm.T",
            "right for T = 1000 only: for any other T the loop reads steps that do not exist",
            "for t in range(ddpm.T - 1, -1, -1):"),
    Mistake("sample_hardcoded_shape", "sample", "x = torch.randn(n_samples, 1, 28, 28)",
            "right only for the 28x28 grey-scale model it was written for; other models take other shapes",
            "x = torch.randn(n_samples, *ddpm.sample_shape)   # Alg. 2, line 1"),
    Mistake("sample_noise_reused", "sample", "z drawn once before the loop (or z = x_T) and reused at every step",
            "the same noise is pushed in at every step: samples drift in one direction instead of settling",
            "z = torch.randn_like(x)   # inside the loop: fresh noise at every step"),
    Mistake("sample_x_T_uniform", "sample", "x = torch.rand(...) for x_T",
            "x_T ~ U(0, 1) instead of N(0, I): the model starts from inputs it never saw",
            "x = torch.randn(n_samples, *ddpm.sample_shape)   # Alg. 2, line 1"),
    Mistake("sample_output_unit_range", "sample", "return (x + 1) / 2",
            "the samples come back in [0, 1]; the package (and the network's training data) use [-1, 1]",
            "return x   # in [-1, 1]; map to [0, 1] only to display"),
    Mistake("sample_classes_tiled", "sample", "torch.tensor(classes).repeat(n_samples)",
            "labels come out as c0, c1, c2, c0, c1, ...: the samples are not grouped by class in the order given",
            "y = torch.tensor(classes).repeat_interleave(n_samples)   # c0 x n, c1 x n, ..."),
    Mistake("sample_classes_ignored", "sample", "ddpm.eps(x, t) without y",
            "the labels are never passed to the network: every sample is unconditional",
            "eps = ddpm.eps(x, t_batch, y)"),
    Mistake("sample_own_noise", "sample", "z drawn inside the step instead of the challenge's z",
            "the step is right in distribution but cannot be compared with the reference", _ALG2 + "  # with the given z"),
    # --- train: Algorithm 1 ---
    Mistake("train_loss_x0", "train", "loss = mse(eps_theta(x_t, t), x0)",
            "the network learns to predict the clean image, but Algorithm 2 reads its output as the noise eps",
            "loss = F.mse_loss(ddpm.eps(x_t, t), eps)   # Alg. 1, line 5"),
    Mistake("train_t_from_one", "train", "t = torch.randint(1, T + 1, ...) (or randint(1, T))",
            "the paper's t in 1..T on a 0-based schedule: t = T does not exist and t = 0 is never trained",
            "t = torch.randint(0, ddpm.T, (B,))   # Alg. 1, line 3, 0-based"),
    Mistake("train_t_excludes_last", "train", "t = torch.randint(0, T - 1, ...)",
            "randint's upper bound is exclusive: t = T-1 is never trained, yet Algorithm 2 starts there",
            "t = torch.randint(0, ddpm.T, (B,))"),
    Mistake("train_hardcoded_T", "train", "t = torch.randint(0, 1000, ...) instead of ddpm.T",
            "right for T = 1000 only: for any other T it draws steps that do not exist",
            "t = torch.randint(0, ddpm.T, (B,))"),
    Mistake("train_no_zero_grad", "train", "no optim.zero_grad()",
            "gradients of all earlier batches pile up: every step moves along their sum",
            "optim.zero_grad()   # before loss.backward()"),
    Mistake("train_zero_grad_after_backward", "train", "loss.backward(); optim.zero_grad(); optim.step()",
            "the gradients are wiped before the step: the optimizer steps on zeros and nothing is learned",
            "optim.zero_grad(); loss.backward(); optim.step()"),
    Mistake("train_no_step", "train", "no optim.step()",
            "gradients are computed but the weights never change", "optim.step()   # after loss.backward()"),
    Mistake("train_no_backward", "train", "no loss.backward()",
            "no gradients: optim.step() has nothing to apply", "loss.backward()"),
    Mistake("train_fresh_eps", "train", "loss = mse(eps_theta(x_t, t), torch.randn_like(x0))",
            "the noise in the loss is a second draw, not the noise inside x_t: the target is unpredictable",
            "eps = torch.randn_like(x0); x_t = sample_xt(x0, t, eps, alpha_bar); loss = F.mse_loss(ddpm.eps(x_t, t), eps)"),
    Mistake("train_rand_noise", "train", "eps = torch.rand_like(x0)",
            "uniform noise on [0, 1) instead of N(0, I): the model learns a process Algorithm 2 does not run",
            "eps = torch.randn_like(x0)   # Alg. 1, line 4"),
    Mistake("train_alpha_for_alpha_bar", "train", "x_t = sqrt(alpha_t) * x0 + sqrt(1 - alpha_t) * eps",
            "one step of noise (q(x_t | x_{t-1}), variance beta_t) instead of all t steps (Eq. 4): "
            "the network never sees noisy images", "x_t = sample_xt(x0, t, eps, ddpm.schedule.alpha_bar)"),
    Mistake("train_no_sqrt", "train", "x_t = alpha_bar_t * x0 + (1 - alpha_bar_t) * eps",
            "the network trains on images with too little noise and too little signal (Eq. 4 without its roots)",
            "x_t = sample_xt(x0, t, eps, ddpm.schedule.alpha_bar)"),
    Mistake("train_x0_rescaled", "train", "x0 = x0 * 2 - 1 (or (x0 + 1) / 2) on a batch already in [-1, 1]",
            "the images leave the range [-1, 1] the network and Algorithm 2 assume",
            "use the loader's x0 as it is (it is in [-1, 1])"),
    Mistake("train_cumsum", "train", "alpha_bar = torch.cumsum(alphas, 0)",
            "a sum of alphas is above 1 for t >= 1: sqrt(1 - alpha_bar_t) is NaN and so is the loss",
            "alpha_bar = torch.cumprod(alphas, 0)   # or ddpm.schedule.alpha_bar"),
    # --- train_classconditional ---
    Mistake("train_cond_labels_not_passed", "train_classconditional", "ddpm.eps(x_t, t) without y",
            "the labels are ignored: the network is trained unconditionally and classes have no effect",
            "loss = F.mse_loss(ddpm.eps(x_t, t, y), eps)"),
    Mistake("train_cond_no_null", "train_classconditional", "y passed as it is, never replaced by the null class",
            "the null class is never trained: the unconditional half of guidance (and sample without classes) "
            "has nothing to work with",
            "y = torch.where(torch.rand(len(y)) < 0.1, ddpm.null_class, y)   # drop 10% of the labels"),
    Mistake("train_cond_wrong_null", "train_classconditional", "dropped labels set to 0 or -1",
            "the null class of this package is num_classes (ddpm.null_class): label 0 is a real class, "
            "and -1 is no class at all",
            "y = torch.where(drop, ddpm.null_class, y)"),
    Mistake("train_cond_drop_inverted", "train_classconditional", "y[~drop] = null (the mask inverted)",
            "about 90% of the labels are dropped instead of 10%: the model learns the classes barely",
            "y = torch.where(torch.rand(len(y)) < 0.1, ddpm.null_class, y)"),
]

MISTAKES = {m.id: m for m in _ALL}
