"""The Lesson: Sheet 3 in seven steps, each a prediction that the selected model then answers.

A step opens its tab and highlights the control it talks about (LESSON_JS, on the control's elem_id), asks one
question, and opens the answer only after a guess. The answers are measured live on the selected model by the
`answer_*` functions (pure: a model, its judge and real examples in, an Answer out; a few seconds on 2 CPUs) and
kept per model. Using the highlighted control once the answer is open moves the lesson on to the next step.

A lecture poll: with ?room=NAME in the address, the guesses of a hall are counted (`Polls`: counts only, in memory,
at most MAX_ROOMS rooms, each forgotten after ROOM_TTL_S without a guess) and shown beside the measured answer.
`build()` lays the lesson out (above the tabs); `wire(ui, tabs)` connects it to the tabs once they exist.
"""
import html
import re
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass

import gradio as gr
import torch

from ..data import to_unit_range
from ..diffusion import sample_xt
from ..eval.judge import NONE
from ..eval.paper import commitment
from ..sampling import sample, sample_steps
from ..schedule import NoiseSchedule
from .registry import registry, session_id
from .widgets import Parts, by_name, model_input

SEED = 0                        # every answer draws from this seed: the same model gives the same answer
FAST = dict(sampler="dpmpp_2m", steps=10)          # the few-step sampler of the answers that only need samples
ALG2 = dict(sampler="ddim", steps=100, eta=1.0)    # Algorithm 2's noise on 100 of the T steps: DDPM, 10 x faster
MAX_ROOMS, ROOM_TTL_S = 50, 3 * 3600               # the poll's bounds: rooms held at once, silence before forgetting
MAX_CACHED = 32                                    # answers kept (model, step): a few models x seven steps
ROOM = re.compile(r"[\w-]{1,32}")


@dataclass(frozen=True)
class Answer:
    choice: str          # the step's choice the measurement picks
    text: str            # what was measured, in a sentence or two (markdown)


# ---------------------------------------------------------------------------------------------- the measurements
def _t_choices(edges):
    """The choices of a "from which t" question for T = 1000 (the bundled models'; another T is scaled to it)."""
    return ([f"t < {edges[0]}"] + [f"{a} to {b}" for a, b in zip(edges, edges[1:], strict=False)]
            + [f"t > {edges[-1]}"])


FORWARD_EDGES, REVERSE_EDGES = (100, 300, 500, 800), (200, 400, 600, 800)   # away from the bundled models' answers
FORWARD_CHOICES, REVERSE_CHOICES = _t_choices(FORWARD_EDGES), _t_choices(REVERSE_EDGES)


def _bucket(t, T, edges, choices):
    return choices[sum(1000 * t / T >= e for e in edges)]


def _balanced(images, labels, per_class):
    """per_class real examples (uint8 [N, H, W]) of each class, in [-1, 1]: (x0 [M, 1, H, W], y [M])."""
    pick = torch.cat([torch.nonzero(labels == c)[:per_class, 0] for c in labels.unique()])
    return to_unit_range(images[pick]), labels[pick]


@torch.inference_mode()
def readable_until(judge, x0, y, alpha_bar, ts, *, level=0.5, generator=None):
    """Eq. 4 on real images x0 [N, C, H, W] of classes y [N] with one noise draw: the judge's accuracy on x_t at each
    t of ts, and the first t at which it falls below `level` (None if it never does)."""
    eps = torch.randn(x0.shape, generator=generator)
    accuracy = [float((judge.classify(sample_xt(x0, t, eps, alpha_bar)) == y).float().mean()) for t in ts]
    lost = next((t for t, a in zip(ts, accuracy, strict=True) if a < level), None)
    return accuracy, lost


