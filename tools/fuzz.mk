# SPDX-License-Identifier: MIT
#
# libFuzzer harness of the kvmm uapi (tests/fuzz/), included by the Makefile.
#
#   make fuzz-ci              bounded run: fixed seed, FUZZ_CI_RUNS inputs
#   make fuzz FUZZ_RUNS=n     long run of n inputs (0: until stopped), or
#   make fuzz FUZZ_IOCTLS=n   until n ioctls are made; corpus kept in
#                             build-fuzz/corpus/, stats in build-fuzz/stats.txt
#   make fuzz-request         long run of kvmm serve's request parser
#                             (FUZZ_RUNS=n; corpus in build-fuzz/)
#   make check-ci             what .ci/run runs after `make check`
#
# clang builds the sources the harness needs (runtime, allocator,
# ioctl-shim, the kernels' CPU eviction; CPU only, host backend) into build-fuzz/ with ASan, UBSan and
# libFuzzer's coverage instrumentation.

FUZZ_B := build-fuzz
FUZZ_CC ?= clang
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined \
	    -fno-omit-frame-pointer
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -O1 -g -pthread -fno-strict-aliasing \
	       -Wall -Wextra -Werror -Wno-missing-field-initializers -MMD -MP \
	       -Iruntime -Iallocator -Ikernels -Iioctl-shim -Iioctl-shim/uapi \
	       $(FUZZ_SAN)
# the shim's EVICT runs the kernels' CPU eviction (kernels/evict.c), which
# reads the pages through kernels/quant.c's formats (and its F16C probe,
# kernels/cpu.c)
FUZZ_SRC := $(filter-out runtime/cuda.c %_cuda.c, \
	      $(wildcard runtime/*.c allocator/*.c ioctl-shim/*.c)) \
	    kernels/evict.c kernels/quant.c kernels/cpu.c kernels/dtype.c \
	    kernels/migrate.c
FUZZ_OBJ := $(FUZZ_SRC:%.c=$(FUZZ_B)/%.o)
FUZZ_BIN := $(FUZZ_B)/fuzz_uapi
FUZZ_CORPUS := tests/fuzz/corpus
FUZZ_CI_RUNS ?= 50000
FUZZ_CI_SEED ?= 1
FUZZ_RUNS ?= 0
FUZZ_IOCTLS ?= 0
FUZZ_OPTS := -artifact_prefix=$(FUZZ_B)/ -max_len=4096 -print_final_stats=1 -detect_leaks=1 \
	     -timeout=30 -rss_limit_mb=4096

# Comparison tracing (what lets libFuzzer solve the driver's checks) in
# ioctl-shim/ and the harness only: in the allocator's and the runtime's
# loops, which the harness's invariant checks run after every call, it
# costs most of the time and finds nothing an edge does not.
FUZZ_NOCMP := -fno-sanitize-coverage=trace-cmp

$(FUZZ_B)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CLANG   $<")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link \
		$(FUZZ_NOCMP) -c -o $@ $<

$(FUZZ_B)/tests/fuzz/fuzz_uapi.o: tests/fuzz/fuzz_uapi.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CLANG   $<")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -c -o $@ $<

$(FUZZ_BIN): $(FUZZ_OBJ) $(FUZZ_B)/tests/fuzz/fuzz_uapi.o
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -pthread -o $@ $^ \
		-Wl,-Bstatic -luring -Wl,-Bdynamic -ldl -lrt -lm

# the request parser of kvmm serve: model/serve/request.c over jansson
FUZZ_REQ_BIN := $(FUZZ_B)/fuzz_request
FUZZ_REQ_CORPUS := tests/fuzz/corpus-request
FUZZ_REQ_CI_RUNS ?= 300000

$(FUZZ_B)/model/serve/request.o: FUZZ_NOCMP :=
$(FUZZ_B)/tests/fuzz/fuzz_request.o: tests/fuzz/fuzz_request.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CLANG   $<")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -Imodel/serve -fsanitize=fuzzer -c -o $@ $<

$(FUZZ_REQ_BIN): $(FUZZ_B)/model/serve/request.o \
		 $(FUZZ_B)/tests/fuzz/fuzz_request.o
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -pthread -o $@ $^ \
		-Wl,-Bstatic -ljansson -Wl,-Bdynamic

fuzz-build: $(FUZZ_BIN) $(FUZZ_REQ_BIN)

# Bounded: a fixed seed over the checked-in seeds; the corpus grown on the
# way goes to a scratch folder, so the run is the same every time.
fuzz-ci: $(FUZZ_BIN) $(FUZZ_REQ_BIN)
	$(Q)rm -rf $(FUZZ_B)/ci-corpus && mkdir -p $(FUZZ_B)/ci-corpus
	$(Q)FUZZ_STATS=$(FUZZ_B)/ci-stats.txt $(FUZZ_BIN) $(FUZZ_OPTS) \
		-seed=$(FUZZ_CI_SEED) -runs=$(FUZZ_CI_RUNS) \
		$(FUZZ_B)/ci-corpus $(FUZZ_CORPUS)
	$(Q)cat $(FUZZ_B)/ci-stats.txt
	$(Q)rm -rf $(FUZZ_B)/ci-corpus-request && \
		mkdir -p $(FUZZ_B)/ci-corpus-request
	$(Q)$(FUZZ_REQ_BIN) $(FUZZ_OPTS) -seed=$(FUZZ_CI_SEED) \
		-runs=$(FUZZ_REQ_CI_RUNS) $(FUZZ_B)/ci-corpus-request \
		$(FUZZ_REQ_CORPUS) > $(FUZZ_B)/ci-request.log 2>&1; \
		st=$$?; tail -8 $(FUZZ_B)/ci-request.log; exit $$st

# long run of the request parser (FUZZ_RUNS=n, 0: until stopped)
fuzz-request: $(FUZZ_REQ_BIN)
	$(Q)mkdir -p $(FUZZ_B)/corpus-request
	$(Q)$(FUZZ_REQ_BIN) $(FUZZ_OPTS) \
		-runs=$(if $(filter 0,$(FUZZ_RUNS)),-1,$(FUZZ_RUNS)) \
		$(FUZZ_B)/corpus-request $(FUZZ_REQ_CORPUS)

fuzz: $(FUZZ_BIN)
	$(Q)mkdir -p $(FUZZ_B)/corpus
	$(Q)FUZZ_STATS=$(FUZZ_B)/stats.txt FUZZ_IOCTLS=$(FUZZ_IOCTLS) \
		$(FUZZ_BIN) $(FUZZ_OPTS) \
		-runs=$(if $(filter 0,$(FUZZ_RUNS)),-1,$(FUZZ_RUNS)) \
		$(FUZZ_B)/corpus $(FUZZ_CORPUS)
	$(Q)cat $(FUZZ_B)/stats.txt

# CI after `make check` (see .ci/run): the sanitizer build of the whole
# suite, the bounded fuzz run, the example.
check-ci: check-san fuzz-ci example

EXAMPLE := $(B)/uapi_example
$(EXAMPLE): Documentation/uapi/example.c $(LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

example: $(EXAMPLE)
	$(Q)$(EXAMPLE)

.PHONY: fuzz fuzz-ci fuzz-build fuzz-request check-ci example

-include $(FUZZ_OBJ:.o=.d) $(FUZZ_B)/tests/fuzz/fuzz_uapi.d \
	$(FUZZ_B)/model/serve/request.d $(FUZZ_B)/tests/fuzz/fuzz_request.d
