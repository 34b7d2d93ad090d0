"""lmforge: build language models from scratch and fine-tune them, on PyTorch.

The small public API:

    import lmforge
    cfg = lmforge.load_config("configs/shakespeare-char-gpt.yaml", ["train.max_steps=500"])
    run_dir = lmforge.pretrain(cfg)
    run = lmforge.load_run(run_dir)
    print(run.generate("ROMEO:", max_new_tokens=200, temperature=0.8, top_k=40))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from .config import Config, ModelConfig, load_config  # noqa: F401
    from .models.build import build_model  # noqa: F401
    from .finetune import finetune  # noqa: F401
    from .pretrain import pretrain  # noqa: F401
    from .run import Run, load_run  # noqa: F401

_LAZY = {
    "Config": "lmforge.config", "ModelConfig": "lmforge.config", "load_config": "lmforge.config",
    "build_model": "lmforge.models.build", "pretrain": "lmforge.pretrain",
    "load_run": "lmforge.run", "Run": "lmforge.run", "finetune": "lmforge.finetune",
}


def __dir__() -> list[str]:
    # the lazy names too, so dir(lmforge) and tab completion show the whole public API
    return sorted({*globals(), *_LAZY, "generate"})


def __getattr__(name: str) -> Any:
    # imported on first use so that `import lmforge` (and the CLI's --help) stays fast
    import importlib

    if name == "generate":  # the decoding package: lmforge.generate.generate_ids(...), ...
        return importlib.import_module("lmforge.generate")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        # importing lmforge.pretrain binds the *module* to this name; bind the function instead
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lmforge' has no attribute {name!r}")
