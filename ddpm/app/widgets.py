"""What every tab is built from: its components by name (`Parts`), events wired by name (`by_name`), pixel images,
the code panel, and the model, guidance and sampler inputs, whose choices come from the sampler table.

A component set as `ui.seed = gr.Number(...)` feeds handler parameters named `seed`; `by_name(handler, ...)` hands
each component to the parameter of its name, so reordering a handler's parameters can never swap two sliders.
"""
import inspect
from types import SimpleNamespace

import gradio as gr

from ..sampling import SAMPLERS
from ..schedule import NoiseSchedule
from .explain import LATEX, source
from .inputs import LIMITS
from .pickers import DEFAULT_GUIDANCE
from .registry import registry
from .settings import settings

TQDM_PROGRESS = gr.Progress(track_tqdm=True)      # a handler parameter defaulting to it shows tqdm's bars in the page
# the package's T (1000, as Ho et al.): the bound of a t slider until a model is picked
DEFAULT_T = inspect.signature(NoiseSchedule).parameters["T"].default
SAMPLER_CHOICES = [(row.label, row.name) for row in SAMPLERS.values()]
FEW_STEPS = " / ".join(row.short for row in SAMPLERS.values() if not row.all_steps)   # the samplers a steps slider drives
SAMPLER_HELP = "DDPM walks all T steps of Algorithm 2; DDIM and DPM-Solver++ jump over steps (10-25 are enough)."


class Parts(SimpleNamespace):
    """A tab's components by name. A component set as `ui.name` feeds handler parameters called `name`; set under a
    second name as well, it feeds that one too (column A's sampler is also the neighbour search's `sampler`)."""

    def __setattr__(self, name, value):
        if isinstance(value, gr.blocks.Block):
            feeds(value, name)
        super().__setattr__(name, value)


def feeds(component, name):
    """Record that `component` feeds handler parameters called `name` (its `feeds`: the names, first the Parts one)."""
    if name not in getattr(component, "feeds", ()):
        component.feeds = (*getattr(component, "feeds", ()), name)


def filled_by_gradio(parameter):
    """Whether Gradio fills this handler parameter itself (the request, event data, a progress tracker)."""
    kind = parameter.annotation
    return (isinstance(parameter.default, gr.Progress)
            or isinstance(kind, type) and issubclass(kind, (gr.Request, gr.EventData)))


def by_name(handler, *components, **named):
    """`inputs_kwargs` of an event of `handler`: each component under the parameter it feeds (its Parts name), in
    the handler's parameter order; `name=component` feeds a parameter whose name the component does not carry (the
    drawing used as the upload's `image`) and records it on the component. A handler with **kwargs takes the
    components that fit none of its named parameters under their first name. Raises ValueError naming the handler
    and the names when a component fits no parameter (or two), two components feed one parameter, or a parameter
    without a default gets no component."""
    signature = inspect.signature(handler)
    kinds = {p.kind for p in signature.parameters.values()}
    if inspect.Parameter.VAR_POSITIONAL in kinds:
        raise ValueError(f"{handler.__name__} takes *args, which cannot be fed by name")
    takes_rest = inspect.Parameter.VAR_KEYWORD in kinds
    params = [p.name for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD and not filled_by_gradio(p)]
    fed = {}

    def feed(name, component):
        if name in fed:
            raise ValueError(f"{handler.__name__}: two components feed its parameter {name!r}")
        fed[name] = component

    for component in components:
        names = getattr(component, "feeds", ())
        fits = [n for n in names if n in params] or (names[:1] if takes_rest else [])
        if len(fits) != 1:
            raise ValueError(f"{handler.__name__}: the component {getattr(component, 'label', component)!r} feeds "
                             f"{list(names)}: {'more than one' if fits else 'none'} of its parameters {params}")
        feed(fits[0], component)
    for name, component in named.items():
        if name not in params and not takes_rest:
            raise ValueError(f"{handler.__name__} has no parameter {name!r}; its parameters are {params}")
        feeds(component, name)
        feed(name, component)
    missing = [p.name for p in signature.parameters.values()
               if p.name in params and p.default is p.empty and p.name not in fed]
    if missing:
        raise ValueError(f"{handler.__name__}: no component feeds its parameters {missing}")
    order = {name: k for k, name in enumerate(params)}
    return dict(sorted(fed.items(), key=lambda item: order.get(item[0], len(params))))


