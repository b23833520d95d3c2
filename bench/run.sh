#!/usr/bin/env bash
# bench/run.sh: ipprotd side by side with HAProxy, nginx stream, socat and
# a naive Go proxy, all on loopback, in one interleaved run (every target
# under one load, then the next load; the whole again for each round).
# Prints a markdown table of medians, ratios and goals, and writes it with
# the machine's description to bench/results/latest.md (raw samples in
# bench/results/latest.tsv). Run as root on Debian; installs what is missing.
#
#   bench/run.sh              # full run: 3 rounds, about 20 minutes on 2 cores
#   QUICK=1 bench/run.sh      # one short round, a smoke test (about 4 minutes on a quiet machine)
#   ROUNDS=5 bench/run.sh     # more rounds
#   IPPROTD_REV=HEAD bench/run.sh   # ipprotd as committed, not the working tree
#   ONLY="connrate tput" bench/run.sh   # only these sections (codec tput tputsql connrate
#                                       # keepalive idle active); written to results/only.md.tmp
#   DISK=/var/tmp bench/run.sh          # the real disk folder of the -disk rows (default /tmp)
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
WORK=$(mktemp -d /tmp/ipprot-bench.XXXXXX)
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"

if [[ ${QUICK:-0} == 1 ]]; then
    ROUNDS=${ROUNDS:-1} SECS=1 IDLE_N=1000 LF_IDLE_N=1000 BURST_N=1000 NAIVE_IDLE_N=500 SOCAT_IDLE_N=100 ACTIVE_N=200 ACTIVE_SECS=2
else
    ROUNDS=${ROUNDS:-3} SECS=2 IDLE_N=9000 LF_IDLE_N=6000 BURST_N=5000 NAIVE_IDLE_N=3000 SOCAT_IDLE_N=500 ACTIVE_N=1000 ACTIVE_SECS=5
fi
WRK_CONNS=64
# Idle connections are measured this long after they stand, both arrival
# patterns alike: the steady state, once the garbage of their opening is
# collected and the heap trimmed (docs/design.md, "Memory after a burst").
IDLE_SETTLE=10
TRICKLE=200ms
# The machine may be shared: a measurement during which other processes
# took more than MAX_FOREIGN of the CPUs is taken again, and each waits
# until they take less than QUIET_SHARE.
MAX_FOREIGN=${MAX_FOREIGN:-0.15}
QUIET_SHARE=${QUIET_SHARE:-0.10}
CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)
SAMPLES=$WORK/samples.tsv
RESULTS=$BENCH/results
: >"$SAMPLES"

finish() {
    local rc=$?
    trap - EXIT INT TERM
    # Only the script itself cleans up, never a subshell that inherited
    # the trap.
    [[ $BASHPID == "$$" ]] || exit "$rc"
    [[ -n ${HOLD_PID:-} ]] && release_conns
    stop_all
    rm -rf "$DATA" ${DISK_DATA:+"$DISK_DATA"}
    if ((rc == 0)); then
        rm -rf "$WORK"
    else
        log "failed (exit $rc); logs kept in $LOGS"
    fi
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

# only SECTION succeeds when ONLY is empty or names SECTION.
only() {
    [[ -z ${ONLY:-} || " $ONLY " == *" $1 "* ]]
}

# sample SECTION LOAD TARGET ROUND VALUE FOREIGN: records one measurement.
sample() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$SAMPLES"
    log "round $4  $1 | $2 | $3: $5 (elsewhere: $6)"
}

# Each measure_* prints one number or fails; a failure costs that sample,
# not the run. They run as `if` conditions, where set -e does not apply:
# every step that can fail says so.

# measure_iperf3 TARGET STREAMS [-R]. The target dd-disk is dd instead
# (measure_dd); after ipprotd-Lf-disk, the size of its recording is kept
# for it.
measure_iperf3() {
    local out=$WORK/iperf3.json
    if [[ $1 == dd-disk ]]; then
        measure_dd
        return
    fi
    if ! timeout $((SECS + 30)) iperf3 -c 127.0.0.1 -p "$(port "$1" iperf)" -t "$SECS" -P "$2" ${3:+"$3"} \
        -J --connect-timeout 3000 >"$out" 2>&1; then
        cat "$out" >>"$LOGS/iperf3-client.log"
        start_iperf3
        return 1
    fi
    if [[ $1 == ipprotd-Lf-disk ]]; then
        # The session has ended once iperf3 has its result; its file is
        # complete.
        find "$(data_of "$1")/iperf" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f\n", s }' >"$WORK/disk-bytes"
    fi
    "$BIN/report" iperf3 "$out"
}

