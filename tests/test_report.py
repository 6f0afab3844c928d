"""The report judges the paper's claims by intervals only, says when it cannot, keeps guarantees apart, names
its dataset, lists every deviation from the paper, and renders to a page a browser shows."""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import pytest

from intriguing import runner
from intriguing.paper import deviations
from intriguing.paper.verdicts import all_positive, at_least, average, gap, welch_gap
from intriguing.report import markdown, summary, to_html
from intriguing.runner.section import SANITY, Claim, judged
from intriguing.units import compare, equivalent

FASHION = "/usr/share/datasets/fashion-mnist"


def rate(value: float, low: float, high: float, n: int = 100) -> dict:
    return {"value": value, "low": low, "high": high, "n": n}


# --- verdicts from intervals -----------------------------------------------------------------------------


def test_a_gap_is_decided_only_when_its_interval_excludes_zero():
    separated = gap(rate(0.6, 0.5, 0.7), rate(0.2, 0.12, 0.3))
    assert separated.sign is True and separated.low > 0 and separated.needed_n() is None
    overlapping = gap(rate(0.35, 0.25, 0.45), rate(0.3, 0.2, 0.4))
    assert overlapping.sign is None
    assert overlapping.needed_n() > 100  # more examples than we have would decide it
    assert gap(rate(0.1, 0.05, 0.15), rate(0.5, 0.4, 0.6)).sign is False


def test_the_needed_sample_shrinks_the_interval_to_the_gap():
    g = gap(rate(0.35, 0.25, 0.45, n=400), rate(0.3, 0.2, 0.4, n=400))
    needed = g.needed_n()
    half = (g.high - g.low) / 2
    assert half * math.sqrt(400 / needed) == pytest.approx(abs(g.value), rel=0.01)


def test_every_comparison_must_go_one_way_and_one_against_decides_it():
    up, open_, down = (gap(rate(0.6, 0.5, 0.7), rate(0.2, 0.1, 0.3)), gap(rate(0.3, 0.2, 0.4), rate(0.3, 0.2, 0.4)),
                       gap(rate(0.1, 0.05, 0.15), rate(0.5, 0.4, 0.6)))
    assert all_positive({"a": up, "b": up}).holds is True
    assert all_positive({"a": up, "b": open_}).holds is None
    verdict = all_positive({"a": up, "b": open_, "c": down})
    assert verdict.holds is False and verdict.against == ("c",)
    assert at_least(rate(1.0, 0.9962, 1.0, n=1000), 0.99).sign is True
    assert at_least(rate(1.0, 0.839, 1.0, n=20), 0.99).sign is None  # 20/20 cannot show 99%


def test_averages_and_seed_differences_carry_intervals():
    mean = average([rate(0.2, 0.1, 0.3), rate(0.4, 0.3, 0.5)])
    assert mean["value"] == pytest.approx(0.3) and mean["low"] == pytest.approx(0.3 - math.sqrt(0.02) / 2)
    assert welch_gap([0.02, 0.021, 0.019], [0.012, 0.011, 0.013]).sign is True
    one_seed = welch_gap([0.02], [0.01])
    assert one_seed.sign is None and one_seed.needed_n() is None


# --- units: equivalence, not absence of evidence ---------------------------------------------------------


def test_tost_shows_equivalence_only_when_the_interval_fits_the_margin():
    rng = np.random.default_rng(0)
    same = [rng.random(2000)], [rng.random(2000)]
    shifted = [rng.random(2000) + 0.2], [rng.random(2000)]
    few = [rng.random(5)], [rng.random(5)]
    assert equivalent(compare(*same, resamples=500)[0], 0.05) is True
    assert equivalent(compare(*shifted, resamples=500)[0], 0.05) is False
    assert equivalent(compare(*few, resamples=500)[0], 0.05) is False  # not significant, yet not equivalent


# --- which claims a run may judge --------------------------------------------------------------------------


