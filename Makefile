# LinguaLinked — the two commands a fresh machine needs:
#   make demo   install packages, build (Release), generate text on a local cluster of 3 worker
#               processes (MODEL=path.gguf to use your model; otherwise a random-weight model from
#               gen-model; WORKERS=N for another cluster size)
#   make test   install packages, build, run every test
BUILD      ?= build
CMAKE_ARGS ?=
MODEL      ?=
PROMPT     ?= Once upon a time
N          ?= 64
WORKERS    ?= 3
JOBS       ?= $(shell nproc)

.PHONY: all deps build demo test bench clean

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

bench: build
	bench/run_bench.sh
	bench/cluster_bench.py all

clean:
	rm -rf $(BUILD)
