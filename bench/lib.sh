# bench/lib.sh: what run.sh and profile.sh share — installing the tools,
# building the Go programs, starting the backends and every proxy on
# loopback, and stopping all of it. Sourced, not run; expects BENCH, ROOT
# and WORK to be set and `set -euo pipefail`.

PORT_BASE=${PORT_BASE:-17000}
IPERF_PORT=$((PORT_BASE + 1)) # iperf3 -s
WEB_PORT=$((PORT_BASE + 2))   # nginx serving the small page
LOAD_PORT=$((PORT_BASE + 3))  # loadgen serve

# TARGETS: every way to reach the backends; "direct" is no proxy. Each
# target i listens on PORT_BASE+100+10*i + 1 (to iperf3), + 2 (to the page)
# and + 3 (to loadgen).
TARGETS=(direct haproxy-splice haproxy nginx socat naive naive-tee-file naive-tee-pgzip
    ipprotd ipprotd-Lf ipprotd-Lfc ipprotd-Lz ipprotd-Lj epoll-go ipprotd-Lz1
    ipprotd-Lf-disk ipprotd-Lfc-disk)

# ipprotd's recording options per target; the prefix is filled in per
# listener so that no two processes share data file names. The -disk
# targets record into DISK_DATA instead of DATA.
declare -A IPPROTD_FLAGS=(
    [ipprotd]=""
    [ipprotd-Lf]="-L -f @DATA@/prot"
    [ipprotd-Lfc]="-L -f @DATA@/prot -c @DATA@/conn.log"
    [ipprotd-Lf-disk]="-L -f @DATA@/prot"
    [ipprotd-Lfc-disk]="-L -f @DATA@/prot -c @DATA@/conn.log"
    [ipprotd-Lz]="-L -f @DATA@/prot -z"
    [ipprotd-Lz1]="-L -f @DATA@/prot -z --gzip-level 1"
    [ipprotd-Lj]="-L -f @DATA@/prot -j"
)

declare -A GROUPS_OF  # target -> PIDs of its process groups
declare -A LOAD_PIDS  # target -> PIDs that serve its loadgen port (for RSS)
declare -A PID_OF     # target/backend -> the PID serving that port
ALL_PIDS=()           # everything started, for the trap
LOGS=${LOGS:-$WORK/logs}
BIN=${BIN:-$WORK/bin}
RUN=${RUN:-$WORK/run}
# Recordings go to tmpfs when there is one: the benchmark measures the
# daemon, not the disk.
if [[ -z ${DATA:-} ]]; then
    if [[ -d /dev/shm && -w /dev/shm ]]; then
        DATA=$(mktemp -d /dev/shm/ipprot-bench.XXXXXX)
    else
        DATA=$WORK/data
    fi
fi
mkdir -p "$LOGS" "$BIN" "$RUN" "$DATA"
# DISK_DATA is a folder on a real disk (DISK, /tmp by default) for the
# -disk targets, made when the first starts: creating a file there can
# cost a millisecond, and the page cache's write path costs more than
# tmpfs's. Scripts that start them remove it at the end.
DISK=${DISK:-/tmp}
DISK_DATA= # never from the environment: it is removed at the end

# disk_data makes DISK_DATA if it is not made yet.
disk_data() {
    [[ -n $DISK_DATA ]] || DISK_DATA=$(mktemp -d "$DISK/ipprot-bench-disk.XXXXXX")
    mkdir -p "$DISK_DATA"
}

