"""Tab 7, Explore: each ablation switch changes exactly what it says, columns share x_T and z, scenes round-trip."""
import urllib.parse
from dataclasses import replace
from types import SimpleNamespace

import gradio as gr
import pytest
import torch
from PIL import Image

from app_fixtures import make_models_dir
from ddpm.app import explore, registry
from ddpm.diffusion import q_posterior
from ddpm.eval.judge import Judge
from ddpm.pretrained import BUNDLED_DIR
from ddpm.sampling import sample_steps

V = SimpleNamespace(session_hash="explorer")


@pytest.fixture(scope="module", autouse=True)
def models(tmp_path_factory):
    root = make_models_dir(tmp_path_factory.mktemp("models"))
    torch.manual_seed(0)
    Judge(dataset="mnist").eval().save(f"{root}/mnist")              # a random judge: verdicts exist, not good ones
    registry.set_registry(root, use_judges=True)
    yield root
    registry.set_registry(BUNDLED_DIR)


def values(*cols):
    """The settings by name of these columns, the missing ones switched off."""
    return explore.settings_of(list(cols) + [explore.Column(on=False)] * (3 - len(cols)))


def drain(gen):
    outs = list(gen)
    return outs, outs[-1]


def final_x(ddpm, x_T, y, col, seed=0):
    *_, last = explore.column_run(ddpm, x_T, y, col, seed)
    return last.x_prev


def test_no_z_equals_algorithm_2_with_sigma_zero(make_ddpm):
    """With "no noise z" every DDPM step lands on the posterior mean tilde(mu)_t(x0_hat, x_t) (Eq. 7): a loop
    written here from q_posterior, sigma_t = 0, gives the same images."""
    ddpm = make_ddpm(T=20)
    x_T, y = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2])
    ablated = final_x(ddpm, x_T, y, explore.Column(sampler="ddpm", guidance=1.0, no_z=True))
    x = x_T.clone()
    with torch.no_grad():
        for t in range(ddpm.T - 1, -1, -1):
            tt = torch.full((3,), t)
            ab = ddpm.schedule.alpha_bar[t]
            x0_hat = ((x - (1 - ab).sqrt() * ddpm.eps(x, tt, y)) / ab.sqrt()).clamp(-1, 1)
            x, _ = q_posterior(x0_hat, x, tt, ddpm.schedule)                      # sigma_t z = 0
    torch.testing.assert_close(ablated, x.float(), rtol=1e-4, atol=1e-5)
    with_z = final_x(ddpm, x_T, y, explore.Column(sampler="ddpm", guidance=1.0))
    assert (with_z - ablated).abs().max() > 1e-2                                   # the switch does something


def test_clipping_off_lets_x0_hat_leave_the_image_range(make_ddpm):
    ddpm = make_ddpm(T=50)
    x_T, y = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 1, 2, 3])
    for sampler in ("ddpm", "ddim", "dpmpp_2m"):
        col = explore.Column(sampler=sampler, steps=5, guidance=1.0)
        first_on = next(explore.column_run(ddpm, x_T, y, col, 0))
        first_off = next(explore.column_run(ddpm, x_T, y, replace(col, clip=False), 0))
        assert first_on.x0_hat.abs().max() <= 1.0
        assert first_off.x0_hat.abs().max() > 1.5                       # large t: 1 / sqrt(alpha_bar) blows it up
        torch.testing.assert_close(first_off.x0_hat.clamp(-1, 1), first_on.x0_hat)   # the only difference


def test_wrong_t_tells_the_network_t_half_and_nothing_else(make_ddpm):
    ddpm = make_ddpm(T=40)
    seen = []
    hook = ddpm.net.register_forward_hook(lambda m, args, out: seen.append(args[1].unique().tolist()))
    x_T, y = torch.randn(2, 1, 28, 28), torch.tensor([3, 4])
    col = explore.Column(sampler="ddim", steps=4, guidance=1.0)
    right = final_x(ddpm, x_T, y, col)
    told, seen[:] = seen[:], []
    wrong = final_x(ddpm, x_T, y, replace(col, wrong_t=True))
    hook.remove()
    assert told == [[39], [29], [19], [9]] and seen == [[20]] * 4
    assert (right - wrong).abs().max() > 1e-2
    assert ddpm.eps.__func__ is type(ddpm).eps                         # the model itself is untouched


def test_columns_share_x_T_and_the_step_noises(make_ddpm):
    ddpm = make_ddpm(T=30)
    x_T, y = torch.randn(2, 1, 28, 28), torch.tensor([0, 1])
    col = explore.Column(sampler="ddpm", guidance=1.0)
    torch.testing.assert_close(final_x(ddpm, x_T, y, col), final_x(ddpm, x_T, y, col))
    # beta vs beta_tilde: the same z, scaled differently, so the first step's difference is (sigma - sigma~) z
    a = next(explore.column_run(ddpm, x_T, y, col, 0))
    b = next(explore.column_run(ddpm, x_T, y, replace(col, variance="beta_tilde"), 0))
    z = torch.randn(x_T.shape, generator=torch.Generator().manual_seed(1))        # the stream every column draws
    torch.testing.assert_close(a.x_prev - b.x_prev, (a.coefs["sigma_t"] - b.coefs["sigma_t"]) * z, rtol=1e-4, atol=1e-5)


