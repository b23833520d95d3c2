#!/usr/bin/env bash
# bench/audit.sh: what --audit-log costs in connections/s. ipprotd -L -f -c
# in front of nginx's small page, without and with --audit-log (and with
# --audit-key), wrk -H 'Connection: close' (a new connection per request),
# the variants interleaved in every round, the recordings and the journal
# in a folder on the real disk and in one on tmpfs. Every journal must pass
# ipprotd verify. Prints a markdown table of medians and of ratios to the
# variant without the journal, also the median of each round's ratio
# (steadier where the machine's speed drifts).
#
#   flock /tmp/bench.lock bench/audit.sh            # 10 rounds of 3 s, 5 minutes or more
#   ROUNDS=3 SECS=2 bench/audit.sh
#   FOLDERS="/var/tmp" bench/audit.sh               # other folders (each must exist)
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
WORK=$(mktemp -d /tmp/ipprot-audit-bench.XXXXXX)
ROUNDS=${ROUNDS:-10}
SECS=${SECS:-3}
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNS=${WRK_CONNS:-50}
FOLDERS=${FOLDERS:-"/tmp /dev/shm"}
DATA=$WORK/unused # lib.sh would otherwise make one in /dev/shm
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"

VARIANTS=(plain audit audit-signed)
IN_PORT=$((PORT_BASE + 90))
RESULTS=$WORK/results.tsv
: >"$RESULTS"
DIRS=()

finish() {
    local rc=$? d
    trap - EXIT INT TERM
    [[ $BASHPID == "$$" ]] || exit "$rc"
    stop_all
    for d in "${DIRS[@]}"; do rm -rf "$d"; done
    if ((rc == 0)); then rm -rf "$WORK"; else log "failed (exit $rc); logs kept in $LOGS"; fi
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

command -v wrk >/dev/null && command -v nginx >/dev/null && command -v openssl >/dev/null ||
    die "needs wrk, nginx and openssl"
commit=$(git -C "$ROOT" describe --always --dirty --abbrev=12 --match 'no-tag-is-named-so' 2>/dev/null || echo unknown)
log "building ipprotd ($commit) and loadgen"
(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags "-X main.commit=$commit" -o "$BIN/ipprotd" .)
version=$("$BIN/ipprotd" -v)
(cd "$BENCH" && go build -o "$BIN/loadgen" ./loadgen)
openssl genpkey -algorithm ed25519 -out "$WORK/audit.key" 2>/dev/null
chmod 600 "$WORK/audit.key"

mkdir -p "$RUN/nginx-web"
render "$BENCH/nginx-web.conf" "$RUN/nginx-web/nginx.conf" 0 0 0
spawn nginx-web nginx -p "$RUN/nginx-web/" -e "$RUN/nginx-web/error.log" -c "$RUN/nginx-web/nginx.conf" \
    -g "daemon off; pid $RUN/nginx-web/nginx.pid;"
wait_listen "$WEB_PORT"

# measure FOLDER VARIANT: one wrk run through a fresh ipprotd; prints
# requests (= connections) per second and the journal's lines.
measure() {
    local dir=$1/$2 flags out=$WORK/wrk.txt pid conns lines=0
    mkdir -p "$dir"
    flags=(-L -f "$dir/prot" -c "$dir/conn.log")
    case $2 in
    audit) flags+=(--audit-log "$dir/audit.log") ;;
    audit-signed) flags+=(--audit-log "$dir/audit.log" --audit-key "$WORK/audit.key") ;;
    esac
    spawn "ipprotd-$2" "$BIN/ipprotd" -p "$IN_PORT@127.0.0.1" -P "$WEB_PORT@127.0.0.1" "${flags[@]}"
    pid=$SPAWNED
    wait_listen "$IN_PORT"
    wrk -t "$WRK_THREADS" -c "$WRK_CONNS" -d "${SECS}s" -H 'Connection: close' "http://127.0.0.1:$IN_PORT/" >"$out" 2>&1
    stop_group "$pid"
    conns=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    [[ -f $dir/audit.log ]] && lines=$(wc -l <"$dir/audit.log")
    if [[ -f $dir/audit.log ]] && ! "$BIN/ipprotd" verify --no-files "$dir/audit.log" >"$WORK/verify.txt" 2>&1; then
        die "the journal of $2 in $1 does not verify: $(tail -1 "$WORK/verify.txt")"
    fi
    rm -rf "$dir"
    echo "$conns $lines"
}