# measure_dd: bytes/s of dd bs=1M writing, into the folder ipprotd-Lf-disk
# records into, as many bytes as its last recording held (1 GiB if none).
measure_dd() {
    local bytes=$((1 << 30)) dir file out
    [[ -s $WORK/disk-bytes ]] && read -r bytes <"$WORK/disk-bytes"
    dir=$(data_of ipprotd-Lf-disk)/iperf
    file=$dir/dd.out
    mkdir -p "$dir"
    out=$(LC_ALL=C dd if=/dev/zero of="$file" bs=1M count=$(((bytes + (1 << 20) - 1) >> 20)) 2>&1) || { rm -f "$file"; return 1; }
    rm -f "$file"
    # "N bytes (…) copied, S s, R MB/s"
    awk '/ copied, / { for (i = 1; i <= NF; i++) if ($i == "copied,") { printf "%.0f\n", $1 / $(i + 1); f = 1 } } END { exit !f }' <<<"$out"
}

# warm_disk_folder creates and deletes files in the -disk folder for SECS,
# as a measurement does, so that the first measurement of a round finds
# the folder as the later ones do: with the files of a measurement just
# deleted (on a journal-less ext4, a fresh folder creates ten times
# faster than one whose files were deleted in the last minute).
warm_disk_folder() {
    local dir
    dir=$(data_of ipprotd-Lfc-disk)/web
    mkdir -p "$dir"
    "$BIN/loadgen" create -dir "$dir" -c "$WRK_CONNS" -t "${SECS}s" >/dev/null 2>>"$LOGS/loadgen-create.log" || true
    sleep 1.1
}

# measure_conn TARGET close|keepalive: measure_wrk, or for the target
# folder-create the rate at which the -disk folder takes files at wrk's
# concurrency (loadgen create: create, write 200 bytes, close).
measure_conn() {
    if [[ $1 == folder-create ]]; then
        local dir
        dir=$(data_of ipprotd-Lfc-disk)/web
        mkdir -p "$dir"
        timeout $((SECS + 60)) "$BIN/loadgen" create -dir "$dir" -c "$WRK_CONNS" -t "${SECS}s" 2>>"$LOGS/loadgen-create.log"
        return
    fi
    measure_wrk "$@"
}

# measure_blast TARGET up|down
measure_blast() {
    timeout $((SECS + 60)) "$BIN/loadgen" blast -addr "127.0.0.1:$(port "$1" load)" -dir "$2" \
        -payload sql -t "${SECS}s" 2>>"$LOGS/loadgen-blast.log"
}

# measure_wrk TARGET close|keepalive
measure_wrk() {
    local out=$WORK/wrk.txt hdr=()
    [[ $2 == close ]] && hdr=(-H 'Connection: close')
    timeout $((SECS + 30)) wrk -t 1 -c "$WRK_CONNS" -d "${SECS}s" "${hdr[@]}" \
        "http://127.0.0.1:$(port "$1" web)/" >"$out" 2>&1 || return 1
    if grep -qE 'Non-2xx|Socket errors' "$out"; then
        { echo "== $1 $2"; cat "$out"; } >>"$LOGS/wrk-errors.log"
    fi
    awk '/^Requests\/sec:/ { print $2; f = 1 } END { exit !f }' "$out"
}

