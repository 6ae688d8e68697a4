# mobiledeploy: `make demo` builds the shipped examples end to end; `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
OUT    ?= dist
SEG_OUT ?= $(OUT)-seg
DET_OUT ?= $(OUT)-det
EMBED_OUT ?= $(OUT)-embed
JOBS   ?= 2
PYTEST_ARGS ?=

.PHONY: setup setup-fast demo sweep-demo sweep-nodes test test-fast lint bench train-demo train-demo-seg app-sync clean mediapipe-venv kotlin-toolchain

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, alone: resolved together with every extra, pip picked PyPI's CUDA build of the
	# pinned version over the local CPU wheel (seen with the [sweep]/[dev] additions); installed
	# first, the pin is already satisfied
	$(PY) -m pip install -q "$$(grep -o 'torch==[0-9.]*' pyproject.toml | head -1)"
	$(PY) -m pip install -q -e '.[all,dev]'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv with every backend and the test tools

# MediaPipe Tasks (a real TFLite-metadata client) cannot share TensorFlow's venv: its own venv.
# validate finds it here (or via MOBILEDEPLOY_MEDIAPIPE_PYTHON) and adds mediapipe:<target> rows.
MEDIAPIPE_VENV    ?= .venv-mediapipe
MEDIAPIPE_VERSION ?= 1.2.2
$(MEDIAPIPE_VENV)/.installed:
	test -x $(MEDIAPIPE_VENV)/bin/python || $(PYTHON) -m venv $(MEDIAPIPE_VENV)
	$(MEDIAPIPE_VENV)/bin/python -m pip install -q --upgrade pip
	$(MEDIAPIPE_VENV)/bin/python -m pip install -q 'mediapipe==$(MEDIAPIPE_VERSION)'
	touch $@

mediapipe-venv: $(MEDIAPIPE_VENV)/.installed  ## MediaPipe Tasks in .venv-mediapipe (validate's mediapipe rows)

# The generated app's Android-free Kotlin core runs on the JVM (its unit tests, validate's app:
# rows): npm's kotlin-compiler is the whole Kotlin distribution, pinned, in a project-local folder.
# validate finds kotlinc there (or via MOBILEDEPLOY_KOTLINC); the JDK and JUnit 4 come from Debian
# (openjdk-17-jdk-headless, junit4: .ci/run installs them).
KOTLIN_VERSION ?= 2.4.20
KOTLIN_DIR     ?= .tools/kotlin
$(KOTLIN_DIR)/.installed-$(KOTLIN_VERSION):
	mkdir -p $(KOTLIN_DIR)
	npm install -q --prefix $(KOTLIN_DIR) --no-save --no-audit --no-fund 'kotlin-compiler@$(KOTLIN_VERSION)'
	$(KOTLIN_DIR)/node_modules/kotlin-compiler/bin/kotlinc-jvm -version
	touch $@

kotlin-toolchain: $(KOTLIN_DIR)/.installed-$(KOTLIN_VERSION)  ## Kotlin $(KOTLIN_VERSION) in .tools/kotlin (the app core's JVM tests, validate's app rows)

demo: $(STAMP)  ## build, validate and package the shipped examples: dist/ (classifier), dist-seg/ (segmentation), dist-det/ (detection), dist-embed/ (embedder)
	$(VENV)/bin/mobiledeploy build examples/shapes/shapes.yaml -o $(OUT) --jobs $(JOBS)
	$(VENV)/bin/mobiledeploy build examples/shapes_seg/shapes_seg.yaml -o $(SEG_OUT) --jobs $(JOBS)
	$(VENV)/bin/mobiledeploy build examples/shapes_det/shapes_det.yaml -o $(DET_OUT) --jobs $(JOBS)
	$(VENV)/bin/mobiledeploy build examples/shapes/shapes_embed.yaml -o $(EMBED_OUT) --jobs $(JOBS)
	# the build validates before it writes the app: validate again for the app:<target> rows (the
	# app's Kotlin core on the JVM; skipped without `make kotlin-toolchain`)
	$(VENV)/bin/mobiledeploy validate $(OUT)
	$(VENV)/bin/mobiledeploy validate $(SEG_OUT)
	$(VENV)/bin/mobiledeploy validate $(DET_OUT)

sweep-demo: $(STAMP)  ## the shipped example at 4 resolutions x int8 lowering, fp32 and int8, on a local Ray instance
	$(VENV)/bin/mobiledeploy sweep examples/shapes/sweep.yaml -o $(OUT)-sweep --jobs $(JOBS)

sweep-nodes: $(STAMP)  ## a stated subset of examples/shapes/sweep-large.yaml on a local 1-node vs 2-node Ray cluster
	$(PY) -m mobiledeploy.sweep.cluster_bench examples/shapes/sweep-large.yaml --nodes 1 2 \
		--only preset=mobilenet_v3_small --only width=0.5,1.0 --only resolution=64 \
		--targets tflite-fp32,tflite-int8,executorch-xnnpack --train-images 300

test: $(STAMP)  ## the full suite (what CI runs)
	$(PY) -m pytest -n 2 --dist loadfile --durations=30 tests $(PYTEST_ARGS)

test-fast: $(STAMP)  ## the fast selection: no slow conversions
	$(PY) -m pytest -n 2 -m "not slow" tests $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check mobiledeploy tests

bench: $(STAMP)  ## benchmark suite (outside the tests): writes bench/results.md
	$(PY) -m mobiledeploy.benchsuite --out bench

train-demo: $(STAMP)  ## retrain the shipped demo weights (CPU, ~10 min)
	$(PY) -m mobiledeploy.demo.train --out examples/shapes

train-demo-seg: $(STAMP)  ## retrain the shipped segmentation weights (CPU, one thread, ~12 min)
	$(PY) -m mobiledeploy.demo.train_seg --out examples/shapes_seg

app-sync: $(STAMP)  ## regenerate android_app/ from the shipped example
	$(PY) -m mobiledeploy.app_sync

clean:
	rm -rf $(OUT) $(SEG_OUT) $(DET_OUT) $(EMBED_OUT) $(OUT)-sweep .pytest_cache .ruff_cache
