# lsst — one build for everything. `make` builds bin/*, `make test` runs the suite,
# `make deps` installs Debian/Ubuntu packages, `make demo` runs the quickstart.
# Dependencies come through pkg-config; MPI through the ompi-c pkg-config module.

CC        ?= gcc
PKG_CONFIG ?= pkg-config
# HDF5: Debian/Ubuntu name the serial build hdf5-serial; most other systems hdf5.
HDF5_PKG  ?= $(shell $(PKG_CONFIG) --exists hdf5-serial 2>/dev/null && echo hdf5-serial || echo hdf5)
PKGS      := $(HDF5_PKG) yaml-0.1 libarchive libcrypto
# OpenBLAS: the OpenMP build when present (Debian: libopenblas-openmp-dev), so BLAS and
# our OpenMP kernels share one thread pool; the pthread build's spinning threads and
# OpenMP's fight over the cores (measured: 8x slower training steps on 2 cores).
MULTIARCH := $(shell $(CC) -print-multiarch 2>/dev/null)
OPENBLAS_OMP := /usr/lib/$(MULTIARCH)/openblas-openmp
ifneq ($(wildcard $(OPENBLAS_OMP)/pkgconfig/openblas.pc),)
BLAS_CFLAGS := $(shell PKG_CONFIG_PATH=$(OPENBLAS_OMP)/pkgconfig $(PKG_CONFIG) --cflags openblas)
BLAS_LIBS   := $(shell PKG_CONFIG_PATH=$(OPENBLAS_OMP)/pkgconfig $(PKG_CONFIG) --libs openblas) -Wl,-rpath,$(OPENBLAS_OMP)
else
BLAS_CFLAGS := $(shell $(PKG_CONFIG) --cflags openblas 2>/dev/null)
BLAS_LIBS   := $(shell $(PKG_CONFIG) --libs openblas 2>/dev/null)
endif
MPI_PKG   ?= ompi-c
CUDA_HOME ?= /usr/local/cuda
NVCC      ?= $(CUDA_HOME)/bin/nvcc
# 90 builds sm_90a (H100/H200 with Hopper's wgmma attention kernels; an sm_90a binary runs on sm_90 only).
CUDA_ARCH ?= 80 90
# Output folders (overridable so several builds can share one checkout).
BUILD     ?= build
BIN       ?= bin

GIT_DESC  := $(shell git describe --always --dirty 2>/dev/null || echo unknown)
VERSION   := 0.1.0

WARN      := -Wall -Wextra -Werror
PKG_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(PKGS) $(MPI_PKG) 2>/dev/null) $(BLAS_CFLAGS)
PKG_LIBS   := $(shell $(PKG_CONFIG) --libs $(PKGS) $(MPI_PKG) 2>/dev/null) $(BLAS_LIBS)
CFLAGS    ?= -O2 -g
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) -fopenmp -Itools/lib -Ikernels -Iruntime \
              -DLSST_VERSION='"$(VERSION)"' $(PKG_CFLAGS) $(CFLAGS)
LDLIBS    := $(PKG_LIBS) -fopenmp -lm
SAN       := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

