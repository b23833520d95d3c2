#!/usr/bin/env bash
# bench/replay.sh: the figures of issue "13 · Replay". pgbench -c 1 -t 1500
# (10,500 statements) in each of its modes, simple, extended and prepared,
# recorded through ipprotd -L -M -z; then, ROUNDS times, interleaved, each
# recording replayed with ipprotd replay --postgres --speed 0 into a copy
# of the database as it was before the recording (the first time; later
# rounds replay onto what the earlier left, which pgbench's statements
# answer alike), and pgbench run again directly: the differences (there
# must be none) and the medians of the replay's statements/s and of
# pgbench's own (7 statements a transaction); then the prepared one at
# --speed 1, its duration against the recording's. PostgreSQL 15 runs in
# a folder of its own (fsync off).
#
#   flock /tmp/bench.lock bench/replay.sh     # about a minute on 2 cores
#   ROUNDS=5 TX=3000 flock /tmp/bench.lock bench/replay.sh
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
TX=${TX:-1500}
ROUNDS=${ROUNDS:-3}
PG_PORT=${PG_PORT:-17601}
PROXY_PORT=$((PG_PORT + 1))
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
WORK=$(mktemp -d /tmp/ipprot-replay.XXXXXX)
chown postgres "$WORK"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

(cd "$ROOT" && go build -o "$WORK/ipprotd" .)
export PGHOST=127.0.0.1 PGPORT=$PG_PORT PGUSER=postgres PGSSLMODE=disable PGGSSENCMODE=disable
runuser -u postgres -- "$PGBIN/initdb" -D "$WORK/data" -A trust -U postgres -E UTF8 --locale=C --no-sync >/dev/null
runuser -u postgres -- "$PGBIN/postgres" -D "$WORK/data" -p "$PG_PORT" -k "$WORK" \
    -c listen_addresses=127.0.0.1 -c fsync=off >"$WORK/postgres.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do psql -X -q -c 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done

psql -X -q -c 'CREATE DATABASE shop'
"$PGBIN/pgbench" -i -q -I dtGvp -s 1 shop 2>/dev/null
MODES=(simple extended prepared)
for m in "${MODES[@]}" direct speed1; do
    psql -X -q -c "CREATE DATABASE copy_$m TEMPLATE shop"
done

"$WORK/ipprotd" -p "$PROXY_PORT@127.0.0.1" -P "$PG_PORT@127.0.0.1" -L -M -z -f "$WORK/rec/prot" 2>"$WORK/ipprotd.log" &
PIDS+=($!)
for _ in $(seq 100); do grep -q 'msg=listening' "$WORK/ipprotd.log" && break; sleep 0.1; done

# tps: pgbench's tps line's figure.
tps() { sed -n 's/^tps = \([0-9.]*\) .*/\1/p'; }

declare -A RECORDED
for m in "${MODES[@]}"; do
    RECORDED[$m]=$("$PGBIN/pgbench" -n -c 1 -t "$TX" -M "$m" -p "$PROXY_PORT" shop | tps)
done
kill -TERM "${PIDS[-1]}"
wait "${PIDS[-1]}" || true

# median: the middle of the numbers on stdin.
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# The recordings in the order pgbench ran: each run's first connection
# only reads the scale; its second is the client.
mapfile -t FILES < <(ls "$WORK"/rec/prot_* | sort -t_ -k4,4n)
declare -A REPLAYS DIRECTS STATEMENTS DIFFER
for _ in $(seq "$ROUNDS"); do
    for i in "${!MODES[@]}"; do
        m=${MODES[$i]}
        out=$("$WORK/ipprotd" replay --speed 0 --postgres "dbname=copy_$m" --format json "${FILES[$((2 * i + 1))]}" | tail -1)
        STATEMENTS[$m]=$(sed -n 's/.*"statements":\([0-9]*\).*/\1/p' <<<"$out")
        DIFFER[$m]="${DIFFER[$m]:-} $(sed -n 's/.*"differ":\([0-9]*\).*/\1/p' <<<"$out")"
        REPLAYS[$m]="${REPLAYS[$m]:-} $(sed -n 's/.*"statements_per_second":\([0-9.]*\).*/\1/p' <<<"$out")"
        DIRECTS[$m]="${DIRECTS[$m]:-} $(echo "$("$PGBIN/pgbench" -n -c 1 -t "$TX" -M "$m" copy_direct | tps) * 7" | bc)"
    done
done
echo "pgbench -c 1 -t $TX, replayed with --speed 0; statements/s, medians of $ROUNDS"
printf '%-9s %11s %-10s %9s %15s %15s\n' mode statements differ replay pgbench-direct pgbench-through
for m in "${MODES[@]}"; do
    printf '%-9s %11s %-10s %9.0f %15.0f %15.0f\n' "$m" "${STATEMENTS[$m]}" "$(echo ${DIFFER[$m]} | tr ' ' ,)" \
        "$(tr ' ' '\n' <<<"${REPLAYS[$m]}" | grep . | median)" "$(tr ' ' '\n' <<<"${DIRECTS[$m]}" | grep . | median)" \
        "$(echo "${RECORDED[$m]} * 7" | bc)"
done
echo
echo "--speed 1, pgbench -M prepared:"
"$WORK/ipprotd" replay --speed 1 --postgres "dbname=copy_speed1" "${FILES[5]}"
