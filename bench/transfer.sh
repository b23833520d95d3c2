#!/usr/bin/env bash
# bench/transfer.sh: the figures of issue "2 · Recording": a 1 GiB transfer
# of SQL text through ipprotd unrecorded, recorded plain (-L -f), with -z and
# with -j, each as a ratio to the unrecorded transfer of the same run
# (interleaved, medians of ROUNDS; -j, at about 15 MB/s, runs once), every
# recording checked to hold exactly the bytes sent; then the peak RSS of
# ipprotd with 1,000 concurrent -z sessions each sending 1 MiB at once.
#
#   bench/transfer.sh            # about 5 minutes on 2 cores
#   ROUNDS=5 bench/transfer.sh
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
ROUNDS=${ROUNDS:-3}
SIZE=$((1 << 30))
WORK=$(mktemp -d /tmp/ipprot-transfer.XXXXXX)
DATA=$(mktemp -d /dev/shm/ipprot-transfer.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK" "$DATA"
}
trap cleanup EXIT

(cd "$ROOT" && go build -o "$WORK/ipprotd" .) && (cd "$ROOT/bench" && go build -o "$WORK/loadgen" ./loadgen)
ulimit -n 20000

"$WORK/loadgen" serve -listen 127.0.0.1:17501 >"$WORK/serve.log" 2>&1 &
PIDS+=($!)

# start NAME PORT ARGS...: an ipprotd forwarding to the loadgen server.
start() {
    local name=$1 port=$2
    shift 2
    "$WORK/ipprotd" -p "$port@127.0.0.1" -P 17501@127.0.0.1 "$@" 2>"$WORK/$name.log" &
    PIDS+=($!)
    for _ in $(seq 100); do
        grep -q 'msg=listening' "$WORK/$name.log" 2>/dev/null && return
        sleep 0.05
    done
    echo "ipprotd $name did not start" >&2
    exit 1
}
mkdir -p "$DATA"/{plain,gz,bz2}
start unrecorded 17511
start plain 17512 -L -f "$DATA/plain/prot"
start gzip 17513 -L -f "$DATA/gz/prot" -z
start bzip2 17514 -L -f "$DATA/bz2/prot" -j

# transfer NAME PORT DIR DECOMPRESS: sends 1 GiB, prints MB/s, checks the
# recording holds the request line and every byte sent, then removes it.
transfer() {
    # Recorded: the request line "UP\n", the 1 GiB, and the server's answer,
    # the count "1073741824\n".
    local name=$1 port=$2 dir=$3 cat=$4 rate got want=$((3 + SIZE + 11))
    rate=$("$WORK/loadgen" blast -addr "127.0.0.1:$port" -dir up -payload sql -bytes "$SIZE")
    if [[ -n $dir ]]; then
        # The session's file is complete once its log line is written.
        for _ in $(seq 200); do
            [[ $(grep -c 'msg=connection' "$WORK/$name.log") -ge $((count[$name] + 1)) ]] && break
            sleep 0.05
        done
        count[$name]=$((count[$name] + 1))
        got=$($cat "$DATA/$dir"/prot_* | wc -c)
        if ((got != want)); then
            echo "$name: recording holds $got of the $want bytes sent" >&2
            exit 1
        fi
        rm -f "$DATA/$dir"/prot_*
    fi
    echo "$rate"
}
declare -A count=([plain]=0 [gzip]=0 [bzip2]=0)
declare -A samples
for r in $(seq "$ROUNDS"); do
    samples[unrecorded]+=" $(transfer unrecorded 17511 '' '')"
    samples[plain]+=" $(transfer plain 17512 plain cat)"
    samples[gzip]+=" $(transfer gzip 17513 gz zcat)"
done
samples[bzip2]=" $(transfer bzip2 17514 bz2 bzcat)"

median() { tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
base=$(echo "${samples[unrecorded]}" | median)
echo "| 1 GiB of SQL text through ipprotd | MB/s (median) | samples | × unrecorded |"
echo "|---|--:|---|--:|"
for name in unrecorded plain gzip bzip2; do
    m=$(echo "${samples[$name]}" | median)
    printf '| %s | %.0f | %s | %.2f× |\n' "$name" "$(echo "$m / 1000000" | bc -l)" \
        "$(for s in ${samples[$name]}; do printf '%.0f ' "$(echo "$s / 1000000" | bc -l)"; done)" \
        "$(echo "$m / $base" | bc -l)"
done

# Peak RSS with 1,000 concurrent -z sessions, each sending 1 MiB at once.
start peak 17515 -L -f "$DATA/gz/peak" -z
peak_pid=${PIDS[-1]}
"$WORK/loadgen" blast -addr 127.0.0.1:17515 -dir up -payload sql -streams 1000 -bytes $((1 << 20)) >/dev/null
for _ in $(seq 400); do
    [[ $(grep -c 'msg=connection' "$WORK/peak.log") -ge 1000 ]] && break
    sleep 0.05
done
echo
echo "1,000 concurrent -z sessions of 1 MiB each: $(grep -c 'outcome=ok' "$WORK/peak.log") ok," \
    "peak RSS $(awk '/VmHWM/ { printf "%.0f MiB", $2 / 1024 }' "/proc/$peak_pid/status")"
