"""DDPM, step by step: the teaching app (layout and wiring only; the handlers live in ddpm/app/, one module per tab).

Run `python app.py` and open http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT change it);
the same file runs as a Hugging Face Space. Models come from DDPM_APP_MODELS (default ddpm/bundled);
DDPM_APP_JUDGE=0 switches the judge classifier off; DDPM_APP_TORCH_THREADS sets how many cores it uses.
"""
import os

import gradio as gr
import torch

from ddpm.app import cores, explain, finetune, forward, grid, registry, reverse
from ddpm.app.inputs import LIMITS, SAMPLER_CHOICES, SAMPLER_HELP, UNCONDITIONAL

CSS = """
.pixel img, .pixel canvas { image-rendering: pixelated; image-rendering: crisp-edges; }
.formula .katex-display .katex { font-size: 1.6em; }
"""
# Sampling and fine-tuning share the cores among the jobs running at once (ddpm/app/cores.py); the
# light handlers (forward process, pickers) run with the whole budget, as a lone job would.
torch.set_num_threads(cores.CORES)
SAMPLING_LIMIT = int(os.environ.get("DDPM_APP_SAMPLING_CONCURRENCY", 2))
TRAIN_LIMIT = int(os.environ.get("DDPM_APP_TRAIN_CONCURRENCY", 2))


def image(label, **kw):
    """A display-only image that is never smoothed (PNG, nearest-neighbour upscaled by the handler)."""
    return gr.Image(label=label, format="png", interactive=False, elem_classes="pixel",
                    buttons=["download", "fullscreen"], **kw)


def code(key):
    with gr.Accordion("Show the code that produced this (ddpm package source)", open=False):
        gr.Code(explain.source(*explain.SOURCES[key]), language="python", lines=30)


def sampler_inputs(tab, steps):
    sampler = gr.Radio(SAMPLER_CHOICES, value="ddim", label="sampler", info=SAMPLER_HELP.replace("**", ""))
    steps = gr.Slider(*LIMITS["steps"], value=steps, step=1, label="steps of DDIM / DPM-Solver++ (1 to T)",
                      elem_id=f"{tab}_steps")
    return sampler, steps