# data_of TARGET: the folder TARGET records into.
data_of() {
    if [[ $1 == *-disk ]]; then
        echo "${DISK_DATA:-/nonexistent}/$1"
    else
        echo "$DATA/$1"
    fi
}

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# install_tools installs the Debian packages of the peers and load tools
# that are missing.
install_tools() {
    local -A pkg_of=([haproxy]=haproxy [nginx]=nginx [socat]=socat [iperf3]=iperf3 [wrk]=wrk [setsid]=util-linux [strace]=strace)
    local need=() cmd
    for cmd in "${!pkg_of[@]}"; do
        command -v "$cmd" >/dev/null || need+=("${pkg_of[$cmd]}")
    done
    [[ -e /usr/lib/nginx/modules/ngx_stream_module.so ]] || need+=(libnginx-mod-stream)
    if ((${#need[@]})); then
        [[ $(id -u) == 0 ]] || die "missing ${need[*]}; run as root to install them"
        log "installing ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
    fi
    command -v go >/dev/null || die "go is missing: install the Go version go.mod names (Debian's golang is too old)"
}

# build_all builds ipprotd (with symbols, for perf), naivego and the
# bench tools into BIN. ipprotd comes from the working tree, or from the
# git revision IPPROTD_REV (e.g. HEAD while the tree is being edited).
build_all() {
    local commit src=$ROOT
    # The version number is in version.go; the build names the commit.
    if [[ -n ${IPPROTD_REV:-} ]]; then
        src=$WORK/src
        mkdir -p "$src"
        git -C "$ROOT" archive "$IPPROTD_REV" | tar -x -C "$src"
        commit=$(git -C "$ROOT" rev-parse --short=12 "$IPPROTD_REV")
    else
        commit=$(git -C "$ROOT" describe --always --dirty --abbrev=12 --match 'no-tag-is-named-so' 2>/dev/null || echo unknown)
    fi
    log "building ipprotd ($commit), naivego, epollgo, loadgen, report"
    (cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "-X main.commit=$commit" -o "$BIN/ipprotd" .)
    # bench/ is a module of its own: its tools' dependencies stay out of
    # the product's go.mod.
    (cd "$ROOT/bench" &&
        go build -o "$BIN/naivego" ./naivego &&
        go build -o "$BIN/epollgo" ./epollgo &&
        go build -o "$BIN/loadgen" ./loadgen &&
        go build -o "$BIN/report" ./report)
}

# listening PORT succeeds when something listens on 127.0.0.1:PORT.
listening() {
    local hex
    hex=$(printf ':%04X' "$1")
    awk -v h="$hex" '$4 == "0A" && substr($2, length($2) - 4) == h { f = 1 } END { exit !f }' /proc/net/tcp
}

wait_listen() {
    local i
    for ((i = 0; i < 100; i++)); do
        listening "$1" && return 0
        sleep 0.1
    done
    die "nothing listens on port $1 after 10 s (see $LOGS)"
}

# spawn NAME CMD...: runs CMD in a process group of its own (so that forked
# children and workers go with it), output to LOGS/NAME.log. Sets SPAWNED.
spawn() {
    local name=$1
    shift
    # A kill before the exec must not run the script's traps in the child.
    (
        trap - EXIT INT TERM
        exec setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null
    ) &
    SPAWNED=$!
    ALL_PIDS+=("$SPAWNED")
}

# stop_group PID: SIGTERM to the process group PID leads, SIGKILL after 5 s.
stop_group() {
    local pid=$1 i
    kill -TERM -- "-$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

stop_all() {
    local pid
    for pid in "${ALL_PIDS[@]}"; do
        stop_group "$pid"
    done
    ALL_PIDS=()
}

# render TEMPLATE OUT IPERF_IN WEB_IN LOAD_IN [SPLICE]: fills in a config.
render() {
    sed -e "s/@IPERF_IN@/$3/g; s/@WEB_IN@/$4/g; s/@LOAD_IN@/$5/g" \
        -e "s/@IPERF@/$IPERF_PORT/g; s/@WEB@/$WEB_PORT/g; s/@LOAD@/$LOAD_PORT/g" \
        -e "s/@SPLICE@/${6:-}/g" "$1" >"$2"
}

start_backends() {
    log "starting the backends: iperf3 :$IPERF_PORT, nginx page :$WEB_PORT, loadgen :$LOAD_PORT"
    start_iperf3
    mkdir -p "$RUN/nginx-web"
    render "$BENCH/nginx-web.conf" "$RUN/nginx-web/nginx.conf" 0 0 0
    spawn nginx-web nginx -p "$RUN/nginx-web/" -e "$RUN/nginx-web/error.log" -c "$RUN/nginx-web/nginx.conf" \
        -g "daemon off; pid $RUN/nginx-web/nginx.pid;"
    spawn loadgen-serve "$BIN/loadgen" serve -listen "127.0.0.1:$LOAD_PORT"
    wait_listen "$WEB_PORT"
    wait_listen "$LOAD_PORT"
}

# start_iperf3 (re)starts the iperf3 server, which can stay stuck after a
# failed test.
start_iperf3() {
    if [[ -n ${IPERF_PID:-} ]]; then
        stop_group "$IPERF_PID"
    fi
    spawn iperf3-server iperf3 -s -B 127.0.0.1 -p "$IPERF_PORT"
    IPERF_PID=$SPAWNED
    wait_listen "$IPERF_PORT"
}

# port TARGET BACKEND: the port to reach BACKEND (iperf, web or load)
# through TARGET.
port() {
    local i off
    case $2 in iperf) off=1 ;; web) off=2 ;; load) off=3 ;; *) die "port: backend $2" ;; esac
    if [[ $1 == direct ]]; then
        echo $((PORT_BASE + off))
        return
    fi
    for i in "${!TARGETS[@]}"; do
        if [[ ${TARGETS[$i]} == "$1" ]]; then
            echo $((PORT_BASE + 100 + 10 * i + off))
            return
        fi
    done
    die "unknown target $1"
}

