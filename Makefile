# Bettong build. `make deps` installs what is missing (Debian, root), `make` builds
# build/bettong, `make test` runs the C unit tests and the pytest integration tests,
# `make asan` runs the same suite on an AddressSanitizer + UBSan build; `make fuzz`
# builds the libFuzzer harnesses of fuzz/ with clang, `make fuzz-smoke` runs each
# for a few seconds (part of `make test`; see docs/fuzzing.md).
#
# PYTHON selects the interpreter the engine embeds (default: the system one). Every
# variable that asks Python or pkg-config is recursively expanded, so it is only
# evaluated when a recipe runs: `make deps test` works on a machine without the
# headers yet.

PYTHON ?= /usr/bin/python3
CC ?= cc
BUILD ?= build
SAN_FLAGS ?=
OPT ?= -O2 -g

include mk/python.mk

REPO := $(abspath .)
CFLAGS_BASE = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter \
	-Wno-missing-field-initializers $(OPT) $(SAN_FLAGS) -Isrc -I$(PY_INCLUDE) \
	-DBETTONG_PYTHON='"$(PY_EXE)"' -DBETTONG_PYLIB='"$(REPO)/python"' \
	-DBETTONG_EXT_SUFFIX='"$(or $(EXT_SUFFIX),.so)"' -DBETTONG_PURELIB='"$(PY_PURELIB)"' \
	$(if $(SAN_FLAGS),-DBETTONG_WORKER_EMBEDDED_ONLY)
LDLIBS_BASE = $(PY_LDLIBS) -luv -llmdb -lz -lssl -lcrypto -lhiredis -lm -lpthread

# Every module under src/ except the entry point goes into one static library that
# the binary, the unit tests and the benchmarks link against.
LIB_SRC := $(wildcard src/util/*.c src/net/*.c src/py/*.c src/stream/*.c src/cluster/*.c src/pool/*.c src/tools/*.c src/store/*.c)
LIB_OBJ = $(LIB_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/gen/webassets.o
# The dashboard's static files (web/dashboard/), turned into C by mk/embed.sh
# (sh and od; nothing fetched) and built into the library (net/webassets.h).
WEB_ASSETS := $(sort $(wildcard web/dashboard/*.html web/dashboard/*.js web/dashboard/*.css))
MAIN_SRC := $(wildcard src/cmd/*.c)
MAIN_OBJ = $(MAIN_SRC:%.c=$(BUILD)/obj/%.o)
HEADERS := $(wildcard src/*/*.h)

# The Python package's client extension, bettong._bettong: built with the configured
# Python's headers into python/bettong/, from position-independent objects of its own
# (never the binary's objects), without the sanitizers (it loads into a plain python).
EXT_SUFFIX := $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX") or ".so")' 2>/dev/null)
PYEXT := python/bettong/_bettong$(or $(EXT_SUFFIX),.so)
CLIENT_SRC := python/bettong/_connerr.c src/net/sock.c src/net/bconn.c src/net/tls.c src/net/auth.c \
	src/net/wire.c src/util/buf.c
PYEXT_SRC := python/bettong/_bettong.c python/bettong/_hot.c src/pool/proto.c src/pool/shm.c \
	src/pool/shmspare.c src/py/mapped.c src/util/idmap.c src/util/hash.c $(CLIENT_SRC)
PYEXT_OBJ = $(PYEXT_SRC:%.c=$(BUILD)/pic/%.o)
# The object store's client extension, bettong._store, built the same way.
STOREEXT := $(if $(wildcard python/bettong/_store.c),python/bettong/_store$(or $(EXT_SUFFIX),.so))
STOREEXT_SRC := python/bettong/_store.c $(CLIENT_SRC)
STOREEXT_OBJ = $(STOREEXT_SRC:%.c=$(BUILD)/pic/%.o)
# The pool's worker process hosted by the python3 executable, bettong._wproc
# (src/pool/wproc.h: user code then runs on python3's own interpreter build,
# PGO + LTO on Debian, not the static libpython's code), built the same way.
WPROCEXT := python/bettong/_wproc$(or $(EXT_SUFFIX),.so)
WPROCEXT_SRC := python/bettong/_wproc.c src/pool/wproc.c src/pool/wrun.c src/pool/wio.c \
	src/pool/proto.c src/pool/subcall.c src/py/bridge.c src/util/log.c src/util/idmap.c \
	src/util/hash.c src/net/sock.c src/net/bconn.c src/net/tls.c src/net/auth.c src/net/wire.c \
	src/util/buf.c src/pool/shm.c src/pool/tmplfork.c src/util/sigreset.c src/py/hugealloc.c \
	src/py/arenas.c src/py/mapped.c src/py/shmblock.c \
	src/pool/preader.c src/pool/shmspare.c
