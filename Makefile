# Two commands do everything on a fresh machine with Python 3.11 and pip:
#   make demo   set up, simulate the demo campaign, run the workflow
#   make test   set up, run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 2
DEMO   ?= demo

# The stamp depends on the pins: a second call installs nothing unless they changed.
INSTALLED := $(VENV)/.installed-base
PEER_INSTALLED := $(VENV)/.installed-peer

.PHONY: setup demo test test-slurm lint peer-test bench clean-demo

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
	    --snakefile Snakefile --directory $(DEMO) --configfile $(DEMO)/workflow.yaml
	@$(BIN)/python scripts/list_products.py $(DEMO)/results

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
	$(BIN)/snakemake --lint --snakefile Snakefile --directory $(DEMO) --configfile $(DEMO)/workflow.yaml

# Full-size figures for the README's performance section (minutes, up to ~10 GB of memory).
bench: $(INSTALLED)
	$(BIN)/python benchmarks/step_resources.py --size 4096 --ma-table EVEN_55 --out bench/ramp55

peer-test: $(PEER_INSTALLED)
	$(BIN)/python -m pytest -m peer

clean-demo:
	rm -rf $(DEMO)