with gr.Blocks(title="DDPM, step by step") as demo:
    gr.Markdown("# Denoising Diffusion Probabilistic Models, step by step")

    # ------------------------------------------------------------------ 1. forward process
    with gr.Tab("1. Forward process", id="forward"):
        gr.Markdown(explain.FORWARD, latex_delimiters=explain.LATEX)
        x0 = gr.State(None)
        with gr.Row():
            with gr.Column(scale=2):
                dataset = gr.Dropdown(label="dataset (bundled examples)", choices=[], allow_custom_value=True)
                gallery = gr.Gallery(label="click an example", columns=4, height=380, object_fit="contain", elem_classes="pixel",
                                     allow_preview=False)
                example = gr.Number(value=0, precision=0, label="example index", minimum=0)
                with gr.Accordion("... or upload / draw your own image", open=False):
                    with gr.Row():
                        upload = gr.Image(label="upload (png/jpg)", type="pil", sources=["upload"], height=220)
                        sketch = gr.Sketchpad(label="draw", type="pil", height=260, canvas_size=(280, 280))
                    use_sketch = gr.Button("use the drawing as x_0")
                x0_view = image("x_0 (the image we noise)", height=300)
            with gr.Column(scale=3):
                with gr.Row():
                    schedule = gr.Radio(["linear", "cosine", "sigmoid"], value="linear", label="schedule")
                    T = gr.Slider(*LIMITS["T"], value=1000, step=1, label="T (number of steps)")
                    seed_f = gr.Number(value=0, precision=0, label="noise seed", minimum=0)
                t = gr.Slider(0, 999, value=250, step=1, label="t (move me)", elem_id="fwd_t")
                with gr.Row():
                    xt_view = image("x_t", height=320, elem_id="fwd_xt")
                    eps_view = image("noise ε (the same ε for every t)", height=320)
                formula = gr.Markdown(latex_delimiters=explain.LATEX, elem_classes="formula")
                warning = gr.Markdown()
        gr.Markdown("#### x_t at evenly spaced t, all with the same ε (as in Figure 2)")
        strip = image("x_t at evenly spaced t", show_label=False)
        gr.Markdown("#### How fast each schedule destroys the signal (current t marked) &nbsp;·&nbsp; "
                    "pixels of x_t against N(0, 1)")
        with gr.Row():
            sched_plot = image("schedules", scale=3, show_label=False)
            hist = image("histogram of x_t's pixels vs N(0, 1)", scale=2, show_label=False)
        code("forward")

    # ------------------------------------------------------------------ 2. reverse process
    with gr.Tab("2. Reverse process", id="reverse"):
        gr.Markdown(explain.REVERSE, latex_delimiters=explain.LATEX)
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                rev_model = gr.Dropdown(label="model", choices=[], allow_custom_value=True)
                rev_class = gr.Dropdown(label="class", choices=[UNCONDITIONAL], value=UNCONDITIONAL,
                                        allow_custom_value=True)
                rev_sampler, rev_steps = sampler_inputs("rev", 50)
                rev_eta = gr.Slider(*LIMITS["eta"], value=0.0, step=0.05, label="DDIM η (0 = deterministic)")
                rev_guid = gr.Slider(*LIMITS["guidance"], value=2.0, step=0.1, label="guidance scale s (1 = none)")
                with gr.Row():
                    rev_seed = gr.Number(value=0, precision=0, label="seed", minimum=0)
                    rev_batch = gr.Slider(*LIMITS["batch"], value=4, step=1, label="batch")
                with gr.Row():
                    rev_start = gr.Button("Start", variant="primary", elem_id="rev_start")
                    rev_stop = gr.Button("Stop", variant="stop")
            with gr.Column(scale=3):
                rev_text = gr.Markdown("*Press Start.*", latex_delimiters=explain.LATEX, elem_classes="formula")
                with gr.Row():
                    rev_xt = image("x_t", height=480, elem_id="rev_xt")
                    rev_x0 = image("predicted x̂_0", height=480)
                rev_scrub = gr.Slider(0, 1, value=0, step=1, label="scrub the recorded frames (after a run)",
                                      interactive=False)
                rev_gif = gr.File(label="the run as an animated GIF")
        code("reverse")

    # ------------------------------------------------------------------ 3. class-conditional grid
    with gr.Tab("3. Class-conditional generation", id="grid"):
        gr.Markdown(explain.GRID, latex_delimiters=explain.LATEX)
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                grid_model = gr.Dropdown(label="model", choices=[], allow_custom_value=True)
                grid_classes = gr.Dropdown(label="classes (one row each)", multiselect=True, choices=[],
                                           allow_custom_value=True)
                grid_n = gr.Slider(*LIMITS["per_class"], value=8, step=1, label="samples per class", elem_id="grid_n")
                grid_guid = gr.Slider(*LIMITS["guidance"], value=2.0, step=0.1, label="guidance scale s (1 = none)")
                grid_sampler, grid_steps = sampler_inputs("grid", 25)
                grid_seed = gr.Number(value=0, precision=0, label="seed", minimum=0)
                grid_go = gr.Button("Generate", variant="primary", elem_id="grid_go")
            with gr.Column(scale=3):
                grid_img = image("samples: one row per class", elem_id="grid_img")
                grid_judge = gr.Markdown()
                grid_png = gr.File(label="download the grid (PNG)")
        code("grid")

    # ------------------------------------------------------------------ 4. fine-tuning
    with gr.Tab("4. Fine-tune in the browser", id="finetune"):
        gr.Markdown(explain.FINETUNE, latex_delimiters=explain.LATEX)
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                ft_base = gr.Dropdown(label="start from", choices=[], allow_custom_value=True)
                ft_source = gr.Radio([("classes of the dataset (bundled examples)", "classes"),
                                      ("my own images, as a new class", "own")], value="classes", label="data")
                ft_classes = gr.Dropdown(label="classes to train on", multiselect=True, choices=[],
                                         allow_custom_value=True)
                ft_name = gr.Textbox(label="name of your new class", value="my class", max_length=24)
                ft_files = gr.File(label=f"upload images (png/jpg, up to {LIMITS['uploads'][1]}, "
                                         f"{LIMITS['upload_mb'][1]} MB each)",
                                   file_count="multiple", file_types=list(finetune.ALLOWED_EXT))
                with gr.Accordion("... or draw them", open=False):
                    ft_sketch = gr.Sketchpad(label="draw one image", type="pil", height=260, canvas_size=(280, 280))
                    with gr.Row():
                        ft_add = gr.Button("Add drawing")
                        ft_clear = gr.Button("Clear drawings")
                    ft_drawings = gr.Gallery(label="your drawings", columns=8, height=120, elem_classes="pixel")
                with gr.Row():
                    ft_kind = gr.Radio(["seconds", "steps"], value="seconds", label="budget in", elem_id="ft_kind")
                    ft_budget = gr.Number(value=60, precision=0, label=f"budget (max {LIMITS['train_seconds'][1]} s "
                                                                     f"or {LIMITS['train_steps'][1]} steps)",
                                      elem_id="ft_budget")
                ft_refresh = gr.Slider(*LIMITS["refresh_every"], value=50, step=5, label="refresh the samples every N steps")
                with gr.Row():
                    ft_start = gr.Button("Start training", variant="primary", elem_id="ft_start")
                    ft_stop = gr.Button("Stop (keeps the weights)", variant="stop")
            with gr.Column(scale=3):
                ft_bar = gr.HTML()
                with gr.Row():
                    ft_before = image("before (fixed seed)")
                    ft_now = image("now (same seed)")
                ft_loss = image("loss", show_label=False)
                ft_status = gr.Markdown()
                ft_ckpt = gr.File(label="download the fine-tuned checkpoint (safetensors + config.json, zipped)")
        code("finetune")

    # ------------------------------------------------------------------ wiring
    fwd = dict(fn=forward.forward_view, inputs=[x0, schedule, T, t, seed_f],
               outputs=[xt_view, eps_view, formula, strip, sched_plot, hist, warning],
               concurrency_limit=4, concurrency_id="forward", show_progress="hidden")
    pick = dict(fn=forward.forward_example, inputs=[dataset, example], outputs=[x0, x0_view], api_name="forward_example")

    demo.load(registry.app_init, outputs=[dataset, rev_model, grid_model], api_name=False).then(
        finetune.base_choices_update, outputs=[ft_base], api_name=False).then(**fwd, api_name=False)
    dataset.change(forward.forward_gallery, inputs=[dataset], outputs=[gallery], api_name="forward_gallery").then(
        **pick).then(**fwd, api_name=False)
    gallery.select(forward.gallery_index, inputs=[dataset], outputs=[example], api_name=False)
    example.change(**dict(pick, api_name=False)).then(**fwd, api_name=False)
    upload.upload(forward.forward_upload, inputs=[upload], outputs=[x0, x0_view], api_name="forward_upload").then(
        **fwd, api_name=False)
    use_sketch.click(forward.forward_upload, inputs=[sketch], outputs=[x0, x0_view], api_name=False).then(
        **fwd, api_name=False)
    T.change(forward.forward_T_changed, inputs=[T, t], outputs=[t], api_name=False)
    t.change(**fwd, api_name="forward")
    for control in (schedule, T, seed_f):
        control.change(**fwd, api_name=False)

    rev_model.change(reverse.reverse_class_choices, inputs=[rev_model], outputs=[rev_class], api_name="reverse_classes")
    rev_start.click(reverse.reverse_run, inputs=[rev_model, rev_class, rev_sampler, rev_steps, rev_eta, rev_guid, rev_seed,
                                           rev_batch],
                    outputs=[rev_xt, rev_x0, rev_text, rev_scrub, rev_gif], api_name="reverse",
                    concurrency_limit=SAMPLING_LIMIT, concurrency_id="sampling", show_progress="minimal")
    rev_stop.click(reverse.reverse_stop, api_name="reverse_stop", queue=False)
    rev_scrub.release(reverse.reverse_scrub, inputs=[rev_scrub], outputs=[rev_xt, rev_x0, rev_text], api_name="reverse_scrub",
                      concurrency_limit=4, concurrency_id="scrub")

    grid_model.change(grid.grid_class_choices, inputs=[grid_model], outputs=[grid_classes], api_name="grid_classes")
    grid_go.click(grid.grid_run, inputs=[grid_model, grid_classes, grid_n, grid_guid, grid_sampler, grid_steps, grid_seed],
                  outputs=[grid_img, grid_judge, grid_png], api_name="grid",
                  concurrency_limit=SAMPLING_LIMIT, concurrency_id="sampling")

    ft_base.change(finetune.finetune_class_choices, inputs=[ft_base], outputs=[ft_classes], api_name="finetune_classes")
    ft_add.click(finetune.add_drawing, inputs=[ft_sketch], outputs=[ft_drawings], api_name="add_drawing")
    ft_clear.click(finetune.clear_drawings, outputs=[ft_drawings], api_name="clear_drawings")
    ft_start.click(finetune.finetune_run, inputs=[ft_base, ft_source, ft_classes, ft_name, ft_files, ft_kind, ft_budget,
                                            ft_refresh],
                   outputs=[ft_bar, ft_loss, ft_before, ft_now, ft_status, ft_ckpt, rev_model, grid_model, ft_base],
                   api_name="finetune", concurrency_limit=TRAIN_LIMIT, concurrency_id="train", show_progress="minimal")
    ft_stop.click(finetune.finetune_stop, api_name="finetune_stop", queue=False)
    demo.unload(registry.end_session)

demo.queue(default_concurrency_limit=2, max_size=64)

if __name__ == "__main__":
    demo.launch(css=CSS, max_file_size=f"{LIMITS['upload_mb'][1]}mb", show_error=True)