def answer_forward(ddpm, judge, images, labels, *, per_class=10, points=16, **_):
    """3.3a: from which t does the judge no longer read the class of x_t (under half of 10 real images per class),
    with this model's schedule and with the other one (linear <-> cosine) at the same T?"""
    T, own = ddpm.T, ddpm.schedule
    other = NoiseSchedule("cosine", T) if own.name != "cosine" else NoiseSchedule(
        "linear", T, 1e-4 * 1000 / T, 0.02 * 1000 / T)                # the paper's betas, scaled to this T
    x0, y = _balanced(images, labels, per_class)
    ts = [round(k * (T - 1) / (points - 1)) for k in range(points)]
    lost = {s.name: readable_until(judge, x0, y, s.alpha_bar, ts, generator=torch.Generator().manual_seed(SEED))[1]
            for s in (own, other)}
    said = {name: f"t = {t}" if t is not None else "never (up to t = T - 1)" for name, t in lost.items()}
    return Answer(_bucket(lost[own.name] if lost[own.name] is not None else T - 1, T, FORWARD_EDGES, FORWARD_CHOICES),
                  f"The judge reads under half of {len(x0)} real images from **{said[own.name]}** with this model's "
                  f"{own.name} schedule, and from **{said[other.name]}** with the {other.name} schedule (T = {T}, "
                  f"t every {ts[1]}): the cosine schedule destroys the image more slowly.")


@torch.inference_mode()
def answer_reverse(ddpm, judge, *, n=10, **_):
    """3.3b: running Algorithm 2, from which t does the prediction x0_hat already show the class the run ends in
    (the judge reads the final class in at least half of n runs' x0_hat, from that step on)?"""
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn((n, *ddpm.sample_shape), generator=g)                      # Alg. 2, line 1
    readings = []
    for step in sample_steps(ddpm, x, generator=g, **ALG2):
        readings.append((step.t, judge.classify(step.x0_hat.clamp(-1, 1))))
        x = step.x_prev
    final = judge.classify(x.clamp(-1, 1))
    settled = ddpm.T - 1
    for t, read in readings:                                   # from t = T - 1 down: the last step where it still drifts
        if float((read == final).float().mean()) < 0.5:
            settled = None
        elif settled is None:
            settled = t
    settled = settled if settled is not None else 0
    return Answer(_bucket(settled, ddpm.T, REVERSE_EDGES, REVERSE_CHOICES),
                  f"In {n} runs without a label (Algorithm 2's noise on {ALG2['steps']} steps), the judge reads the "
                  f"final class in at least half of the predictions x̂_0 from **t = {settled}** on: the coarse shape "
                  "is decided early, the steps after it add detail.")


LOSS_CHOICES = ["small t (little noise)", "middle t", "large t (almost pure noise)"]


