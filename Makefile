# Tern's two entry points: `make serve` serves the example models, `make test` runs every test.
# Both install what they need first (Python packages, example and fixture models) and are safe to
# rerun: nothing already present is fetched or rebuilt again.

SWIFT   ?= swift
PYTHON  ?= python3
CONFIG  ?= release
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002
FIXTURES := .cache/fixtures

.PHONY: serve test setup system-deps test-system-deps python-deps models fixtures build build-tests swift-test integration-test generate-protos clean

serve: setup
	$(SWIFT) build -c $(CONFIG) --product tern
	$$($(SWIFT) build -c $(CONFIG) --show-bin-path)/tern serve --model-repository examples/models \
		--http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT)

test: setup test-system-deps fixtures build-tests swift-test integration-test

setup: system-deps python-deps models

# SQLite's headers for GRDB (lifecycle history, experiment metrics); present on most images already.
system-deps:
	@test -f /usr/include/sqlite3.h || { $$(command -v sudo) apt-get update -q && $$(command -v sudo) apt-get install -y -q libsqlite3-dev; }

# Only the tests need these: openssl (test certificates), Chromium (renders the experiment report)
# and protoc (compiles Protos/experiments.proto for the Python gRPC client of the experiments API).
test-system-deps:
	@command -v openssl >/dev/null && command -v chromium >/dev/null && command -v protoc >/dev/null \
		|| { $$(command -v sudo) apt-get update -q && DEBIAN_FRONTEND=noninteractive $$(command -v sudo) apt-get install -y -q openssl chromium protobuf-compiler; }

python-deps:
	@$(PYTHON) -c "import onnxruntime, tritonclient.http, tritonclient.grpc, sklearn, skl2onnx, onnx, pytest, scipy, mmh3" 2>/dev/null \
		|| $(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements.txt

models:
	$(PYTHON) scripts/make_models.py examples examples/models

fixtures:
	$(PYTHON) scripts/make_models.py fixtures $(FIXTURES)

build:
	$(SWIFT) build --product tern

# Build everything once, then run the tests without rebuilding (alternating build and test
# recompiles several packages each time).
build-tests:
	$(SWIFT) build --build-tests

swift-test:
	TERN_FIXTURES=$(CURDIR)/$(FIXTURES) TERN_EXAMPLES=$(CURDIR)/examples/models $(SWIFT) test --skip-build

integration-test:
	TERN_BIN=$$($(SWIFT) build --show-bin-path)/tern TERN_FIXTURES=$(CURDIR)/$(FIXTURES) \
		$(PYTHON) -m pytest -q tests/integration

generate-protos:
	scripts/generate-protos.sh

clean:
	rm -rf .build .cache