CLAIMS = [Claim("t", "a finding", True, "gap +3 pp (1 to 5)"),
          Claim("t", "a bound", True, "bound 2 >= 1", kind=SANITY),
          Claim("a", "below the paper's 1.2%", True, "1.1% (1.0-1.15)", paper_number=True)]


def test_the_smoke_preset_judges_no_finding_but_keeps_its_sanity_checks():
    found = judged(CLAIMS, "smoke")
    assert [c.holds for c in found] == [None, True, None]
    assert all(c.evidence.startswith("not judged (smoke preset)") for c in found if c.kind != SANITY)
    assert judged(CLAIMS, "default") == CLAIMS


def test_another_dataset_judges_its_own_numbers_but_not_the_papers_mnist_ones():
    found = judged(CLAIMS, "default", "Fashion-MNIST")
    assert [c.holds for c in found] == [True, True, None]
    assert "Fashion-MNIST" in found[2].evidence


def test_the_summary_counts_findings_and_lists_guarantees_apart():
    claims = [dict(c.__dict__) for c in judged(CLAIMS, "default")]
    text = summary.claims_summary(claims, {"t": "Table 5: bounds (Section 4.3)"})
    assert text.startswith("Of 2 findings: 2 hold, 0 do not hold, 0 undecided.")
    assert "a bound" not in text and "[Table 5](#t)" in text
    assert "| a bound |" in summary.sanity_summary(claims) and "| a finding |" not in summary.sanity_summary(claims)


# --- the page ----------------------------------------------------------------------------------------------


def made_up_section() -> runner.Section:
    return runner.Section(key="table9", title="Table 9: made up (Section 9)", run=lambda *a: {},
                          render=lambda result, ctx: markdown.table(["", markdown.header("train_error")],
                                                                    [["m", markdown.cell(0.01, rate(0.3, 0.2, 0.4),
                                                                                         mark=False)]]),
                          claims=lambda result: CLAIMS[:1])


def document(preset: str) -> dict:
    section = made_up_section()
    claims = [c.__dict__ for c in judged(section.claims({}), preset)]
    return {"preset": preset, "table9": {}, "claims": claims, "timings_seconds": {"table9": 1.0}, "environment": {}}


def test_a_smoke_report_opens_with_its_banner_and_a_table_of_contents(tmp_path):
    ctx = runner.Context(preset="smoke", out=tmp_path)
    text = markdown.markdown_document(document("smoke"), [made_up_section()], ctx)
    lines = text.splitlines()
    assert lines[0] == f"# {markdown.TITLE}"
    assert "no claim is judged" in lines[2] and "**undecided**" in text and "**holds**" not in text
    assert "- [Table 9: made up (Section 9)](#table9)" in text and '<a id="table9"></a>' in text
    assert "| training error |" in text and markdown.LARGE not in text
    assert "| Table 9 | 1.0 |" in text  # human section names, not keys


@pytest.mark.skipif(not shutil.os.path.isdir(FASHION), reason="Debian's dataset-fashion-mnist is not installed")
def test_another_dataset_is_named_in_the_title_and_the_papers_numbers_are_context(tmp_path):
    ctx = runner.Context(preset="default", out=tmp_path, data_dir=FASHION)
    text = markdown.markdown_document(document("default"), [made_up_section()], ctx)
    assert text.startswith(f"# {markdown.TITLE} on Fashion-MNIST")
    assert "**Dataset: Fashion-MNIST**" in text and "No cell is marked as differing" in text
    assert not markdown.marks_differences(ctx)


def test_the_deviations_table_covers_every_audited_departure():
    topics = {d.topic for d in deviations.DEVIATIONS}
    assert {"Reported distortion", "Objective", "Direction of the c search", "Attack targets", "Attacked examples",
            "Initial weights", "Gaussian-noise rows", "Fig. 7(c)", "Training recipe",
            "Fourier bound of a strided convolution", "Max pooling", "Local response normalisation",
            "Adversarial-training robustness"} <= topics
    table = deviations.markdown_table()
    assert len(table.splitlines()) == len(deviations.DEVIATIONS) + 2
    assert all(d.paper and d.ours and d.why for d in deviations.DEVIATIONS)


