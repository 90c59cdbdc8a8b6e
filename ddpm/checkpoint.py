"""Checkpoints as safetensors + JSON, never pickles.

A model folder holds `model.safetensors` (the EMA weights when training used EMA) and `config.json`
(DDPM's __init__ arguments), written by huggingface_hub's `PyTorchModelHubMixin.save_pretrained`.
A training folder adds `training_state.safetensors` (raw weights, optimizer moments) and
`training_state.json` (step count, optimizer hyperparameters) so a run can resume.
"""
import difflib
import json
import os

import torch
from huggingface_hub import ModelCard, ModelCardData, hf_hub_download
from huggingface_hub.utils import HFValidationError, validate_repo_id
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

WEIGHTS, CONFIG = "model.safetensors", "config.json"
STATE, STATE_JSON = "training_state.safetensors", "training_state.json"
CARD, EVALUATION, QUALITY_COST = "README.md", "evaluation.md", "quality_cost.md"
CARD_MARK = "<!-- written by ddpm.checkpoint.write_model_card: rewritten at every save -->"
CARD_TEMPLATE = """---
{{ card_data }}
---
# {{ title }}

""" + CARD_MARK + """

A denoising diffusion probabilistic model (Ho et al. 2020) made with the `ddpm` package of the DDPM teaching lab.

| | |
|---|---|
| data | {{ data }} |
| network | {{ network }} |
| parameters | {{ n_params }} |
| schedule | {{ schedule }} |
| training | {{ training }} |
| hyperparameters | {{ hyperparameters }} |
| wall time | {{ wall_time }} |

## Measured scores

{{ scores }}

## How to load

```python
import torch, ddpm
model = ddpm.load_model("{{ location }}")        # this folder, or its Hugging Face Hub id
x = ddpm.sample(model, 4{{ classes_arg }}, sampler="dpmpp_2m", steps=20, generator=torch.Generator().manual_seed(0))
```
"""


class CheckpointError(ValueError):
    pass


def _closest_folder(path):
    """The existing folder whose name differs from `path` by a slip in one or more parts (pretraind/mnst ->
    pretrained/mnist), or None."""
    here = os.sep if os.path.isabs(path) else ""
    for part in os.path.normpath(path).split(os.sep):
        if part and not os.path.isdir(os.path.join(here, part)):
            try:
                beside = [e for e in os.listdir(here or ".") if os.path.isdir(os.path.join(here, e))]
            except OSError:                             # a folder we may not read: no suggestion, not a crash
                return None
            near = difflib.get_close_matches(part, beside, n=1, cutoff=0.75)
            if not near:
                return None
            part = near[0]
        here = os.path.join(here, part)
    return here


def missing_folder(model_id, names=()):
    """For a `model_id` that is no file or folder here: (the line "no such folder: ...", naming the closest folder,
    or the closest of `names`, if one is close; whether `model_id` is a valid Hub repo id, worth asking the Hub)."""
    close = _closest_folder(os.path.expanduser(model_id)) or next(
        iter(difflib.get_close_matches(model_id, names, n=1, cutoff=0.75)), None)
    line = f"no such folder: {model_id}" + (f" (did you mean {close}?)" if close else "")
    try:
        validate_repo_id(model_id)
    except HFValidationError:
        return line, False                          # ./x, ~/x, /x, a/b/c: a path, never a Hub repo id
    return line, True


def weights_path(model_id, **hub_kwargs):
    """model.safetensors inside a local folder, or downloaded from the Hugging Face Hub repo `model_id`."""
    if os.path.isdir(model_id):
        path = os.path.join(model_id, WEIGHTS)
        if not os.path.isfile(path):
            raise CheckpointError(f"{model_id} has no {WEIGHTS}; a checkpoint folder holds {WEIGHTS} and {CONFIG}")
        return path
    return hf_hub_download(repo_id=model_id, filename=WEIGHTS, **hub_kwargs)


def _read_safetensors(path, device="cpu"):
    try:
        return load_file(path, device=str(device))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}); "
                              "it may be truncated or not a checkpoint of this package") from err


def load_weights(module, path, device="cpu"):
    """Load a safetensors state dict into `module`, requiring every name and shape to match."""
    state = _read_safetensors(path, device)
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs config {tuple(own[k].shape)}"
             for k in set(own) & set(state) if state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{path} does not fit the model its config.json describes: "
                              f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}")
    module.load_state_dict(state)
    return module


def read_config(folder, known, *, what, name=CONFIG):
    """The JSON config in `folder` as a dict, refusing a missing file, bad JSON and any key not in `known`."""
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise CheckpointError(f"{folder} has no {name}; a checkpoint folder holds {WEIGHTS} and {name}")
    try:
        with open(path) as f:
            config = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err})") from err
    unknown = sorted(set(config) - set(known)) if isinstance(config, dict) else None
    if unknown is None or unknown:
        raise CheckpointError(f"{path} is not a {what} config: unknown keys {unknown}; "
                              f"a {what} config holds {sorted(known)}")
    return config


