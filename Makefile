# dropout-study: the two commands a user needs are `make search` and `make test`; both set themselves up.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SPACE  ?=
ENGINE ?=
RESULTS ?= results
WORKERS ?= 2
PORT   ?= 8000

.PHONY: install search search-distributed report test lint bench clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

search: $(STAMP)
	$(BIN)/python -m study search $(or $(SPACE),search_spaces/tutorial.yaml) $(if $(ENGINE),--engine $(ENGINE)) --results-dir $(RESULTS)

# A chief and WORKERS workers on this machine (loopback only), one progress bar; all stop when the study is done.
search-distributed: $(STAMP)
	$(BIN)/python -m study search $(or $(SPACE),search_spaces/tutorial.yaml) $(if $(ENGINE),--engine $(ENGINE)) --results-dir $(RESULTS) \
		--chief --port $(PORT) --local-workers $(WORKERS)

report: $(STAMP)
	$(BIN)/python -m study report $(if $(SPACE),--space $(SPACE)) --results-dir $(RESULTS)

# Two test processes keep both cores busy while one waits on a subprocess or a Keras fit's per-epoch overhead.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: $(STAMP)
	$(BIN)/python -m study bench

lint: $(STAMP)
	$(BIN)/ruff check study tests
	$(BIN)/ruff format --check study tests

clean-venv:
	rm -rf $(VENV)
