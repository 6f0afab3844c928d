"""Benchmark: the paper's attack on a pretrained ImageNet network (Section 4.1, Fig. 5) against foolbox DDN.

EfficientNet-Lite0 (ImageNet-pretrained, ``intriguing.imagenet``) on scikit-image's bundled photos at
224x224, every photo targeted to "ostrich" (class 9) as in the paper's Fig. 5. On the same images:

* ours: ``intriguing.attacks.LBFGS`` with its defaults (``LBFGSConfig.refined()``);
* foolbox 3.3.4's DDN (Rony et al. 2019) with 100 and 1000 steps (one gradient per step).

Printed per attack: verified success (the model's class of the returned image is the target, inside
[0, 1]), evaluations (forward + gradient) per image, median RMS distortion and seconds per image.
Ours also spends a few forward passes without a gradient (shrinking along the ray,
``LBFGSConfig.shrink_steps``); each is counted as a full evaluation.
Goal (issue 13): 100% success, <= 200 mean evaluations per image, median distortion <= DDN-1000's.

Usage: ``python benchmarks/imagenet_attack.py [--photos chelsea coffee ...] [--ddn1000-photos K]``
(needs ``pip install 'intriguing[imagenet]' foolbox==3.3.4``). ``--ddn1000-photos`` limits the
slowest attack to the first K photos; ours is then also compared on those K alone.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from intriguing import imagenet
from intriguing.attacks import LBFGS, rms_distortion


def verified(model, x: torch.Tensor, adversarial: torch.Tensor, target: int) -> torch.Tensor:
    """Success per image, checked here for every attack alike: the target class, inside the box."""
    inside = (adversarial >= 0).flatten(1).all(1) & (adversarial <= 1).flatten(1).all(1)
    with torch.no_grad():
        return inside & (model(adversarial).argmax(1) == target)


def ours(model, x: torch.Tensor, target: int) -> tuple[torch.Tensor, float]:
    result = LBFGS()(model, x, target=torch.full((len(x),), target))
    return result.adversarial, float(result.evaluations.double().mean())


def ddn(steps: int):
    def attack(model, x: torch.Tensor, target: int) -> tuple[torch.Tensor, float]:
        import foolbox

        criterion = foolbox.criteria.TargetedMisclassification(torch.full((len(x),), target))
        _, adversarial, _ = foolbox.attacks.DDNAttack(steps=steps)(
            foolbox.PyTorchModel(model, bounds=(0, 1)), x, criterion, epsilons=None)
        return adversarial, float(steps)
    return attack


def row(label: str, model, x: torch.Tensor, target: int, attack) -> dict:
    start = time.perf_counter()
    adversarial, evaluations = attack(model, x, target)
    seconds = time.perf_counter() - start
    success = verified(model, x, adversarial, target)
    distortion = torch.where(success, rms_distortion(x, adversarial), torch.tensor(math.nan))
    record = {"label": label, "n": len(x), "success": success, "distortion": distortion,
              "evaluations": evaluations, "seconds": seconds / len(x)}
    print(f"{label:26} {len(x):>6} {100 * float(success.float().mean()):>8.0f}% {evaluations:>12.0f} "
          f"{float(distortion.nanmedian()):>16.5f} {seconds / len(x):>12.1f}", flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", nargs="+", default=list(imagenet.PHOTOS), choices=imagenet.PHOTOS)
    parser.add_argument("--size", type=int, default=224, help="centre-crop side, the network's resolution")
    parser.add_argument("--ddn1000-photos", type=int, default=None, help="DDN-1000 on the first K photos only")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: a shared 2-core machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = imagenet.pretrained_model(size=args.size)
    model, x = loaded.model, imagenet.photos(args.photos, args.size)
    target = loaded.class_index("ostrich")
    with torch.no_grad():
        classes = [loaded.class_names[i] for i in model(x).argmax(1).tolist()]
    print(f"{loaded.description}; torch {torch.__version__}, {args.threads} thread(s)")
    print("photos: " + ", ".join(f"{p} ({c})" for p, c in zip(args.photos, classes)) + f"; target {target} ostrich")
    print(f"\n{'attack':26} {'photos':>6} {'success':>9} {'evals/image':>12} {'median RMS dist.':>16} "
          f"{'s/image':>12}")
    k = min(args.ddn1000_photos or len(x), len(x))
    rows = [row("ours (LBFGS, refined)", model, x, target, ours),
            row("foolbox DDN, 100 steps", model, x, target, ddn(100)),
            row("foolbox DDN, 1000 steps", model, x[:k], target, ddn(1000))]
    summary(rows, k, len(x))


def summary(rows: list[dict], k: int, n: int) -> None:
    mine, ddn100, ddn1000 = rows
    same = mine["distortion"][:k]
    print("\nper photo RMS distortion (NaN = failed): " + "; ".join(
        f"{r['label']}: {[round(float(d), 5) for d in r['distortion']]}" for r in rows))
    if k < n:
        print(f"on the {k} photos DDN-1000 saw: ours median {float(same.nanmedian()):.5f}")
    goals = {"100% verified success": bool(mine["success"].all()),
             "<= 200 mean evaluations per image": mine["evaluations"] <= 200,
             "median distortion <= DDN-1000's (same photos)":
                 float(same.nanmedian()) <= float(ddn1000["distortion"].nanmedian())}
    for goal, met in goals.items():
        print(f"goal {goal}: {'met' if met else 'NOT met'}")
    ratio = float(mine["distortion"].nanmedian() / ddn100["distortion"].nanmedian())
    print(f"ours / DDN-100 median distortion: {ratio:.3f}; "
          f"seconds per image ours / DDN-100: {mine['seconds'] / ddn100['seconds']:.2f}")


if __name__ == "__main__":
    main()
