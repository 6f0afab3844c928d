"""Train the Table 1 zoo from scratch and print seconds per model with its errors beside the paper's.

    python benchmarks/train_zoo.py [--seeds 0 1 2] [--models FC10(1e-4) ...] [--threads 2]

Trains without the checkpoint cache (every model really trains), on the full MNIST training set.
"""

from __future__ import annotations

import argparse
import json
import statistics
from importlib import resources

import torch

from intriguing import training

TABLE1 = ["FC10(1e-4)", "FC10(1e-2)", "FC10(1)", "FC100-100-10", "FC200-200-10", "AE400-10"]


def paper_table1() -> dict:
    text = (resources.files("intriguing") / "resources" / "szegedy2013_tables.json").read_text()
    return json.loads(text)["table1"]["rows"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--models", nargs="+", default=TABLE1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    paper = paper_table1()
    print(f"torch {torch.__version__}, {args.threads} threads, seeds {args.seeds}")
    print(f"{'model':<14} {'s/model':>8} {'train err %':>16} {'test err %':>16} {'paper train/test %':>19}")
    for name in args.models:
        runs = [training.train(name, seed=seed, progress=False)[1] for seed in args.seeds]
        seconds = statistics.mean(r.seconds for r in runs)

        def spread(values: list[float]) -> str:
            mean = 100 * statistics.mean(values)
            sd = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{mean:6.2f} ± {sd:4.2f}"

        ref = paper.get(name)
        ref_text = f"{100 * ref['train_error']:.2f} / {100 * ref['test_error']:.2f}" if ref else "—"
        print(f"{name:<14} {seconds:8.1f} {spread([r.train_error for r in runs]):>16} "
              f"{spread([r.test_error for r in runs]):>16} {ref_text:>19}", flush=True)


if __name__ == "__main__":
    main()