def test_sample_steps_takes_the_noise_from_randn(make_ddpm):
    ddpm = make_ddpm(T=10)
    x = torch.randn(2, 1, 28, 28)
    calls = []

    def randn(shape, generator=None, device=None):
        calls.append(tuple(shape))
        return torch.zeros(shape)
    list(sample_steps(ddpm, x, sampler="ddpm", generator=torch.Generator(), randn=randn))
    assert calls == [(2, 1, 28, 28)] * 9                                # every t > 0, none at t = 0


def test_compare_streams_all_columns_in_step_and_judges_the_result():
    cols = [explore.Column(sampler="ddim", steps=4, guidance=1.0), explore.Column(sampler="ddim", steps=8, guidance=2.0),
            explore.Column(sampler="dpmpp_2m", steps=2, guidance=1.0)]
    outs, last = drain(explore.compare_run("mnist", 4, 0, request=V, **values(*cols)))
    assert len(last) == 8 and all(isinstance(last[2 * k]["value"], Image.Image) for k in range(3))
    assert "under each the class the judge reads" in last[0]["alt_text"]
    first = outs[0]
    assert "step 1 / 4" in first[1] and "step 1 / 8" in first[3] and "step 1 / 2" in first[5]
    assert "16 network calls per image" in last[3] and "4 network calls per image" in last[1]
    assert "judge:" in last[1] and "/ 4 show the asked class" in last[1]
    assert last[-2]["maximum"] == 7 and "Done" in last[-1]              # 8 ticks recorded (K = 8)
    images = explore.compare_scrub(3, request=V)
    assert len(images) == 4 and "tick 4 / 8" in images[-1] and images[0] is not None


def test_a_column_switched_off_does_not_run():
    outs, last = drain(explore.compare_run("mnist", 2, 0, request=V, **values(explore.Column(sampler="ddim", steps=3),
                                                                     explore.Column(on=False, steps=3))))
    assert last[2] is None and last[3] == "*column off*" and last[4] is None


def test_stop_keeps_what_was_made():
    gen = explore.compare_run("mnist", 2, 0, request=V, **values(explore.Column(sampler="ddpm", guidance=1.0)))
    next(gen)
    explore.compare_stop(request=V)
    _, last = drain(gen)
    assert "Stopped" in last[-1] and "stopped at step" in last[1]


def test_bad_settings_are_named():
    with pytest.raises(gr.Error, match=r"column B: steps = 0 is outside the allowed range \[1, 1000\]"):
        next(explore.compare_run("mnist", 2, 0, request=V, **values(explore.Column(), explore.Column(steps=0))))
    with pytest.raises(gr.Error, match=r"column C: steps = 500 is outside the allowed range \[1, 100\]"):
        next(explore.compare_run("mnist", 2, 0, request=V,
                                 **values(explore.Column(), explore.Column(), explore.Column(steps=500))))
    with pytest.raises(gr.Error, match=r"column A: sampler 'euler' is unknown"):
        next(explore.compare_run("mnist", 2, 0, request=V, **values(explore.Column(sampler="euler"))))
    with pytest.raises(gr.Error, match=r"images per column = 17 .*\[1, 16\]"):
        next(explore.compare_run("mnist", 17, 0, request=V, **values(explore.Column())))
    with pytest.raises(gr.Error, match="nothing recorded yet"):
        explore.compare_scrub(0, request=SimpleNamespace(session_hash="nobody"))


def test_a_scene_link_restores_every_setting():
    cols = [explore.Column(sampler="ddpm", variance="beta_tilde", no_z=True),
            explore.Column(sampler="ddim", steps=37, eta=0.25, clip=False), explore.Column(on=False, wrong_t=True)]
    query = explore.scene_query("fashion_mnist", 5, 123, **values(*cols))
    assert query.startswith("?tab=explore&model=fashion_mnist&n=5&seed=123")
    model, n, seed, back = explore.parse_scene("http://host:7860/" + query)
    assert (model, n, seed, back) == ("fashion_mnist", 5, 123, cols)
    restored = explore.scene_values(query, request=V)
    assert restored[:3] == ("fashion_mnist", 5, 123) and list(restored[3:]) == list(values(*cols).values())


def test_bad_scene_links_are_refused_by_name():
    with pytest.raises(gr.Error, match=r"the link's b_steps = 'ten' is not a valid value \(expected int\)"):
        explore.parse_scene("?tab=explore&b_steps=ten")
    with pytest.raises(gr.Error, match=r"unknown settings \['d_steps'\]"):
        explore.parse_scene("?d_steps=3")
    with pytest.raises(gr.Error, match=r"the link's model '\.\./etc' is not available here"):
        explore.scene_values("?model=../etc", request=V)
    with pytest.raises(gr.Error, match=r"a_guidance = 'nan'"):
        explore.parse_scene("?a_guidance=nan")


