# SPDX-License-Identifier: MIT
#
# kvmm - kernel-style build.
#
#   make            build everything (CUDA parts when nvcc is found)
#   make check      install missing dependencies, build, run the CPU suites
#   make check-gpu  run the GPU suites (skipped, not passed, without a GPU)
#   make check-serve kvmm serve's suite, curl and the openai package
#   make run        generate on the default model (fetched if absent)
#   make eval-frontier  the policies page's measurements (hours; not check)
#   make model      fetch the default model into models/
#   make clean
#
#   V=1             show full commands
#   CUDA=0          CPU-only build; CUDA=1 requires nvcc
#   SAN=1           build with AddressSanitizer and UBSan into build-san/
#   O=dir           build into dir instead (parallel work on one tree)
#   CK_FORK=no      (environment) run Check tests in-process, for gdb/valgrind

ifeq ($(V),1)
Q :=
else
Q := @
MAKEFLAGS += --no-print-directory
endif

CUDA_HOME ?= /usr/local/cuda
NVCC_FOUND := $(shell command -v nvcc 2>/dev/null || \
		(test -x $(CUDA_HOME)/bin/nvcc && echo $(CUDA_HOME)/bin/nvcc))

ifeq ($(CUDA),0)
HAVE_CUDA := 0
else ifeq ($(CUDA),1)
ifeq ($(NVCC_FOUND),)
$(error CUDA=1 but nvcc was not found (set CUDA_HOME or PATH))
endif
HAVE_CUDA := 1
else
HAVE_CUDA := $(if $(NVCC_FOUND),1,0)
endif
NVCC := $(NVCC_FOUND)

# One build folder per configuration, so switching never mixes objects.
ifeq ($(SAN),1)
B := build-san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer \
	    -fno-sanitize-recover=undefined
HAVE_CUDA := 0
else ifeq ($(HAVE_CUDA),1)
B := build
SANFLAGS :=
else
B := build-cpu
SANFLAGS :=
endif

ifneq ($(O),)
B := $(O)
endif

# model/ is split in layers (load, tokenizer, exec, kv, sched); each folder
# holding sources is a module for the build
MODULES := runtime allocator kernels ioctl-shim \
	   model/load model/tokenizer model/exec model/kv model/sched \
	   model/serve model/eval
INCLUDES := $(addprefix -I,$(MODULES)) -Iioctl-shim/uapi

CC ?= gcc
CFLAGS := -std=c11 -D_GNU_SOURCE -O2 -g -pthread -fno-strict-aliasing \
	  -Wall -Wextra -Werror -Wno-missing-field-initializers \
	  -MMD -MP $(INCLUDES) $(SANFLAGS) $(EXTRA_CFLAGS)
LDFLAGS := -pthread $(SANFLAGS)
# liburing, Check, libmicrohttpd and jansson are linked statically: the
# binaries built here run on a GPU machine that has none of them.
# libmicrohttpd's TLS code needs GnuTLS, which is linked dynamically: Debian
# ships no static p11-kit or libunistring, which a static GnuTLS needs;
# libgnutls30 is on every Debian or Ubuntu system (apt itself uses it).
LDLIBS := -Wl,-Bstatic -luring -lmicrohttpd -ljansson -Wl,-Bdynamic \
	  -lgnutls -ldl -lrt -lm
CHECK_LIBS := -Wl,-Bstatic -lcheck -lsubunit -Wl,-Bdynamic

NVFLAGS := -std=c++17 -O3 -g -lineinfo $(INCLUDES) \
	   -gencode arch=compute_90,code=sm_90 \
	   -gencode arch=compute_90,code=compute_90 \
	   -Xcompiler -Wall,-Wextra,-Werror,-fno-strict-aliasing \
	   -Werror all-warnings -MMD -MP

ifeq ($(HAVE_CUDA),1)
CFLAGS += -DKVMM_HAVE_CUDA -I$(CUDA_HOME)/include
NVFLAGS += -DKVMM_HAVE_CUDA
# cudart is linked statically: it loads libcuda itself at run time, so the
# binaries start on a machine with no NVIDIA driver.
LDLIBS += -L$(CUDA_HOME)/lib64 -lcudart_static -lstdc++
# cuBLAS (the CUDA executor's GEMMs) is linked dynamically; the rpath finds
# it on a machine with the toolkit at the same place.
LDLIBS += -lcublas -Wl,-rpath,$(CUDA_HOME)/lib64
endif

# The layers show in the include path: model/ reaches the subsystem only
# through the uapi (ioctl-shim/), and kernels/ are leaves; neither sees an
# allocator header, so including one fails the build.
$(B)/model/%.o $(B)/kernels/%.o: CFLAGS := $(filter-out -Iallocator,$(CFLAGS))
$(B)/model/%.cu.o $(B)/kernels/%.cu.o: NVFLAGS := $(filter-out -Iallocator,$(NVFLAGS))

