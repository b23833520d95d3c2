#!/usr/bin/env bash
# bench/tls.sh: ipprotd with TLS terminated and originated (--tls-cert,
# --upstream-tls, the destination verified) side by side with HAProxy
# doing the same (`bind … ssl crt`, `server … ssl verify required
# ca-file`), in interleaved rounds on loopback, with a throw-away CA made
# by openssl. Prints a markdown table of medians and their ratio to
# HAProxy, and writes it to bench/results/tls.md.
#
#   bench/tls.sh             # 3 rounds, about 6 minutes on 2 cores
#   ROUNDS=1 SECS=1 bench/tls.sh
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
WORK=$(mktemp -d /tmp/ipprot-tls-bench.XXXXXX)
PORT_BASE=${PORT_BASE:-18000}
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-2}
IDLE_N=${IDLE_N:-2000}
ACTIVE_N=${ACTIVE_N:-500}
SAMPLES=$WORK/samples.tsv
: >"$SAMPLES"
trap 'stop_all; rm -rf "$DATA"' EXIT

PKI=$RUN/pki
WEB_TLS=$((PORT_BASE + 12))  # nginx https, the small page
LOAD_TLS=$((PORT_BASE + 13)) # loadgen serve over TLS
TLS_TARGETS=(direct haproxy-tls ipprotd-tls ipprotd-tls-Lf)

make_pki() {
    mkdir -p "$PKI"
    local o=(openssl)
    "${o[@]}" req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.pem" \
        -days 2 -subj "/CN=ipprot bench CA" 2>/dev/null
    for c in backend:web.test:DNS:web.test proxy:proxy.test:IP:127.0.0.1; do
        IFS=: read -r name cn san1 san2 <<<"$c"
        "${o[@]}" req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$PKI/$name.key" \
            -out "$PKI/$name.csr" -subj "/CN=$cn" 2>/dev/null
        printf 'subjectAltName=%s:%s\n' "$san1" "$san2" >"$PKI/$name.ext"
        "${o[@]}" x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" -CAcreateserial -days 2 \
            -extfile "$PKI/$name.ext" -out "$PKI/$name.pem" 2>/dev/null
        cat "$PKI/$name.pem" "$PKI/$name.key" >"$PKI/$name.both.pem"
    done
}

# tport TARGET web|load: where TARGET listens for that backend.
tport() {
    local i off=2
    [[ $2 == load ]] && off=3
    if [[ $1 == direct ]]; then
        [[ $2 == web ]] && echo "$WEB_TLS" || echo "$LOAD_TLS"
        return
    fi
    for i in "${!TLS_TARGETS[@]}"; do
        [[ ${TLS_TARGETS[$i]} == "$1" ]] && { echo $((PORT_BASE + 100 + 10 * i + off)); return; }
    done
}

declare -A TPIDS
start_tls_target() {
    local t=$1 pw pl
    pw=$(tport "$t" web)
    pl=$(tport "$t" load)
    case $t in
    direct) return ;;
    haproxy-tls)
        cat >"$RUN/haproxy-tls.cfg" <<EOF
global
    maxconn 9200
    nbthread 2
defaults
    mode tcp
    timeout connect 5s
    timeout client 10m
    timeout server 10m
listen web
    bind 127.0.0.1:$pw ssl crt $PKI/proxy.both.pem
    server s 127.0.0.1:$WEB_TLS ssl verify required ca-file $PKI/ca.pem sni str(web.test) verifyhost web.test
listen load
    bind 127.0.0.1:$pl ssl crt $PKI/proxy.both.pem
    server s 127.0.0.1:$LOAD_TLS ssl verify required ca-file $PKI/ca.pem sni str(web.test) verifyhost web.test
