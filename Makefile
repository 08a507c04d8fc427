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

FUZZ_TARGETS := FuzzHTTPRequest FuzzInferJSON FuzzGRPCInfer FuzzModelConfig FuzzNumpy FuzzTegrastats
FUZZ_SECONDS ?= 60

FLWR_VENV := .cache/flwr-venv

.PHONY: flwr-venv install fuzz fuzz-build fuzz-smoke serve test setup system-deps test-system-deps python-deps models fixtures build build-tests swift-test integration-test generate-protos clean

serve: setup
	$(SWIFT) build -c $(CONFIG) --product tern
	$$($(SWIFT) build -c $(CONFIG) --show-bin-path)/tern serve --model-repository examples/models \
		--http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT)

test: setup test-system-deps flwr-venv fixtures build-tests swift-test fuzz-smoke integration-test

# Builds the release binary and copies it to $(PREFIX)/bin/tern.
PREFIX ?= /usr/local
install: system-deps
	$(SWIFT) build -c release --product tern
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $$($(SWIFT) build -c release --show-bin-path)/tern $(DESTDIR)$(PREFIX)/bin/tern

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

# Flower 1.42 in its own virtual environment: the federated-learning tests run real Flower
# clients and servers with it (flwr pins grpcio, protobuf and cryptography versions of its own).
flwr-venv:
	@$(FLWR_VENV)/bin/python -c "import flwr, sklearn, dp_accounting; assert flwr.__version__ == '1.42.0'" 2>/dev/null \
		|| { $(PYTHON) -m venv $(FLWR_VENV) && $(FLWR_VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/integration/fl/requirements.txt; }

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
	TERN_BIN=$$($(SWIFT) build --show-bin-path)/tern TERN_FIXTURES=$(CURDIR)/$(FIXTURES) TERN_FLWR_PYTHON=$(CURDIR)/$(FLWR_VENV)/bin/python \
		$(PYTHON) -m pytest -q -rs tests/integration

# libFuzzer targets (Fuzz/) for the parsers of untrusted input, built apart with the fuzzer and
# AddressSanitizer. `make fuzz` runs each for FUZZ_SECONDS from the committed seeds
# (Fuzz/Corpus, made by scripts/make_fuzz_corpus.py) plus what earlier runs found
# (.cache/fuzz); a crash stops it, with the input under .cache/fuzz/crashes/.
fuzz-build:
	$(SWIFT) build --package-path Fuzz --scratch-path .build-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -enable-testing -Xswiftc -use-ld=lld

fuzz: fuzz-build
	@mkdir -p .cache/fuzz/crashes
	@for target in $(FUZZ_TARGETS); do \
		mkdir -p .cache/fuzz/$$target; \
		.build-fuzz/debug/$$target -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 -print_final_stats=1 \
			-artifact_prefix=.cache/fuzz/crashes/$$target- .cache/fuzz/$$target Fuzz/Corpus/$$target > .cache/fuzz/$$target.log 2>&1 \
			|| { tail -40 .cache/fuzz/$$target.log; echo "fuzz: $$target crashed (input under .cache/fuzz/crashes/)"; exit 1; }; \
		echo "fuzz: $$target $$(grep -o 'stat::number_of_executed_units: *[0-9]*' .cache/fuzz/$$target.log | grep -o '[0-9]*$$') executions in $(FUZZ_SECONDS) s, no crash"; \
	done

# The short run `make test` includes.
fuzz-smoke:
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=10

generate-protos:
	scripts/generate-protos.sh

clean:
	rm -rf .build .cache
