#!/usr/bin/env bash
# The figures of issue "8 · What a hostile client, a slow hook and a
# newcomer found", for one ipprotd binary (default: built from the work
# tree). Each prints one line:
#   slow hook: RSS after N short connections whose hook sleeps, and how long
#              SIGTERM takes with --drain-timeout 3s (or "still running").
#   stalled:   RSS added by 1,000 clients that stop reading a download.
#   rejected:  daemon-log bytes written for 20,000 rejected connections.
#   IPPROTD=/path/to/old/ipprotd bench/hostile.sh    # the same for another build
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/ipprot-hostile.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
if [ -z "${IPPROTD:-}" ]; then
    (cd "$ROOT" && go build -o "$WORK/ipprotd" .)
    IPPROTD=$WORK/ipprotd
fi
(cd "$ROOT/bench" && go build -o "$WORK/loadgen" ./loadgen)
LG=$WORK/loadgen
N=${N:-12000}

"$LG" serve -listen 127.0.0.1:17903 & sleep 0.3
rss() { "$LG" rss "$1"; }
waitport() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.05; done; }

# 1. A hook slower than the connections.
printf '#!/bin/sh\nexec sleep 400\n' > "$WORK/hook"; chmod +x "$WORK/hook"
"$IPPROTD" -p 17904@127.0.0.1 -P 17903@127.0.0.1 -f "$WORK/rec/prot" -u "$WORK/hook" \
    --post-jobs 1 --drain-timeout 3s 2>"$WORK/d1.log" & D=$!
waitport 17904
"$LG" conns -addr 127.0.0.1:17904 -n "$N" -c 16 >/dev/null
sleep 1
r=$(rss $D)
# One SIGTERM; a second one after 30 s if it still runs, as an operator would.
start=$(date +%s.%N); kill -TERM $D
ended="still running 30 s after a second SIGTERM"
for i in $(seq 600); do
    if ! kill -0 $D 2>/dev/null; then ended="exited $(echo "$(date +%s.%N) - $start" | bc | cut -c1-4) s after SIGTERM"; break; fi
    [ "$i" = 300 ] && kill -TERM $D 2>/dev/null
    sleep 0.1
done
kill -KILL $D 2>/dev/null || true; pkill -f "sleep 400" || true
echo "slow hook: $N connections, RSS $((r/1024)) MB; $ended; $(grep -c 'post-cmd not run' "$WORK/d1.log" || true) runs named as not made"
rm -rf "$WORK/rec"

# 2. 1,000 clients that stop reading.
"$IPPROTD" -p 17905@127.0.0.1 -P 17903@127.0.0.1 2>/dev/null & D=$!
waitport 17905
before=$(rss $D)
"$LG" hold -addr 127.0.0.1:17905 -n 1000 -down 10m > "$WORK/hold.out" & H=$!
for _ in $(seq 600); do grep -q ready "$WORK/hold.out" 2>/dev/null && break; sleep 0.1; done
sleep 10
after=$(rss $D)
echo "stalled: 1000 non-reading clients: +$(( (after-before)/1024 )) MB RSS ($(( (after-before)/1000 )) KiB each)"
kill -TERM $H; kill -TERM $D; wait $D 2>/dev/null || true

# 3. 20,000 rejected connections from one address.
"$IPPROTD" -p 17906@127.0.0.1 -P 17903@127.0.0.1 -r 10.0.0.0/8 -c "$WORK/conn.log" 2>"$WORK/d3.log" & D=$!
waitport 17906
"$LG" conns -addr 127.0.0.1:17906 -n 20000 -c 16 >/dev/null 2>&1 || true
sleep 1
kill -TERM $D; wait $D 2>/dev/null || true
echo "rejected: 20000 connections: connection log $(stat -c %s "$WORK/conn.log") bytes, daemon log $(stat -c %s "$WORK/d3.log") bytes"
