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
from ddpm.app import (check, cores, edit, explore, finetune, forward, grid, guard, lesson, openers, paper, pickers,
                      playground, reverse)
from ddpm.app.inputs import LIMITS
from ddpm.app.widgets import by_name, openers_job

TITLE = "DDPM, step by step"
CSS = """
.pixel img, .pixel canvas { image-rendering: pixelated; }
/* a main picture fills its frame, enlarged pixel by pixel: a 28 x 28 image reads from the back of a hall */
.main-picture img { width: 100%; height: 100%; object-fit: contain; }
.formula .katex-display .katex { font-size: 1.6em; }
/* a long equation scrolls inside its own box instead of being cut off (phones) */
.katex-display { overflow-x: auto; overflow-y: hidden; max-width: 100%; padding: 2px 0; }
#header { align-items: center; flex-wrap: nowrap; gap: 12px; }
#title h1 { font-size: 1.5em; margin: 0; }
#lecture { flex: 0 0 auto !important; width: auto !important; min-width: 0 !important; }
.lead p { margin: 0; }
/* lecture mode: text and the main pictures larger, for the back row */
html.lecture { --text-md: 20px; --text-sm: 18px; --text-lg: 24px; --text-xs: 16px; --text-xl: 30px; --text-xxl: 36px; }
html.lecture .prose { font-size: 20px; }
html.lecture .main-picture { height: 72vh !important; }
/* code shown in the page (the check tab's snippets): Prism's token colours darkened to WCAG AA on white and grey */
.prose .token.comment, .prose .token.prolog { color: #4b5563; }
.prose .token.string, .prose .token.char, .prose .token.attr-value, .prose .token.builtin { color: #166534; }
.prose .token.number, .prose .token.boolean, .prose .token.constant, .prose .token.property { color: #9f1239; }
.prose .token.keyword, .prose .token.function, .prose .token.class-name { color: #1e40af; }
.prose .token.operator, .prose .token.punctuation, .prose .token.entity { color: #374151; background: none; }
/* phones: one column, pictures at full width, the primary button kept in reach at the top */
@media (max-width: 640px) {
  #title h1 { font-size: 1.1em; }
  #lecture { display: none !important; }       /* a projector's switch: a phone has no back row */
  .row:not(.go-row):not(#header) { flex-direction: column !important; }
  .row:not(.go-row):not(#header) > * { width: 100% !important; min-width: 0 !important; flex: 1 1 auto !important; }
  .go-row { position: sticky; top: 0; z-index: 20; background: var(--background-fill-primary); padding: 4px 0; }
  .main-picture { height: auto !important; }        /* as tall as the picture at full width, no empty band */
  .main-picture .image-container, .main-picture button, .main-picture img { height: auto !important; }
}
"""
# Gradio's default theme with text and buttons dark enough to read (WCAG AA, 4.5:1 on white: axe-core checks it in
# tests/test_lecture.py): white on orange-700 and red-700, grey-600 for the quieter text.
THEME = gr.themes.Default().set(
    button_primary_background_fill="*primary_700", button_primary_background_fill_hover="*primary_800",
    button_cancel_background_fill="#b91c1c", button_cancel_background_fill_hover="#991b1b",
    body_text_color_subdued="*neutral_600", color_accent="*primary_700")
