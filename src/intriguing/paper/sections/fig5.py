"""Report section ``fig5``: the paper's ImageNet adversarial examples (Section 4.1, Fig. 5) on a pretrained network.

Szegedy et al. make AlexNet classify correctly predicted ImageNet images as "ostrich" with
imperceptible changes (mean RMS distortion 0.0065 over 64 images). With the ``imagenet`` extra we
do the same to an ImageNet-pretrained EfficientNet-Lite0 on scikit-image's bundled photos
(:mod:`intriguing.imagenet`) and show the distortions beside the paper's. Without the extra the
section is skipped, and says in one line how to get it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from intriguing import efficientnet, imagenet
from intriguing.attacks import LBFGSConfig
from intriguing.paper.verdicts import all_positive, at_least, listed, undecided_note
from intriguing.records import to_jsonable
from intriguing.report import table
from intriguing.report.figures.fig5 import save_fig5
from intriguing.runner import Claim, Context, Section, Units, preset_settings, work
from intriguing.stats import mean_interval, wilson_interval

KEY = "fig5"
FIGURE = "fig5.png"
PAPER_MEAN_DISTORTION = 0.0065  # AlexNet, Section 4.1
PAPER_IMAGES = 64


@dataclass(frozen=True)
class Fig5Settings:
    """One preset's configuration (hashed: a change recomputes the section).

    ``photos``: scikit-image photos (:data:`intriguing.imagenet.PHOTOS`); ``size``: the side of the
    centre crop, also the resolution the network runs at (224 is EfficientNet-Lite0's); ``target``:
    the class to reach, the paper's "ostrich"; ``attack``: the L-BFGS attack's hyper-parameters.
    """

    photos: tuple[str, ...] = imagenet.PHOTOS
    size: int = imagenet.INPUT_SHAPE[-1]
    target: str = "ostrich"
    attack: LBFGSConfig = field(default_factory=LBFGSConfig.refined)


QUICK = LBFGSConfig.refined(max_solves=8, max_iter=20, c_rtol=0.5)
SETTINGS = preset_settings(
    # Smoke: two photos at 32x32 and a short c search (~10 s): the network still runs (its pooling is
    # global), but its classes are no longer ImageNet-quality, nor the distortions comparable with the paper's.
    smoke=Fig5Settings(photos=("chelsea", "motorcycle"), size=32, attack=QUICK),
    default=Fig5Settings(),
    full=Fig5Settings(),
)


def units(ctx: Context, s: Fig5Settings) -> Units:
    """One unit of work per photo: they need no trained model, so the runner runs them ahead (the
    section's ``ahead``), unless the pretrained network is not installed."""
    if not imagenet.available():
        return Units(work.fig5_photo, ())
    return Units(work.fig5_photo, tuple(work.Fig5Photo(photo, s.size, s.target, s.attack, ctx.device)
                                        for photo in s.photos))


def run(ctx: Context, s: Fig5Settings, _: dict) -> dict[str, Any]:
    """Attack every photo towards ``s.target``, record the distortions and draw Fig. 5."""
    if not imagenet.available():
        return {"skipped": f"needs the pretrained network and photos: {efficientnet.EXTRA}"}
    parts = ctx.map_units(units(ctx, s), f"photos attacked towards {s.target!r}")
    examples, model = imagenet.joined([found for found, _ in parts]), parts[0][1]
    record = examples.record()
    save_fig5(ctx.figures / FIGURE, examples.original, examples.adversarial, record["original_name"],
              record["adversarial_name"], distortions=examples.distortion,
              title=f"EfficientNet-Lite0, target {examples.target_name!r}")
    return to_jsonable({**record, "model": model, "size": s.size, "figure": f"figures/{FIGURE}",
                        "success": wilson_interval(sum(examples.success), len(examples.success)),
                        "success_per_photo": examples.success,
                        "mean_distortion": mean_interval(examples.distortion),
                        "paper": {"mean_distortion": PAPER_MEAN_DISTORTION, "images": PAPER_IMAGES}})


def render(result: dict[str, Any], ctx: Context) -> str:
    if "skipped" in result:
        return f"Skipped: {result['skipped']}."
    summary, mean = result["summary"], result["mean_distortion"]
    spread = f" ({_number(mean['low'])}–{_number(mean['high'])})" if mean["n"] > 1 else ""
    interval = _number(mean["value"]) + spread
    comparison = table(["", "paper: AlexNet", "ours: EfficientNet-Lite0"], [
        ["images", f"{PAPER_IMAGES} (ImageNet)", f"{summary['n']} photos, {result['size']}×{result['size']}"],
        ["mean RMS distortion (95% CI)", f"{PAPER_MEAN_DISTORTION}", interval],
        ["median RMS distortion", "—", _number(summary["median_distortion"])],
        ["reached the target", "all shown", f"{sum(result['success_per_photo'])} of {summary['n']}"],
        ["evaluations / seconds per image", "—", f"{summary['mean_evaluations']:.0f} / "
                                                 f"{summary['seconds_per_image']:.1f}"],
    ], numbers=False)
    photos = table(["photo", "model's class", "adversarial class", "RMS distortion", "evaluations"], [
        [name, before, after, _number(d), str(e)] for name, before, after, d, e in
        zip(result["names"], result["original_name"], result["adversarial_name"], result["distortion"],
            result["evaluations"])], numbers=False)
    return "\n\n".join([
        f"Each photo is centre-cropped and attacked with L-BFGS (Section 4.1) towards **{result['target_name']}** "
        f"(class {result['target']}), as in the paper's Fig. 5; distortion is RMS over pixels in [0, 1]. "
        f"Model: {result['model']}.", comparison, photos,
        f"![Original, adversarial, difference magnified 10x (cf. the paper's Fig. 5)]({result['figure']})"])


def _number(value: float | None) -> str:
    """A distortion to 4 decimals; "—" where there is none (a failed attack is NaN, stored as null)."""
    return "—" if value is None or value != value else f"{value:.4f}"


SUCCESS = 0.9  # "adversarial examples exist for every image": the attack reaches the target this often


def claims(result: dict[str, Any]) -> list[Claim]:
    """Every photo can be made "ostrich" (Fig. 5), decided by the success rate's 95% Wilson interval."""
    if "skipped" in result:
        return []
    gaps = {"success": at_least(result["success"], SUCCESS)}
    found = all_positive(gaps)
    return [Claim(KEY, f"A pretrained ImageNet network can be made to say {result['target_name']!r} for any photo "
                  f"(Sec. 4.1, Fig. 5): the targeted attack succeeds on at least {SUCCESS:.0%} of the photos",
                  found.holds, f"{listed(gaps.items())}" + undecided_note(found, "photos"), needed_n=found.needed_n)]


# Seconds on an idle core: ~0.15 s per evaluation of one 224x224 image, a few hundred evaluations each.
SECTION = Section(key=KEY, title="Fig. 5: ImageNet adversarial examples on a pretrained network", run=run,
                  render=render, settings=SETTINGS, estimate_seconds={"smoke": 12, "default": 70, "full": 90},
                  claims=claims, ahead=lambda ctx, s: [units(ctx, s)])
