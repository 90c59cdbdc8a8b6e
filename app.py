"""DDPM, step by step: the teaching app (layout and wiring only; the handlers live in ddpm/app/, one module per tab).

Run `python app.py` and open http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT change it);
the same file runs as a Hugging Face Space. Models come from DDPM_APP_MODELS (default the bundled pretrained/);
DDPM_APP_JUDGE=0 switches the judge classifier off; DDPM_APP_TORCH_THREADS sets how many cores it uses;
DDPM_KEEP_FREED_MEMORY=0 lets freed memory go back to the system after each step (slower: ddpm/memory.py).
"""
import gradio as gr
import torch

from ddpm import keep_freed_memory
from ddpm.app import (cores, curves, edit, explain, explore, finetune, forward, grid, guard, images, neighbours, pickers,
                      playground, registry, reverse)
from ddpm.app.inputs import LIMITS, SAMPLER_CHOICES, SAMPLER_HELP, UNCONDITIONAL
from ddpm.app.settings import settings

CSS = """
.pixel img, .pixel canvas { image-rendering: pixelated; image-rendering: crisp-edges; }
.formula .katex-display .katex { font-size: 1.6em; }
"""
# Sampling and fine-tuning share the cores among the jobs running at once (ddpm/app/cores.py); the
# light handlers (forward process, pickers) run with the whole budget, as a lone job would.
torch.set_num_threads(cores.CORES)
keep_freed_memory()              # freed activations are reused, not page-faulted back each step (ddpm/memory.py)
SAMPLING_LIMIT = settings().sampling_concurrency
TRAIN_LIMIT = settings().train_concurrency


def image(label, **kw):
    """A display-only image that is never smoothed (PNG, nearest-neighbour upscaled by the handler)."""
    return gr.Image(label=label, format="png", interactive=False, elem_classes="pixel",
                    buttons=["download", "fullscreen"], **kw)


def code(key):
    with gr.Accordion("Show the code that produced this (ddpm package source)", open=False):
        gr.Code(explain.source(*explain.SOURCES[key]), language="python", lines=30)


def model_input():
    """A model picker, filled on page load (bundled models, listed Hub models, the visitor's own)."""
    return gr.Dropdown(label="model", choices=[], allow_custom_value=True)


def guidance_input():
    return gr.Slider(*LIMITS["guidance"], value=GUIDANCE, step=0.1, label="guidance scale s (1 = none)")


# The sampling tabs start at the fewest steps whose quality (FD) is within 5% of DDIM-50's at the default guidance,
# read from the first bundled model's quality-per-cost table (python -m ddpm evaluate --plan cost); picking another
# model moves them to its own (pickers.sampler_for).
GUIDANCE = pickers.DEFAULT_GUIDANCE
REVERSE_OWN, GRID_OWN = ("ddim", 50), ("ddim", 25)     # the tabs' own (sampler, steps) where no table is at hand
_bundled = registry.registry().bundled()
FAST = registry.registry().sampler_default(_bundled[0], GUIDANCE) if _bundled else None


def sampler_inputs(tab, sampler, steps, *, from_table=True):
    """The sampler and its steps: from the quality-per-cost tables when they exist (the tables measure sampling
    from pure noise; SDEdit starts from a noised image, so its tab keeps its own), else the tab's own."""
    sampler, steps = (from_table and FAST) or (sampler, steps)
    sampler = gr.Radio(SAMPLER_CHOICES, value=sampler, label="sampler", info=SAMPLER_HELP.replace("**", ""),
                       elem_id=f"{tab}_sampler")
    steps = gr.Slider(*LIMITS["steps"], value=steps, step=1, label="steps of DDIM / DPM-Solver++ (1 to T)",
                      elem_id=f"{tab}_steps")
    return sampler, steps


