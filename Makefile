# Ladder: `make demo` installs and runs the tiny pipeline; `make test` installs and runs the tests.
# Everything goes into .venv/ in the repo root; nothing is installed system-wide.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# No run may reach a hub: tiny models are built from config, tokenizers and data ship in the repo.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export WANDB_SILENT := true

.PHONY: all install demo pipeline test lock clean bench bench-gpu

all: install

install: $(STAMP)

# torch first and pinned, so pip takes the CPU wheel on disk and pulls no CUDA packages;
# then the project with every dependency constrained to the lock file.
$(STAMP): pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/python -m launch.demo

# The whole tiny pipeline in one command: SFT, then DPO from the SFT model, then GRPO from an under-trained
# SFT model, then evaluation and comparison.
pipeline: install
	$(BIN)/python -m launch.demo --pipeline

# The tests drive Debian's chromium and a real SLURM cluster; tests/system_packages.sh installs
# them when missing (as root). `pytest -m "not slurm"` leaves the cluster tests out.
# The first line says which CPU numerics the suite runs under and those of its golden runs
# (training/model/cpu_numerics.py), so a failure report says what kind of machine it came from. Then the formatter and the linter
# (ruff, configured in pyproject.toml), so CI enforces them. Two pytest-xdist workers, a whole file
# or a shared session fixture per worker at a time (tests/conftest.py says why); plain `pytest`
# without -n runs the same tests in one process.
test: install
	@$(BIN)/python -m training.model.cpu_numerics
	$(BIN)/ruff format --check --quiet . || (echo "ruff format --check failed: run $(BIN)/ruff format ." && exit 1)
	$(BIN)/ruff check --quiet .
	bash tests/system_packages.sh
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --no-loadscope-reorder --durations=25

bench: install
	$(BIN)/pip install --quiet -c requirements.lock -e '.[bench]'
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/dpo_cache.py
	$(BIN)/python bench/grpo.py

# On one GPU: MFU and tokens/s at Llama 3 shapes for each attention, compile, loss and
# checkpointing choice, against TRL's SFTTrainer, in about 5 minutes (bench/RESULTS.md).
bench-gpu: install
	$(BIN)/python bench/gpu.py --out runs/bench_gpu.json

# Re-resolve the lock file from pyproject.toml (needs the package registries).
lock:
	rm -rf /tmp/ladder-lock && $(PY) -m venv /tmp/ladder-lock
	/tmp/ladder-lock/bin/pip install --quiet torch==2.13.0 && /tmp/ladder-lock/bin/pip install --quiet -e '.[dev,bench]'
	/tmp/ladder-lock/bin/pip freeze --exclude-editable | grep -v '^torch==' > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) runs
