#!/bin/sh
# Run (part of) the safety suite under valgrind memcheck and report any
# invalid read/write or use of freed memory attributed to ouring.
#
#   tests/safety/valgrind.sh                      # the default representative set
#   tests/safety/valgrind.sh tests/safety/test_close_fd.py -k closed   # any pytest args
#
# CPython noise: PYTHONMALLOC=malloc makes every Python object a malloc block
# (pymalloc's arenas would hide errors and cause false "uninitialised"
# reports); /usr/lib/valgrind/python3.supp (Debian's python3 package) covers
# the rest. Leak checking is off: an interpreter at exit, and ouring's
# deliberately leaked operations (DESIGN.md, Teardown), are not bugs.
# io_uring: valgrind (>= 3.16) knows io_uring_setup/enter/register, but not
# that the kernel writes into buffers at completion; the buffers are
# initialised by Python first, so that gives no false positives.
#
# The log goes to $VALGRIND_LOG (default: valgrind-safety.log). The script
# exits 1 if an error frame mentions _native, _ringcore, liburing or ouring.
set -eu
cd "$(dirname "$0")/../.."
LOG=${VALGRIND_LOG:-valgrind-safety.log}
SUPP=/usr/lib/valgrind/python3.supp
[ -r "$SUPP" ] && SUPP_ARG="--suppressions=$SUPP" || SUPP_ARG=
if [ $# -eq 0 ]; then
    set -- tests/safety/test_ownership.py tests/safety/test_close_fd.py \
        tests/safety/test_misuse.py tests/safety/test_pressure.py tests/safety/test_fork.py \
        -k "not huge and not 5000 and not reap"
fi
PYTHONMALLOC=malloc valgrind --tool=memcheck --error-exitcode=0 --leak-check=no \
    --track-origins=no --num-callers=30 --trace-children=no $SUPP_ARG \
    --log-file="$LOG" \
    .venv/bin/python -m pytest -q -p no:randomly -p no:cacheprovider "$@" || true
echo "--- valgrind summary ($LOG)"
grep -E "ERROR SUMMARY" "$LOG" | tail -1
# Each error block: print those whose stack names ouring's native code.
awk '/^==[0-9]+== (Invalid|Conditional|Use of|Syscall param|Source and destination)/ {blk=$0; inb=1; next}
     inb && /^==[0-9]+== *$/ {if (blk ~ /_native|_ringcore|liburing|ouring_/) {print blk; hits++}; inb=0; next}
     inb {blk = blk "\n" $0}
     END {exit hits ? 1 : 0}' "$LOG" && echo "no error attributed to ouring (_native / _ringcore / liburing frames)"
