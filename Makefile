# trustserve: `make up` runs the whole stack, `make test` runs the whole suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOME_DIR ?= $(HOME)/.trustserve
DEBS := redis-server swtpm swtpm-tools tpm2-tools libtss2-dev openssl
# The container image: built with mmdebstrap + umoci, run by its test with runc.
DEBS += mmdebstrap umoci runc
# TorchServe's frontend (the bench's peer, and the TorchServe store that import-torchserve's test moves)
DEBS += openjdk-17-jre-headless
# etcd: the KMS replicas' shared state (docs/kms.md, "State in etcd"), a 3-member cluster in tests.
DEBS += etcd-server etcd-client
# Node for the OHTTP interop test (tests/interop/ohttp_node: @hpke/core and bhttp-js).
DEBS += nodejs npm
# libjpeg-turbo's TurboJPEG API, for PyTurboJPEG in the bench's decoder comparison (bench/jpeg_path.py)
DEBS += libturbojpeg0

.PHONY: up test lint bench soak venv debs clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# A package counts as present when an installed one provides it (NodeSource's nodejs provides
# and conflicts with npm: installing npm beside it would replace it).
PROVIDED = dpkg-query -W -f='$${db:Status-Status} $${Provides}\n' 2>/dev/null | grep '^installed ' \
	| tr ',' '\n' | sed 's/^installed //; s/ *(.*//; s/^ *//' | grep -qx "$$p"

# Debian packages the suite needs: a real Redis, a real software TPM and the TSS library.
debs:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || $(PROVIDED) || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

up: debs venv
	$(BIN)/trustserve up $(ARGS)

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy --strict src

test: debs venv
	$(MAKE) lint
	$(BIN)/pytest -q

$(VENV)/.bench: pyproject.toml | $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

# One run of every configuration, side by side (about 15 minutes; TorchServe gets its own venv).
bench: debs venv $(VENV)/.bench
	cd bench && ../$(BIN)/python run.py

# A bounded mix (valid, sealed, replayed, invalid, oversized, cut-off, slow) for SOAK_SECONDS
# against a stack on localhost; fails on any 5xx, a failed valid request, or RSS/fd growth.
SOAK_SECONDS ?= 300
soak: debs venv
	$(BIN)/python -m bench.soak --seconds $(SOAK_SECONDS) --json bench/results/soak.json \
	  --doc docs/benchmarks.md

# The OCI image (docs/image.md): layout in build/oci/, manifest digest in build/oci/digest.
.PHONY: image image-reproducible image-lock
image: debs venv
	$(BIN)/python deploy/image/build.py

# Build it again from nothing and fail unless the digest is the same.
image-reproducible: debs venv
	$(BIN)/python deploy/image/build.py --check-reproducible

# Re-resolve the image's PyPI dependencies (with hashes) after pyproject.toml changes.
image-lock: venv
	$(BIN)/python -m venv build/lock-venv
	build/lock-venv/bin/pip install -q pip-tools
	build/lock-venv/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras \
	  --no-emit-index-url --no-emit-find-links -o deploy/image/requirements.lock \
	  pyproject.toml deploy/image/requirements.in
	build/lock-venv/bin/pip-compile -q --generate-hashes --allow-unsafe \
	  --no-emit-index-url --no-emit-find-links -o deploy/image/build-requirements.lock \
	  deploy/image/build-requirements.in

# The gRPC service's Python module, after a change to frontend/grpc_v2/grpc_predict_v2.proto
# (generated code is committed; a test fails while it is stale).
.PHONY: grpc-gen
grpc-gen: venv
	$(BIN)/python src/trustserve/frontend/grpc_v2/generate.py

clean:
	rm -rf $(VENV) build *.egg-info