# start_target TARGET: starts the proxy (or proxies) of TARGET on its three
# ports and waits until they listen.
start_target() {
    local t=$1 b in dest flags dir
    local pi pw pl
    pi=$(port "$t" iperf)
    pw=$(port "$t" web)
    pl=$(port "$t" load)
    GROUPS_OF[$t]=""
    LOAD_PIDS[$t]=""
    case $t in
    direct) return ;;
    haproxy | haproxy-splice)
        local splice=""
        [[ $t == haproxy-splice ]] && splice="option splice-auto"
        render "$BENCH/haproxy.cfg" "$RUN/$t.cfg" "$pi" "$pw" "$pl" "$splice"
        spawn "$t" haproxy -db -f "$RUN/$t.cfg"
        GROUPS_OF[$t]=$SPAWNED
        LOAD_PIDS[$t]=$SPAWNED
        ;;
    nginx)
        mkdir -p "$RUN/nginx-stream"
        render "$BENCH/nginx-stream.conf" "$RUN/nginx-stream/nginx.conf" "$pi" "$pw" "$pl"
        spawn nginx-stream nginx -p "$RUN/nginx-stream/" -e "$RUN/nginx-stream/error.log" \
            -c "$RUN/nginx-stream/nginx.conf" -g "daemon off; pid $RUN/nginx-stream/nginx.pid;"
        GROUPS_OF[$t]=$SPAWNED
        LOAD_PIDS[$t]=$SPAWNED
        ;;
    *)
        [[ $t == *-disk ]] && disk_data
        for b in iperf web load; do
            in=$(port "$t" "$b")
            dest=$(port direct "$b")
            dir="$(data_of "$t")/$b"
            mkdir -p "$dir"
            case $t in
            socat)
                spawn "$t-$b" socat "TCP-LISTEN:$in,bind=127.0.0.1,fork,reuseaddr,backlog=4096" "TCP:127.0.0.1:$dest"
                ;;
            naive) spawn "$t-$b" "$BIN/naivego" -listen "127.0.0.1:$in" -to "127.0.0.1:$dest" ;;
            naive-tee-file) spawn "$t-$b" "$BIN/naivego" -listen "127.0.0.1:$in" -to "127.0.0.1:$dest" -tee-file "$dir" ;;
            naive-tee-pgzip) spawn "$t-$b" "$BIN/naivego" -listen "127.0.0.1:$in" -to "127.0.0.1:$dest" -tee-gzip "$dir" ;;
            epoll-go) spawn "$t-$b" "$BIN/epollgo" -listen "127.0.0.1:$in" -to "127.0.0.1:$dest" ;;
            ipprotd*)
                flags=${IPPROTD_FLAGS[$t]//@DATA@/$dir}
                # shellcheck disable=SC2086 # flags are words
                spawn "$t-$b" "$BIN/ipprotd" -p "$in@127.0.0.1" -P "$dest@127.0.0.1" $flags
                ;;
            *) die "unknown target $t" ;;
            esac
            GROUPS_OF[$t]+=" $SPAWNED"
            PID_OF[$t/$b]=$SPAWNED
            [[ $b == load ]] && LOAD_PIDS[$t]=$SPAWNED
        done
        ;;
    esac
    wait_listen "$pi"
    wait_listen "$pw"
    wait_listen "$pl"
}

stop_target() {
    local pid
    for pid in ${GROUPS_OF[$1]:-}; do
        stop_group "$pid"
    done
    GROUPS_OF[$1]=""
    LOAD_PIDS[$1]=""
}

# settle TARGET: waits until TARGET's processes are idle, then deletes
# what it recorded.
settle() {
    local t=$1 dir
    if [[ -n ${GROUPS_OF[$t]:-} ]]; then
        # shellcheck disable=SC2086
        "$BIN/loadgen" quiet -max 20s ${GROUPS_OF[$t]}
    fi
    dir=$(data_of "$t")
    if [[ -d $dir ]]; then
        find "$dir" -type f -delete
    fi
    if [[ $t == *-disk || $t == folder-create ]]; then
        # A journal-less ext4 reuses at once the inodes of files deleted
        # in the current second, and skips those deleted in the minutes
        # before: let the next measurement start from the latter state.
        sleep 1.1
    fi
}
