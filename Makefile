# isoprompt: `make demo` and `make test` set everything up from a fresh Debian 12 machine.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
BIN := $(BUILD_DIR)/isoprompt

.PHONY: all setup configure build test demo bench clean format asan fuzz

all: build

setup:
	@bash scripts/setup.sh

$(BUILD_DIR)/build.ninja: CMakeLists.txt | setup
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

configure: setup $(BUILD_DIR)/build.ninja

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

demo: build
	$(BIN) demo

bench: build
	cmake --build $(BUILD_DIR) -j $(JOBS) --target benchmarks

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer, in its own build
# folder (a separate configuration: slow to build, incremental afterwards). The 5 GiB
# large-stack test is left out for time (ASan shadow memory doubles its footprint).
ASAN_DIR ?= build-asan
asan: setup
	cmake -S . -B $(ASAN_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DISO_BUILD_BENCH=OFF -DISO_MPI=OFF \
	  "-DCMAKE_CXX_FLAGS=-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
	cmake --build $(ASAN_DIR) -j $(JOBS)
	cd $(ASAN_DIR) && ctest --output-on-failure -j $(JOBS) -LE large

# The short fuzz run (a minute per target, clang + libFuzzer; see docs/fuzzing.md).
fuzz:
	bash scripts/fuzz.sh --seconds 60

format:
	clang-format -i $$(git ls-files '*.cpp' '*.h')

clean:
	rm -rf $(BUILD_DIR)