def sampling_job():
    """The concurrency group of the sampling jobs; guard.py bounds them per session and per address as well."""
    return dict(concurrency_limit=settings().sampling_concurrency, concurrency_id="sampling")


def training_job():
    """The concurrency group of the training jobs (fine-tuning, the 2-D playground)."""
    return dict(concurrency_limit=settings().train_concurrency, concurrency_id="train")


def openers_job():
    """The concurrency group of the tabs' opening pictures (openers.py): the first page load of a server makes them
    two at a time rather than all at once; kept ones return at once."""
    return dict(concurrency_limit=2, concurrency_id="opener")


def image(label, *, main=False, **kw):
    """A display-only image that is never smoothed (PNG, nearest-neighbour upscaled by the handler, and by the
    browser when it is drawn larger). `main`: the tab's main picture, which lecture mode enlarges."""
    classes = ["pixel", "main-picture"] if main else ["pixel"]
    kw.setdefault("alt_text", label)                 # until a handler says more (`pictured`)
    return gr.Image(label=label, format="png", interactive=False, elem_classes=classes,
                    buttons=["download", "fullscreen"], **kw)


def pictured(picture, alt):
    """An image output with its alt text for screen readers, said from what the app knows (t, the judge's reading)."""
    return gr.update(value=picture, alt_text=alt)


def intro(lead, more):
    """A tab's explanation: its lead (at most three lines) above the pictures, the rest folded."""
    gr.Markdown(lead, latex_delimiters=LATEX, elem_classes="lead")
    with gr.Accordion("More: the maths, and what to try", open=False):
        gr.Markdown(more, latex_delimiters=LATEX)


def go_row():
    """The row of a tab's primary button and its Stop: on a phone it stays at the top of the screen (app.py's CSS)."""
    return gr.Row(elem_classes="go-row")


def go_button(tab, label):
    """A tab's primary button, `<tab>-go` for tests and outside checks (the tab's main picture is `<tab>-main`)."""
    return gr.Button(label, variant="primary", elem_id=f"{tab}-go", min_width=150)


def code(*objects):
    """The accordion with the source of `objects` (explain.SOURCES holds each tab's ddpm functions)."""
    with gr.Accordion("Show the code that produced this (ddpm package source)", open=False):
        gr.Code(source(*objects), language="python", lines=30)


def model_input():
    """A model picker, filled on page load (bundled models, listed Hub models, the visitor's own)."""
    return gr.Dropdown(label="model", choices=[], allow_custom_value=True)


def guidance_input(label="guidance scale s (1 = none)"):
    return gr.Slider(*LIMITS["guidance"], value=DEFAULT_GUIDANCE, step=0.1, label=label)


def seed_input(label="seed", value=0):
    return gr.Number(value=value, precision=0, label=label, minimum=0)


def measured_default():
    """The first bundled model's (sampler, steps) at the default guidance: the fewest steps whose quality (FD) is
    within 5% of DDIM-50's, from its quality-per-cost table (python -m ddpm evaluate --plan cost); None without one.
    The sampling tabs start there; picking another model moves them to its own (pickers.sampler_for)."""
    bundled = registry().bundled()
    return registry().sampler_default(bundled[0], DEFAULT_GUIDANCE) if bundled else None


def sampler_inputs(tab, own, *, from_table=True):
    """The sampler and its steps, at the measured default (`measured_default`) or, without a table or with
    from_table=False, at `own`, the tab's own (sampler, steps). The tables measure sampling from pure noise: SDEdit
    starts from a noised image, so its tab keeps its own."""
    sampler, steps = (from_table and measured_default()) or own
    sampler = gr.Radio(SAMPLER_CHOICES, value=sampler, label="sampler", info=SAMPLER_HELP,
                       elem_id=f"{tab}_sampler")
    steps = gr.Slider(*LIMITS["steps"], value=steps, step=1, label=f"steps of {FEW_STEPS} (1 to T)", elem_id=f"{tab}_steps")
    return sampler, steps