EOF
        spawn haproxy-tls haproxy -db -f "$RUN/haproxy-tls.cfg"
        TPIDS[$t]=$SPAWNED
        ;;
    ipprotd-tls*)
        local rec=()
        [[ $t == ipprotd-tls-Lf ]] && mkdir -p "$DATA/$t" && rec=(-L -f "$DATA/$t/prot")
        TPIDS[$t]=""
        for b in web load; do
            local in dest
            in=$(tport "$t" $b)
            dest=$(tport direct $b)
            spawn "$t-$b" "$BIN/ipprotd" -p "$in@127.0.0.1" -P "$dest@127.0.0.1" --tls-cert "$PKI/proxy.pem" \
                --tls-key "$PKI/proxy.key" --upstream-tls --upstream-ca "$PKI/ca.pem" --upstream-server-name web.test "${rec[@]}"
            TPIDS[$t]+=" $SPAWNED"
            [[ $b == load ]] && LOAD_PIDS[$t]=$SPAWNED
        done
        ;;
    esac
    wait_listen "$pw"
    wait_listen "$pl"
    [[ $t == haproxy-tls ]] && LOAD_PIDS[$t]=${TPIDS[$t]}
    return 0
}

tls_name() { [[ $1 == direct ]] && echo web.test || echo 127.0.0.1; }

m_blast() {
    "$BIN/loadgen" blast -addr "127.0.0.1:$(tport "$1" load)" -dir "$2" -payload sql -t "${SECS}s" \
        -tls-ca "$PKI/ca.pem" -tls-name "$(tls_name "$1")" 2>>"$LOGS/blast.log"
}

m_wrk() {
    local hdr=()
    [[ $2 == close ]] && hdr=(-H 'Connection: close')
    wrk -t 1 -c 64 -d "${SECS}s" "${hdr[@]}" "https://127.0.0.1:$(tport "$1" web)/" 2>&1 |
        awk '/^Requests\/sec:/ { print $2; f = 1 } END { exit !f }'
}

stop_tls_target() {
    local pid
    for pid in ${TPIDS[$1]:-}; do stop_group "$pid"; done
}

# m_rss TARGET N TRICKLE: KiB per connection held through TARGET, freshly
# started and warmed up by 20 connections.
m_rss() {
    local t=$1 before with out=$WORK/hold.out
    [[ $t == direct ]] && return 1
    stop_tls_target "$t"
    start_tls_target "$t"
    "$BIN/loadgen" conns -addr "127.0.0.1:$(tport "$t" load)" -n 20 -c 4 -tls-ca "$PKI/ca.pem" -tls-name 127.0.0.1 >/dev/null 2>&1
    sleep 1
    before=$("$BIN/loadgen" rss ${LOAD_PIDS[$t]})
    # The last measurement's file would be taken for this one's "ready"
    # before the shell truncates it.
    rm -f "$out"
    "$BIN/loadgen" hold -addr "127.0.0.1:$(tport "$t" load)" -n "$2" -trickle "$3" -dial-conc 32 \
        -tls-ca "$PKI/ca.pem" -tls-name 127.0.0.1 >"$out" 2>>"$LOGS/hold.log" &
    local h=$! i
    for ((i = 0; i < 1200; i++)); do [[ -s $out ]] && break; sleep 0.1; done
    sleep 3
    with=$("$BIN/loadgen" rss ${LOAD_PIDS[$t]})
    read -r _ ok _ <"$out" || true
    kill "$h"; wait "$h" 2>/dev/null || true
    log "rss $t: before $before KiB, with $with KiB, $ok connections"
    ((ok > 0)) || return 1
    awk -v a="$before" -v b="$with" -v n="$ok" 'BEGIN { printf "%.2f\n", (b - a) / n }'
}

