# ipprot tasks. `just --list` shows them.

version := `git describe --tags --always --dirty 2>/dev/null || echo devel`

# Build the ipprotd binary (static, with its version).
build:
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version={{version}}" -o ipprotd .

# Run every test with the race detector, as CI does.
test:
    go test -race ./...

# Formatting and vet; fails on any finding.
lint:
    test -z "$(gofmt -l $(git ls-files '*.go'))" || (gofmt -l $(git ls-files '*.go'); exit 1)
    go vet ./...

# Short fuzzing runs of every parser.
fuzz seconds="20":
    go test -run '^$' -fuzz FuzzParseAllow -fuzztime {{seconds}}s ./proxy/
    go test -run '^$' -fuzz FuzzParsePortAt -fuzztime {{seconds}}s ./proxy/
    go test -run '^$' -fuzz FuzzCompile -fuzztime {{seconds}}s ./connlog/
    go test -run '^$' -fuzz FuzzRoundTrip -fuzztime {{seconds}}s ./recorder/
    go test -run '^$' -fuzz FuzzNormaliseArgs -fuzztime {{seconds}}s .
    go test -run '^$' -fuzz FuzzReadBack -fuzztime {{seconds}}s ./playback/
    go test -run '^$' -fuzz FuzzSplit -fuzztime {{seconds}}s ./playback/
    go test -run '^$' -fuzz FuzzSQL -fuzztime {{seconds}}s ./playback/

# The side-by-side benchmark against a direct connection and the peers.
bench:
    bench/run.sh
