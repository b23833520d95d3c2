package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// release is ipprotd's version number. It is kept here, in the source, so
// that a plain `go build` knows it; raise it with each release (semantic
// versioning: the command line and the files are the interface). 1.0.0 is
// the first numbered release: the original's daemon, recording, reading,
// replay, integrity and the operator's tools (metrics, PROXY protocol,
// rolling upgrades).
const release = "1.0.0"

// version and commit may be set at build time (-ldflags "-X
// main.version=1.0.0-rc1 -X main.commit=abc1234"): version replaces
// release (a pre-release or a packager's suffix), commit names the
// revision where the build carries none (go build -buildvcs=false, a
// source tarball).
var (
	version = ""
	commit  = ""
)

// buildInfo is what ipprotd knows about its own build.
type buildInfo struct {
	Version   string // the release number, "1.0.0"
	Commit    string // the revision, abbreviated, with "-dirty" for uncommitted changes; "unknown" if the build does not say
	GoVersion string // the toolchain, "go1.26.8"
}

// readBuildInfo returns the build's version, commit and Go version: the
// release number above (or -X main.version), the VCS revision that
// go build stamps (or -X main.commit).
func readBuildInfo() buildInfo {
	b := buildInfo{Version: release, Commit: commit, GoVersion: runtime.Version()}
	if version != "" {
		b.Version = version
	}
	if b.Commit != "" {
		return b
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		b.Commit = "unknown"
		return b
	}
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" && dirty {
		rev += "-dirty"
	}
	b.Commit = rev
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	return b
}

// versionString is what -v prints: "ipprotd 1.0.0 (commit 3dfd873a1b2c,
// go1.26.8)", the commit "unknown" where the build does not say.
func versionString() string {
	b := readBuildInfo()
	return fmt.Sprintf("ipprotd %s (commit %s, %s)", b.Version, b.Commit, b.GoVersion)
}