# hold_conns TARGET N TRICKLE OUT [burst]: opens N connections to loadgen
# through TARGET in the background and waits for them to stand; sets
# HOLD_PID and HOLD_OK. TRICKLE is 0 for idle connections. Gently, they
# open 64 at a time, each after one echo round trip; in a burst, all at
# once, each sending one byte it never reads the echo of (a pool
# reconnecting after a failover).
hold_conns() {
    local i addr how=()
    addr=127.0.0.1:$(port "$1" load)
    [[ ${5:-} == burst ]] && how=(-dial-conc "$2" -one-byte)
    rm -f "$4"
    # A kill before the exec must not run the script's traps in the child.
    (
        trap - EXIT INT TERM
        exec "$BIN/loadgen" hold -addr "$addr" -n "$2" -trickle "$3" "${how[@]}" >"$4" 2>>"$LOGS/loadgen-hold.log"
    ) &
    HOLD_PID=$!
    for ((i = 0; i < 1200; i++)); do
        if [[ -s $4 ]]; then
            read -r _ HOLD_OK _ <"$4"
            return 0
        fi
        kill -0 "$HOLD_PID" 2>/dev/null || break
        sleep 0.1
    done
    release_conns
    return 1
}

release_conns() {
    local i
    kill "$HOLD_PID" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        kill -0 "$HOLD_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$HOLD_PID" 2>/dev/null || true
    wait "$HOLD_PID" 2>/dev/null || true
    HOLD_PID=
}

# measure_rss TARGET N TRICKLE SETTLE_SECS [burst]: KiB per connection,
# from a fresh start of TARGET (warmed up by 20 connections).
measure_rss() {
    local t=$1 before with held=$WORK/hold.out
    stop_target "$t"
    start_target "$t" || return 1
    hold_conns "$t" 20 0 "$held" || return 1
    release_conns
    settle "$t"
    sleep 1
    # shellcheck disable=SC2086
    before=$("$BIN/loadgen" rss ${LOAD_PIDS[$t]}) || return 1
    hold_conns "$t" "$2" "$3" "$held" "${5:-}" || return 1
    sleep "$4"
    # shellcheck disable=SC2086
    with=$("$BIN/loadgen" rss ${LOAD_PIDS[$t]}) || { release_conns; return 1; }
    release_conns
    settle "$t"
    ((HOLD_OK > 0)) || return 1
    ((HOLD_OK == $2)) || log "$t: only $HOLD_OK of $2 connections stood"
    awk -v a="$before" -v b="$with" -v n="$HOLD_OK" 'BEGIN { printf "%.2f\n", (b - a) / n }'
}

# cpu_reading: the machine's busy clock ticks and the benchmark's own.
cpu_reading() { "$BIN/loadgen" cpu $$; }

# foreign BUSY0 OURS0 T0 BUSY1 OURS1 T1: the share of all CPUs that went to
# processes outside the benchmark between two readings (0 to 1).
foreign() {
    awk -v b0="$1" -v o0="$2" -v t0="$3" -v b1="$4" -v o1="$5" -v t1="$6" -v hz="$CLK_TCK" -v n="$NCPU" \
        'BEGIN { f = ((b1 - b0) - (o1 - o0)) / ((t1 - t0) * hz * n); printf "%.2f\n", f < 0 ? 0 : f }'
}

# wait_quiet: waits (up to a minute) until processes outside the benchmark
# use less than QUIET_SHARE of the CPUs.
wait_quiet() {
    local i b0 o0 t0 b1 o1 t1 f
    for ((i = 0; i < 120; i++)); do
        read -r b0 o0 < <(cpu_reading)
        t0=$EPOCHREALTIME
        sleep 0.5
        read -r b1 o1 < <(cpu_reading)
        t1=$EPOCHREALTIME
        f=$(foreign "$b0" "$o0" "$t0" "$b1" "$o1" "$t1")
        if awk -v f="$f" -v q="$QUIET_SHARE" 'BEGIN { exit !(f < q) }'; then
            ((i == 0)) || log "the machine is quiet again after $((i / 2)) s"
            return 0
        fi
        ((i % 20 == 0)) && log "waiting: ${f} of the CPUs busy outside the benchmark"
    done
    log "the machine stayed busy for a minute; measuring anyway"
}

