"""The app's plain-language explanations and the ddpm source code a lecturer shows next to each output."""
import inspect

from .. import diffusion, mlp, plots, points, sampling, schedule, training
from ..eval import metrics, neighbours, sweep

LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]

# the display formulas too long for one line of source; KaTeX reads each as one formula
EQ_4 = (r"$$q(x_t \mid x_0) = \mathcal N\big(\sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t)\,I\big), \qquad "
        r"x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon,\quad \epsilon\sim\mathcal N(0, I),\quad "
        r"\bar\alpha_t = \prod_{s\le t}(1-\beta_s).$$")
ALG_2_LINE_4 = (r"$$x_{t-1} = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,"
                r"\epsilon_\theta(x_t, t)\Big) + \sigma_t z,\qquad z \sim \mathcal N(0, I)\ (z = 0 \text{ at the last step}).$$")
ALG_1_LINE_5 = (r"$$\big\|\epsilon - \epsilon_\theta\big(\sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon,\ t,\ y\big)"
                r"\big\|^2 \qquad\text{(Algorithm 1, line 5).}$$")

# Each tab opens on its lead, at most three lines above its pictures; the full explanation below is folded.
LEADS = {
    "forward": r"**The forward process** (Eq. 4): $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$. "
               r"Move $t$, or press Play: the image turns into noise.",
    "reverse": r"**The reverse process** (Algorithm 2): start from noise $x_T$ and remove a little of it at every step. "
               r"Left: $x_t$; right: the network's guess of the final image, $\hat x_0$.",
    "grid": r"**Class-conditional generation**: one network, the class $y$ an extra input. Each row is "
            r"`sample(ddpm, n, classes)` for one class, checked by a judge classifier.",
    "finetune": r"**Fine-tuning** is Algorithm 1 run a little longer, on your data, on a private copy of the model.",
    "edit": r"**Sketch to image** (SDEdit): noise a drawing to step $t_0$ and run the reverse process from there. "
            r"Below: **interpolation** between two start noises.",
    "playground": r"**A DDPM on points in the plane**, trained from scratch in seconds by the same `train` and `sample` "
                  r"as the images.",
    "explore": r"**Change one choice at a time**: up to three runs from the same $x_T$, side by side and judged. "
               r"Pick a lecture-ready scene.",
}

FORWARD = r"""
### The forward process adds Gaussian noise, step by step
Training images are destroyed on purpose: step $t$ mixes in a little noise with variance $\beta_t$.
Because Gaussians add up to a Gaussian, we can jump from the clean image $x_0$ to any step $t$ in one go
(Ho et al. 2020, **Eq. 4**):
""" + EQ_4 + r"""
Move the slider: $\bar\alpha_t$ falls from 1 to almost 0, so $x_t$ goes from the image to pure noise.
The **schedule** (how fast $\bar\alpha_t$ falls) matters: *linear* (the paper) destroys the image early, *cosine* keeps it longer.
At the last step $t = T-1$ the pixels should look like $\mathcal N(0,1)$ (the histogram) — that is where sampling starts.
"""

REVERSE = r"""
### The reverse process: start from noise, remove it step by step
A network $\epsilon_\theta(x_t, t, y)$ was trained to guess the noise in $x_t$. Sampling (**Algorithm 2**) starts at
$x_T \sim \mathcal N(0, I)$ and repeats, for $t = T-1, \dots, 0$:
""" + ALG_2_LINE_4 + r"""
Left: the current $x_t$. Right: the model's current guess of the final image,
$\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\epsilon_\theta)/\sqrt{\bar\alpha_t}$.
**DDIM** (Song et al. 2021) reuses the same network but jumps over many steps; $\eta = 0$ makes it deterministic.
**DPM-Solver++(2M)** (Lu et al. 2022) follows the same deterministic path with a second-order step that also uses the
previous step's $\hat x_0$, so 10-25 steps suffice (MNIST 10, FashionMNIST 25 with guidance, by the quality-per-cost tables).
**Guidance** $s$: $\epsilon = \epsilon_\theta(x_t, t) + s\,(\epsilon_\theta(x_t, t, y) - \epsilon_\theta(x_t, t))$;
$s = 1$ is plain conditional sampling, larger $s$ gives clearer but less varied images.
(The code computes line 4 in the equivalent form $\tilde\mu_t(\hat x_0, x_t) + \sigma_t z$ (Eq. 7) so that $\hat x_0$
can be clipped to $[-1, 1]$.)
"""

GRID = r"""
### Class-conditional generation
One network serves every class: the class label $y$ is an extra input, $\epsilon_\theta(x_t, t, y)$.
During training the label is dropped 10% of the time (replaced by a *null* class), so the same network also knows
$\epsilon_\theta(x_t, t)$ — which is what **classifier-free guidance** needs:
$$\tilde\epsilon = \epsilon_\theta(x_t, t) + s\,\big(\epsilon_\theta(x_t, t, y) - \epsilon_\theta(x_t, t)\big).$$
Each row below is `sample(ddpm, n_samples, classes)` for one class. A separate classifier (the *judge*) checks how many
images really show the asked class.
"""

