"""Fréchet distance and conditional accuracy, and the evaluation table on a tiny model."""
import json
import math

import pytest
import torch

from ddpm.eval.evaluate import format_table, run, sample_balanced
from ddpm.eval.judge import Judge, train_judge
from ddpm.eval.metrics import conditional_accuracy, frechet_distance


def test_frechet_distance_of_a_set_with_itself_is_zero_and_grows_with_noise():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2000, 16, generator=g) @ torch.randn(16, 16, generator=g)
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-6)
    distances = [frechet_distance(feats, feats + s * torch.randn(feats.shape, generator=g)) for s in (0.1, 0.5, 1.0, 2.0)]
    assert distances == sorted(distances) and distances[0] > 0


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    """For N(mu_a, diag(va)) vs N(mu_b, diag(vb)): |mu_a - mu_b|^2 + sum (sqrt(va) - sqrt(vb))^2."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(200_000, 3, generator=g) * torch.tensor([1.0, 2.0, 0.5])
    b = torch.randn(200_000, 3, generator=g) * torch.tensor([3.0, 1.0, 0.5]) + torch.tensor([1.0, 0.0, -2.0])
    expected = (1 + 0 + 4) + (1 - 3) ** 2 + (2 - 1) ** 2 + 0
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.02)


def test_frechet_distance_rejects_mismatched_features():
    with pytest.raises(ValueError, match="D"):
        frechet_distance(torch.randn(10, 4), torch.randn(10, 5))


class _Oracle(Judge):
    """A judge that reads the class from the mean brightness (images made below encode it)."""
    def forward(self, x):
        level = ((x.mean(dim=(1, 2, 3)) + 1) / 2 * 9).round().long().clamp(0, 9)
        return torch.nn.functional.one_hot(level, 10).float()


def test_conditional_accuracy_per_class():
    labels = torch.arange(10).repeat(3)
    images = (labels.float() / 9 * 2 - 1)[:, None, None, None].expand(-1, 1, 28, 28).clone()
    images[0] = 1.0                                     # one class-0 image now reads as class 9
    overall, per_class = conditional_accuracy(_Oracle(), images, labels)
    assert overall == pytest.approx(29 / 30)
    assert per_class[0] == pytest.approx(2 / 3) and per_class[5] == 1.0


def test_judge_learns_a_separable_toy_problem():
    from ddpm.data import ImageDataset
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(2).repeat(64)
    images = torch.randn(128, 1, 28, 28, generator=g) * 0.3
    images[labels == 1, :, :14] += 1.0                  # class 1 is bright on top
    data = ImageDataset(images, labels, "toy", ["dark", "bright"])
    judge, accuracy = train_judge(data, data, epochs=3, width=4, batch_size=32, progress=False)
    assert accuracy > 0.9


def test_evaluation_rows_and_table(make_ddpm):
    from ddpm.data import ImageDataset
    model = make_ddpm(num_classes=10, T=20)
    judge = Judge(width=4).eval()
    real = ImageDataset(torch.rand(40, 1, 28, 28) * 2 - 1, torch.arange(10).repeat(4), "toy", [str(i) for i in range(10)])
    images, labels = sample_balanced(model, 20, sampler="ddim", steps=2, guidance=2.0, seed=0, chunk=7)
    assert images.shape == (20, 1, 28, 28) and labels.tolist() == sorted(labels.tolist())
    rows = run(model, judge, real, real, [("ddim", 2, 1.0, 20), ("ddim", 4, 2.0, 20)], n_bar=10, progress=False)
    # n_bar rows are added only after a DDIM-50 sweep, and this plan has none
    assert [(r["steps"], r["guidance"]) for r in rows] == [(2, 1.0), (4, 2.0)]
    assert all(0 <= r["accuracy"] <= 1 and math.isfinite(r["fd"]) and r["n"] == 20 for r in rows)
    table = format_table(rows)
    assert table.count("\n") == 3 and "| DDIM | 4 | 2 | 20 |" in table


def _row(sampler, steps, guidance, fd, n=1000, seed=0):
    return dict(sampler=sampler, steps=steps, guidance=guidance, n=n, seed=seed, fd=fd, fd_floor=1.0, accuracy=0.9,
                worst_class=0, worst_accuracy=0.8, seconds=1.0)


def test_choose_default_takes_the_fewest_steps_within_five_percent_of_ddim50():
    from ddpm.eval.evaluate import choose_default
    rows = [_row("ddim", 50, 1.0, 10.0), _row("ddim", 20, 1.0, 10.4), _row("ddim", 10, 1.0, 12.0),
            _row("dpmpp_2m", 10, 1.0, 10.5), _row("dpmpp_2m", 6, 1.0, 10.51), _row("ddpm", 1000, 1.0, 8.0),
            _row("ddim", 50, 2.0, 20.0), _row("dpmpp_2m", 6, 2.0, 30.0), _row("ddim", 10, 2.0, 20.9),
            _row("dpmpp_2m", 10, 2.0, 20.5)]
    assert choose_default(rows, 1.0) == ("dpmpp_2m", 10)           # 10.51 > 10.5: six steps miss the bar
    assert choose_default(rows, 2.0) == ("dpmpp_2m", 10)           # same steps as DDIM-10, lower FD
    assert choose_default(rows, 2.0, tolerance=0.0) == ("ddim", 50)
    assert choose_default(rows, 3.0) is None                       # no DDIM-50 at this guidance


def test_cost_plan_rows_resume_and_plot(make_ddpm, tmp_path):
    from ddpm.data import ImageDataset
    from ddpm.eval.evaluate import calls_per_image, cost_plan, load_rows, plot_cost, save_rows
    plan = cost_plan(1000)
    assert {(c[0], c[1]) for c in plan} == {("ddpm", 1000), ("ddim", 50), ("ddim", 20), ("ddim", 10),
                                            ("dpmpp_2m", 25), ("dpmpp_2m", 20), ("dpmpp_2m", 10), ("dpmpp_2m", 6)}
    assert {c[2] for c in plan} == {1.0, 2.0} and {c[3] for c in plan} == {1000} and plan[-1][0] == "ddpm"
    assert calls_per_image(_row("ddim", 10, 1.0, 0)) == 10 and calls_per_image(_row("ddim", 10, 2.0, 0)) == 20
    model = make_ddpm(num_classes=10, T=20)
    judge = Judge(width=4).eval()
    real = ImageDataset(torch.rand(40, 1, 28, 28) * 2 - 1, torch.arange(10).repeat(4), "toy", [str(i) for i in range(10)])
    cells = [("ddim", 2, 1.0, 15), ("dpmpp_2m", 2, 2.0, 15)]          # 15 asked: 10 drawn, one per class
    first = run(model, judge, real, real, cells[:1], n_bar=0, progress=False)
    path = str(tmp_path / "rows.json")
    save_rows(path, first)
    sampled = []
    rows = run(model, judge, real, real, cells, n_bar=0, progress=False, done=load_rows(path), on_row=sampled.append)
    assert [r["sampler"] for r in sampled] == ["dpmpp_2m"]          # the earlier cell is not sampled again
    assert rows[0] == first[0] and rows[1]["sampler"] == "dpmpp_2m"
    png = plot_cost(rows, str(tmp_path / "cost.png"))
    from PIL import Image
    assert Image.open(png).size[0] > 800                            # two panels, one per guidance


def test_evaluate_cost_plan_from_the_command_line(make_ddpm, fake_data, tmp_path):
    """`evaluate --plan cost --quick` on a tiny model: table with network calls, JSON, plot, defaults line; then
    --resume measures nothing again."""
    from ddpm.tools.cli import main
    root, _ = fake_data
    folder = tmp_path / "model"
    make_ddpm(num_classes=10, T=60, dataset="mnist").save_pretrained(folder)
    Judge(width=4).save(folder)
    quick = ["evaluate", "--model", str(folder), "--data", str(root), "--plan", "cost", "--quick"]
    main(quick)
    assert not (folder / "quality_cost.md").exists()                # a --quick try writes no table of the model
    main(quick + ["--out", str(folder / "quality_cost.md")])
    table = open(folder / "quality_cost.md").read()
    assert "network calls / image" in table and "| DPM-Solver++ | 6 | 2 |" in table and "within 5% of DDIM-50" in table
    assert (folder / "quality_cost.png").stat().st_size > 0
    rows = json.load(open(folder / "quality_cost.json"))
    assert len(rows) == 14 and {r["sampler"] for r in rows} == {"ddim", "dpmpp_2m"}       # 7 settings x 2 guidance, no DDPM
    assert "## Quality per cost" in open(folder / "README.md").read()
    resume = quick + ["--out", str(folder / "quality_cost.md"), "--resume"]
    main(resume)
    assert json.load(open(folder / "quality_cost.json")) == rows                # nothing measured again
    main(resume + ["--max-steps", "6"])                                         # a smaller plan keeps the rest
    assert json.load(open(folder / "quality_cost.json")) == rows
    make_ddpm(num_classes=10, T=60, dataset="mnist").save_pretrained(folder)   # the card is rebuilt at a save
    main(resume)
    assert open(folder / "README.md").read().count("## Quality per cost") == 1


def test_evaluate_bars_plan_measures_only_ddim50_and_keeps_the_card(make_ddpm, fake_data, tmp_path):
    """`evaluate --plan bars`: DDIM-50 at guidance 1 and 2 with --n images each, judged by another folder's
    judge (how a checkpoint is checked against a bundled model's bars); the model's card is left as it was."""
    from ddpm.tools.cli import main
    root, _ = fake_data
    folder, judge_folder = tmp_path / "model", tmp_path / "judge"
    make_ddpm(num_classes=10, T=60, dataset="mnist").save_pretrained(folder)
    Judge(width=4).save(judge_folder)
    card = (folder / "README.md").read_text()                       # the card save_pretrained wrote
    main(["evaluate", "--model", str(folder), "--judge", str(judge_folder), "--data", str(root), "--plan", "bars",
          "--n", "10", "--out", str(tmp_path / "bars.md")])
    rows = json.load(open(tmp_path / "bars.json"))
    assert [(r["sampler"], r["steps"], r["guidance"], r["n"]) for r in rows] == [("ddim", 50, 1.0, 10),
                                                                                ("ddim", 50, 2.0, 10)]
    assert "--plan bars" in open(tmp_path / "bars.md").read()
    assert (folder / "README.md").read_text() == card
    assert not (folder / "evaluation.md").exists()


def test_each_bundled_model_gets_the_default_of_its_own_table(tmp_path, monkeypatch):
    from ddpm.app.registry import Registry
    from ddpm.eval.evaluate import save_rows
    from app_fixtures import make_models_dir
    models = make_models_dir(tmp_path / "models", per_class=1)
    save_rows(str(tmp_path / "models" / "mnist" / "quality_cost.json"),
              [_row("ddim", 50, 2.0, 10.0), _row("dpmpp_2m", 6, 2.0, 10.2), _row("dpmpp_2m", 10, 2.0, 10.1)])
    save_rows(str(tmp_path / "models" / "fashion_mnist" / "quality_cost.json"),
              [_row("ddim", 50, 2.0, 20.0), _row("dpmpp_2m", 6, 2.0, 25.0), _row("dpmpp_2m", 20, 2.0, 20.5)])
    reg = Registry(models, use_judges=False)
    assert reg.sampler_default("mnist", 2.0) == ("dpmpp_2m", 6)
    assert reg.sampler_default("fashion_mnist", 2.0) == ("dpmpp_2m", 20)     # six steps are not good enough here
    assert reg.sampler_default("fashion_mnist", 1.0) is None                 # no DDIM-50 row at guidance 1
    assert reg.sampler_default("../mnist", 2.0) is None and reg.sampler_default("hub/model", 2.0) is None
    import ddpm.app.registry as registry_module
    from ddpm.app.pickers import sampler_for
    monkeypatch.setattr(registry_module, "_REGISTRY", reg)
    pick = sampler_for(("ddim", 25))                                       # the grid tab's handler
    values = lambda updates: tuple(u["value"] for u in updates)
    assert values(pick("fashion_mnist", 3.0)) == ("dpmpp_2m", 20)         # s = 3: the table's s = 2 pick
    assert values(pick("fashion_mnist", 1.0)) == ("ddim", 25)             # no s = 1 rows: the tab's own
    assert values(pick("mnist-finetuned-1", 2.0)) == ("ddim", 25)         # a visitor's model has no table