WPROCEXT_OBJ = $(WPROCEXT_SRC:%.c=$(BUILD)/pic/%.o)
CFLAGS_PIC = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter \
	-Wno-missing-field-initializers $(OPT) -fPIC -fvisibility=hidden -Isrc -I$(PY_INCLUDE) \
	-DBETTONG_PYTHON='"$(PY_EXE)"' -DBETTONG_PYLIB='"$(REPO)/python"'

CTEST_SRC := $(wildcard tests/c/test_*.c)
CTEST_BIN = $(CTEST_SRC:tests/c/%.c=$(BUILD)/tests/%)

.PHONY: all deps test ctest pytest asan demo bench clean install pyext fuzz fuzz-smoke

all: $(BUILD)/bettong $(PYEXT) $(STOREEXT) $(WPROCEXT) $(BUILD)/pyc.stamp

# The package's modules byte-compiled, as an installed package's are: without
# them every start of a client or worker compiles what it imports (when
# PYTHONDONTWRITEBYTECODE is set, or the tree is read-only).
$(BUILD)/pyc.stamp: $(wildcard python/bettong/*.py)
	@mkdir -p $(BUILD)
	$(PYTHON) -m compileall -q python/bettong
	@touch $@

pyext: $(PYEXT) $(STOREEXT) $(WPROCEXT)

$(BUILD)/obj/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) -c $< -o $@

$(BUILD)/gen/webassets.c: $(WEB_ASSETS) mk/embed.sh
	@mkdir -p $(dir $@)
	sh mk/embed.sh $@ $(WEB_ASSETS)

$(BUILD)/obj/gen/webassets.o: $(BUILD)/gen/webassets.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) -c $< -o $@

$(BUILD)/libbettong.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/bettong: $(MAIN_OBJ) $(BUILD)/libbettong.a
	$(CC) $(SAN_FLAGS) -o $@ $(MAIN_OBJ) $(BUILD)/libbettong.a $(LDLIBS_BASE)

$(BUILD)/pic/%.o: %.c $(HEADERS) $(wildcard python/bettong/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_PIC) -c $< -o $@

$(PYEXT): $(PYEXT_OBJ)
	$(CC) -shared -o $@ $(PYEXT_OBJ) -lssl -lcrypto -lpthread

$(STOREEXT): $(STOREEXT_OBJ)
	$(CC) -shared -o $@ $(STOREEXT_OBJ) -lssl -lcrypto -lpthread

# Loaded once here: a C file missing from WPROCEXT_SRC is an undefined symbol
# that would otherwise show only when a pool starts its workers.
$(WPROCEXT): $(WPROCEXT_OBJ)
	$(CC) -shared -o $@ $(WPROCEXT_OBJ) -lssl -lcrypto -lpthread
	@$(PYTHON) -c 'import importlib.util as u, sys; \
		s = u.spec_from_file_location("bettong._wproc", sys.argv[1]); \
		s.loader.exec_module(u.module_from_spec(s))' $@ || { rm -f $@; exit 1; }

$(BUILD)/tests/%: tests/c/%.c $(BUILD)/libbettong.a $(HEADERS) $(wildcard tests/c/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) -o $@ $< $(BUILD)/libbettong.a $(LDLIBS_BASE) -lcmocka

# Install missing Debian packages. Cheap when everything is present.
# clang and libclang-rt-14-dev (libFuzzer's runtime, which clang-14 does not pull
# in) are for `make fuzz`; libhiredis-dev for the store's --metadata (a service
# of several backends), whose tests start their own redis-server; python3-yaml
# for the `lithops` package's reading of Lithops' YAML config files, python3-boto3
# for its S3 storage backends, whose tests run a local S3 server (s3rver, from
# the npm registry with the npm of nodejs, installed in $(BUILD)/npm); prometheus
# for tests/py/test_metrics.py, which scrapes a running cluster with a real server;
# chromium, chromium-driver and python3-selenium for tests/py/test_dashboard.py,
# which loads the dashboard in a headless browser.
DEB_PKGS = build-essential libuv1-dev libcmocka-dev python3-dev python3-pytest \
	python3-cloudpickle liblmdb-dev zlib1g-dev libssl-dev clang libclang-rt-14-dev \
	libhiredis-dev redis-server python3-yaml python3-boto3 nodejs prometheus \
	chromium chromium-driver python3-selenium
S3RVER = $(BUILD)/npm/node_modules/.bin/s3rver

deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq $$missing; \
	else echo "deps: all present"; fi
	@$(MAKE) --no-print-directory $(S3RVER)

# The test servers from the npm registry, at the versions of the committed
# lockfile (tests/npm), in $(BUILD)/npm.
$(S3RVER): tests/npm/package.json tests/npm/package-lock.json
	@mkdir -p $(BUILD)/npm
	cp tests/npm/package.json tests/npm/package-lock.json $(BUILD)/npm/
	cd $(BUILD)/npm && npm ci --no-audit --no-fund --silent
	@touch $@

ctest: $(CTEST_BIN)
	@set -e; for t in $(CTEST_BIN); do echo "== $$t"; $$t; done

pytest: $(BUILD)/bettong $(PYEXT) $(STOREEXT) $(WPROCEXT)
	BETTONG_BIN=$(abspath $(BUILD)/bettong) $(PYTHON) -m pytest -q tests/py $(PYTEST_ARGS)

# The fuzz smoke run comes after the other tests, not beside them under -j (it
# keeps both cores busy, and some integration tests measure time). Skipped on
# the sanitized build (`make asan`): the harnesses are sanitized already.
test: $(BUILD)/bettong ctest pytest
	$(if $(SAN_FLAGS),,$(MAKE) fuzz-smoke)

# The same suite on a sanitized build in build-asan/. Python itself is not
# instrumented; its allocations at exit are suppressed in tests/lsan.supp.
asan:
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	LSAN_OPTIONS=suppressions=$(REPO)/tests/lsan.supp:print_suppressions=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer" \
	  SAN_FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined" test

# ---- fuzzing (docs/fuzzing.md) ----
# One libFuzzer harness per fuzz/fuzz_<target>.c, linked with the sources in
# FUZZ_SRC_<target> (compiled again by clang into build-fuzz/, never the gcc
# objects) and FUZZ_LIBS_<target>. Seeds in fuzz/corpus/<target>/ (from
# fuzz/make_seeds.py), crash inputs kept in fuzz/regress/<target>/.
FUZZ_CC ?= clang
FUZZ_BUILD ?= build-fuzz
FUZZ_SAN = -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter \
	-Wno-missing-field-initializers -O1 -g -fno-omit-frame-pointer $(FUZZ_SAN) \
	-fsanitize=fuzzer-no-link -Isrc -I$(PY_INCLUDE) -DBETTONG_PYTHON='"$(PY_EXE)"'
FUZZ_TARGETS = frame wire msgcodec store_req pool_calls hello auth pickrefs http promparse
# fuzz_auth: the challenge-response handshake (net/auth.c), the blocking client's
# frame reader and handshake (net/sock.c) and the identity decoders; cproto.c
# for cl_get_identity (its connection calls are faked in the harness).
FUZZ_SRC_auth = src/net/auth.c src/net/sock.c src/net/wire.c src/util/buf.c \
	src/cluster/cproto.c src/net/authconn.c src/net/addr.c src/util/log.c
FUZZ_LIBS_auth = -lcrypto
FUZZ_SRC_frame = src/net/frame.c src/util/buf.c
FUZZ_SRC_wire = src/net/wire.c src/util/buf.c
FUZZ_SRC_msgcodec = src/py/msgcodec.c src/util/buf.c
FUZZ_LIBS_msgcodec = $(PY_LDLIBS)
FUZZ_SRC_store_req = src/store/sreq.c src/store/sreply.c src/net/wire.c src/util/buf.c
FUZZ_SRC_pool_calls = src/pool/calls.c src/net/wire.c src/util/buf.c
FUZZ_SRC_pickrefs = src/store/pickrefs.c
# fuzz_http: the metrics endpoint's request parser and label escaping.
FUZZ_SRC_http = src/net/httpd.c src/net/addr.c src/util/metrics.c src/util/buf.c src/util/log.c
FUZZ_LIBS_http = -luv -lm
# fuzz_promparse: `bettong top`'s parser of the text format and its quantiles,
# and its reading of an HTTP answer (scrape.c, which links the blocking client
# of net/sock.c); metrics.c writes the parsed document back for the round trip.
FUZZ_SRC_promparse = src/util/promparse.c src/tools/topcalc.c src/tools/scrape.c \
	src/util/metrics.c src/net/sock.c src/net/auth.c src/net/wire.c src/util/buf.c src/util/log.c
FUZZ_LIBS_promparse = -lm -lcrypto
FUZZ_SRC_hello = src/cluster/cproto.c src/net/addr.c src/net/frame.c src/net/wire.c \
	src/net/auth.c src/net/authconn.c \
	src/store/sconn.c src/store/sreq.c src/store/sreply.c \
	src/pool/peer.c src/pool/sched.c src/pool/blob.c src/pool/calls.c \
	src/pool/lend.c src/pool/subcall.c src/pool/spawn.c src/pool/shm.c \
	src/util/buf.c src/util/hash.c src/util/idmap.c src/util/log.c src/util/sigreset.c
FUZZ_LIBS_hello = -luv -lcrypto
FUZZ_BIN = $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)
FUZZ_SMOKE_SECONDS ?= 5

fuzz: $(FUZZ_BIN)

$(FUZZ_BUILD)/obj/%.o: %.c $(HEADERS) $(wildcard fuzz/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@

define FUZZ_RULE
$(FUZZ_BUILD)/fuzz_$(1): $(FUZZ_BUILD)/obj/fuzz/fuzz_$(1).o $$(FUZZ_SRC_$(1):%.c=$(FUZZ_BUILD)/obj/%.o)
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $$@ $$^ $$(FUZZ_LIBS_$(1))
endef
$(foreach t,$(FUZZ_TARGETS),$(eval $(call FUZZ_RULE,$(t))))

# Per target: replay every regression input, then fuzz for FUZZ_SMOKE_SECONDS
# from the seeds (new inputs go to a scratch directory, not to fuzz/corpus).
# Fails on any crash, leak, sanitizer report or timeout.
fuzz-smoke: $(FUZZ_BIN)
	@set -e; for t in $(FUZZ_TARGETS); do \
	  bin=$(FUZZ_BUILD)/fuzz_$$t; work=$(FUZZ_BUILD)/work/$$t; log=$(FUZZ_BUILD)/smoke-$$t.log; \
	  rm -rf $$work; mkdir -p $$work; \
	  regs=$$(find fuzz/regress/$$t -type f ! -name 'README*' 2>/dev/null | sort); \
	  if [ -n "$$regs" ]; then \
	    $$bin $$regs > $$log 2>&1 || { tail -40 $$log; echo "fuzz_$$t: a regression input fails"; exit 1; }; \
	  fi; \
	  $$bin -max_total_time=$(FUZZ_SMOKE_SECONDS) -timeout=10 -max_len=4096 \
	    -artifact_prefix=$(FUZZ_BUILD)/crash-$$t- $$work fuzz/corpus/$$t \
	    > $$log 2>&1 || { tail -40 $$log; echo "fuzz_$$t: crashed (input saved as $(FUZZ_BUILD)/crash-$$t-*)"; exit 1; }; \
	  echo "fuzz_$$t: $$(echo $$regs | wc -w) regression inputs pass, $$(grep -o 'Done [0-9]* runs' $$log)"; \
	done

demo: $(BUILD)/bettong
	$(PYTHON) examples/word_count/demo.py --bin $(BUILD)/bettong

bench: $(BUILD)/bettong $(PYEXT)
	$(MAKE) -C bench BETTONG_BUILD=$(abspath $(BUILD)) PYTHON=$(PYTHON)
	$(PYTHON) bench/run_word_count.py --bin $(BUILD)/bettong

# The binary looks for its Python library at <bindir>/../lib/bettong/python. The
# `bettong` package (with its extension) goes where $(PYTHON) imports from (its
# sysconfig 'purelib'), told where the installed binary is by _install.py, and so
# do the Lithops and PyWren compatibility packages (`lithops`, `pywren_ibm_cloud`).
PREFIX ?= /usr/local
install: $(BUILD)/bettong $(PYEXT) $(STOREEXT) $(WPROCEXT)
	install -D -m 755 $(BUILD)/bettong $(DESTDIR)$(PREFIX)/bin/bettong
	mkdir -p $(DESTDIR)$(PREFIX)/lib/bettong/python
	cp -r python/wallaroo $(DESTDIR)$(PREFIX)/lib/bettong/python/
	find $(DESTDIR)$(PREFIX)/lib/bettong/python -name __pycache__ -prune -exec rm -rf {} +
	set -e; site="$(DESTDIR)$$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"; \
	  rm -rf "$$site/bettong"; mkdir -p "$$site/bettong"; \
	  cp python/bettong/*.py $(PYEXT) $(STOREEXT) $(WPROCEXT) "$$site/bettong/"; \
	  rm -f "$$site/bettong/_install.py"; \
	  printf '# Written by make install.\nBIN = %s\n' "'$(PREFIX)/bin/bettong'" > "$$site/bettong/_install.py"; \
	  echo "installed the bettong package in $$site/bettong"; \
	  for pkg in lithops pywren_ibm_cloud; do \
	    rm -rf "$$site/$$pkg"; cp -r python/$$pkg "$$site/$$pkg"; \
	    find "$$site/$$pkg" -name __pycache__ -prune -exec rm -rf {} +; \
	  done; \
	  echo "installed the lithops and pywren_ibm_cloud compatibility packages in $$site"

clean:
	rm -rf build build-asan build-fuzz
	rm -f python/bettong/_bettong*.so python/bettong/_store*.so python/bettong/_wproc*.so
