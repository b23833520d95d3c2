#!/usr/bin/env bash
# bench/metrics.sh: what --metrics-listen costs in keep-alive requests/s.
# ipprotd (no recording) in front of nginx's small page, without
# --metrics-listen, with it, and with it scraped every second while the
# load runs; wrk keep-alive (many small requests per connection: the
# most blocks per second, where counting per block would show), the
# variants interleaved in every round, each timed run under
# flock /tmp/bench.lock (others benchmark on this machine too). Prints a
# markdown table of medians and of ratios to the run without metrics.
#
#   bench/metrics.sh                      # 10 rounds of 3 s, about 3 minutes
#   ROUNDS=3 SECS=2 bench/metrics.sh
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
WORK=$(mktemp -d /tmp/ipprot-metrics-bench.XXXXXX)
ROUNDS=${ROUNDS:-10}
SECS=${SECS:-3}
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNS=${WRK_CONNS:-50}
LOCK=${LOCK:-/tmp/bench.lock}
DATA=$WORK/unused # lib.sh would otherwise make one in /dev/shm
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"

VARIANTS=(plain metrics scraped)
IN_PORT=$((PORT_BASE + 91))
METRICS_PORT=$((PORT_BASE + 92))
RESULTS=$WORK/results.tsv
: >"$RESULTS"

finish() {
    local rc=$?
    trap - EXIT INT TERM
    [[ $BASHPID == "$$" ]] || exit "$rc"
    stop_all
    if ((rc == 0)); then rm -rf "$WORK"; else log "failed (exit $rc); logs kept in $LOGS"; fi
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

command -v wrk >/dev/null && command -v nginx >/dev/null && command -v curl >/dev/null && command -v flock >/dev/null ||
    die "needs wrk, nginx, curl and flock"
commit=$(git -C "$ROOT" describe --always --dirty --abbrev=12 --match 'no-tag-is-named-so' 2>/dev/null || echo unknown)
log "building ipprotd ($commit)"
(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags "-X main.commit=$commit" -o "$BIN/ipprotd" .)
version=$("$BIN/ipprotd" -v)

mkdir -p "$RUN/nginx-web"
render "$BENCH/nginx-web.conf" "$RUN/nginx-web/nginx.conf" 0 0 0
spawn nginx-web nginx -p "$RUN/nginx-web/" -e "$RUN/nginx-web/error.log" -c "$RUN/nginx-web/nginx.conf" \
    -g "daemon off; pid $RUN/nginx-web/nginx.pid;"
wait_listen "$WEB_PORT"

# scrape_every_second: GET /metrics once a second until killed.
scrape_every_second() {
    while :; do
        curl -fsS -o /dev/null "http://127.0.0.1:$METRICS_PORT/metrics" || true
        sleep 1
    done
}

# measure VARIANT: one wrk run through a fresh ipprotd; prints requests/s.
measure() {
    local flags=() out=$WORK/wrk.txt pid scraper=""
    case $1 in
    metrics | scraped) flags=(--metrics-listen "127.0.0.1:$METRICS_PORT") ;;
    esac
    spawn "ipprotd-$1" "$BIN/ipprotd" -p "$IN_PORT@127.0.0.1" -P "$WEB_PORT@127.0.0.1" "${flags[@]}"
    pid=$SPAWNED
    wait_listen "$IN_PORT"
    if [[ $1 == scraped ]]; then
        scrape_every_second &
        scraper=$!
    fi
    flock "$LOCK" wrk -t "$WRK_THREADS" -c "$WRK_CONNS" -d "${SECS}s" "http://127.0.0.1:$IN_PORT/" >"$out" 2>&1
    [[ -n $scraper ]] && { kill "$scraper"; wait "$scraper" 2>/dev/null || true; }
    stop_group "$pid"
    grep -q '^Requests/sec:' "$out" || die "wrk: $(cat "$out")"
    awk '/^Requests\/sec:/ { print $2 }' "$out"
}

for ((r = 1; r <= ROUNDS; r++)); do
    # Rotate the order of the variants from round to round.
    for ((k = 0; k < ${#VARIANTS[@]}; k++)); do
        v=${VARIANTS[$(((k + r) % ${#VARIANTS[@]}))]}
        rps=$(measure "$v")
        log "round $r $v: $rps requests/s"
        printf '%s\t%s\t%s\n' "$v" "$r" "$rps" >>"$RESULTS"
    done
done

{
    echo "$version, wrk -t$WRK_THREADS -c$WRK_CONNS -d${SECS}s keep-alive, $ROUNDS interleaved rounds, $(nproc) CPUs"
    echo
    echo "| variant | requests/s (median) | min–max | × without (medians) | × without (median of the rounds' ratios) |"
    echo "|---|--:|--:|--:|--:|"
    awk -F'\t' '
        { v[$1] = v[$1] " " $3; at[$1 SUBSEP $2] = $3; rounds[$2] = 1 }
        function median(s,   a, n, i, j, t) {
            n = split(s, a, " ")
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
            lo = a[1]; hi = a[n]
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        END {
            split("plain metrics scraped", vs, " ")
            name["plain"] = "without --metrics-listen"; name["metrics"] = "--metrics-listen"; name["scraped"] = "--metrics-listen, scraped every second"
            base = median(v["plain"])
            for (i = 1; i <= 3; i++) {
                ratios = ""
                for (r in rounds) ratios = ratios " " at[vs[i] SUBSEP r] / at["plain" SUBSEP r]
                pr = median(ratios)
                m = median(v[vs[i]])
                printf "| %s | %.0f | %.0f–%.0f | %.3f× | %.3f× |\n", name[vs[i]], m, lo, hi, m / base, pr
            }
        }' "$RESULTS"
}
