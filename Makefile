# Two commands do everything on a fresh machine with Python 3.11 and pip:
#   make demo   set up, simulate the demo campaign, run the workflow
#   make test   set up, run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 2
DEMO   ?= demo
PRESET ?=

# The stamp depends on the pins: a second call installs nothing unless they changed.
INSTALLED := $(VENV)/.installed-base
PEER_INSTALLED := $(VENV)/.installed-peer

.PHONY: setup demo demo-romancal11 groundtest test test-slurm lint peer-test bench bench-campaign bench-slurm parity parity-romanisim clean-demo

setup: $(INSTALLED)

$(INSTALLED): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[test]"
	touch $@

$(PEER_INSTALLED): $(INSTALLED)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[test,peer]"
	touch $@

demo: $(INSTALLED)
	$(BIN)/python scripts/simulate.py campaign --config config/demo_campaign.yaml --out $(DEMO)
	$(BIN)/snakemake --profile profiles/local --cores $(CORES) \
	    --snakefile Snakefile --directory $(DEMO) --configfile $(DEMO)/workflow.yaml $(PRESET)
	$(BIN)/snakemake --snakefile Snakefile --directory $(DEMO) --configfile $(DEMO)/workflow.yaml $(PRESET) \
	    --report "$(abspath $(DEMO))/report.html"
	@$(BIN)/python scripts/list_products.py $(DEMO)/results
	@echo "Report: $(DEMO)/report.html"

# The demo campaign through romancal 1.1's exposure chain (config/romancal-1.1.yaml after the
# campaign's config; README, "romancal 1.1's chain (preset)"), in its own folder.
demo-romancal11:
	$(MAKE) demo DEMO=demo-romancal11 PRESET=config/romancal-1.1.yaml

# The ground-test (TVAC) session of the README: simulate a TVAC set, run the partial
# pipeline, fit superbias/DARK from the darks, draw the diagnostics, build the report.
GT_DIR  ?= tvac
GT_SIZE ?= 1024
groundtest: $(INSTALLED)
	$(BIN)/python scripts/simulate.py groundtest --config config/groundtest_campaign.yaml \
	    --out $(GT_DIR) --size $(GT_SIZE)
	$(BIN)/snakemake --profile profiles/local --cores $(CORES) \
	    --snakefile Snakefile --directory $(GT_DIR) --configfile $(GT_DIR)/workflow.yaml
	$(BIN)/snakemake --snakefile Snakefile --directory $(GT_DIR) --configfile $(GT_DIR)/workflow.yaml \
	    --report "$(abspath $(GT_DIR))/report.html"
	@$(BIN)/python scripts/list_products.py $(GT_DIR)/results

test: $(INSTALLED)
	$(BIN)/python -m pytest -n $(CORES) --dist loadgroup

# A real one-node SLURM on this machine (root; installs slurm-wlm + munge from Debian if
# missing), the campaign through profiles/slurm; the cluster is stopped whatever happens.
test-slurm: $(INSTALLED)
	@trap '.ci/slurm_cluster.sh stop' EXIT; \
	.ci/slurm_cluster.sh start && \
	$(BIN)/python -m pytest tests/slurm -m slurm --durations=10

lint: $(INSTALLED)
	$(BIN)/ruff check scripts tests
	$(BIN)/snakefmt --check Snakefile workflow
	$(BIN)/snakemake --lint --snakefile Snakefile --directory $(DEMO) --configfile $(DEMO)/workflow.yaml

# Side by side with romancal on the same input and references (needs the peer extra):
# uncal -> cal at 6 and 16 resultants, where each side's time goes, a one-step rerun, the
# mosaic level. Full size by default (tens of minutes, up to ~10 GB); SIZE=512 for a quick
# run. Results in bench/*.md.
SIZE      ?= 4096
MA_TABLE  ?= IMG_UNEVEN_6
# `make bench MA_TABLE=X` measures X alone; MA_TABLES names several.
MA_TABLES ?= $(if $(filter command line environment,$(origin MA_TABLE)),$(MA_TABLE),IMG_UNEVEN_6 IMG_UNEVEN_16)
REPEAT    ?= 1
bench: $(PEER_INSTALLED)
	$(BIN)/python benchmarks/bench.py --size $(SIZE) --ma-table $(MA_TABLES) --repeat $(REPEAT) --out bench

# Four exposures on $(CORES) cores: our Snakemake run against romancal's ExposurePipeline
# $(CORES) processes at a time; exposures per hour, CPU seconds per exposure.
bench-campaign: $(PEER_INSTALLED)
	$(BIN)/python benchmarks/campaign.py --size $(SIZE) --ma-table $(MA_TABLE) --cores $(CORES) \
	    --repeat $(REPEAT) --out bench

# Per-job overhead of profiles/slurm on the one-node cluster of test-slurm -> bench/slurm_overhead.md
bench-slurm: $(INSTALLED)
	@trap '.ci/slurm_cluster.sh stop' EXIT; \
	.ci/slurm_cluster.sh start && \
	$(BIN)/python benchmarks/slurm_overhead.py --out bench

parity: $(PEER_INSTALLED)
	$(BIN)/python benchmarks/parity.py --size $(SIZE) --ma-table $(MA_TABLE) --out bench \
	    $(if $(filter 4096,$(SIZE)),--romanisim)

# romanisim's rows alone (full size: two dithered romanisim exposures through our workflow to a
# mosaic; our simulator's full-size campaign is made, not run, for its references).
parity-romanisim: $(PEER_INSTALLED)
	$(BIN)/python benchmarks/parity.py --size 4096 --ma-table $(MA_TABLE) --out bench --romanisim-only

peer-test: $(PEER_INSTALLED)
	$(BIN)/python -m pytest -m peer

clean-demo:
	rm -rf $(DEMO)
