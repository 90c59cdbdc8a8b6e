"""DDPM, step by step: the teaching app. `build_demo()` assembles the tabs, each a module of ddpm/app/ that holds
its layout, its wiring and its handlers; `main()` sets the process up and serves it.

Run `python app.py` and open http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT change it);
the same file runs as a Hugging Face Space. Models come from DDPM_APP_MODELS (default the bundled pretrained/);
DDPM_APP_JUDGE=0 switches the judge classifier off; DDPM_APP_TORCH_THREADS sets how many cores it uses;
DDPM_KEEP_FREED_MEMORY=0 lets freed memory go back to the system after each step (slower: ddpm/memory.py).
The settings are in docs/deploying.md.
"""
import gradio as gr
import torch

from ddpm import keep_freed_memory
from ddpm.app import check, cores, edit, explore, finetune, forward, grid, guard, paper, pickers, playground, reverse
from ddpm.app.inputs import LIMITS

TITLE = "DDPM, step by step"
CSS = """
.pixel img, .pixel canvas { image-rendering: pixelated; image-rendering: crisp-edges; }
.formula .katex-display .katex { font-size: 1.6em; }
"""


def build_demo():
    """The app's Blocks: the header, one tab per module, and the events that span tabs. It only builds: no threads,
    no server, no process settings (main() does those)."""
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown("# Denoising Diffusion Probabilistic Models, step by step")
        with gr.Tabs() as tabs:
            fwd = forward.build()
            rev = reverse.build()
            grd = grid.build()
            ft = finetune.build(rev.model, grd.model)
            ed = edit.build()
            playground.build()
            ex = explore.build()
            check.build()
            pp = paper.build()

        models = [rev.model, grd.model, ed.sd.model, ed.ip.model, ex.model, pp.model]      # pickers.app_init fills them in order
        demo.load(pickers.app_init, outputs=[fwd.dataset, *models], api_name=False).then(
            finetune.base_choices_update, outputs=[ft.base], api_name=False).then(**fwd.view, api_name=False).then(
            explore.scene_from_url, outputs=[tabs, ex.scene, *ex.view, ex.note], api_name=False).success(
            None, js=explore.RUN_IF_SCENE_JS)
        # a fine-tuned model joins every picker (the reverse and grid tabs pick it at once: finetune.build)
        trained = ft.trained
        for picker in (ed.sd.model, ed.ip.model, ex.model, pp.model):
            trained = trained.then(pickers.model_picker, outputs=[picker], api_name=False)
        demo.unload(pickers.end_session)
    return demo


def main():
    """Serve the app: torch's threads, memory kept for reuse, the queue and its guard, then launch."""
    # Sampling and fine-tuning share the cores among the jobs running at once (ddpm/app/cores.py); the
    # light handlers (forward process, pickers) run with the whole budget, as a lone job would.
    torch.set_num_threads(cores.CORES)
    keep_freed_memory()          # freed activations are reused, not page-faulted back each step (ddpm/memory.py)
    demo = build_demo()
    # the queue's own bound is for light calls too; heavy jobs have tighter bounds per session and in all (guard.py)
    demo.queue(default_concurrency_limit=2, max_size=256)
    guard.install(demo)
    demo.launch(css=CSS, max_file_size=f"{LIMITS['upload_mb'][1]}mb", show_error=True, app_kwargs=guard.app_kwargs())


if __name__ == "__main__":
    main()
