"""The teaching app, one module per job. A tab's module holds its handlers and its `build()`, which lays the tab
out and wires its events by name (widgets.by_name); app.py at the repository root assembles the tabs (build_demo)
and serves them (main). Handlers take their parameters in one order: model, what to make (classes, image, t_start,
...), sampler, steps, eta, guidance, seed, how many; then what Gradio fills (request, progress).

    settings.py  the app's settings, one field per DDPM_APP_* environment variable (docs/deploying.md)
    registry.py  the bundled models, their examples and judges, and each visitor's session
    jobs.py      a session's jobs: stoppable, capped in wall time, one heavy job per session
    pickers.py   the model pickers: filled on page load and after a fine-tune; a closed tab's session forgotten
    inputs.py    input checks (ranges, choices) that raise gr.Error naming the value and what is allowed
    images.py    images for the screen: upscaled grids, uploads and drawings as 28x28 x_0, GIFs
    widgets.py   what the tabs are built from: components by name (Parts), by_name, the shared inputs
    forward.py   tab 1: the forward process q(x_t | x_0)
    reverse.py   tab 2: the reverse process, streamed step by step
    grid.py      tab 3: class-conditional grids, checked by the judge
    finetune.py  tab 4: Algorithm 1 in the browser
    edit.py      tab 5: sketch to image (SDEdit) and interpolation
    playground.py tab 6: a DDPM on 2-D points, trained from scratch
    explore.py   tab 7: up to three runs side by side from one x_T (ablations, scenes and links)
    curves.py    tab 7: accuracy, Fréchet distance and diversity against steps and guidance, measured
    neighbours.py tab 7: each sample's nearest training images (is the model copying?)
    guard.py     limits on heavy jobs per session, per address and in all
    figures.py   matplotlib figures (schedules, histogram, loss)
    explain.py   the explanations and the source shown beside each output
    cores.py     the CPU cores, shared among the jobs running at once
"""
