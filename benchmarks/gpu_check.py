"""Device check (issue 13): the attack and a small reproduce section on a CUDA GPU, timed and sanity-checked.

Meant for the few minutes a GPU is lent (under ~5 minutes in all):

1. the attack (``LBFGSConfig.refined()``), targeted, on a batch of MNIST test images against a
   quickly trained FC100-100-10 (10,000 images, 2 epochs: a timing model, not the zoo's), and on
   two photos against the pretrained EfficientNet-Lite0 (the ``imagenet`` extra) at ``--size``,
   each on CUDA and on the CPU, with the results checked: every example a verified success, the
   adversarial images inside the box ``[0, 1]`` and classified as the target by the model itself,
   and the result on the GPU;
2. ``intriguing reproduce --preset smoke --only fig5 --device cuda`` (a subprocess: Fig. 5 on two
   small photos), timed, its exit status and results checked.

It prints one compact table (``ok`` per row, ``FAIL`` with the reason otherwise) and exits 1 if any
check failed. Without CUDA it prints one line and exits 0, so the test suite can run it anywhere.

Usage: ``python benchmarks/gpu_check.py [--mnist-n 256] [--size 128] [--skip-reproduce]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

NO_CUDA = "gpu_check: no CUDA GPU on this machine; nothing to time (run it where a GPU is lent)"


def timed_attack(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, device: str) -> dict:
    """Run the refined attack on ``device``; seconds, evaluations per image and the checks' outcome."""
    from intriguing.attacks import LBFGS, LBFGSConfig

    model, x, target = model.to(device), x.to(device), target.to(device)
    with torch.no_grad():
        model(x[:1])  # warm-up: CUDA context and kernel selection stay out of the timing
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = LBFGS(LBFGSConfig.refined())(model, x, target=target)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    adversarial = result.adversarial
    with torch.no_grad():
        reached = model(adversarial).argmax(1) == target
    problems = [why for why, bad in (
        ("not all verified successes", not bool(result.success.all())),
        ("outside the box [0, 1]", bool((adversarial < 0).any() or (adversarial > 1).any())),
        ("not classified as the target", not bool(reached.all())),
        (f"result not on {device}", adversarial.device.type != device),
    ) if bad]
    return {"seconds": seconds, "evaluations": float(result.evaluations.double().mean()),
            "distortion": float(result.distortion.nanmedian()), "problems": problems}


def mnist_case(n: int, cache: str) -> tuple[str, torch.nn.Module, torch.Tensor, torch.Tensor]:
    from intriguing import data, zoo

    model = zoo.trained("FC100-100-10", limit=10_000, overrides={"epochs": 2}, cache=cache, progress=False).model
    model = model.eval()
    x, y = data.load_mnist("test")
    x, y = x[:n], y[:n]
    target = (y + torch.randint(1, 10, y.shape, generator=torch.Generator().manual_seed(0))) % 10
    return f"MNIST FC100-100-10, {len(x)} images", model, x, target


def imagenet_case(size: int) -> tuple[str, torch.nn.Module, torch.Tensor, torch.Tensor] | str:
    from intriguing import efficientnet, imagenet

    if not imagenet.available():
        return f"EfficientNet-Lite0 skipped: {efficientnet.EXTRA}"
    loaded = imagenet.pretrained_model(size=size)
    x = imagenet.photos(["chelsea", "coffee"], size)
    target = torch.full((len(x),), loaded.class_index("ostrich"))
    return f"EfficientNet-Lite0 {size}x{size}, 2 photos", loaded.model, x, target


def reproduce(out: Path) -> dict:
    """The smoke reproduction of Fig. 5 on CUDA, in a subprocess (the CLI, as a user runs it)."""
    command = [sys.executable, "-c", "from intriguing.cli import main; main()", "reproduce", "--preset", "smoke",
               "--only", "fig5", "--device", "cuda", "--out", str(out / "run"), "--cache", str(out / "cache"),
               "--no-progress"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    problems = []
    if done.returncode != 0:
        problems.append(f"exit status {done.returncode}: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    elif not (out / "run" / "results.json").exists():
        problems.append("no results.json")
    else:
        sections = json.loads((out / "run" / "results.json").read_text()).get("sections", {})
        problems += [f"section {key} missing" for key in ("fig5",) if key not in sections]
    return {"seconds": seconds, "problems": problems}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mnist-n", type=int, default=256, help="MNIST test images attacked")
    parser.add_argument("--size", type=int, default=128, help="side of the photos for EfficientNet-Lite0")
    parser.add_argument("--skip-reproduce", action="store_true", help="time the attack only")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(NO_CUDA)
        return 0
    from intriguing.numerics import flush_subnormals

    flush_subnormals()
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}; CPU runs use {torch.get_num_threads()} threads")
    print(f"{'case':40} {'device':>6} {'seconds':>8} {'evals/img':>9} {'median RMS':>10}  check")
    failed = False
    with tempfile.TemporaryDirectory() as folder:
        cases = [mnist_case(args.mnist_n, str(Path(folder) / "cache")), imagenet_case(args.size)]
        for case in cases:
            if isinstance(case, str):
                print(case)
                continue
            label, model, x, target = case
            seconds = {}
            for device in ("cuda", "cpu"):
                found = timed_attack(model, x, target, device)
                seconds[device] = found["seconds"]
                failed |= bool(found["problems"])
                print(f"{label:40} {device:>6} {found['seconds']:>8.1f} {found['evaluations']:>9.1f} "
                      f"{found['distortion']:>10.5f}  {'; '.join(found['problems']) or 'ok'}", flush=True)
            print(f"{'':40} {'speed-up, CPU / CUDA seconds':>36}: {seconds['cpu'] / seconds['cuda']:.1f}x")
        if not args.skip_reproduce:
            found = reproduce(Path(folder))
            failed |= bool(found["problems"])
            print(f"{'reproduce --preset smoke --only fig5':40} {'cuda':>6} {found['seconds']:>8.1f} {'':>9} {'':>10}  "
                  f"{'; '.join(found['problems']) or 'ok'}")
    print("gpu_check: " + ("FAILED" if failed else "all checks passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