LIB_SRC   := $(wildcard tools/lib/*.c)
KERN_SRC  := $(wildcard kernels/cpu/*.c)
RT_SRC    := $(filter-out runtime/main.c,$(wildcard runtime/*.c))
CORE_SRC  := $(LIB_SRC) $(KERN_SRC) $(RT_SRC)
TOOL_SRC  := $(wildcard tools/lsst-*.c)
TOOLS     := $(patsubst tools/%.c,$(BIN)/%,$(TOOL_SRC))
PROGRAMS  := $(TOOLS) $(if $(wildcard runtime/main.c),$(BIN)/lsst-run)
UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BIN  := $(patsubst tests/unit/%.c,$(BUILD)/asan/tests/%,$(UNIT_SRC))
MPI_TEST_SRC := $(wildcard tests/mpi/test_*.c)
MPI_TESTS := $(patsubst tests/mpi/%.c,$(BUILD)/mpi/%,$(MPI_TEST_SRC))

ifeq ($(CUDA),1)
CU_SRC    := $(wildcard kernels/cuda/*.cu)
CU_OBJ    := $(patsubst %.cu,$(BUILD)/%.o,$(CU_SRC))
ALL_CFLAGS += -DLSST_CUDA -I$(CUDA_HOME)/include
LDLIBS    += -L$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lcudart -lnccl -lstdc++
NVFLAGS   := -O3 -std=c++17 $(foreach a,$(CUDA_ARCH:90=90a),-gencode arch=compute_$(a),code=sm_$(a)) \
             -Ikernels -Xcompiler -Wall,-Wextra,-Werror
endif

# Static archives, so each program pulls only the objects it uses (tools never carry the runtime).
ARCHIVES  := $(BUILD)/libruntime.a $(BUILD)/libkernels.a $(BUILD)/liblsst.a
ASAN_ARCH := $(patsubst $(BUILD)/%,$(BUILD)/asan/%,$(ARCHIVES))

.PHONY: all test check-asan unit deps demo clean bench print-blas gpu-tests gpu-tests-need-cuda
all: $(PROGRAMS)

# Kernels are the hot loops: -O3 lets gcc vectorize them (simd pragmas need -fopenmp-simd, on with -fopenmp).
$(BUILD)/kernels/%.o $(BUILD)/asan/kernels/%.o: ALL_CFLAGS += -O3

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/asan/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(SAN) -MMD -MP -c $< -o $@

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -MMD -MP -c $< -o $@

# The git commit, regenerated on every build but rewritten only when it changed, so
# every program of one build reports the same commit (lsst_git() in common.h).
$(BUILD)/version.c: FORCE
	@mkdir -p $(dir $@)
	@printf 'const char *lsst_git(void) { return "%s"; }\n' '$(GIT_DESC)' > $@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv -f $@.tmp $@; fi
$(BUILD)/version.o $(BUILD)/asan/version.o: $(BUILD)/version.c
	$(CC) $(ALL_CFLAGS) -c $< -o $@
.PHONY: FORCE
FORCE:

$(BUILD)/liblsst.a: $(patsubst %.c,$(BUILD)/%.o,$(LIB_SRC)) $(BUILD)/version.o
$(BUILD)/libkernels.a: $(patsubst %.c,$(BUILD)/%.o,$(KERN_SRC)) $(CU_OBJ)
$(BUILD)/libruntime.a: $(patsubst %.c,$(BUILD)/%.o,$(RT_SRC))
$(BUILD)/asan/liblsst.a: $(patsubst %.c,$(BUILD)/asan/%.o,$(LIB_SRC)) $(BUILD)/version.o
$(BUILD)/asan/libkernels.a: $(patsubst %.c,$(BUILD)/asan/%.o,$(KERN_SRC))
$(BUILD)/asan/libruntime.a: $(patsubst %.c,$(BUILD)/asan/%.o,$(RT_SRC))
%.a:
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BIN)/lsst-%: $(BUILD)/tools/lsst-%.o $(ARCHIVES)
	@mkdir -p $(BIN)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)

$(BIN)/lsst-run: $(BUILD)/runtime/main.o $(ARCHIVES)
	@mkdir -p $(BIN)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/asan/tests/%: $(BUILD)/asan/tests/unit/%.o $(ASAN_ARCH)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(SAN) -o $@ $^ $(LDLIBS)

# Multi-rank test programs (run by tests/mpi/*.bats under mpirun; no sanitizers: Open MPI
# is not ASan-clean).
$(BUILD)/mpi/%: tests/mpi/%.c $(ARCHIVES)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -o $@ $< $(ARCHIVES) $(LDLIBS)

unit: $(UNIT_BIN)

# The whole suite: C unit tests under ASan/UBSan, bats CLI tests, multi-rank MPI tests,
# real-Slurm tests (skipped with a reason when no cluster answers), the CUDA kernels' device
# code in the CPU emulator (skipped without the CUDA headers). Last line: N passed, N failed.
test: all unit $(MPI_TESTS)
	@BUILD=$(BUILD) LSST_BIN=$(abspath $(BIN)) tests/run.sh

check-asan: unit
	@BUILD=$(BUILD) LSST_BIN=$(abspath $(BIN)) tests/run.sh unit

bench: all
	@tests/bench/run.sh

# The GPU test programs (CUDA=1): the kernel test against the CPU twins and the attention
# benchmark. tests/gpu/run.sh runs them on a GPU; CI builds them (a broken test fails there,
# not in a GPU session).
comma := ,
GPU_TESTS := $(BUILD)/tests/gpu/test_cuda_kernels $(BUILD)/tests/bench/gpu/attn_bench \
             $(BUILD)/tests/bench/gpu/layers_bench
gpu-tests: $(if $(filter 1,$(CUDA)),$(GPU_TESTS),gpu-tests-need-cuda)
gpu-tests-need-cuda:
	@echo "make gpu-tests: build with CUDA=1" >&2; exit 2
$(BUILD)/tests/gpu/test_cuda_kernels: tests/gpu/test_cuda_kernels.cu tests/gpu/test_util.h $(BUILD)/libkernels.a
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -Xcompiler -fopenmp $< $(BUILD)/libkernels.a $(subst -Wl$(comma),-Xlinker ,$(BLAS_LIBS)) \
	    -lcublasLt -lcublas -lgomp -lm -o $@
$(BUILD)/tests/bench/gpu/%: tests/bench/gpu/%.cu tests/gpu/test_util.h $(BUILD)/libkernels.a
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -Itests/gpu $< $(BUILD)/libkernels.a -lcublasLt -lcublas -lm -o $@

# The OpenBLAS this build links, for scripts that compile against the same one:
#   eval "$(make -s --no-print-directory print-blas)"   ->   blas_cflags, blas_libs
print-blas:
	@printf "blas_cflags='%s'\nblas_libs='%s'\n" '$(BLAS_CFLAGS)' '$(BLAS_LIBS)'

deps:
	@tests/deps.sh

demo:
	@tests/demo.sh

clean:
	rm -rf $(BUILD) $(BIN)

.SECONDARY:
-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
