# ipprot tasks. `just --list` shows them.

version := `git describe --tags --always --dirty 2>/dev/null || echo devel`

# Build the ipprotd binary (static, with its version).
build:
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version={{version}}" -o ipprotd .

# Install ipprotd into $(go env GOPATH)/bin (go install would name it ipprot).
install:
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version={{version}}" -o "$(go env GOPATH)/bin/ipprotd" .

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
        go test -run '^$' -fuzz "^${target}\$" -fuzztime {{seconds}}s "$pkg"
      done
    done

# The side-by-side benchmark against a direct connection and the peers,
# then the same with TLS on both sides against HAProxy.
bench:
    bench/run.sh
    bench/tls.sh