# The machine may be shared: a measurement during which other processes
# took more than MAX_FOREIGN of the CPUs is taken again (twice at most),
# and each waits until they take less than QUIET_SHARE (as bench/run.sh).
MAX_FOREIGN=${MAX_FOREIGN:-0.15}
QUIET_SHARE=${QUIET_SHARE:-0.10}
CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)
cpu_reading() { "$BIN/loadgen" cpu $$; }
foreign() {
    awk -v b0="$1" -v o0="$2" -v t0="$3" -v b1="$4" -v o1="$5" -v t1="$6" -v hz="$CLK_TCK" -v n="$NCPU" \
        'BEGIN { f = ((b1 - b0) - (o1 - o0)) / ((t1 - t0) * hz * n); printf "%.2f\n", f < 0 ? 0 : f }'
}
wait_quiet() {
    local i b0 o0 t0 b1 o1 t1 f
    for ((i = 0; i < 120; i++)); do
        read -r b0 o0 < <(cpu_reading)
        t0=$EPOCHREALTIME
        sleep 0.5
        read -r b1 o1 < <(cpu_reading)
        t1=$EPOCHREALTIME
        f=$(foreign "$b0" "$o0" "$t0" "$b1" "$o1" "$t1")
        awk -v f="$f" -v q="$QUIET_SHARE" 'BEGIN { exit !(f < q) }' && return 0
        ((i % 20 == 0)) && log "waiting: ${f} of the CPUs busy outside the benchmark"
    done
    log "the machine stayed busy for a minute; measuring anyway"
}

# measure_quiet FOLDER VARIANT: measure, taken again while other processes
# took too much of the CPUs; prints connections/s, journal lines and the
# share of the CPUs that went elsewhere.
measure_quiet() {
    local attempt b0 o0 t0 b1 o1 t1 conns lines f
    for attempt in 1 2 3; do
        wait_quiet
        read -r b0 o0 < <(cpu_reading)
        t0=$EPOCHREALTIME
        read -r conns lines < <(measure "$1" "$2")
        read -r b1 o1 < <(cpu_reading)
        t1=$EPOCHREALTIME
        f=$(foreign "$b0" "$o0" "$t0" "$b1" "$o1" "$t1")
        awk -v f="$f" -v m="$MAX_FOREIGN" 'BEGIN { exit !(f <= m) }' && break
        log "${1%/*} $2: $f of the CPUs went elsewhere (attempt $attempt)"
    done
    echo "$conns $lines $f"
}

for folder in $FOLDERS; do
    d=$(mktemp -d "$folder/ipprot-audit-bench.XXXXXX")
    DIRS+=("$d")
done

for ((r = 1; r <= ROUNDS; r++)); do
    for d in "${DIRS[@]}"; do
        # Rotate the order of the variants from round to round.
        for ((k = 0; k < ${#VARIANTS[@]}; k++)); do
            v=${VARIANTS[$(((k + r) % ${#VARIANTS[@]}))]}
            read -r conns lines f < <(measure_quiet "$d" "$v")
            log "round $r ${d%/*} $v: $conns connections/s ($lines journal lines; elsewhere: $f)"
            printf '%s\t%s\t%s\t%s\t%s\n' "${d%/*}" "$v" "$r" "$conns" "$f" >>"$RESULTS"
        done
    done
done

{
    echo "$version -L -f -c, wrk -t$WRK_THREADS -c$WRK_CONNS -d${SECS}s -H 'Connection: close', $ROUNDS interleaved rounds, $(nproc) CPUs"
    echo
    echo "| folder | variant | connections/s (median) | min–max | × without (medians) | × without (median of the rounds' ratios) | CPU elsewhere (median) |"
    echo "|---|---|--:|--:|--:|--:|--:|"
    awk -F'\t' '
        {
            v[$1 SUBSEP $2] = v[$1 SUBSEP $2] " " $4; x[$1 SUBSEP $2] = x[$1 SUBSEP $2] " " $5
            at[$1 SUBSEP $2 SUBSEP $3] = $4; rounds[$3] = 1
            if (!seen[$1]++) folders[++nf] = $1
        }
        function median(s,   a, n, i, j, t) {
            n = split(s, a, " ")
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
            lo = a[1]; hi = a[n]
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        END {
            split("plain audit audit-signed", vs, " ")
            name["plain"] = "-L -f -c"; name["audit"] = "+ --audit-log"; name["audit-signed"] = "+ --audit-log --audit-key"
            for (f = 1; f <= nf; f++) {
                base = median(v[folders[f] SUBSEP "plain"])
                for (i = 1; i <= 3; i++) {
                    ratios = ""
                    for (r in rounds) ratios = ratios " " at[folders[f] SUBSEP vs[i] SUBSEP r] / at[folders[f] SUBSEP "plain" SUBSEP r]
                    pr = median(ratios)
                    el = median(x[folders[f] SUBSEP vs[i]])
                    m = median(v[folders[f] SUBSEP vs[i]])
                    printf "| %s | %s | %.0f | %.0f–%.0f | %.2f× | %.2f× | %.0f %% |\n", folders[f], name[vs[i]], m, lo, hi, m / base, pr, el * 100
                }
            }
        }' "$RESULTS"
}
