#!/usr/bin/env bash
# bench/perreq.sh: what one request costs each proxy under wrk, in CPU time
# (user + system, all threads and worker processes) and in context
# switches (voluntary + involuntary), with and without Connection: close.
# ipprotd, the epoll Go reference and nginx stream side by side, rounds
# interleaved, medians. It tells a proxy that is slow because it spends
# more CPU from one that waits. Then, in a run of its own (strace slows
# what it traces), the system calls per request, counted by strace -c -f
# on every process of the proxy. Writes bench/results/perreq.md.
#
#   bench/perreq.sh                  # ipprotd from the working tree
#   ROUNDS=5 SECS=4 bench/perreq.sh  # defaults: 3 rounds of 3 s
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
WORK=$(mktemp -d /tmp/ipprot-perreq.XXXXXX)
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-3}
TICK=$(getconf CLK_TCK)
OUT=$BENCH/results/perreq.md

finish() {
    local rc=$?
    trap - EXIT INT TERM
    [[ $BASHPID == "$$" ]] || exit "$rc"
    stop_all
    rm -rf "$DATA" "$WORK" ${DISK_DATA:+"$DISK_DATA"}
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

# pids_of TARGET: every process of TARGET's process groups.
pids_of() {
    local g
    for g in ${GROUPS_OF[$1]}; do
        pgrep -g "$g" || true
    done
}

# counters PID...: "CPU-ticks context-switches" summed over their threads.
counters() {
    local p task ticks=0 cs=0 st
    for p in "$@"; do
        for task in /proc/"$p"/task/*; do
            read -ra st <"$task/stat" 2>/dev/null || continue
            ticks=$((ticks + st[13] + st[14]))
            cs=$((cs + $(awk '/ctxt_switches/ { s += $2 } END { print s + 0 }' "$task/status" 2>/dev/null || echo 0)))
        done
    done
    echo "$ticks $cs"
}

# measure TARGET close|keepalive: prints "req/s µs-CPU/req cs/req".
measure() {
    local t=$1 hdr=() pids before after reqs
    [[ $2 == close ]] && hdr=(-H 'Connection: close')
    mapfile -t pids < <(pids_of "$t")
    read -ra before < <(counters "${pids[@]}")
    reqs=$(wrk -t1 -c64 -d"${SECS}s" "${hdr[@]}" "http://127.0.0.1:$(port "$t" web)/" |
        awk '/requests in/ { print $1 }')
    read -ra after < <(counters "${pids[@]}")
    awk -v r="$reqs" -v s="$SECS" -v dt=$((after[0] - before[0])) -v dc=$((after[1] - before[1])) -v tick="$TICK" \
        'BEGIN { printf "%.0f %.1f %.2f\n", r / s, dt * 1e6 / tick / r, dc / r }'
}

# syscalls TARGET close|keepalive: system calls per request under strace
# -c -f, over wrk -t1 -c16 for SECS, and the five most frequent, per
# request ("epoll_wait 2.01 read 2.00 …").
syscalls() {
    local t=$1 hdr=() pids args=() p trace=$WORK/strace.out sp reqs
    [[ $2 == close ]] && hdr=(-H 'Connection: close')
    mapfile -t pids < <(pids_of "$t")
    for p in "${pids[@]}"; do
        args+=(-p "$p")
    done
    strace -f -c -o "$trace" "${args[@]}" 2>/dev/null &
    sp=$!
    sleep 0.5
    reqs=$(wrk -t1 -c16 -d"${SECS}s" "${hdr[@]}" "http://127.0.0.1:$(port "$t" web)/" |
        awk '/requests in/ { print $1 }')
    kill -INT "$sp"
    wait "$sp" 2>/dev/null || true
    if [[ ! -s $trace || ${reqs:-0} -le 0 ]]; then
        log "$t $2: strace counted nothing (ptrace refused?)"
        printf -- '–\t–\n'
        return
    fi
    # strace -c: "% time seconds usecs/call calls errors syscall", then a
    # "total" line.
    awk -v r="$reqs" '
        $NF == "total" { total = $4 }
        $1 ~ /^[0-9.]+$/ && $NF != "total" { calls[$NF] = $4 }
        END {
            printf "%.1f", total / r
            n = 0
            for (c in calls) { names[++n] = c }
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (calls[names[j]] > calls[names[i]]) { x = names[i]; names[i] = names[j]; names[j] = x }
            sep = "\t"
            for (i = 1; i <= n && i <= 5; i++) { printf "%s%s %.2f", sep, names[i], calls[names[i]] / r; sep = ", " }
            printf "\n"
        }' "$trace"
}

# median K LINES: the median of column K of LINES (of an even count, the
# mean of the middle two).
median() {
    printf '%s' "$2" | awk -v k="$1" '{ print $k }' | sort -n |
        awk '{ v[NR] = $1 } END { m = int((NR + 1) / 2); print (NR % 2) ? v[m] : (v[m] + v[m + 1]) / 2 }'
}

main() {
    install_tools
    build_all
    start_backends
    local targets=(nginx epoll-go ipprotd) t mode r
    for t in "${targets[@]}"; do
        start_target "$t"
    done
    declare -A res
    for ((r = 1; r <= ROUNDS; r++)); do
        log "round $r of $ROUNDS"
        for mode in close keepalive; do
            for t in "${targets[@]}"; do
                res[$mode/$t]+="$(measure "$t" "$mode")"$'\n'
                settle "$t"
            done
        done
    done
    declare -A sc
    for mode in close keepalive; do
        for t in "${targets[@]}"; do
            sc[$mode/$t]=$(syscalls "$t" "$mode")
            settle "$t"
        done
    done
    mkdir -p "$(dirname "$OUT")"
    {
        echo "# What a request costs each proxy"
        echo
        echo "- date: $(date -u "+%Y-%m-%d %H:%M UTC"); $("$BIN/ipprotd" -v 2>&1 | head -1); $ROUNDS rounds of wrk -t1 -c64 -d${SECS}s, interleaved; medians"
        echo "- CPU: user + system time of all the proxy's threads and processes over the run, per request; context switches: voluntary + involuntary, per request"
        echo "- system calls: \`strace -c -f\` on all the proxy's processes over wrk -t1 -c16 -d${SECS}s, in a run of its own after the others, per request; the five most frequent beside"
        echo
        echo "| load | proxy | req/s | CPU µs / request | context switches / request | system calls / request | the most frequent, per request |"
        echo "|---|---|--:|--:|--:|--:|---|"
        for mode in close keepalive; do
            for t in "${targets[@]}"; do
                printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$([[ $mode == close ]] && echo 'Connection: close' || echo keep-alive)" "${LABEL[$t]}" \
                    "$(median 1 "${res[$mode/$t]}")" "$(median 2 "${res[$mode/$t]}")" "$(median 3 "${res[$mode/$t]}")" \
                    "${sc[$mode/$t]%%$'\t'*}" "${sc[$mode/$t]#*$'\t'}"
            done
        done
    } >"$OUT"
    cat "$OUT"
}

declare -A LABEL=([nginx]="nginx stream" [epoll-go]="epoll Go" [ipprotd]="ipprotd")
main "$@"
