"""The single progress line of a run: which section (k/n) and stage runs, overall percent and ETA."""

from __future__ import annotations

from tqdm.auto import tqdm


class Display:
    """The bar counts *estimated* seconds of the sections still to compute (stored ones cost
    nothing), so tqdm's remaining time is the estimate rescaled by how fast this machine has been
    so far. It shows only on a terminal: logs that are files stay free of its carriage returns.
    """

    def __init__(self, estimates: list[float], enabled: bool):
        self.count = len(estimates)
        self.bar = tqdm(total=max(sum(estimates), 1e-9), disable=None if enabled else True, unit="s",
                        bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
        self.index, self.base, self.estimate = 0, 0.0, 0.0

    def begin(self, title: str, estimate: float) -> None:
        self.index += 1
        self.base, self.estimate = self.bar.n, estimate
        self.stage(title, 0.0)

    def stage(self, text: str, fraction: float | None) -> None:
        self.bar.set_description_str(f"reproduce [{self.index}/{self.count}] {text}", refresh=False)
        if fraction is not None:
            self.bar.update(self.base + min(max(fraction, 0.0), 1.0) * self.estimate - self.bar.n)
        self.bar.refresh()

    def end(self) -> None:
        self.bar.update(self.base + self.estimate - self.bar.n)

    def close(self) -> None:
        self.bar.close()
