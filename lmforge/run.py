"""A run directory, reloaded: config, tokenizer and weights, ready to generate or evaluate.

    runs/NAME/
      config.yaml          the fully resolved config the run used
      model_config.json    architecture
      tokenizer.json
      model.safetensors    weights (latest checkpoint)
      best.safetensors     best weights by the validation metric (fine-tuning runs)
      trainer_state.pt     optimizer, schedule, step, data position, RNG states
      metrics.csv, plots/*.png, samples.txt
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from .config import Config, ConfigError, ModelConfig, config_from_dict, read_yaml
from .models.build import build_model
from .train.checkpoint import BEST_WEIGHTS, WEIGHTS, CheckpointError, load_weights
from .train.runtime import pick_device

MODEL_CONFIG = "model_config.json"
CONFIG = "config.yaml"
TOKENIZER = "tokenizer.json"


def read_model_config(run_dir: str | Path) -> ModelConfig:
    path = Path(run_dir) / MODEL_CONFIG
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not an lmforge run folder (no {MODEL_CONFIG})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    return ModelConfig.from_dict(data, source=str(path))


def read_run_config(run_dir: str | Path) -> Config:
    path = Path(run_dir) / CONFIG
    return config_from_dict(read_yaml(path), source=str(path))


class Run:
    """A trained model with its tokenizer and config."""

    def __init__(self, path: Path, model: nn.Module, tokenizer: Any, config: Config | None) -> None:
        self.path, self.model, self.tokenizer, self.config = path, model, tokenizer, config
        self.model_config: ModelConfig = model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __repr__(self) -> str:
        m = self.model_config
        params = sum(p.numel() for p in self.model.parameters())
        return (f"Run({str(self.path)!r}, arch={m.arch}, head={m.head}, d_model={m.d_model}, "
                f"n_layers={m.n_layers}, params={params / 1e6:.2f}M, vocab={m.vocab_size}, "
                f"device={self.device.type})")

    def generate(self, prompt: str | list[str], max_new_tokens: int = 200, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
                 stop: list[str] | None = None, *, return_scores: bool = False,
                 **options: Any) -> Any:
        """Continue a prompt, or each of a list of (ragged) prompts as one batch; returns only
        the new text.

        More options (see `lmforge.generate.DecodeOptions`): min_p, repetition_penalty,
        num_beams, length_penalty, early_stopping, num_samples, use_cache. With num_samples > 1
        each prompt gives a list of texts; with `return_scores`, `Generation` objects (text,
        ids, logprob, score, finish_reason) stand in for the strings.
        """
        from .generate.sampling import DecodeOptions
        from .generate.text import complete

        opts = DecodeOptions.from_kwargs(max_new_tokens=max_new_tokens, temperature=temperature,
                                         top_k=top_k, top_p=top_p, seed=seed, stop=stop or [],
                                         **options)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        results = complete(self.model, self.tokenizer, prompts, opts)
        pick = (lambda g: g) if return_scores else (lambda g: g.text)
        outputs = [[pick(g) for g in gens] if opts.num_samples > 1 else pick(gens[0])
                   for gens in results]
        return outputs[0] if isinstance(prompt, str) else outputs

    def stream(self, prompt: str, **options: Any) -> Iterator[str]:
        """Yield the new text of one prompt piece by piece, as it is generated; pieces never
        split a character. Options as for `generate` (num_samples must be 1)."""
        from .generate.sampling import DecodeOptions
        from .generate.text import stream_text

        yield from stream_text(self.model, self.tokenizer, prompt, DecodeOptions.from_kwargs(**options))

    @property
    def chat_template(self) -> Any:
        """The run's `ChatTemplate` (tokenizer_config.json; ChatML with a warning if none)."""
        if getattr(self, "_chat_template", None) is None:
            from .chat import ChatTemplate

            self._chat_template = ChatTemplate.from_run(self.path)
        return self._chat_template

    def chat(self, messages: list[dict[str, Any]], **options: Any) -> str:
        """The assistant's reply to `messages` ([{"role": "user", "content": ...}, ...]),
        rendered with the run's chat template and ended at its end-of-turn token. Options as
        for `generate` (default max_new_tokens 200, temperature 1; temperature=0 is greedy)."""
        from .chat.session import chat_reply
        from .generate.sampling import DecodeOptions

        return chat_reply(self.model, self.tokenizer, self.chat_template, messages,
                          DecodeOptions.from_kwargs(**options))

    def score(self, prompt: str | list[str], continuation: str | list[str]) -> float | list[float]:
        """log p(continuation | prompt): the sum of the continuation tokens' log-probabilities
        (natural log). Lists of prompts and continuations are scored pairwise, batched."""
        from .generate.text import score_texts

        if isinstance(prompt, str) and isinstance(continuation, str):
            return score_texts(self.model, self.tokenizer, [prompt], [continuation])[0]
        prompts = [prompt] * len(continuation) if isinstance(prompt, str) else list(prompt)
        conts = [continuation] * len(prompts) if isinstance(continuation, str) else list(continuation)
        return score_texts(self.model, self.tokenizer, prompts, conts)


def weights_path(run_dir: str | Path, weights: str = "best") -> Path:
    """best.safetensors when asked for and present, else model.safetensors."""
    path = Path(run_dir)
    if weights == "best" and (path / BEST_WEIGHTS).is_file():
        return path / BEST_WEIGHTS
    if not (path / WEIGHTS).is_file():
        raise CheckpointError(f"{path}: no weights ({WEIGHTS}); the run has not saved a checkpoint yet")
    return path / WEIGHTS


def load_run(path: str | Path, device: str = "auto", weights: str = "best") -> Run:
    """Reload a run directory. `weights`: "best" (best.safetensors when present) or "last"."""
    from .tokenizers import load_tokenizer

    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"run folder {str(path)!r} does not exist")
    model_config = read_model_config(path)
    config = read_run_config(path) if (path / CONFIG).is_file() else None
    tokenizer = load_tokenizer(path / TOKENIZER)
    if tokenizer.vocab_size > model_config.vocab_size:  # its ids would index past the embedding
        raise ConfigError(f"{path / TOKENIZER}: the tokenizer has {tokenizer.vocab_size} tokens but "
                          f"the model's embedding ({MODEL_CONFIG}) has {model_config.vocab_size}; "
                          "the tokenizer was replaced: restore the run's own tokenizer.json")
    model = build_model(model_config)
    load_weights(model, weights_path(path, weights))
    model.to(pick_device(device)).eval()
    return Run(path, model, tokenizer, config)
