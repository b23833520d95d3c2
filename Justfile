# ipprot tasks. `just --list` shows them.

# The version number is kept in version.go; the build adds the commit
# (go build stamps it too, unless -buildvcs=false or there is no .git).
commit := `git describe --always --dirty --abbrev=12 --match 'no-tag-is-named-so' 2>/dev/null || echo unknown`

# Build the ipprotd binary (static, with its version).
build:
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.commit={{commit}}" -o ipprotd .

# Install ipprotd into $(go env GOPATH)/bin (go install would name it ipprot).
install:
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.commit={{commit}}" -o "$(go env GOPATH)/bin/ipprotd" .

# Run every test with the race detector, as CI does, and the benchmark
# tools' own tests (bench/ is a module of its own).
test:
    go test -race ./...
    cd bench && go test ./...

# Formatting and vet; fails on any finding.
lint:
    test -z "$(gofmt -l $(git ls-files '*.go'))" || (gofmt -l $(git ls-files '*.go'); exit 1)
    go vet ./...
    cd bench && go vet ./...

# Short fuzzing runs of every fuzz target, found afresh in each package.
fuzz seconds="20":
    #!/usr/bin/env bash
    set -euo pipefail
    for pkg in $(go list ./...); do
      for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
        echo "fuzz: $pkg $target"
        go test -run '^$' -fuzz "^${target}\$" -fuzztime {{seconds}}s -fuzzminimizetime 2s "$pkg"
      done
    done

# The side-by-side benchmark against a direct connection and the peers,
# the same with TLS on both sides against HAProxy, what a request costs
# (CPU, context switches, system calls) against nginx stream, and -L -f -c
# on a folder slow to create files in against the folder's own rate.
bench:
    bench/run.sh
    bench/tls.sh
    bench/perreq.sh
    bench/slowdisk.sh