# measure_once SECTION FUNC TARGET ARGS...: runs one measurement, retrying
# (twice at most) if processes outside the benchmark took more than
# MAX_FOREIGN of the CPUs meanwhile; memory figures are not retried. Sets
# VALUE and FOREIGN.
measure_once() {
    local section=$1 fn=$2 attempt b0 o0 t0 b1 o1 t1
    shift 2
    for attempt in 1 2 3; do
        wait_quiet
        read -r b0 o0 < <(cpu_reading)
        t0=$EPOCHREALTIME
        # Not in $(…): a measurement may restart processes the trap must know.
        "$fn" "$@" >"$WORK/value" || return 1
        read -r b1 o1 < <(cpu_reading)
        t1=$EPOCHREALTIME
        read -r VALUE <"$WORK/value" || return 1
        [[ -n $VALUE ]] || return 1
        FOREIGN=$(foreign "$b0" "$o0" "$t0" "$b1" "$o1" "$t1")
        if [[ $section == idle || $section == active ]] ||
            awk -v f="$FOREIGN" -v m="$MAX_FOREIGN" 'BEGIN { exit !(f <= m) }'; then
            return 0
        fi
        log "$section | $1: ${FOREIGN} of the CPUs went elsewhere (attempt $attempt)"
        settle "$1"
    done
    return 0
}

# run_load SECTION LOAD ROUND FUNC ARGS... -- TARGETS...: measures each
# target in turn with FUNC TARGET ARGS...
run_load() {
    local section=$1 load=$2 round=$3 fn=$4 args=() t
    shift 4
    while [[ $1 != -- ]]; do
        args+=("$1")
        shift
    done
    shift
    for t in "$@"; do
        if measure_once "$section" "$fn" "$t" "${args[@]}"; then
            sample "$section" "$load" "$t" "$round" "$VALUE" "$FOREIGN"
        else
            log "round $round  $section | $load | $t: FAILED (see $LOGS)"
        fi
        settle "$t"
    done
}

