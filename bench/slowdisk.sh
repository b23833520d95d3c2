#!/usr/bin/env bash
# bench/slowdisk.sh: ipprotd -L -f -c against the rate its data folder
# itself creates files at, on a folder made slow to create files in the
# way a journal-less ext4 is after files were deleted (docs/design.md,
# "Creating data files on a slow disk"), the same for every measurement:
# a small ext4 without a journal on a loop device, in whose folder K files
# were created, written and deleted more than a second before. Such an
# ext4 skips, at every create, each inode deleted in the last minute (in the
# last five if its inode table block is not yet written back), under the folder's
# lock; K=5000 makes a create cost about 0.7 ms of CPU here. Rounds
# interleave the folder alone (loadgen create, 64 at once) and ipprotd
# under wrk -t1 -c64 -H 'Connection: close', a fresh file system for
# each. Needs root (losetup, mount). Writes bench/results/slowdisk.md.
#
#   bench/slowdisk.sh                 # ipprotd from the working tree
#   K=8000 ROUNDS=5 bench/slowdisk.sh
#   IPPROTD_REV=HEAD bench/slowdisk.sh
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
WORK=$(mktemp -d /tmp/ipprot-slowdisk.XXXXXX)
DATA=$WORK/unused # lib.sh would otherwise make one in /dev/shm
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"
K=${K:-5000}
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-3}
CONNS=64
IMG=$WORK/ext4.img
MNT=$WORK/mnt
OUT=$BENCH/results/slowdisk.md

finish() {
    local rc=$?
    trap - EXIT INT TERM
    [[ $BASHPID == "$$" ]] || exit "$rc"
    stop_all
    mountpoint -q "$MNT" && umount "$MNT"
    rm -rf "$WORK"
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

if [[ $(id -u) != 0 ]]; then
    # just bench runs it last: skip, do not fail the rest.
    log "skipped: run as root (the file system is a loop mount)"
    exit 0
fi

# fresh_folder makes the file system anew with K recently deleted inodes
# in its folder MNT/rec.
fresh_folder() {
    mountpoint -q "$MNT" && umount "$MNT"
    mkfs.ext4 -q -F -O ^has_journal -N 400000 -E lazy_itable_init=0 "$IMG"
    mount -o loop "$IMG" "$MNT"
    mkdir "$MNT/rec"
    "$BIN/loadgen" create -dir "$MNT/rec" -c 1 -n "$K" >/dev/null
    # Inodes deleted in the current second are reused at once.
    sleep 1.1
}

# folder_rate: files/s of the folder alone, CONNS at once.
folder_rate() {
    fresh_folder
    "$BIN/loadgen" create -dir "$MNT/rec" -c "$CONNS" -t "${SECS}s"
}

# ipprotd_rate: wrk's requests/s through ipprotd -L -f -c into the folder,
# in RATE. Not in $(…): the daemon it starts must be one the traps know.
ipprotd_rate() {
    local port=$((PORT_BASE + 90)) pid out
    fresh_folder
    spawn ipprotd "$BIN/ipprotd" -p "$port@127.0.0.1" -P "$WEB_PORT@127.0.0.1" -L -f "$MNT/rec/prot" -c "$MNT/rec/conn.log"
    pid=$SPAWNED
    wait_listen "$port"
    out=$(wrk -t1 -c"$CONNS" -d"${SECS}s" -H 'Connection: close' "http://127.0.0.1:$port/")
    stop_group "$pid"
    RATE=$(awk '/^Requests\/sec:/ { printf "%.0f\n", $2; f = 1 } END { exit !f }' <<<"$out")
}

# median LINES (of an even count, the mean of the middle two)
median() {
    awk 'NF' <<<"$1" | sort -n | awk '{ v[NR] = $1 } END { m = int((NR + 1) / 2); print (NR % 2) ? v[m] : (v[m] + v[m + 1]) / 2 }'
}

main() {
    install_tools
    build_all
    start_backends
    truncate -s 2G "$IMG"
    mkdir -p "$MNT"
    local r f i folder="" proxy="" rows=""
    for ((r = 1; r <= ROUNDS; r++)); do
        f=$(folder_rate)
        ipprotd_rate
        i=$RATE
        log "round $r: the folder alone $f files/s, ipprotd -L -f -c $i connections/s"
        folder+="$f"$'\n'
        proxy+="$i"$'\n'
        rows+="| $r | $f | $i | $(awk -v a="$i" -v b="$f" 'BEGIN { printf "%.2f×", a / b }') |"$'\n'
    done
    f=$(median "$folder")
    i=$(median "$proxy")
    mkdir -p "$(dirname "$OUT")"
    {
        echo "# -L -f -c on a folder slow to create files in"
        echo
        echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); $("$BIN/ipprotd" -v 2>&1 | head -1); $(nproc) CPUs, kernel $(uname -r)"
        echo "- the folder: ext4 without a journal on a loop device, $K files created, written and deleted in it more than a second before each measurement (a fresh file system each time)"
        echo "- the folder alone: \`loadgen create -c $CONNS -t ${SECS}s\` (create, write 200 bytes, close); ipprotd: \`-L -f DIR/prot -c DIR/conn.log\` under \`wrk -t1 -c$CONNS -d${SECS}s -H 'Connection: close'\` to nginx's 170-byte page"
        echo
        echo "| round | the folder alone, files/s | ipprotd -L -f -c, connections/s | ratio |"
        echo "|--:|--:|--:|--:|"
        printf '%s' "$rows"
        echo "| median | $f | $i | $(awk -v a="$i" -v b="$f" 'BEGIN { printf "%.2f×", a / b }') |"
    } >"$OUT"
    cat "$OUT"
}

main "$@"
