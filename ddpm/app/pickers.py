"""The handlers around the model pickers: fill them on page load, refill them after a fine-tune, move a sampling
tab's sampler to the picked model's measured default, and forget a session when its browser tab closes."""
import gradio as gr

from .jobs import cancel
from .registry import registry, session_id

MODEL_PICKERS = 7          # the model dropdowns of tabs 2, 3, 5 (SDEdit, interpolation), 7, 9 and the lesson
DEFAULT_GUIDANCE = 2.0     # the guidance slider's start value in every tab


def app_init(request: gr.Request = None):
    """On page load: the dataset picker, then every model picker, filled with what exists now."""
    reg = registry()
    datasets, models = reg.datasets(), reg.model_names(session_id(request))
    first = models[0] if models else None
    return (gr.update(choices=datasets, value=datasets[0] if datasets else None),
            *[gr.update(choices=models, value=first) for _ in range(MODEL_PICKERS)])


def sampler_for(fallback):
    """The handler for a sampling tab's model picker: when the model changes, the tab's sampler and steps move to
    that model's measured default (Registry.sampler_default) at the measured guidance nearest the tab's (1 for
    s <= 1, else 2), or to `fallback`, the tab's own (sampler, steps), for a model without a table (a visitor's
    fine-tuned one, a Hub one)."""
    def pick(model, guidance):
        measured = 1.0 if isinstance(guidance, (int, float)) and guidance <= 1.0 else DEFAULT_GUIDANCE
        choice = (registry().sampler_default(model, measured) if isinstance(model, str) else None) or fallback
        return gr.update(value=choice[0]), gr.update(value=choice[1])
    return pick


def model_picker(request: gr.Request = None):
    """A model picker's choices again (after fine-tuning added a model), keeping its value."""
    return gr.update(choices=registry().model_names(session_id(request)))


def end_session(request: gr.Request = None):
    """When a browser tab closes: stop its jobs, forget its fine-tuned models, recorded frames and files."""
    sid = session_id(request)
    cancel(sid)
    registry().forget(sid)
