#!/usr/bin/env bash
# bench/tlsab.sh: TLS connections/s of two ipprotd builds, interleaved,
# each going first in turn: both terminate the client's TLS and originate
# TLS to nginx (a throw-away CA made here), under wrk -t1 -c64 -d3s
# -H 'Connection: close' over https. Prints each round's pair and the
# ratio of the means. How the heap floor's figures were taken
# (docs/design.md, "A floor under the heap goal").
#
#   bench/tlsab.sh OLD_BINARY NEW_BINARY [ROUNDS]   # default 6 rounds
set -euo pipefail
A=$1 B=$2 R=${3:-6}
W=$(mktemp -d /tmp/ipprot-tlsab.XXXXXX)
P=$W/pki
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT
mkdir -p "$P"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$P/ca.key" -out "$P/ca.pem" \
    -days 2 -subj "/CN=tlsab CA" 2>/dev/null
for c in backend:web.test:DNS:web.test proxy:proxy.test:IP:127.0.0.1; do
    IFS=: read -r name cn s1 s2 <<<"$c"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$P/$name.key" \
        -out "$P/$name.csr" -subj "/CN=$cn" 2>/dev/null
    printf 'subjectAltName=%s:%s\n' "$s1" "$s2" >"$P/$name.ext"
    openssl x509 -req -in "$P/$name.csr" -CA "$P/ca.pem" -CAkey "$P/ca.key" -CAcreateserial -days 2 \
        -extfile "$P/$name.ext" -out "$P/$name.pem" 2>/dev/null
done
cat >"$W/nginx.conf" <<C
worker_processes 1;
events { worker_connections 4096; }
http {
    access_log off;
    server {
        listen 127.0.0.1:17952 ssl backlog=4096;
        ssl_certificate $P/backend.pem;
        ssl_certificate_key $P/backend.key;
        location / { default_type text/html; return 200 "<html><body><p>A small page over TLS.</p></body></html>\n"; }
    }
}
C
nginx -p "$W" -c "$W/nginx.conf" -g "daemon off; pid $W/nginx.pid; error_log $W/error.log;" &
sleep 0.3

# run BINARY: its requests/s.
run() {
    local d
    "$1" -p 17953@127.0.0.1 -P 17952@127.0.0.1 --tls-cert "$P/proxy.pem" --tls-key "$P/proxy.key" \
        --upstream-tls --upstream-ca "$P/ca.pem" --upstream-server-name web.test 2>/dev/null &
    d=$!
    sleep 0.4
    wrk -t1 -c64 -d3s -H 'Connection: close' https://127.0.0.1:17953/ | awk '/^Requests\/sec:/ { printf "%.0f\n", $2 }'
    kill "$d"
    wait "$d" 2>/dev/null || true
}

for ((r = 1; r <= R; r++)); do
    if ((r % 2)); then
        a=$(run "$A") b=$(run "$B")
    else
        b=$(run "$B") a=$(run "$A")
    fi
    echo "$a $b"
done | awk '{ sa += $1; sb += $2; printf "%s/%s ", $1, $2 } END { printf "\nA %.0f  B %.0f  B/A %.3f\n", sa / NR, sb / NR, sb / sa }'
