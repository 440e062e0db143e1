# LinguaLinked — the two commands a fresh machine needs:
#   make demo   install packages, build (Release), generate text on a local cluster of 3 worker
#               processes (MODEL=path.gguf to use your model; otherwise a random-weight model from
#               gen-model; WORKERS=N for another cluster size)
#   make test   install packages, build, run every test
# and for 64-bit Arm (Debian's cross compiler; docs/android.md):
#   make arm64       cross-build build-arm64/lingua, its tests, and build-arm64/dist/ (lingua + its libraries)
#   make test-arm64  run the arm64 tests under qemu-aarch64-static, incl. an x86-64 + arm64 cluster
BUILD      ?= build
ARM64      ?= build-arm64
CMAKE_ARGS ?=
MODEL      ?=
PROMPT     ?= Once upon a time
N          ?= 64
WORKERS    ?= 3
JOBS       ?= $(shell nproc)

.PHONY: all deps build demo test bench clean deps-arm64 host-lingua arm64 test-arm64

all: build

deps:
	@scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS)
	cmake --build $(BUILD) -j $(JOBS)

demo: build
ifeq ($(strip $(MODEL)),)
	@test -f $(BUILD)/demo-random.gguf || $(BUILD)/lingua gen-model --preset stories-15m --type q8_0 -o $(BUILD)/demo-random.gguf
	@echo "== demo: a model with RANDOM weights (made by 'lingua gen-model'), so the text below is noise."
	@echo "== for real text: make demo MODEL=path/to/model.gguf (e.g. ../shared/models/stories260K.gguf)"
	$(BUILD)/lingua run -m $(BUILD)/demo-random.gguf -p "$(PROMPT)" -n $(N) --local $(WORKERS) --verbose \
	  --origin-memory 12MB --memory-limit 150MB
else
	$(BUILD)/lingua run -m $(MODEL) -p "$(PROMPT)" -n $(N) --local $(WORKERS) --verbose
endif

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The host's lingua only: the origin of the mixed-architecture cluster test.
host-lingua: deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS)
	cmake --build $(BUILD) -j $(JOBS) --target lingua

deps-arm64:
	@scripts/install-deps.sh --arm64

arm64: deps-arm64
	cmake --preset arm64 -B $(ARM64) -DLL_HOST_LINGUA=$(abspath $(BUILD))/lingua $(CMAKE_ARGS)
	cmake --build $(ARM64) -j $(JOBS)

test-arm64: arm64 host-lingua
	ctest --test-dir $(ARM64) --output-on-failure --timeout 600 -j $(JOBS)
	@echo "== again on a CPU without dotprod (QEMU_CPU=cortex-a53): the plain NEON level is chosen"
	QEMU_CPU=cortex-a53 ctest --test-dir $(ARM64) --output-on-failure --timeout 600 -j $(JOBS) \
	  -R 'Isa/|Matmul|Ops|CpuFeatures'

bench: build
	bench/run_bench.sh
	bench/cluster_bench.py all

clean:
	rm -rf $(BUILD) $(ARM64)