describe_machine() {
    local cpu mem
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    cat <<EOF
# ipprotd benchmark: latest run

- date: $(date -u '+%Y-%m-%d %H:%M UTC'), $1 mode, $ROUNDS round(s), ${SECS} s per throughput and wrk load, medians of the rounds
- machine: $cpu, $(nproc) CPUs, $mem RAM, kernel $(uname -r)
- Go: $(go version | awk '{ print $3 }'); $("$BIN/ipprotd" -v 2>&1 | head -1)
- peers: $(haproxy -v | head -1 | awk '{ print "HAProxy", $3 }'); $(nginx -v 2>&1 | sed 's/.*: //'); socat $(socat -V | awk '/socat version/ { print $3 }'); $(iperf3 --version | head -1 | awk '{ print "iperf3", $2 }'); $(wrk --version 2>&1 | head -1 | awk '{ print "wrk", $2 }')
- recordings written to ${DATA%/*} ($(df -T "$DATA" | awk 'NR == 2 { print $2 }')), deleted after each measurement; those of the rows "into DISK" to ${DISK_DATA:-$DISK} ($(df -T "${DISK_DATA:-$DISK}" | awk 'NR == 2 { print $2 }'), $(disk_journal)), deleted after each measurement too
- the measuring took $(((SECONDS - STARTED) / 60)) min $(((SECONDS - STARTED) % 60)) s; load average at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg). "CPU elsewhere" is the median share of all CPUs that processes outside the benchmark took during a figure's measurements; one above ${MAX_FOREIGN} was taken again (twice at most), and each waited for less than ${QUIET_SHARE}.

EOF
}

# disk_journal says whether the file system of the disk folder is an ext4
# without a journal (whose inode allocator skips recently deleted inodes).
disk_journal() {
    local dev
    dev=$(readlink -f "$(df --output=source "${DISK_DATA:-$DISK}" | awk 'NR == 2')")
    if [[ $(df --output=fstype "${DISK_DATA:-$DISK}" | awk 'NR == 2') == ext4 ]] &&
        [[ -e /proc/fs/ext4/${dev##*/} && ! -e /proc/fs/jbd2/${dev##*/}-8 ]]; then
        echo "ext4 without a journal"
    else
        echo "with a journal or not ext4"
    fi
}

describe_loads() {
    cat <<EOF

Loads, all on 127.0.0.1, client and backend in processes of their own:

- **throughput, iperf3**: \`iperf3 -t $SECS\`, 1 and 4 streams (\`-P\`), c→s is the client sending, s→c is \`-R\`. iperf3 sends a 128 KiB buffer of **random bytes** over and over: incompressible to gzip.
- **throughput, SQL text**: \`loadgen blast\`, 1 stream for $SECS s of varied SQL statements (compressible about fivefold by gzip); the receiver's count over the time to the last byte.
- **compression bound**: \`loadgen codec\`, the same two payloads compressed to /dev/null for $SECS s: pgzip with its defaults (1 MiB blocks on all CPUs), klauspost flate at its default level 5 on one CPU (the codec and level the recorder drives), dsnet bzip2 -9 on one CPU. The -L -f -z goal reads the recorded figure against pgzip alone on the same payload; on random data pgzip stores the blocks it cannot shrink and runs faster than a direct connection, so there the goal is out of any proxy's reach and the SQL rows are the ones to read.
- **connections/s**: \`wrk -t1 -c$WRK_CONNS -H 'Connection: close'\` for a 170-byte page from nginx, a new connection per request; **keep-alive**: the same without the header.
- **into DISK**: the same loads with the recordings in a folder on the real disk (\`DISK\`, default /tmp) instead of tmpfs. Beside -L -f -c, **the folder's own create rate**: \`loadgen create -c $WRK_CONNS\` in that folder, $WRK_CONNS goroutines each creating a file (O_CREAT|O_EXCL), writing 200 bytes to it and closing it, in a loop; measured right before and right after ipprotd (two samples a round), as the rate of such a folder moves with the files deleted in the minutes before. Beside -L -f (1 stream), **dd**: \`dd if=/dev/zero bs=1M\` of as many bytes as ipprotd's recording held, into the same folder, right after it. The goals read ipprotd against min(nginx stream, the folder's create rate) and against dd.
- **RSS per idle connection**: $IDLE_N connections opened through a freshly started proxy, each after one echo round trip, measured $IDLE_SETTLE s after they all stand; (VmRSS with them − VmRSS before) / N, summed over all processes of the proxy (nginx workers, socat children). Fewer for two: socat $SOCAT_IDLE_N (a process of 2.6 MB each), naive Go $NAIVE_IDLE_N (Go's io.Copy splice holds a pipe, 2 fds, per direction even while idle: 6 fds a connection, so 9,000 do not fit 20,000 open files), ipprotd -L -f $LF_IDLE_N (a data file each: 3 fds a connection; its row says so). **Opened at once**: $BURST_N connections opened all at once, each sending one byte and reading nothing (\`loadgen hold -dial-conc $BURST_N -one-byte\`), measured $IDLE_SETTLE s later too.
- **RSS per active connection**: $ACTIVE_N connections, each sending a 120-byte SQL line and reading its echo every $TRICKLE, measured after ${ACTIVE_SECS} s.
- naive Go: bench/naivego, io.Copy both ways (splice); tee-to-file and tee-to-pgzip write both directions of each connection to a file of its own.
- epoll Go (connection and keep-alive rates only): bench/epollgo, a Go relay with an epoll loop of its own per CPU, the way nginx works, records nothing; it shows what that design alone would give ipprotd here.
- ipprotd runs with its defaults (\`-b 300000\`, gzip level 5); -L records both directions; the row with \`--gzip-level 1\` (SQL text only) shows the faster level against the same pgzip bound. Peers' configs: bench/haproxy.cfg, bench/nginx-stream.conf, socat \`TCP-LISTEN:…,fork,reuseaddr,backlog=4096 TCP:…\`.
EOF
}

main() {
    local mode=full r t
    [[ ${QUICK:-0} == 1 ]] && mode=quick
    install_tools
    build_all
    start_backends
    for t in "${TARGETS[@]}"; do
        start_target "$t"
    done
    STARTED=$SECONDS
    LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

    local peers_all=(direct haproxy-splice haproxy nginx socat naive naive-tee-file naive-tee-pgzip)
    local tput=("${peers_all[@]}" ipprotd ipprotd-Lf ipprotd-Lz ipprotd-Lj)
    # Recording into the real disk folder, beside what that folder does
    # alone: dd right after the recording it writes as much as, and the
    # folder's create rate before and after -L -f -c (it changes as files
    # come and go: a journal-less ext4 skips inodes deleted in the last
    # minutes, docs/design.md).
    local tput_disk=(ipprotd-Lf-disk dd-disk)
    local web_disk=(folder-create ipprotd-Lfc-disk folder-create)
    local sql=(direct haproxy-splice naive naive-tee-file naive-tee-pgzip ipprotd ipprotd-Lf ipprotd-Lz ipprotd-Lz1 ipprotd-Lj)
    local web_tmpfs=("${peers_all[@]}" epoll-go ipprotd ipprotd-Lfc ipprotd-Lz)
    local idle=(haproxy-splice haproxy nginx ipprotd)
    local active=(ipprotd ipprotd-Lz naive-tee-pgzip)

    for ((r = 1; r <= ROUNDS; r++)); do
        log "round $r of $ROUNDS"
        only codec && run_load codec random "$r" measure_codec random -- pgzip flate bzip2
        only codec && run_load codec sql "$r" measure_codec sql -- pgzip flate bzip2
        only tput && run_load tput "c→s 1 stream" "$r" measure_iperf3 1 -- "${tput[@]}" "${tput_disk[@]}"
        only tput && run_load tput "s→c 1 stream (-R)" "$r" measure_iperf3 1 -R -- "${tput[@]}"
        only tput && run_load tput "c→s 4 streams" "$r" measure_iperf3 4 -- "${tput[@]}"
        only tput && run_load tput "s→c 4 streams (-R)" "$r" measure_iperf3 4 -R -- "${tput[@]}"
        only tputsql && run_load tputsql "c→s 1 stream" "$r" measure_blast up -- "${sql[@]}"
        only tputsql && run_load tputsql "s→c 1 stream" "$r" measure_blast down -- "${sql[@]}"
        only connrate && run_load connrate "wrk Connection: close" "$r" measure_conn close -- "${web_tmpfs[@]}"
        only connrate && warm_disk_folder && run_load connrate "wrk Connection: close" "$r" measure_conn close -- "${web_disk[@]}"
        only keepalive && run_load keepalive "wrk keep-alive" "$r" measure_wrk keepalive -- "${web_tmpfs[@]}"
        only idle && run_load idle "$IDLE_N idle" "$r" measure_rss "$IDLE_N" 0 "$IDLE_SETTLE" -- "${idle[@]}"
        only idle && run_load idle "$LF_IDLE_N idle" "$r" measure_rss "$LF_IDLE_N" 0 "$IDLE_SETTLE" -- ipprotd-Lf
        only idle && run_load idle "$IDLE_N idle" "$r" measure_rss "$NAIVE_IDLE_N" 0 "$IDLE_SETTLE" -- naive
        only idle && run_load idle "$IDLE_N idle" "$r" measure_rss "$SOCAT_IDLE_N" 0 "$IDLE_SETTLE" -- socat
        only idle && run_load idle "$BURST_N idle, opened at once" "$r" measure_rss "$BURST_N" 0 "$IDLE_SETTLE" burst -- "${idle[@]}" ipprotd-Lf
        only active && run_load active "$ACTIVE_N trickling" "$r" measure_rss "$ACTIVE_N" "$TRICKLE" "$ACTIVE_SECS" -- "${active[@]}"
    done
    log "measured in $((SECONDS - STARTED)) s"

    mkdir -p "$RESULTS"
    describe_machine "$mode" >"$WORK/header.md"
    "$BIN/report" table -samples "$SAMPLES" -header "$WORK/header.md" -out "$WORK/table.md"
    describe_loads >>"$WORK/table.md"
    if [[ -n ${ONLY:-} ]]; then
        cp "$WORK/table.md" "$RESULTS/only.md.tmp"
    elif [[ $mode == full ]]; then
        cp "$WORK/table.md" "$RESULTS/latest.md"
        cp "$SAMPLES" "$RESULTS/latest.tsv"
    else
        cp "$WORK/table.md" "$RESULTS/quick.md.tmp"
    fi
    describe_loads
    log "done in $((SECONDS - STARTED)) s of measuring; written to $RESULTS"
}

# measure_codec CODEC PAYLOAD
measure_codec() {
    "$BIN/loadgen" codec -codec "$1" -payload "$2" -t "${SECS}s"
}

main "$@"