main() {
    install_tools
    build_all
    make_pki
    mkdir -p "$RUN/nginx-tls"
    cat >"$RUN/nginx-tls/nginx.conf" <<EOF
worker_processes 1;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$WEB_TLS ssl backlog=4096;
        ssl_certificate $PKI/backend.pem;
        ssl_certificate_key $PKI/backend.key;
        location / { default_type text/html; return 200 "<html><body><p>A small page over TLS.</p></body></html>\n"; }
    }
}
EOF
    spawn nginx-tls nginx -p "$RUN/nginx-tls/" -e "$RUN/nginx-tls/error.log" -c "$RUN/nginx-tls/nginx.conf" \
        -g "daemon off; pid $RUN/nginx-tls/nginx.pid;"
    spawn loadgen-tls "$BIN/loadgen" serve -listen "127.0.0.1:$LOAD_TLS" -tls-cert "$PKI/backend.pem" -tls-key "$PKI/backend.key"
    wait_listen "$WEB_TLS"
    wait_listen "$LOAD_TLS"
    for t in "${TLS_TARGETS[@]}"; do start_tls_target "$t"; done
    local r t v
    for ((r = 1; r <= ROUNDS; r++)); do
        for load in "SQL text c→s|m_blast|up" "SQL text s→c|m_blast|down" "connections/s (wrk https, Connection: close)|m_wrk|close" "keep-alive (wrk https)|m_wrk|keepalive"; do
            IFS='|' read -r name fn arg <<<"$load"
            for t in "${TLS_TARGETS[@]}"; do
                if v=$("$fn" "$t" "$arg" | head -1) && [[ -n $v ]]; then
                    printf '%s\t%s\t%s\n' "$name" "$t" "$v" >>"$SAMPLES"
                    log "round $r $name | $t: $v"
                fi
                sleep 0.5
            done
        done
    done
    # Not in $(…): m_rss restarts the target, and the trap must know it.
    for t in haproxy-tls ipprotd-tls; do
        m_rss "$t" "$IDLE_N" 0 >"$WORK/v" && printf '%s\t%s\t%s\n' "RSS KiB per idle TLS connection ($IDLE_N)" "$t" "$(<"$WORK/v")" >>"$SAMPLES"
        m_rss "$t" "$ACTIVE_N" 200ms >"$WORK/v" && printf '%s\t%s\t%s\n' "RSS KiB per active TLS connection ($ACTIVE_N, a line every 200 ms)" "$t" "$(<"$WORK/v")" >>"$SAMPLES"
        sleep 2
    done
    {
        echo "# ipprotd with TLS, side by side with HAProxy"
        echo
        echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), $ROUNDS round(s) of $SECS s, medians; $(nproc) CPUs; $("$BIN/ipprotd" -v 2>&1 | head -1); $(haproxy -v | head -1 | awk '{ print "HAProxy", $3 }')"
        echo "- both terminate the client's TLS (ECDSA P-256 certificate) and originate TLS to the backend, verifying it against the CA for web.test; ipprotd-tls-Lf also records both directions' plaintext to $(df -T "$DATA" | awk 'NR == 2 { print $2 }')"
        echo "- loads: \`loadgen blast\` of SQL text over TLS for $SECS s; \`wrk -t1 -c64\` for a small page from nginx over TLS; RSS per connection from \`loadgen hold\` over TLS (bytes bigger is worse)"
        echo
        echo "| load | target | median | × HAProxy |"
        echo "|---|---|--:|--:|"
        awk -F'\t' '{ v[$1 SUBSEP $2] = v[$1 SUBSEP $2] " " $3; if (!($1 in seen)) { order[++n] = $1; seen[$1] = 1 } }
            function median(s,   a, k, i, j, t) { k = split(s, a, " "); for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
                return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2 }
            END { split("direct haproxy-tls ipprotd-tls ipprotd-tls-Lf", ts, " ")
                for (i = 1; i <= n; i++) { l = order[i]; h = median(v[l SUBSEP "haproxy-tls"])
                    for (j = 1; j <= 4; j++) { k = l SUBSEP ts[j]; if (!(k in v)) continue; m = median(v[k])
                        unit = l ~ /SQL/ ? sprintf("%.0f MB/s", m / 1e6) : sprintf("%.0f", m)
                        printf "| %s | %s | %s | %s |\n", l, ts[j], unit, (h > 0 ? sprintf("%.2f×", m / h) : "") } } }' "$SAMPLES"
    } | tee "$BENCH/results/tls.md"
}

main "$@"
