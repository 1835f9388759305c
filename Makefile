# Bettong build. `make deps` installs what is missing (Debian, root), `make` builds
# build/bettong, `make test` runs the C unit tests and the pytest integration tests,
# `make asan` runs the same suite on an AddressSanitizer + UBSan build.
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
	-DBETTONG_PYTHON='"$(PY_EXE)"' -DBETTONG_PYLIB='"$(REPO)/python"'
LDLIBS_BASE = $(PY_LDLIBS) -luv -llmdb -lz -lcrypto -lm -lpthread

# Every module under src/ except the entry point goes into one static library that
# the binary, the unit tests and the benchmarks link against.
LIB_SRC := $(wildcard src/util/*.c src/net/*.c src/py/*.c src/stream/*.c src/cluster/*.c src/pool/*.c src/tools/*.c src/store/*.c)
LIB_OBJ = $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
MAIN_SRC := $(wildcard src/cmd/*.c)
MAIN_OBJ = $(MAIN_SRC:%.c=$(BUILD)/obj/%.o)
HEADERS := $(wildcard src/*/*.h)

# The Python package's client extension, bettong._bettong: built with the configured
# Python's headers into python/bettong/, from position-independent objects of its own
# (never the binary's objects), without the sanitizers (it loads into a plain python).
EXT_SUFFIX := $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX") or ".so")' 2>/dev/null)
PYEXT := python/bettong/_bettong$(or $(EXT_SUFFIX),.so)
CLIENT_SRC := src/net/sock.c src/net/auth.c src/net/wire.c src/util/buf.c
PYEXT_SRC := python/bettong/_bettong.c src/pool/proto.c $(CLIENT_SRC)
PYEXT_OBJ = $(PYEXT_SRC:%.c=$(BUILD)/pic/%.o)
# The object store's client extension, bettong._store, built the same way.
STOREEXT := $(if $(wildcard python/bettong/_store.c),python/bettong/_store$(or $(EXT_SUFFIX),.so))
STOREEXT_SRC := python/bettong/_store.c $(CLIENT_SRC)
STOREEXT_OBJ = $(STOREEXT_SRC:%.c=$(BUILD)/pic/%.o)
CFLAGS_PIC = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter \
	-Wno-missing-field-initializers $(OPT) -fPIC -fvisibility=hidden -Isrc -I$(PY_INCLUDE)

CTEST_SRC := $(wildcard tests/c/test_*.c)
CTEST_BIN = $(CTEST_SRC:tests/c/%.c=$(BUILD)/tests/%)

.PHONY: all deps test ctest pytest asan demo bench clean install pyext

all: $(BUILD)/bettong $(PYEXT) $(STOREEXT)

pyext: $(PYEXT) $(STOREEXT)

$(BUILD)/obj/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) -c $< -o $@

$(BUILD)/libbettong.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/bettong: $(MAIN_OBJ) $(BUILD)/libbettong.a
	$(CC) $(SAN_FLAGS) -o $@ $(MAIN_OBJ) $(BUILD)/libbettong.a $(LDLIBS_BASE)

$(BUILD)/pic/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_PIC) -c $< -o $@

$(PYEXT): $(PYEXT_OBJ)
	$(CC) -shared -o $@ $(PYEXT_OBJ) -lcrypto -lpthread

$(STOREEXT): $(STOREEXT_OBJ)
	$(CC) -shared -o $@ $(STOREEXT_OBJ) -lcrypto -lpthread

$(BUILD)/tests/%: tests/c/%.c $(BUILD)/libbettong.a $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) -o $@ $< $(BUILD)/libbettong.a $(LDLIBS_BASE) -lcmocka

# Install missing Debian packages. Cheap when everything is present.
DEB_PKGS = build-essential libuv1-dev libcmocka-dev python3-dev python3-pytest \
	python3-cloudpickle liblmdb-dev zlib1g-dev libssl-dev
deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq $$missing; \
	else echo "deps: all present"; fi

ctest: $(CTEST_BIN)
	@set -e; for t in $(CTEST_BIN); do echo "== $$t"; $$t; done

pytest: $(BUILD)/bettong $(PYEXT) $(STOREEXT)
	BETTONG_BIN=$(abspath $(BUILD)/bettong) $(PYTHON) -m pytest -q tests/py $(PYTEST_ARGS)

test: $(BUILD)/bettong ctest pytest

# The same suite on a sanitized build in build-asan/. Python itself is not
# instrumented; its allocations at exit are suppressed in tests/lsan.supp.
asan:
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	LSAN_OPTIONS=suppressions=$(REPO)/tests/lsan.supp:print_suppressions=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer" \
	  SAN_FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined" test

demo: $(BUILD)/bettong
	$(PYTHON) examples/word_count/demo.py --bin $(BUILD)/bettong

bench: $(BUILD)/bettong $(PYEXT)
	$(MAKE) -C bench BETTONG_BUILD=$(abspath $(BUILD)) PYTHON=$(PYTHON)
	$(PYTHON) bench/run_word_count.py --bin $(BUILD)/bettong

# The binary looks for its Python library at <bindir>/../lib/bettong/python. The
# `bettong` package (with its extension) goes where $(PYTHON) imports from (its
# sysconfig 'purelib'), told where the installed binary is by _install.py.
PREFIX ?= /usr/local
install: $(BUILD)/bettong $(PYEXT) $(STOREEXT)
	install -D -m 755 $(BUILD)/bettong $(DESTDIR)$(PREFIX)/bin/bettong
	mkdir -p $(DESTDIR)$(PREFIX)/lib/bettong/python
	cp -r python/wallaroo $(DESTDIR)$(PREFIX)/lib/bettong/python/
	find $(DESTDIR)$(PREFIX)/lib/bettong/python -name __pycache__ -prune -exec rm -rf {} +
	set -e; site="$(DESTDIR)$$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"; \
	  rm -rf "$$site/bettong"; mkdir -p "$$site/bettong"; \
	  cp python/bettong/*.py $(PYEXT) $(STOREEXT) "$$site/bettong/"; \
	  rm -f "$$site/bettong/_install.py"; \
	  printf '# Written by make install.\nBIN = %s\n' "'$(PREFIX)/bin/bettong'" > "$$site/bettong/_install.py"; \
	  echo "installed the bettong package in $$site/bettong"

clean:
	rm -rf build build-asan
	rm -f python/bettong/_bettong*.so python/bettong/_store*.so
