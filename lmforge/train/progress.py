"""Training progress: a tqdm bar on a terminal, one plain line per log interval otherwise.

Piped or redirected output (CI logs, `| tee`, nohup) would otherwise fill with the bar's `\\r`
redraws. Messages printed while a bar is shown go through `write`, above the bar, never into it.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable


def progress_bar(enabled: bool, start: int, total: int, stream: Any = None) -> "Progress":
    """tqdm when `stream` (default stderr) is a terminal, plain lines when it is not."""
    if not enabled:
        return Progress()
    stream = stream or sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        return _Bar(start, total, stream)
    return _Lines(start, total, stream)


class Progress:
    """No output; the interface the trainer uses."""

    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **values: Any) -> None: ...
    def close(self) -> None: ...

    def wrap(self, log: Callable[[str], Any]) -> Callable[[str], Any]:
        """`log`, made safe to call while the bar is drawn."""
        return log


class _Bar(Progress):
    def __init__(self, start: int, total: int, stream: Any) -> None:
        from tqdm.auto import tqdm

        self.tqdm = tqdm
        self.bar = tqdm(total=total, initial=start, dynamic_ncols=True, desc="train", unit="step",
                        file=stream)

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def set_postfix(self, **values: Any) -> None:
        self.bar.set_postfix(**values)

    def close(self) -> None:
        self.bar.close()

    def wrap(self, log: Callable[[str], Any]) -> Callable[[str], Any]:
        def write_above(message: str) -> Any:
            # clears the bar, prints the line, redraws the bar below it
            with self.tqdm.external_write_mode(file=self.bar.fp):
                return log(message)

        return write_above


class _Lines(Progress):
    """`step 200/2000 (10%) | loss 1.2345 | tok_s 9,593 | 12s` once per log interval."""

    def __init__(self, start: int, total: int, stream: Any) -> None:
        self.step, self.total, self.stream = start, total, stream
        self.t0 = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.step += n

    def set_postfix(self, **values: Any) -> None:
        # called at each log point, before update() counts the step just logged
        step = self.step + 1
        shown = " | ".join(f"{k} {v}" for k, v in values.items())
        pct = f" ({100 * step / self.total:.0f}%)" if self.total else ""
        print(f"step {step}/{self.total}{pct} | {shown} | {time.perf_counter() - self.t0:.0f}s",
              file=self.stream, flush=True)