LIB_C := $(wildcard $(addsuffix /*.c,$(MODULES)))
ifneq ($(HAVE_CUDA),1)
LIB_C := $(filter-out %_cuda.c runtime/cuda.c,$(LIB_C))
LIB_CU :=
else
LIB_CU := $(wildcard $(addsuffix /*.cu,$(MODULES)))
endif
LIB_OBJ := $(LIB_C:%.c=$(B)/%.o) $(LIB_CU:%.cu=$(B)/%.cu.o)

TOOL_OBJ := $(patsubst %.c,$(B)/%.o,$(wildcard tools/*.c))
TEST_C := $(wildcard tests/*.c)
TEST_OBJ := $(TEST_C:%.c=$(B)/%.o)
SUITES := $(patsubst tests/check_%.c,%,$(wildcard tests/check_*.c))

LIB := $(B)/libkvmm.a
KVMM := $(B)/kvmm
CHECK := $(B)/kvmm-check

all: $(KVMM) $(CHECK)

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<

$(B)/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  NVCC    $<")
	$(Q)$(NVCC) $(NVFLAGS) -c -o $@ $<

$(LIB): $(LIB_OBJ)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(KVMM): $(TOOL_OBJ) $(LIB)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $(TOOL_OBJ) $(LIB) $(LDLIBS)

# The runner's suite table is generated from the file names, every run,
# and replaced only when the set of suites changed (a removed suite too).
$(B)/tests/suites.h: FORCE
	@mkdir -p $(dir $@)
	$(Q)( for s in $(SUITES); do echo "KVMM_SUITE($$s)"; done ) > $@.tmp
	$(Q)if cmp -s $@.tmp $@; then rm -f $@.tmp; else \
		$(if $(Q),echo "  GEN     $@";) mv $@.tmp $@; fi

$(B)/tests/runner.o: $(B)/tests/suites.h
$(B)/tests/runner.o: CFLAGS += -I$(B)/tests

$(CHECK): $(TEST_OBJ) $(LIB)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $(TEST_OBJ) $(LIB) $(CHECK_LIBS) $(LDLIBS)

deps:
	$(Q)tools/deps.sh

check: deps
	$(Q)tools/model-fetch.sh || \
		echo "  MODEL   not fetched: the tests that need it are skipped" >&2
	$(Q)$(MAKE) all
	$(Q)mkdir -p $(B)/logs
	$(Q)$(CHECK) --cpu --tap $(B)/logs/check.tap --xml $(B)/logs/check.xml
	$(Q)if command -v python3 >/dev/null; then \
		python3 tests/gguf_quants_test.py --check $(CHECK) && \
		python3 tests/plot_sweep_test.py && \
		python3 tests/plot_serve_test.py && \
		python3 tests/serve_model_test.py && \
		KVMM=$(KVMM) python3 tests/hf_serve_peer_test.py && \
		python3 tests/serve_test.py --quick --kvmm $(KVMM) \
			--pylib $(B)/pylib; \
	else echo "gguf_quants, plot_sweep, plot_serve, serve_model, hf_serve_peer, serve:" \
		"0 passed, 0 failed, 5 skipped (no python3)"; fi

# kvmm serve in full: its C suite, then curl and the openai package (pip
# installs it into $(B)/pylib when absent; skipped, with the reason, when
# pip cannot)
check-serve: all
	$(Q)$(CHECK) serve
	$(Q)python3 tests/serve_test.py --kvmm $(KVMM) --pylib $(B)/pylib

check-gpu: all
	$(Q)mkdir -p $(B)/logs
	$(Q)$(CHECK) --gpu --tap $(B)/logs/check-gpu.tap \
		--xml $(B)/logs/check-gpu.xml

check-san:
	$(Q)$(MAKE) SAN=1 check

# the policies page's measured results (hours on 2 cores; never in check):
# calibration on one half of WikiText-2, evaluation on the other
eval-frontier: all
	$(Q)tools/model-fetch.sh
	$(Q)KVMM=$(KVMM) tools/eval-frontier.sh all

# the default model: SmolLM2-135M-Instruct (Q4_1 GGUF) into models/
model:
	$(Q)tools/model-fetch.sh

# README's first command: build, fetch the model if absent, generate: on the
# GPU when the build has CUDA and a device answers, else on the CPU.
RUN_MODEL := models/SmolLM2-135M-Instruct.Q4_1.gguf
RUN_PROMPT := What are three tips for staying healthy?

run: deps
	$(Q)tools/model-fetch.sh
	$(Q)$(MAKE) all
	$(Q)$(KVMM) generate --model $(RUN_MODEL) --chat --prompt "$(RUN_PROMPT)"

clean:
	$(Q)rm -rf build build-cpu build-san build-fuzz

.PHONY: all deps check check-gpu check-serve check-san run model clean \
	eval-frontier FORCE

FORCE:

# fuzz targets (tools/fuzz.mk) when present
-include tools/fuzz.mk

-include $(LIB_OBJ:.o=.d) $(TOOL_OBJ:.o=.d) $(TEST_OBJ:.o=.d)