FINETUNE = r"""
### Fine-tuning = running Algorithm 1 a little longer, on your data
Every training step picks images $x_0$, a random step $t$ and noise $\epsilon$, and takes a gradient step on
""" + ALG_1_LINE_5 + r"""
Your run trains a **private copy** of the model (nobody else's model changes). The "now" grid uses the same noise as the
"before" grid, so you see only what training changed.
**Drawings as a new class** (yours, or the ready-made triangles): the network's class-embedding table (one learned
vector per class) gets **one new row**, started at the average of the existing rows. Each step is Algorithm 1 on your
images with the new label, plus **rehearsal**: as many images again under old labels (real examples of the old
classes, and your images too) are pulled to what the model predicted for them before training. Plain Algorithm 1 on
your images alone turned the row of "0" into triangles; rehearsed, every old class keeps its judge score.
Images are turned into MNIST style: grey-scale, 28×28, white strokes on black (light backgrounds are inverted), cropped
and centred.
"""


EDIT = r"""
### The reverse process on structure that is already there
**Sketch to image** (SDEdit, Meng et al. 2022): instead of starting from pure noise, noise *your* image to step $t_0$
with Eq. 4,
$x_{t_0} = \sqrt{\bar\alpha_{t_0}}\,x_0 + \sqrt{1-\bar\alpha_{t_0}}\,\epsilon$, and run the reverse process from $t_0$ down to 0.
Small $t_0$ keeps your strokes (the model only cleans them up); large $t_0$ keeps only their rough layout (the model
invents the rest).
**Interpolation**: a deterministic sampler (DDIM with $\eta = 0$, or DPM-Solver++) maps each start noise $x_T$ to one
image, so walking
$x_T$ along the great circle between two seeds (*slerp*, which keeps the noise's norm) walks the images. Mixing two
class embeddings,
$(1-w)\,e_A + w\,e_B$, asks the network for something between two classes that it never saw in training.
"""

PLAYGROUND = r"""
### Train a DDPM from scratch, in seconds, on points in the plane
The same package code as for the images: `DDPM(data_dim=2)` with a small MLP as $\epsilon_\theta(x_t, t)$, trained by
`ddpm.train` (**Algorithm 1**)
and sampled by `ddpm.sample` (**Algorithm 2**). Each point is a "data image" of two numbers. Try: **T** too small
(x_T is not Gaussian: see the right
plot at t = T-1), betas that destroy the data too fast or too slowly, a network too narrow to learn the shape, a
learning rate too high.
The **sliced Wasserstein distance** (the mean over random directions of the 1-D distance between the projected clouds)
compares two settings by number.
"""

EXPLORE = r"""
### Change one choice at a time, and measure what it does
Up to three runs side by side, from **the same** $x_T$ and the same stream of step noises $z$: two columns differ only by
the settings that differ. Try the sampler and its steps, DDIM's $\eta$, the guidance scale $s$, the variance
$\sigma_t^2 = \beta_t$ or $\tilde\beta_t$, clipping of $\hat x_0$, and two ablations of Algorithm 2: drop its noise $z$
(line 4), or tell the network a wrong $t$.
Under each column the **judge** (a classifier trained on the real data) says which class it sees in each image, and how
sure it is.
Pick a **scene** for a ready-made lesson, or share yours with **Link to this view**.
"""


def source(*objects):
    """The source code of ddpm functions, one after the other, as shown in the 'Show the code' accordions."""
    return "\n\n".join(inspect.getsource(obj) for obj in objects)


# the package functions of each tab's code panel; a tab shows its own functions beside them (explore's ablations,
# finetune.with_new_class), as the tabs import this module
SOURCES = {
    "forward": (diffusion.sample_xt, schedule.make_betas, schedule.NoiseSchedule.__init__),
    "reverse": (sampling.sample_steps, sampling.guided_eps, sampling.ddpm_step, sampling.ddim_step,
                sampling.dpmpp_2m_step),
    "grid": (sampling.sample, plots.image_grid),
    "finetune": (training.train_step, training.draw_t_eps, diffusion.DDPM.loss),
    "edit": (diffusion.sample_xt, sampling.slerp, sampling.sample_steps),
    "playground": (mlp.MLP.forward, training.train, training.train_step, training.draw_t_eps, diffusion.DDPM.loss,
                   points.two_moons, metrics.sliced_wasserstein),
    "explore": (sampling.sample_steps, sampling.ddpm_step, sweep.measure, metrics.frechet_distance, neighbours.nearest),
}