def test_a_browser_renders_the_page(tmp_path):
    """The HTML in headless Chromium: a screenshot of the page, not blank (skipped without Chromium)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    ctx = runner.Context(preset="smoke", out=tmp_path)
    page = tmp_path / "report.html"
    page.write_text(to_html(markdown.markdown_document(document("smoke"), [made_up_section()], ctx)))
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=800,600", page.as_uri()], capture_output=True, timeout=120, check=False)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (600, 800) and pixels.min() < 100 < pixels.max()  # dark text on a light page


def advtrain_result(errors: dict[tuple[str, ...], list[float]], train_examples: int = 60_000) -> dict:
    """A made-up adversarial-training study: per variant (its pool layers) one test error per seed."""
    def name(layers):
        return f"adversarial ({', '.join(layers)})" if layers else "weight decay"

    runs = [{"variant": name(layers), "seed": i, "test_error": e, "robustness": {"mean_distortion": 0.1}}
            for layers, found in errors.items() for i, e in enumerate(found)]
    summary = [{"variant": name(layers), "layers": list(layers), "dropout": 0.0, "seeds": len(found),
                "test_error_mean": sum(found) / len(found), "test_error_std": 0.001, "distortion_mean": 0.1,
                "distortion_std": None, "seconds_mean": 1.0} for layers, found in errors.items()]
    return {"runs": runs, "summary": summary, "train_examples": train_examples}


def test_adversarial_training_claims_read_intervals_over_seeds():
    from intriguing.paper.sections import adversarial_training as section

    result = advtrain_result({(): [0.016, 0.017, 0.015], ("input",): [0.015, 0.016, 0.0155],
                              ("h1",): [0.014, 0.0145, 0.0135], ("h2",): [0.0115, 0.012, 0.011],
                              ("input", "h1", "h2"): [0.0105, 0.011, 0.0108]})
    found = {c.statement.split(":")[0][:40]: c for c in section.claims(result)}
    assert [c.holds for c in found.values()] == [True, True, True]
    assert all("(" in c.evidence for c in found.values())  # each verdict quotes its interval
    one_seed = advtrain_result({(): [0.016], ("input",): [0.015], ("input", "h1", "h2"): [0.0105]}, 10_000)
    assert [c.holds for c in section.claims(one_seed)] == [None, None]  # reduced scale; one seed decides nothing


def test_matched_noise_has_the_stated_realised_rms_and_the_nominal_draw():
    """Tables 2 and 4's matched rows (issue 12): clipping shrinks nominal noise; the matched rows do not."""
    import torch

    from intriguing.attacks import gaussian_noise, rms_distortion
    from intriguing.attacks.controls import matched_gaussian_noise

    x = torch.rand(64, 1, 28, 28).round()  # saturated pixels, as MNIST's: clipping bites
    nominal, matched = gaussian_noise(x, 0.1, seed=3), matched_gaussian_noise(x, 0.1, seed=3)
    assert rms_distortion(x, nominal).max() < 0.09
    assert torch.allclose(rms_distortion(x, matched), torch.full((64,), 0.1), atol=1e-5)
    assert ((matched - x).sign() == (nominal - x).sign())[(nominal - x) != 0].all()  # the same draw, scaled
    assert matched.min() >= 0 and matched.max() <= 1


def test_the_readme_lists_every_deviation_from_the_paper():
    """The README's table is rendered from the same data as the report's, so the two never drift apart."""
    from pathlib import Path

    from intriguing.paper.deviations import markdown_table

    readme = Path(__file__).resolve().parents[1] / "README.md"
    assert markdown_table() in readme.read_text(encoding="utf-8")