with gr.Blocks(title="DDPM, step by step") as demo:
    gr.Markdown("# Denoising Diffusion Probabilistic Models, step by step")

    with gr.Tabs() as tabs:
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
                            upload = images.CheckedImage(label="upload (png/jpg)", type="pil", sources=["upload"], height=220)
                            sketch = images.CheckedSketchpad(label="draw", type="pil", height=260, canvas_size=(280, 280))
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
                    rev_model = model_input()
                    rev_class = gr.Dropdown(label="class", choices=[UNCONDITIONAL], value=UNCONDITIONAL,
                                            allow_custom_value=True)
                    rev_sampler, rev_steps = sampler_inputs("rev", *REVERSE_OWN)
                    rev_eta = gr.Slider(*LIMITS["eta"], value=0.0, step=0.05, label="DDIM η (0 = deterministic)")
                    rev_guid = guidance_input()
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
                    grid_model = model_input()
                    grid_classes = gr.Dropdown(label="classes (one row each)", multiselect=True, choices=[],
                                               allow_custom_value=True)
                    grid_n = gr.Slider(*LIMITS["per_class"], value=8, step=1, label="samples per class", elem_id="grid_n")
                    grid_guid = guidance_input()
                    grid_sampler, grid_steps = sampler_inputs("grid", *GRID_OWN)
                    grid_seed = gr.Number(value=0, precision=0, label="seed", minimum=0)
                    with gr.Row():
                        grid_go = gr.Button("Generate", variant="primary", elem_id="grid_go")
                        grid_stop = gr.Button("Stop", variant="stop", elem_id="grid_stop")
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
                        ft_sketch = images.CheckedSketchpad(label="draw one image", type="pil", height=260, canvas_size=(280, 280))
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

        # ------------------------------------------------------------------ 5. sketch to image, interpolation
        with gr.Tab("5. Sketch to image & interpolation", id="edit"):
            gr.Markdown(explain.EDIT, latex_delimiters=explain.LATEX)
            gr.Markdown("#### Sketch to image (SDEdit)")
            with gr.Row():
                with gr.Column(scale=1, min_width=300):
                    sd_model = model_input()
                    sd_class = gr.Dropdown(label="class", choices=[UNCONDITIONAL], value=UNCONDITIONAL,
                                           allow_custom_value=True)
                    sd_sketch = images.CheckedSketchpad(label="draw (or upload / paste) an image", type="pil", height=280,
                                             elem_id="sd_sketch", canvas_size=(280, 280), sources=["upload", "clipboard"])
                    sd_t = gr.Slider(0, 999, value=500, step=1, label="strength t_start (0 = keep my image, T-1 = ignore it)",
                                     elem_id="sd_t")
                    sd_sampler, sd_steps = sampler_inputs("sd", "ddim", 20, from_table=False)
                    sd_guid = guidance_input()
                    sd_seed = gr.Number(value=0, precision=0, label="noise seed", minimum=0)
                    with gr.Row():
                        sd_go = gr.Button("Denoise my image", variant="primary", elem_id="sd_go")
                        sd_stop = gr.Button("Stop", variant="stop")
                with gr.Column(scale=3):
                    sd_text = gr.Markdown("*Draw, then press the button.*")
                    with gr.Row():
                        sd_mine = image("your x_0", height=230)
                        sd_noised = image("x_{t_start}: noised with Eq. 4", height=230)
                        sd_xt = image("x_t now", height=230, elem_id="sd_xt")
                        sd_x0 = image("predicted x̂_0", height=230)
                    sd_strip = image("the same noise, growing t_start: faithful → realistic", elem_id="sd_strip")
            gr.Markdown("#### Interpolation between two seeds")
            with gr.Row():
                with gr.Column(scale=1, min_width=300):
                    ip_model = model_input()
                    with gr.Row():
                        ip_class_a = gr.Dropdown(label="class A", choices=[], allow_custom_value=True)
                        ip_class_b = gr.Dropdown(label="class B", choices=[], allow_custom_value=True)
                    ip_mix = gr.Checkbox(value=False, label="also mix the class embeddings from A to B")
                    with gr.Row():
                        ip_seed_a = gr.Number(value=0, precision=0, label="seed A", minimum=0)
                        ip_seed_b = gr.Number(value=1, precision=0, label="seed B", minimum=0)
                    ip_n = gr.Slider(*LIMITS["frames"], value=10, step=1, label="images")
                    ip_sampler = gr.Radio(SAMPLER_CHOICES[1:], value="dpmpp_2m", label="deterministic sampler")
                    ip_steps = gr.Slider(*LIMITS["steps"], value=10, step=1, label="steps", elem_id="ip_steps")
                    ip_guid = guidance_input()
                    ip_go = gr.Button("Interpolate", variant="primary", elem_id="ip_go")
                with gr.Column(scale=3):
                    ip_strip = image("from seed A (left) to seed B (right)", elem_id="ip_strip")
                    ip_text = gr.Markdown()
                    ip_gif = gr.File(label="the walk as an animated GIF")
            code("edit")

        # ------------------------------------------------------------------ 6. 2-D playground
        with gr.Tab("6. Playground (2-D)", id="playground"):
            gr.Markdown(explain.PLAYGROUND, latex_delimiters=explain.LATEX)
            d = playground.DEFAULTS
            with gr.Row():
                with gr.Column(scale=1, min_width=320):
                    pg_shape = gr.Radio([("two moons", "two_moons"), ("swiss roll", "swiss_roll"),
                                         ("ring of Gaussians", "gaussian_ring"), ("text", "text"), ("my drawing", "drawing")],
                                        value=d["shape"], label="data")
                    pg_word = gr.Textbox(value="DDPM", label="text (for 'text': up to 12 ASCII characters)", max_length=12)
                    with gr.Accordion("my drawing (for 'my drawing')", open=False):
                        pg_sketch = images.CheckedSketchpad(label="draw a shape", type="pil", height=260, canvas_size=(280, 280))
                    with gr.Row():
                        pg_schedule = gr.Radio(["linear", "cosine", "sigmoid"], value=d["schedule"], label="schedule")
                        pg_T = gr.Slider(*LIMITS["pg_T"], value=d["T"], step=1, label="T", elem_id="pg_T")
                    with gr.Row():
                        pg_b0 = gr.Number(value=d["beta_start"], label="beta_start (linear, sigmoid)")
                        pg_b1 = gr.Number(value=d["beta_end"], label="beta_end (linear, sigmoid)")
                    with gr.Row():
                        pg_width = gr.Slider(*LIMITS["width"], value=d["width"], step=8, label="network width")
                        pg_depth = gr.Slider(*LIMITS["depth"], value=d["depth"], step=1, label="depth")
                    with gr.Row():
                        pg_lr = gr.Number(value=d["lr"], label="learning rate")
                        pg_batch = gr.Slider(*LIMITS["pg_batch"], value=d["batch"], step=8, label="batch size")
                    pg_seconds = gr.Slider(*LIMITS["pg_seconds"], value=d["seconds"], step=1, label="training seconds",
                                           elem_id="pg_seconds")
                    pg_tview = gr.Slider(0, 999, value=50, step=1, label="show the forward process at t")
                    with gr.Row():
                        pg_go = gr.Button("Start training", variant="primary", elem_id="pg_go")
                        pg_stop = gr.Button("Stop (keeps the model)", variant="stop")
                with gr.Column(scale=3):
                    pg_status = gr.Markdown("*Press Start: about 10 s on 2 cores.*", elem_id="pg_status")
                    pg_points = image("samples over the data · the forward process", elem_id="pg_points", show_label=False)
                    pg_loss = image("loss", show_label=False)
                    gr.Markdown("#### Reverse trajectories of a few points (after training)")
                    with gr.Row():
                        pg_sampler = gr.Radio(SAMPLER_CHOICES, value="ddim", label="sampler")
                        pg_steps = gr.Slider(1, 1000, value=20, step=1, label="steps (DDIM / DPM-Solver++)")
                        pg_npaths = gr.Slider(*LIMITS["paths"], value=12, step=1, label="paths")
                    pg_draw = gr.Button("Draw trajectories", elem_id="pg_draw")
                    with gr.Row():
                        pg_paths = image("trajectories", elem_id="pg_paths", show_label=False)
                        pg_paths_text = gr.Markdown()
            code("playground")

        # -------------------------------------------------------------- 7. explore: one choice at a time
        with gr.Tab("7. Explore", id="explore"):
            gr.Markdown(explain.EXPLORE, latex_delimiters=explain.LATEX)
            with gr.Row():
                ex_scene = gr.Dropdown(list(explore.SCENES), value=explore.DEFAULT_SCENE, label="lecture-ready scene",
                                       scale=3, elem_id="ex_scene")
                ex_model = model_input()
                ex_n = gr.Slider(*LIMITS["batch"], value=8, step=1, label="images per column")
                ex_seed = gr.Number(value=0, precision=0, label="seed (one x_T for every column)", minimum=0)
            ex_note = gr.Markdown(f"*{explore.SCENES[explore.DEFAULT_SCENE][0]}*")
            with gr.Row():
                ex_go = gr.Button("Compare", variant="primary", elem_id="ex_go")
                ex_stop = gr.Button("Stop", variant="stop")
                ex_link_go = gr.Button("Link to this view", elem_id="ex_link_go")
            ex_status = gr.Markdown(elem_id="ex_status")
            ex_controls, ex_images, ex_texts = [], [], []
            with gr.Row(equal_height=False):
                for name, col in zip(explore.NAMES, explore.default_columns()):
                    with gr.Column(min_width=300):
                        ex_images.append(image(f"column {name}", elem_id=f"ex_img_{name.lower()}"))
                        ex_texts.append(gr.Markdown(elem_id=f"ex_text_{name.lower()}"))
                        with gr.Accordion(f"column {name}: settings", open=True):
                            on = gr.Checkbox(value=col.on, label=f"run column {name}", interactive=name != "A")
                            ex_controls += [
                                on, gr.Radio(SAMPLER_CHOICES, value=col.sampler, label="sampler"),
                                gr.Slider(*LIMITS["steps"], value=col.steps, step=1, label="steps (DDIM / DPM-Solver++)"),
                                gr.Slider(*LIMITS["eta"], value=col.eta, step=0.05, label="DDIM η (1 = DDPM's noise)"),
                                gr.Slider(*LIMITS["guidance"], value=col.guidance, step=0.1, label="guidance scale s"),
                                gr.Radio([("σ² = β", "beta"), ("σ² = β̃ (posterior)", "beta_tilde")], value=col.variance,
                                         label="DDPM variance σ_t²"),
                                gr.Checkbox(value=col.clip, label="clip x̂₀ to [-1, 1]"),
                                gr.Checkbox(value=col.no_z, label="ablation: no noise z (Alg. 2, line 4)"),
                                gr.Checkbox(value=col.wrong_t, label="ablation: the network is told t = T/2")]
            ex_scrub = gr.Slider(0, 1, value=0, step=1, label="scrub all columns together (after a run)", interactive=False)
            ex_link = gr.Textbox(label="link to this view (copy it; or paste a link here and press Enter to open it)",
                                 elem_id="ex_link", buttons=["copy"])
            gr.Markdown(curves.CURVES_HELP, latex_delimiters=explain.LATEX)
            with gr.Row():
                cv_per_class = gr.Slider(*LIMITS["per_class"], value=curves.LIVE_PER_CLASS, step=1,
                                         label="images per class and point (the bundled curves: more)",
                                         elem_id="cv_per_class")
                cv_seed = gr.Number(value=0, precision=0, label="seed", minimum=0)
                cv_stop = gr.Button("Stop measuring", variant="stop")
            with gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=280):
                    cv_guid = gr.Slider(*LIMITS["guidance"], value=GUIDANCE, step=0.1, label="guidance scale s")
                    cv_steps_go = gr.Button("Measure: quality against steps", variant="primary", elem_id="cv_steps_go")
                with gr.Column(scale=3):
                    cv_steps_img = image("accuracy and FD against steps", elem_id="cv_steps_img", show_label=False)
            cv_steps_text = gr.Markdown(elem_id="cv_steps_text")
            with gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=280):
                    cv_sampler = gr.Radio(SAMPLER_CHOICES[1:], value=(FAST or GRID_OWN)[0], label="sampler",
                                          elem_id="cv_sampler")
                    cv_steps = gr.Slider(*LIMITS["steps"], value=(FAST or GRID_OWN)[1], step=1, label="steps",
                                         elem_id="cv_steps")
                    cv_guid_go = gr.Button("Measure: accuracy and diversity against guidance", variant="primary",
                                           elem_id="cv_guid_go")
                with gr.Column(scale=3):
                    cv_guid_img = image("accuracy and diversity against guidance", elem_id="cv_guid_img", show_label=False)
            cv_guid_text = gr.Markdown(elem_id="cv_guid_text")
            gr.Markdown("#### Is the model copying? Nearest training images")
            gr.Markdown(neighbours.NEIGHBOURS_HELP)
            with gr.Row():
                nb_per_class = gr.Slider(*LIMITS["nn_per_class"], value=1, step=1, label="samples per class",
                                         scale=2)
                nb_go = gr.Button("Sample with column A's sampler, steps and guidance, then search", variant="primary",
                                  elem_id="nb_go",
                                  scale=2)
                nb_stop = gr.Button("Stop", variant="stop", scale=1)
            with gr.Row():
                nb_img = image("each sample, its nearest training images by judge features and by pixels",
                               elem_id="nb_img", scale=3, show_label=False)
                nb_text = gr.Markdown(elem_id="nb_text")
            code("explore")

    # ------------------------------------------------------------------ wiring
    fwd = dict(fn=forward.forward_view, inputs=[x0, schedule, T, t, seed_f],
               outputs=[xt_view, eps_view, formula, strip, sched_plot, hist, warning],
               concurrency_limit=4, concurrency_id="forward", show_progress="hidden")
    pick = dict(fn=forward.forward_example, inputs=[dataset, example], outputs=[x0, x0_view], api_name="forward_example")

    ex_all = [ex_model, ex_n, ex_seed, *ex_controls]
    demo.load(pickers.app_init, outputs=[dataset, rev_model, grid_model, sd_model, ip_model, ex_model], api_name=False).then(
        finetune.base_choices_update, outputs=[ft_base], api_name=False).then(**fwd, api_name=False).then(
        explore.scene_from_url, outputs=[tabs, ex_scene, *ex_all, ex_note], api_name=False).success(
        None, js=explore.RUN_IF_SCENE_JS)
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
    rev_model.change(pickers.sampler_for(REVERSE_OWN), inputs=[rev_model, rev_guid], outputs=[rev_sampler, rev_steps],
                     api_name=False, show_progress="hidden")
    rev_start.click(reverse.reverse_run, inputs=[rev_model, rev_class, rev_sampler, rev_steps, rev_eta, rev_guid, rev_seed,
                                           rev_batch],
                    outputs=[rev_xt, rev_x0, rev_text, rev_scrub, rev_gif], api_name="reverse",
                    concurrency_limit=SAMPLING_LIMIT, concurrency_id="sampling", show_progress="minimal")
    rev_stop.click(reverse.reverse_stop, api_name="reverse_stop", queue=False)
    rev_scrub.release(reverse.reverse_scrub, inputs=[rev_scrub], outputs=[rev_xt, rev_x0, rev_text], api_name="reverse_scrub",
                      concurrency_limit=4, concurrency_id="scrub")

    grid_model.change(grid.grid_class_choices, inputs=[grid_model], outputs=[grid_classes], api_name="grid_classes")
    grid_model.change(pickers.sampler_for(GRID_OWN), inputs=[grid_model, grid_guid], outputs=[grid_sampler, grid_steps],
                      api_name=False, show_progress="hidden")
    grid_go.click(grid.grid_run, inputs=[grid_model, grid_classes, grid_n, grid_guid, grid_sampler, grid_steps, grid_seed],
                  outputs=[grid_img, grid_judge, grid_png], api_name="grid",
                  concurrency_limit=SAMPLING_LIMIT, concurrency_id="sampling")
    grid_stop.click(grid.grid_stop, api_name="grid_stop", queue=False)

    ft_base.change(finetune.finetune_class_choices, inputs=[ft_base], outputs=[ft_classes], api_name="finetune_classes")
    ft_add.click(finetune.add_drawing, inputs=[ft_sketch], outputs=[ft_drawings], api_name="add_drawing")
    ft_clear.click(finetune.clear_drawings, outputs=[ft_drawings], api_name="clear_drawings")
    ft_start.click(finetune.finetune_run, inputs=[ft_base, ft_source, ft_classes, ft_name, ft_files, ft_kind, ft_budget,
                                            ft_refresh],
                   outputs=[ft_bar, ft_loss, ft_before, ft_now, ft_status, ft_ckpt, rev_model, grid_model, ft_base],
                   api_name="finetune", concurrency_limit=TRAIN_LIMIT, concurrency_id="train", show_progress="minimal").then(
        pickers.model_picker, outputs=[sd_model], api_name=False).then(
        pickers.model_picker, outputs=[ip_model], api_name=False).then(
        pickers.model_picker, outputs=[ex_model], api_name=False)
    ft_stop.click(finetune.finetune_stop, api_name="finetune_stop", queue=False)
    sd_model.change(edit.sdedit_choices, inputs=[sd_model, sd_t], outputs=[sd_class, sd_t], api_name=False)
    sd_go.click(edit.sdedit_run, inputs=[sd_model, sd_class, sd_sketch, sd_t, sd_sampler, sd_steps, sd_guid, sd_seed],
                outputs=[sd_mine, sd_noised, sd_xt, sd_x0, sd_text, sd_strip], api_name="sdedit",
                concurrency_limit=SAMPLING_LIMIT, concurrency_id="sampling", show_progress="minimal")
    sd_stop.click(edit.sdedit_stop, api_name="sdedit_stop", queue=False)
    ip_model.change(edit.interpolate_class_choices, inputs=[ip_model], outputs=[ip_class_a, ip_class_b], api_name=False)
    ip_go.click(edit.interpolate_run, inputs=[ip_model, ip_class_a, ip_class_b, ip_seed_a, ip_seed_b, ip_n, ip_sampler,
                                              ip_steps, ip_guid, ip_mix],
                outputs=[ip_strip, ip_gif, ip_text], api_name="interpolate",
                concurrency_limit=SAMPLING_LIMIT, concurrency_id="sampling")

    pg_go.click(playground.playground_train, inputs=[pg_shape, pg_word, pg_sketch, pg_schedule, pg_T, pg_b0, pg_b1,
                                                     pg_width, pg_depth, pg_lr, pg_batch, pg_seconds, pg_tview],
                outputs=[pg_loss, pg_points, pg_status], api_name="playground_train",
                concurrency_limit=TRAIN_LIMIT, concurrency_id="train", show_progress="minimal")
    pg_stop.click(playground.playground_stop, api_name="playground_stop", queue=False)
    pg_draw.click(playground.playground_paths, inputs=[pg_sampler, pg_steps, pg_npaths], outputs=[pg_paths, pg_paths_text],
                  api_name="playground_paths", concurrency_limit=SAMPLING_LIMIT, concurrency_id="sampling")
    ex_outputs = [v for pair in zip(ex_images, ex_texts) for v in pair] + [ex_scrub, ex_status]
    ex_go.click(explore.compare_run, inputs=ex_all, outputs=ex_outputs, api_name="compare",
                concurrency_limit=SAMPLING_LIMIT, concurrency_id="sampling", show_progress="minimal")
    ex_stop.click(explore.compare_stop, api_name="compare_stop", queue=False)
    ex_scrub.release(explore.compare_scrub, inputs=[ex_scrub], outputs=[*ex_images, ex_status], api_name="compare_scrub",
                     concurrency_limit=4, concurrency_id="scrub")
    ex_scene.input(explore.scene_preset, inputs=[ex_scene], outputs=[*ex_all, ex_note], api_name="scene_preset")
    ex_link_go.click(explore.scene_query, inputs=ex_all, outputs=[ex_link], api_name="scene_link").then(
        None, inputs=[ex_link], outputs=[ex_link], js=explore.FULL_LINK_JS)
    ex_link.submit(explore.scene_values, inputs=[ex_link], outputs=ex_all, api_name="scene")
    column_a = [ex_controls[explore.FIELDS.index(f)] for f in ("sampler", "steps", "guidance")]
    nb_go.click(neighbours.neighbours_run, inputs=[ex_model, *column_a, ex_seed, nb_per_class], outputs=[nb_img, nb_text],
                api_name="neighbours", concurrency_limit=SAMPLING_LIMIT, concurrency_id="sampling")
    nb_stop.click(neighbours.neighbours_stop, api_name="neighbours_stop", queue=False)
    ex_model.change(pickers.sampler_for(GRID_OWN), inputs=[ex_model, cv_guid], outputs=[cv_sampler, cv_steps],
                    api_name=False, show_progress="hidden")
    cv_steps_go.click(curves.sweep_steps, inputs=[ex_model, cv_guid, cv_per_class, cv_seed],
                      outputs=[cv_steps_img, cv_steps_text], api_name="sweep_steps",
                      concurrency_limit=SAMPLING_LIMIT, concurrency_id="sampling", show_progress="minimal")
    cv_guid_go.click(curves.sweep_guidance, inputs=[ex_model, cv_sampler, cv_steps, cv_per_class, cv_seed],
                     outputs=[cv_guid_img, cv_guid_text], api_name="sweep_guidance",
                     concurrency_limit=SAMPLING_LIMIT, concurrency_id="sampling", show_progress="minimal")
    cv_stop.click(curves.sweep_stop, api_name="sweep_stop", queue=False)
    demo.unload(pickers.end_session)

# the queue's own bound is for light calls too; heavy jobs have tighter bounds per session and in all (guard.py)
demo.queue(default_concurrency_limit=2, max_size=256)
guard.install(demo)

if __name__ == "__main__":
    demo.launch(css=CSS, max_file_size=f"{LIMITS['upload_mb'][1]}mb", show_error=True)