# lecture mode is a class on the page, set in the browser: nothing goes to the server
LECTURE_JS = "(on) => { document.documentElement.classList.toggle('lecture', on); }"
# A number typed outside its box's range is corrected in the box to the nearest allowed value, before the page uses it
# (the box's min and max are the component's bounds, ddpm/app/inputs.py LIMITS).
PAGE_JS = r"""() => {
  // above the top already while typing (no digit brings it back), so the page never sends it: corrected at once
  document.addEventListener('input', (event) => {
    const box = event.target;
    if (!(box instanceof HTMLInputElement) || box.type !== 'number') return;
    const value = parseFloat(box.value), high = parseFloat(box.max);
    if (!Number.isNaN(value) && !Number.isNaN(high) && value > high) box.value = high;
  }, true);
  document.addEventListener('change', (event) => {
    const box = event.target;
    if (!(box instanceof HTMLInputElement) || box.type !== 'number') return;
    const value = parseFloat(box.value), low = parseFloat(box.min), high = parseFloat(box.max);
    if (Number.isNaN(value)) return;
    const fixed = Math.min(Number.isNaN(high) ? value : high, Math.max(Number.isNaN(low) ? value : low, value));
    if (fixed === value) return;
    box.value = fixed;
    box.dispatchEvent(new Event('input', { bubbles: true }));
  }, true);
  // Gradio names some buttons other than the words they show, its empty placeholders carry a label without a role, and
  // its messages are buttons holding a button: a button's name becomes the words it shows, a placeholder an image
  // named "Empty value", a message's header plain text around its Close button
  const words = (node) => [...node.childNodes].map((child) => child.nodeType === Node.TEXT_NODE ? child.textContent
    : child.nodeType === Node.ELEMENT_NODE && child.getAttribute('aria-hidden') !== 'true' ? words(child) : '').join(' ');
  let pending = 0;
  const fix = () => {
    pending = 0;
    for (const empty of document.querySelectorAll('div.empty[aria-label]:not([role])')) empty.setAttribute('role', 'img');
    for (const button of document.querySelectorAll('button[aria-label]')) {
      const shown = words(button).replace(/\s+/g, ' ').trim().toLowerCase();
      if (/[\p{L}\p{N}]/u.test(shown) && !button.getAttribute('aria-label').toLowerCase().includes(shown))
        button.removeAttribute('aria-label');
    }
    for (const header of document.querySelectorAll('.toast-header[role=button]')) {
      header.removeAttribute('role');
      header.removeAttribute('tabindex');
    }
  };
  new MutationObserver(() => { pending = pending || setTimeout(fix, 200); })
    .observe(document.body, { childList: true, subtree: true });
}"""


def build_demo():
    """The app's Blocks: the header, one tab per module, and the events that span tabs. It only builds: no threads,
    no server, no process settings (main() does those)."""
    with gr.Blocks(title=TITLE) as demo:
        with gr.Row(elem_id="header"):
            gr.Markdown("# Denoising Diffusion Probabilistic Models, step by step", elem_id="title")
            lecture = gr.Checkbox(False, label="lecture mode: larger pictures and text", elem_id="lecture", scale=0,
                                  min_width=200, container=False)
        lecture.change(None, inputs=[lecture], js=LECTURE_JS)
        lsn = lesson.build()                  # the guided path through Sheet 3, above the tabs it opens
        with gr.Tabs() as tabs:
            fwd = forward.build()
            rev = reverse.build()
            grd = grid.build()
            ft = finetune.build(rev.model, grd.model)
            ed = edit.build()
            pg = playground.build()
            ex = explore.build()
            check.build()
            pp = paper.build()
        lesson.wire(lsn, tabs)

        models = [rev.model, grd.model, ed.sd.model, ed.ip.model, ex.model, pp.model, lsn.model]   # app_init fills them in order
        demo.load(pickers.app_init, outputs=[fwd.dataset, *models], api_name=False).then(
            finetune.base_choices_update, outputs=[ft.base], api_name=False).then(**fwd.view, api_name=False).then(
            explore.scene_from_url, outputs=[tabs, ex.scene, *ex.view, ex.note], api_name=False).success(
            None, js=explore.RUN_IF_SCENE_JS)
        # every tab opens on a picture: the model-picking tabs when their picker is filled (each build() wires it),
        # the playground and the fine-tune tab here
        demo.load(**pg.opening)
        ft.base.change(openers.finetune_opening, inputs_kwargs=by_name(openers.finetune_opening, ft.base),
                       outputs=[ft.before, ft.now, ft.status], api_name="finetune_opening", show_progress="hidden",
                       **openers_job())
        # a fine-tuned model joins every picker (the reverse and grid tabs pick it at once: finetune.build)
        trained = ft.trained
        for picker in (ed.sd.model, ed.ip.model, ex.model, pp.model, lsn.model):
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
    demo.launch(css=CSS, max_file_size=f"{LIMITS['upload_mb'][1]}mb", show_error=True, app_kwargs=guard.app_kwargs(),
                theme=THEME, js=PAGE_JS)


if __name__ == "__main__":
    main()
