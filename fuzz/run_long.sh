#!/bin/sh
# A long fuzzing run by hand: every harness (or the ones named) for DURATION
# seconds each, one per core at a time. New inputs that reach new code go to
# build-fuzz/long/<target>/ (kept between runs, so a later run starts where
# this one stopped; not in git), crashes to build-fuzz/long/crashes/<target>/.
#
#   fuzz/run_long.sh DURATION [target ...]      e.g. fuzz/run_long.sh 600 hello
#
# A crash: reproduce with `build-fuzz/fuzz_<target> <crash file>`, fix the bug,
# copy the file to fuzz/regress/<target>/<what-it-was> (make fuzz-smoke then
# replays it for good), and commit both. To fold interesting new inputs into
# the committed seeds, minimise first:
#   build-fuzz/fuzz_<t> -merge=1 fuzz/corpus/<t> build-fuzz/long/<t>
# (keep that small: the seeds are for coverage, not a library of inputs).
set -eu
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 DURATION_SECONDS [target ...]" >&2; exit 2; }
secs=$1; shift
targets=${*:-$(sed -n 's/^FUZZ_TARGETS = //p' Makefile)}
make --no-print-directory fuzz >/dev/null
jobs=$(nproc 2>/dev/null || echo 2)
fail=0
run() {
  t=$1
  mkdir -p "build-fuzz/long/$t" "build-fuzz/long/crashes/$t"
  regress=; [ -d "fuzz/regress/$t" ] && regress="fuzz/regress/$t"
  if build-fuzz/fuzz_"$t" -max_total_time="$secs" -timeout=10 -max_len=4096 \
       -artifact_prefix="build-fuzz/long/crashes/$t/" -print_final_stats=1 \
       "build-fuzz/long/$t" "fuzz/corpus/$t" $regress \
       > "build-fuzz/long/$t.log" 2>&1; then
    echo "fuzz_$t: $(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "build-fuzz/long/$t.log"), no crash"
  else
    echo "fuzz_$t: CRASH, see build-fuzz/long/$t.log and build-fuzz/long/crashes/$t/"
    return 1
  fi
}
set --
for t in $targets; do
  run "$t" &
  set -- "$@" $!
  if [ $# -ge "$jobs" ]; then
    wait "$1" || fail=1
    shift
  fi
done
for p in "$@"; do wait "$p" || fail=1; done
exit $fail