@torch.inference_mode()
def answer_training(ddpm, images, labels, *, n=64, points=10, **_):
    """3.3c: Algorithm 1 draws t uniformly; at which t is the loss ||eps - eps_theta(x_t, t)||^2 largest?"""
    g = torch.Generator().manual_seed(SEED)
    x0, y = _balanced(images, labels, max(1, n // len(labels.unique())))
    T = ddpm.T
    ts = [round(k * (T - 1) / (points - 1)) for k in range(points)]
    losses = []
    for t in ts:
        t_batch = torch.full((len(x0),), t)
        eps = torch.randn(x0.shape, generator=g)                                    # Alg. 1, line 4
        x_t = sample_xt(x0, t_batch, eps, ddpm.schedule.alpha_bar)
        losses.append(float(((ddpm.eps(x_t, t_batch, y) - eps) ** 2).mean()))        # Alg. 1, line 5
    worst = ts[max(range(points), key=losses.__getitem__)]
    third = LOSS_CHOICES[min(2, int(3 * worst / T))]
    table = ", ".join(f"t = {t}: {loss:.3f}" for t, loss in zip(ts[::3], losses[::3], strict=True))
    why = (": with little noise, ε is hard to see in x_t; with much noise, x_t almost is ε" if third == LOSS_CHOICES[0]
           else "")
    return Answer(third, f"The loss on {len(x0)} real images is largest at **t = {worst}** ({table}){why}.")


MORE_CHOICES = ["more", "about as many (within 10 points)", "fewer"]


def _recognised(judge, x, y):
    return float((judge.classify(x, none_of_these=judge.reference is not None) == y).float().mean())


@torch.inference_mode()
def answer_guidance(ddpm, judge, *, per_class=4, scales=(1.0, 3.0), **_):
    """3.4a: with guidance s = 3 instead of 1, does the judge recognise more of the asked classes?"""
    classes = list(range(min(10, ddpm.num_classes)))
    y = torch.tensor(classes).repeat_interleave(per_class)
    got = [_recognised(judge, sample(ddpm, per_class, classes, guidance_scale=s, **FAST,
                                     generator=torch.Generator().manual_seed(SEED)), y) for s in scales]
    change = got[1] - got[0]
    choice = MORE_CHOICES[0] if change > 0.1 else MORE_CHOICES[2] if change < -0.1 else MORE_CHOICES[1]
    return Answer(choice, f"The judge recognises **{got[0]:.0%}** of {len(y)} images at s = {scales[0]:g} and "
                          f"**{got[1]:.0%}** at s = {scales[1]:g} (same x_T): guidance pushes each image towards "
                          "what makes it its class, at the cost of variety.")


NULL_CHOICES = ["nearly all (90% or more)", "most (60% to 90%)", "fewer than 60%"]


@torch.inference_mode()
def answer_null_class(ddpm, judge, *, n=40, **_):
    """3.4b: drawn with the null class (the label dropped in training), how many images does the judge read as one
    of its classes rather than "none of these"?"""
    x = sample(ddpm, n, None, **FAST, generator=torch.Generator().manual_seed(SEED))
    read = judge.classify(x, none_of_these=judge.reference is not None)
    share = float((read != NONE).float().mean())
    counts = Counter(int(c) for c in read)
    names = ddpm.class_names or [str(c) for c in range(ddpm.num_classes)]
    spread = ", ".join(f"{names[c]}: {k}" for c, k in sorted(counts.items()) if c != NONE)
    choice = NULL_CHOICES[0] if share >= 0.9 else NULL_CHOICES[1] if share >= 0.6 else NULL_CHOICES[2]
    return Answer(choice, f"Of {n} images drawn with the null class, the judge reads **{share:.0%}** as one of its "
                          f"classes ({spread}; none of these: {counts.get(NONE, 0)}): dropping the label in 10% of "
                          "training taught the same network an unconditional model, the ε(x_t) that guidance needs.")


ETA_CHOICES = ["like DDIM (η = 0)", "like DDPM", "worse than both"]


@torch.inference_mode()
def answer_eta(ddpm, judge, *, per_class=1, **_):
    """3.5: from the same x_T, do DDIM's 10 steps with eta = 1 look like DDIM (eta = 0) or like DDPM (Algorithm 2's
    noise, here on 100 steps)? "Look like" is measured as the mean distance of the samples to their nearest real
    image in the judge's features (lower: more like real data), beside the judge's recognition of their classes."""
    classes = list(range(min(10, ddpm.num_classes)))
    y = torch.tensor(classes).repeat_interleave(per_class)
    runs = {"DDIM-10, η = 0": dict(sampler="ddim", steps=10, eta=0.0),
            "DDIM-10, η = 1": dict(sampler="ddim", steps=10, eta=1.0), "DDPM (100 steps)": ALG2}
    far, seen = {}, {}
    for name, how in runs.items():
        x = sample(ddpm, per_class, classes, **how, generator=torch.Generator().manual_seed(SEED))
        far[name], seen[name] = float(judge.nearest_real(x).mean()), _recognised(judge, x, y)
    ddim, mixed, ddpm_ = far.values()
    choice = (ETA_CHOICES[2] if mixed > 1.1 * max(ddim, ddpm_)
              else ETA_CHOICES[0] if abs(mixed - ddim) <= abs(mixed - ddpm_) else ETA_CHOICES[1])
    said = "; ".join(f"{name}: **{far[name]:.1f}** (recognised {seen[name]:.0%})" for name in runs)
    return Answer(choice, f"Mean distance to the nearest real image, in the judge's features, of {len(y)} samples from "
                          f"the same x_T (lower is more like real data): {said}.")


AGREE_CHOICES = ["all 8 the same", "about half", "about chance (1 in 10)"]


@torch.inference_mode()
def answer_commitment(ddpm, judge, *, t=500, K=8, **_):
    """Figure 7 of the paper: freeze one reverse run's x_t at t (of T = 1000; scaled to the model's T) and finish it
    K times with fresh noise; how many of the K end in the class the frozen run ends in?"""
    ts = [f * ddpm.T // 1000 for f in (900, 700, t, 300, 100)]
    seen = commitment(ddpm, judge, ts=ts, K=K, trunk_steps=50, generator=torch.Generator().manual_seed(SEED))
    at = min(range(len(seen.ts)), key=lambda k: abs(seen.ts[k] - ts[2]))
    share = float(seen.agreement[at])
    choice = AGREE_CHOICES[0] if share >= 7 / 8 else AGREE_CHOICES[2] if share <= 2 / 8 else AGREE_CHOICES[1]
    curve = ", ".join(f"t = {s}: {a * K:.0f}/{K}" for s, a in zip(seen.ts, seen.agreement, strict=True))
    return Answer(choice, f"From one run's x_t at t = {seen.ts[at]}, **{share * K:.0f} of {K}** continuations end in "
                          f"that run's class ({curve}); the paper's Figure 7: the larger t, the less they share.")


# ---------------------------------------------------------------------------------------------- the steps
@dataclass(frozen=True)
class Step:
    sheet: str           # the sheet's task, e.g. "3.3a"
    title: str
    tab: str             # the tab it opens (gr.Tab id)
    control: str         # the elem_id it highlights
    todo: str            # what to do there, in one line
    question: str
    choices: tuple
    answer: object       # answer_*(ddpm, judge=, images=, labels=) -> Answer: each takes the keywords it uses


STEPS = (
    Step("3.3a", "The forward process q(x_t | x_0)", "forward", "fwd_t",
         "Move the **t** slider and watch the image drown in noise (Eq. 4).",
         "From which t can the judge no longer tell the class of x_t?", tuple(FORWARD_CHOICES),
         answer_forward),
    Step("3.3b", "Algorithm 2: the reverse process", "reverse", "reverse-go",
         "Pick **DDPM** (Algorithm 2) and press **Start**: watch x̂_0 beside x_t.",
         "From which t does the prediction x̂_0 already show the class the run ends in?", tuple(REVERSE_CHOICES),
         answer_reverse),
    Step("3.3c", "Algorithm 1: training", "finetune", "finetune-go",
         "Press **Start training**: every step is Algorithm 1 on a batch, the loss plotted below.",
         "Algorithm 1 draws t uniformly. At which t is the loss ‖ε − ε_θ(x_t, t)‖² largest?", tuple(LOSS_CHOICES),
         answer_training),
    Step("3.4a", "Class-conditional sampling and guidance", "grid", "grid-go",
         "Set the **guidance scale** to 1, then to 3, and press **Generate** each time.",
         "With guidance s = 3 instead of s = 1, will the judge recognise more of the asked classes?", tuple(MORE_CHOICES),
         answer_guidance),
    Step("3.4b", "Training with the null class", "reverse", "reverse-go",
         "Pick the class **unconditional** (the null class) and press **Start**.",
         "Drawn with the null class, how many images will the judge read as one of its classes?", tuple(NULL_CHOICES),
         answer_null_class),
    Step("3.5", "Explore: samplers and η", "explore", "explore-go",
         "Compare **DDIM** with η = 0 and η = 1 at 10 steps beside **DDPM** from one x_T.",
         "Will DDIM with 10 steps and η = 1 look like DDPM or like DDIM?", tuple(ETA_CHOICES),
         answer_eta),
    Step("Fig. 7", "The paper: samples that share x_t", "paper", "paper-go",
         "Run the paper's Figure 7 (**when is the class decided?**) on this model.",
         "Freeze x_t at t = 500 and finish it 8 times with fresh noise: how many end in the same class?",
         tuple(AGREE_CHOICES), answer_commitment),
)


# ---------------------------------------------------------------------------------------------- answers and polls
_answers, _answers_lock = OrderedDict(), threading.Lock()


def measured(model, k, request=None):
    """Step k's Answer for `model` (a picker value), measured once per model and kept (MAX_CACHED answers)."""
    reg, sid = registry(), session_id(request)
    ddpm = reg.model(model, sid)
    if not reg.use_judges:
        raise gr.Error("the lesson measures its answers with the judge classifiers, and they are switched off here "
                       "(DDPM_APP_JUDGE=0)")
    own = reg.peek(sid)
    mine = own is not None and model in own.models        # a visitor's model is theirs alone, and a name may come back
    key = (sid, model, id(ddpm), k) if mine else (model, k)
    with _answers_lock:
        if key in _answers:
            _answers.move_to_end(key)
            return _answers[key]
    folder = reg.base_folder(model, sid)
    judge = reg.judge(folder) if folder in reg.bundled() else None
    if judge is None or folder not in reg.datasets():
        raise gr.Error(f"the lesson measures its answers with the judge and the real examples of a bundled model; "
                       f"{model!r} has {'no judge' if judge is None else 'no examples'}: pick one of {reg.bundled()}")
    if ddpm.num_classes is None:
        raise gr.Error(f"{model!r} is unconditional; the lesson's questions need a class-conditional model")
    images, labels = reg.examples(folder)
    answer = STEPS[k].answer(ddpm, judge=judge, images=images, labels=labels)
    with _answers_lock:
        _answers[key] = answer
        while len(_answers) > MAX_CACHED:
            _answers.popitem(last=False)
    return answer


class Polls:
    """Anonymous guesses per lecture room and step: counts only, in memory. At most max_rooms rooms are held (the
    one silent longest goes first) and a room is forgotten after ttl_s without a guess, so strangers' room names
    cannot grow it."""

    def __init__(self, max_rooms=MAX_ROOMS, ttl_s=ROOM_TTL_S, clock=time.monotonic):
        self.max_rooms, self.ttl_s, self.clock = max_rooms, ttl_s, clock
        self._rooms, self._lock = OrderedDict(), threading.Lock()      # room -> (last guess time, {step: Counter})

    def _expire(self, now):
        while self._rooms and now - next(iter(self._rooms.values()))[0] > self.ttl_s:
            self._rooms.popitem(last=False)

    def vote(self, room, k, choice, previous=None):
        """Count `choice` for step k in `room` (and take back this visitor's `previous` guess); returns the counts."""
        if choice not in STEPS[k].choices:
            raise ValueError(f"{choice!r} is not a choice of step {k + 1}; its choices are {list(STEPS[k].choices)}")
        with self._lock:
            now = self.clock()
            self._expire(now)
            _, steps = self._rooms.pop(room, (now, {}))
            counts = steps.setdefault(k, Counter())
            if previous in counts:
                counts[previous] -= 1
            counts[choice] += 1
            self._rooms[room] = (now, steps)
            while len(self._rooms) > self.max_rooms:
                self._rooms.popitem(last=False)
            return dict(+counts)

    def counts(self, room, k):
        with self._lock:
            self._expire(self.clock())
            held = self._rooms.get(room)
            return dict(+held[1].get(k, Counter())) if held else {}

    def __len__(self):
        return len(self._rooms)


POLLS = Polls()


def room_of(request):
    """The lecture room named by ?room=NAME in the page's address (letters, digits, '-', '_'), or None."""
    room = dict(getattr(request, "query_params", {}) or {}).get("room")
    return room if isinstance(room, str) and ROOM.fullmatch(room) else None


def histogram(k, counts, answer=None):
    """The hall's guesses for step k as a small bar chart (HTML), the measured answer's row marked ✔."""
    total = sum(counts.values())
    if not total:
        return ""
    rows = "".join(f"<span>{html.escape(c)}{' ✔' if answer is not None and c == answer.choice else ''}</span>"
                   f"<span style='background:#0072B2;height:0.8em;width:{100 * counts.get(c, 0) / total:.0f}%'></span>"
                   f"<span>{counts.get(c, 0)}</span>" for c in STEPS[k].choices)
    return (f"<div><b>The room's guesses</b> ({total})<div style='display:grid;grid-template-columns:max-content 8em "
            f"max-content;gap:2px 8px;align-items:center'>{rows}</div></div>")


# ---------------------------------------------------------------------------------------------- the handlers
def _state(state):
    """A visitor's place in the lesson: the step, and per step (by str(k)) the guess and the revealed answer."""
    return state if isinstance(state, dict) else dict(step=0, guesses={}, answers={})


def step_view(state):
    """What the lesson shows for its current step: (header markdown, guess radio, reveal button, answer markdown,
    poll markdown, the elem_id of the control to highlight)."""
    state = _state(state)
    k = state["step"]
    s, guess, answer = STEPS[k], state["guesses"].get(str(k)), state["answers"].get(str(k))
    header = f"**Step {k + 1} of {len(STEPS)} · {s.sheet} · {s.title}**\n\n{s.todo} *(Tab {s.tab}: the highlighted control.)*"
    return (header, gr.update(choices=list(s.choices), value=guess, label=s.question, interactive=answer is None),
            gr.update(interactive=guess is not None and answer is None), answer or "", "", s.control)


def lesson_go(state, move=0):
    """Move `move` steps (within the lesson) and open that step's tab: (state, tabs, *step_view)."""
    state = _state(state)
    state = dict(state, step=min(len(STEPS) - 1, max(0, state["step"] + move)))
    return (state, gr.update(selected=STEPS[state["step"]].tab), *step_view(state))


def lesson_next(state):
    return lesson_go(state, +1)


def lesson_back(state):
    return lesson_go(state, -1)


def lesson_open(state):
    return lesson_go(state, 0)


def lesson_guess(state, guess, request: gr.Request = None):
    """A guess for the current step: kept, counted in the room's poll (?room=NAME), and the reveal opens:
    (state, reveal button, poll markdown)."""
    state = _state(state)
    k = state["step"]
    if guess not in STEPS[k].choices or str(k) in state["answers"]:
        return state, gr.update(), gr.update()
    room, previous = room_of(request), state["guesses"].get(str(k))
    counts = POLLS.vote(room, k, guess, previous) if room else {}
    state = dict(state, guesses={**state["guesses"], str(k): guess})
    return state, gr.update(interactive=True), histogram(k, counts)


def lesson_reveal(state, model, request: gr.Request = None):
    """The measured answer of the current step, only after a guess: (state, answer markdown, guess radio, reveal
    button, poll markdown)."""
    state = _state(state)
    k = state["step"]
    guess = state["guesses"].get(str(k))
    if guess is None:
        raise gr.Error("make a guess first: the answer opens after it")
    answer = measured(model, k, request)
    verdict = "✔ Your guess was right." if guess == answer.choice else f"Your guess: {guess}. Measured: **{answer.choice}**."
    text = f"{verdict}\n\n{answer.text}\n\n*Measured on `{model}`.*"
    state = dict(state, answers={**state["answers"], str(k): text})
    room = room_of(request)
    return (state, text, gr.update(interactive=False), gr.update(interactive=False),
            histogram(k, POLLS.counts(room, k), answer) if room else "")


def lesson_used(state):
    """The learner used the highlighted control: once the answer is open, the lesson moves on to the next step in its
    own panel (the tab stays, with what the learner just made): (state, *step_view)."""
    state = _state(state)
    k = state["step"]
    if str(k) not in state["answers"] or k == len(STEPS) - 1:
        return (state, *[gr.update()] * 6)
    state = dict(state, step=k + 1)
    return (state, *step_view(state))


# Highlights one control (the step's elem_id) and reports its first use by a click on this component.
LESSON_JS = """
window.lessonWatch = (id) => {
  document.querySelectorAll('.lesson-focus').forEach((e) => e.classList.remove('lesson-focus'));
  if (window.lessonAbort) window.lessonAbort.abort();
  window.lessonAbort = new AbortController();
  const signal = window.lessonAbort.signal;
  const find = (tries) => {
    const target = document.getElementById(id);
    if (!target) { if (tries > 0 && !signal.aborted) setTimeout(() => find(tries - 1), 250); return; }
    target.classList.add('lesson-focus');
    target.scrollIntoView({block: 'nearest', behavior: 'smooth'});
    const used = () => { window.lessonAbort.abort(); trigger('click'); };
    for (const kind of ['click', 'input', 'change'])
      target.addEventListener(kind, used, {capture: true, once: true, signal});
  };
  find(12);
};
"""
LESSON_CSS = ("<style>.lesson-focus { outline: 4px solid #f97316 !important; outline-offset: 3px; border-radius: 8px;"
              " animation: lesson-pulse 1.2s ease-in-out 3; }"
              " @keyframes lesson-pulse { 50% { outline-color: #fdba74; } }</style>")
WATCH = "(id) => { if (window.lessonWatch) window.lessonWatch(id); }"


def build():
    """The lesson's panel (call it above the tabs): returns its Parts; `model` is its model picker."""
    ui = Parts()
    with gr.Accordion(f"Lesson: Sheet 3 in {len(STEPS)} steps — guess, then let the model answer", open=False,
                      elem_id="lesson") as ui.panel:
        ui.state = gr.State(None)
        with gr.Row():
            ui.back = gr.Button("◀ Back", min_width=80, scale=0)
            ui.header = gr.Markdown(step_view(None)[0])
            ui.open = gr.Button("Open its tab", min_width=120, scale=0)
            ui.next = gr.Button("Next ▶", min_width=80, scale=0, variant="primary")
        with gr.Row():
            with gr.Column(scale=2):
                ui.guess = gr.Radio(list(STEPS[0].choices), label=STEPS[0].question, elem_id="lesson_guess")
                with gr.Row():
                    ui.reveal = gr.Button("Reveal the measured answer", interactive=False, elem_id="lesson_reveal")
                    ui.model = model_input()
            with gr.Column(scale=2):
                ui.answer = gr.Markdown()
                ui.poll = gr.HTML("", elem_id="lesson_poll")
        ui.focus = gr.Textbox(STEPS[0].control, visible="hidden")
        ui.watch = gr.HTML("", js_on_load=LESSON_JS, head=LESSON_CSS, elem_id="lesson_watch")
    return ui


def wire(ui, tabs):
    """The lesson's events: its buttons move through STEPS and open their tabs in `tabs`."""
    shown = [ui.header, ui.guess, ui.reveal, ui.answer, ui.poll, ui.focus]
    for event, move in ((ui.next.click, lesson_next), (ui.back.click, lesson_back), (ui.open.click, lesson_open),
                        (ui.panel.expand, lesson_open)):
        event(move, inputs_kwargs=by_name(move, state=ui.state), outputs=[ui.state, tabs, *shown],
              api_name=False, queue=False).then(None, inputs=[ui.focus], js=WATCH)
    ui.guess.input(lesson_guess, inputs_kwargs=by_name(lesson_guess, ui.guess, state=ui.state),
                   outputs=[ui.state, ui.reveal, ui.poll], api_name="lesson_guess", queue=False)
    ui.reveal.click(lesson_reveal, inputs_kwargs=by_name(lesson_reveal, ui.model, state=ui.state),
                    outputs=[ui.state, ui.answer, ui.guess, ui.reveal, ui.poll], api_name="lesson_reveal",
                    concurrency_limit=2, concurrency_id="lesson")
    ui.watch.click(lesson_used, inputs_kwargs=by_name(lesson_used, state=ui.state), outputs=[ui.state, *shown],
                   api_name=False, queue=False).then(None, inputs=[ui.focus], js=WATCH)
