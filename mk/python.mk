# How to compile and link against the embedded interpreter, shared by the top
# Makefile and bench/Makefile. Recursively expanded: evaluated only when used.
#
# The engine links the interpreter's static library when it has one (Debian's
# libpython3.X.a): /usr/bin/python3 itself is linked that way, and the shared
# libpython is position-independent code that runs Python 10-30 % slower.
# PY_STATIC=0 forces the shared library.

PY_STATIC ?= 1
PY_CONFIG = $(PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("$(1)") or "")'
PY_INCLUDE = $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
# Where `make install` puts the bettong package (the installed binary's pool looks
# there for the worker extension, src/pool/spawn.c).
PY_PURELIB = $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
PY_EXE = $(shell $(PYTHON) -c 'import sys; print(sys.executable)')
PY_STATIC_LIB = $(shell $(PYTHON) -c 'import os, sysconfig as s; \
	p = os.path.join(s.get_config_var("LIBPL") or "", s.get_config_var("LIBRARY") or ""); \
	print(p if os.path.isfile(p) and p.endswith(".a") else "")')
PY_LDLIBS_SHARED = -L$(shell $(call PY_CONFIG,LIBDIR)) -Wl,-rpath,$(shell $(call PY_CONFIG,LIBDIR)) \
	-lpython$(shell $(call PY_CONFIG,LDVERSION)) $(shell $(call PY_CONFIG,LIBS)) -lm
# -export-dynamic: extension modules loaded at run time find the C API in the binary.
PY_LDLIBS_STATIC = -no-pie $(PY_STATIC_LIB) $(shell $(call PY_CONFIG,LINKFORSHARED)) \
	$(shell $(call PY_CONFIG,MODLIBS)) $(shell $(call PY_CONFIG,LIBS)) \
	$(shell $(call PY_CONFIG,SYSLIBS)) -lm
PY_LDLIBS = $(if $(and $(filter 1,$(PY_STATIC)),$(PY_STATIC_LIB)),$(PY_LDLIBS_STATIC),$(PY_LDLIBS_SHARED))