def test_every_preset_is_a_valid_scene_with_a_sentence():
    ddpm = registry.registry().model("mnist")
    for name, (sentence, query) in explore.SCENES.items():
        model, n, seed, cols = explore.parse_scene(query)
        assert model is None and len(sentence) > 40
        assert all(explore.check_column(ddpm, k, c) == c for k, c in zip("ABC", cols, strict=True))
        *settings, note = explore.scene_preset(name, request=V)
        assert note == f"*{sentence}*" and len(settings) == 3 + 3 * len(explore.FIELDS)


def test_opening_the_page_with_a_scene_selects_the_tab():
    request = SimpleNamespace(session_hash="x", query_params={"tab": "explore", "b_sampler": "ddpm", "seed": "9"})
    tabs, picker, model, n, seed, *settings, note = explore.scene_from_url(request)
    assert tabs["selected"] == "explore" and seed == 9 and settings[len(explore.FIELDS) + 1] == "ddpm"
    assert picker == gr.update(value=None) and "Opened from a link" in note     # settings of no preset
    plain = explore.scene_from_url(SimpleNamespace(session_hash="x", query_params={}))
    assert all(u == gr.update() for u in plain)


def test_a_link_to_a_presets_settings_names_the_preset_and_its_sentence():
    """A link made from a preset (its settings, by name or written out, for any model) shows the preset in the
    picker and the sentence of what to look for."""
    name, (sentence, query) = list(explore.SCENES.items())[2]
    for params in ({"scene": name}, {**dict(urllib.parse.parse_qsl(query.lstrip("?"))), "model": "mnist"}):
        request = SimpleNamespace(session_hash="x", query_params={"tab": "explore", **params})
        tabs, picker, *_, note = explore.scene_from_url(request)
        assert picker["value"] == name and note == f"*{sentence}*"
    assert explore.preset_of(query.replace("seed=0", "seed=1")) is None


def test_a_run_stopped_before_its_first_recorded_tick_can_still_be_scrubbed():
    """T = 100 DDPM: 100 ticks, every 2nd recorded; Stop after the first tick still records where it stopped."""
    gen = explore.compare_run("mnist", 1, 0, request=V, **values(explore.Column(sampler="ddpm", guidance=1.0)))
    next(gen)
    explore.compare_stop(request=V)
    _, last = drain(gen)
    assert last[-2]["maximum"] >= 0 and last[-2]["value"] == last[-2]["maximum"]
    assert explore.compare_scrub(last[-2]["maximum"], request=V)[0] is not None


def test_scene_links_ignore_the_hosts_own_parameters_and_refuse_mixed_ones():
    model, n, seed, cols = explore.parse_scene("?__theme=dark&tab=explore&seed=4")
    assert seed == 4 and cols == explore.default_columns()
    with pytest.raises(gr.Error, match=r"names scene .* and also \['seed'\]"):
        explore.parse_scene(f"?scene={list(explore.SCENES)[1]}&seed=3")
    # a preset may name the model it runs on
    model, *settings = explore.parse_scene(f"?scene={list(explore.SCENES)[1]}&model=fashion_mnist")
    assert model == "fashion_mnist" and settings == list(explore.parse_scene(list(explore.SCENES.values())[1][1])[1:])


def test_an_unconditional_model_and_a_new_class_are_judged_honestly(make_ddpm, monkeypatch):
    """No classes: the judge still says what it sees (grey, nothing asked); a fine-tuned 11th class, which the judge
    never saw, is not counted as a miss."""
    reg = registry.registry()
    reg.add_session_model("explorer", "uncond", make_ddpm(T=20, num_classes=None), "mnist")
    _, last = drain(explore.compare_run("uncond", 2, 0, request=V, **values(explore.Column(sampler="ddim", steps=2))))
    assert "no classes, so no guidance" in last[1] and "nothing was asked" in last[1] and "— 2 network calls per image" in last[1]
    eleven = make_ddpm(T=20, num_classes=11)
    reg.add_session_model("explorer", "eleven", eleven, "mnist")
    _, last = drain(explore.compare_run("eleven", 11, 0, request=V, **values(explore.Column(sampler="ddim", steps=2))))
    assert "/ 10 show the asked class" in last[1] and "1 of a class the judge never saw, not judged" in last[1]


def test_the_tab_opens_on_the_default_scene_made_once():
    """Issue 34, item 1: the default scene, run to the end and judged, kept for the next visitor; the scrubber stays
    off (it scrubs a visitor's own runs)."""
    first = explore.explore_opening("mnist", request=V)
    assert len(first) == 8 and first[0]["value"] is not None and "Done" in first[-1] and "opens on" in first[-1]
    assert first[-2]["interactive"] is False and "network calls per image" in first[1]
    again = explore.explore_opening("mnist", request=SimpleNamespace(session_hash="another"))
    assert again[0]["value"] is first[0]["value"] and again[0] is not first[0]      # kept; a fresh update each time
