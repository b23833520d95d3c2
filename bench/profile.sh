#!/usr/bin/env bash
# bench/profile.sh: CPU profiles of ipprotd under the loads whose goals
# matter most, taken with `perf record -g` (frame pointers: Go keeps them)
# on the cpu-clock software event, which works in VMs without hardware
# counters. Writes bench/results/profile-<load>.txt: the hottest functions
# by self time, then by time including callees. Without a PMU, cpu-clock
# samples land where interrupts are enabled again: time in irq-off kernel
# sections shows up in _raw_spin_unlock_irqrestore, finish_task_switch and
# handle_softirqs, so read the kernel's share by its callers.
#
#   bench/profile.sh                    # ipprotd from the working tree
#   IPPROTD_REV=HEAD bench/profile.sh   # as committed
#   SECS=20 bench/profile.sh            # longer samples (default 8 s)
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
WORK=$(mktemp -d /tmp/ipprot-profile.XXXXXX)
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"
SECS=${SECS:-8}
RESULTS=$BENCH/results
LOAD_PID=

finish() {
    local rc=$?
    trap - EXIT INT TERM
    [[ $BASHPID == "$$" ]] || exit "$rc"
    [[ -n $LOAD_PID ]] && kill "$LOAD_PID" 2>/dev/null
    stop_all
    rm -rf "$DATA" "$WORK" ${DISK_DATA:+"$DISK_DATA"}
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

command -v perf >/dev/null || {
    apt-get install -y -qq --no-install-recommends linux-perf >&2 || die "perf is missing (Debian package linux-perf)"
}
perf record -e cpu-clock -o "$WORK/probe.data" -- true 2>/dev/null || die "perf record does not work here"

# profile NAME TARGET BACKEND LOAD...: runs LOAD in the background for
# SECS + 3 s and records the ipprotd process serving TARGET's BACKEND port
# for SECS s from the second second on.
profile() {
    local name=$1 t=$2 b=$3 pid out=$RESULTS/profile-$1.txt
    shift 3
    pid=${PID_OF[$t/$b]}
    log "profiling $name: ipprotd pid $pid under: $*"
    (
        trap - EXIT INT TERM
        exec "$@" >"$WORK/$name.load" 2>&1
    ) &
    LOAD_PID=$!
    sleep 1
    perf record -e cpu-clock -F 999 -g -p "$pid" -o "$WORK/$name.data" -- sleep "$SECS" 2>>"$LOGS/perf.log"
    wait "$LOAD_PID" || log "$name: the load failed: $(tail -3 "$WORK/$name.load")"
    LOAD_PID=
    local samples
    samples=$(perf script -i "$WORK/$name.data" -F comm 2>/dev/null | wc -l)
    {
        echo "# ipprotd $("$BIN/ipprotd" -v 2>&1 | head -1), $name: $*"
        echo "# $samples samples in $SECS s at 999 Hz: ipprotd kept $(awk -v n="$samples" -v s="$SECS" 'BEGIN { printf "%.2f", n / (999 * s) }') CPUs busy"
        echo "# perf record -e cpu-clock -F 999 -g -p PID -- sleep $SECS; the load printed: $(tr '\n' ' ' <"$WORK/$name.load" | cut -c1-200)"
        echo
        echo "## self time, by object"
        report "$WORK/$name.data" --no-children --sort dso
        echo
        echo "## self time, by symbol (kernel and ipprotd)"
        report "$WORK/$name.data" --no-children -F overhead,dso,sym --percent-limit 0.7
        echo
        echo "## self time in ipprotd's own code (Go packages and runtime), as a share of all samples"
        report "$WORK/$name.data" --no-children -F overhead,sym --dsos ipprotd --percent-limit 0.3
        echo
        echo "## the Go runtime's overheads, time including callees"
        report "$WORK/$name.data" --children --sort sym |
            grep -E '\] runtime\.(newstack|copystack|mallocgc|gcBgMarkWorker|gcAssistAlloc|schedule|findRunnable|sysmon|netpoll|newproc|morestack)(\.abi0)?$' || true
        echo
        echo "## time including callees, by symbol"
        report "$WORK/$name.data" --children --sort sym --percent-limit 4
    } >"$out"
    settle "$t"
}

# report DATA OPTIONS...: perf report's table without its comments.
report() {
    local data=$1
    shift
    perf report -i "$data" --stdio -g none "$@" 2>/dev/null | grep -vE '^#( |$)|^$' || true
}

main() {
    install_tools
    build_all
    start_backends
    start_target ipprotd
    start_target ipprotd-Lz
    mkdir -p "$RESULTS"
    local t=$((SECS + 3))
    profile iperf3-1stream ipprotd iperf \
        iperf3 -c 127.0.0.1 -p "$(port ipprotd iperf)" -t "$t" -P 1
    profile iperf3-1stream-R ipprotd iperf \
        iperf3 -c 127.0.0.1 -p "$(port ipprotd iperf)" -t "$t" -P 1 -R
    profile Lz-sql-up ipprotd-Lz load \
        "$BIN/loadgen" blast -addr "127.0.0.1:$(port ipprotd-Lz load)" -dir up -payload sql -t "${t}s"
    profile Lz-iperf3 ipprotd-Lz iperf \
        iperf3 -c 127.0.0.1 -p "$(port ipprotd-Lz iperf)" -t "$t" -P 1
    profile wrk-close ipprotd web \
        wrk -t1 -c64 -d "${t}s" -H 'Connection: close' "http://127.0.0.1:$(port ipprotd web)/"
    profile wrk-keepalive ipprotd web \
        wrk -t1 -c64 -d "${t}s" "http://127.0.0.1:$(port ipprotd web)/"
    log "profiles written to $RESULTS/profile-*.txt"
}

main "$@"