def model_card(model, state=None, scores=None, location="<folder or Hub id>"):
    """A huggingface_hub ModelCard for a DDPM: data, network, schedule and, from a training state (the dict
    that training_state.json holds), the steps, recipe and wall time; `scores`: markdown from `ddpm evaluate`."""
    state = state or {}
    config = model.config
    classes = (f"{model.num_classes} classes + the null class of classifier-free guidance" if model.num_classes
               else "unconditional")
    shape = "x".join(map(str, model.sample_shape))
    steps = state.get("step")
    batch = state.get("batch_size")
    training = (f"{steps:,} optimizer steps" + (f" at batch {batch}" if batch else "") + " of Algorithm 1"
                if steps else "not recorded (saved outside `ddpm train`)")
    recipe = ", ".join(f"{k} {state[k]}" for k in ("lr", "warmup", "decay_steps", "p_uncond", "ema_decay")
                       if state.get(k) is not None)
    wall = state.get("wall_seconds")
    card_data = ModelCardData(library_name="ddpm", tags=["diffusion", "ddpm"] + ([model.dataset] if model.dataset else []))
    return ModelCard.from_template(
        card_data, template_str=CARD_TEMPLATE, title=f"{model.dataset or 'A'} DDPM ({classes})",
        data=f"{model.dataset or 'not recorded'}" + (f", {state['n_train']:,} training images" if state.get("n_train") else "")
        + f"; samples of shape {shape}",
        network=f"{type(model.net).__name__} {json.dumps(config.get('net'))}",
        n_params=f"{sum(p.numel() for p in model.parameters()):,}",
        schedule=f"{config.get('schedule')}, T = {model.T}, betas {config.get('beta_start')} .. {config.get('beta_end')}",
        training=training, hyperparameters=recipe or "not recorded",
        wall_time=f"{wall:.0f} s on {state.get('device', 'an unrecorded device')}" if wall else "not recorded",
        scores=scores or "Not measured yet: `python -m ddpm evaluate --model <this folder>` measures them and writes them here.",
        location=location, classes_arg=", classes=[0, 1]" if model.num_classes else "")


def update_card_section(folder, title, text):
    """Put `text` under "## {title}" in folder/README.md between two marks, replacing what an earlier call put
    there and leaving the rest of the card (written by hand or by `write_model_card`) as it is."""
    path = os.path.join(folder, CARD)
    start, end = f"<!-- {title}: start -->", f"<!-- {title}: end -->"
    card = open(path, encoding="utf-8").read() if os.path.isfile(path) else ""
    block = f"{start}\n## {title[:1].upper() + title[1:]}\n\n{text.strip()}\n{end}"
    if start in card and end in card:
        card = card[:card.index(start)] + block + card[card.index(end) + len(end):]
    else:
        card = card.rstrip() + "\n\n" + block + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(card)
    return path


def write_model_card(folder, model):
    """(Re)write folder/README.md from the model, folder/training_state.json and folder/evaluation.md; a card
    written by hand (without this package's mark) is left alone."""
    path = os.path.join(folder, CARD)
    if os.path.isfile(path) and CARD_MARK not in open(path, encoding="utf-8").read():
        return
    state_path = os.path.join(folder, STATE_JSON)
    state = json.load(open(state_path)) if os.path.isfile(state_path) else None
    parts = [heading + open(os.path.join(folder, name), encoding="utf-8").read()
             for name, heading in ((EVALUATION, ""), (QUALITY_COST, "### Quality per cost\n\n"))
             if os.path.isfile(os.path.join(folder, name))]
    scores = "\n\n".join(parts) or None
    model_card(model, state, scores, location=getattr(model, "hub_id", None) or folder).save(path)


def save_training_state(folder, ddpm, optim, step, *, ema=None, lr_scheduler=None, generator=None, extra=None):
    """Write a resumable checkpoint: the model to sample from (EMA if given) plus raw weights, optimizer state and
    the random state (torch's global generator and `generator`, the one that draws t and eps), so that a resumed
    run draws what the uninterrupted run would have; `extra` (JSON-serialisable) goes into training_state.json."""
    os.makedirs(folder, exist_ok=True)
    (ema.model if ema is not None else ddpm).save_pretrained(folder)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in ddpm.state_dict().items()}
    opt = optim.state_dict()
    for idx, state in opt["state"].items():
        for key, value in state.items():
            tensors[f"optim.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    if generator is not None:
        tensors["rng.generator"] = generator.get_state()
    save_file(tensors, os.path.join(folder, STATE))
    meta = {"step": step, "param_groups": opt["param_groups"], "ema_decay": ema.decay if ema else None,
            "ema_updates": ema.updates if ema else None,
            "lr_scheduler": lr_scheduler.state_dict() if lr_scheduler is not None else None, **(extra or {})}
    with open(os.path.join(folder, STATE_JSON), "w") as f:
        json.dump(meta, f, indent=1, default=float)
    write_model_card(folder, ema.model if ema is not None else ddpm)        # the card now knows this state


def load_training_state(folder, ddpm, optim, *, ema=None, lr_scheduler=None, generator=None):
    """Restore what `save_training_state` wrote into existing objects, the random state included (a checkpoint
    older than that keeps the seeded state); returns the step count."""
    with open(os.path.join(folder, STATE_JSON)) as f:
        meta = json.load(f)
    tensors = _read_safetensors(os.path.join(folder, STATE))
    ddpm.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    if ema is not None:
        load_weights(ema.model, os.path.join(folder, WEIGHTS))
        ema.updates = meta.get("ema_updates") or meta["step"]
    state = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    optim.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    if lr_scheduler is not None and meta["lr_scheduler"] is not None:
        lr_scheduler.load_state_dict(meta["lr_scheduler"])
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    if generator is not None and "rng.generator" in tensors:
        generator.set_state(tensors["rng.generator"])
    return meta["step"]
