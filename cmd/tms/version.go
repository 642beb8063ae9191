package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/nats-io/nats-server/v2/server"
)

// buildInfo is what `tms version` reports: the module version and VCS
// revision the Go toolchain stamped into the binary, and the Go and
// nats-server versions it was built with.
type buildInfo struct {
	Version  string // module version: a tag, or "(devel)" for a local build
	Revision string // VCS commit, "" when built outside a checkout (-buildvcs=false)
	Time     string // commit time, RFC 3339
	Modified bool   // the checkout had uncommitted changes
	Go       string
	NATS     string
}

func readBuildInfo() buildInfo {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	return buildInfoFrom(bi)
}

// buildInfoFrom reads what the toolchain recorded; nil when it recorded
// nothing (a binary built without module support).
func buildInfoFrom(bi *debug.BuildInfo) buildInfo {
	b := buildInfo{Version: "unknown", Go: runtime.Version(), NATS: server.VERSION}
	if bi == nil {
		return b
	}
	if bi.GoVersion != "" {
		b.Go = bi.GoVersion
	}
	if bi.Main.Version != "" {
		b.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Revision = s.Value
		case "vcs.time":
			b.Time = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	return b
}

func printVersion(w io.Writer) { readBuildInfo().write(w) }

func (b buildInfo) write(w io.Writer) {
	fmt.Fprintf(w, "tms %s\n", b.Version)
	switch {
	case b.Revision == "":
		fmt.Fprintln(w, "revision unknown (built without VCS information)")
	case b.Modified:
		fmt.Fprintf(w, "revision %s (%s, with uncommitted changes)\n", b.Revision, b.Time)
	default:
		fmt.Fprintf(w, "revision %s (%s)\n", b.Revision, b.Time)
	}
	fmt.Fprintf(w, "go %s %s/%s\n", b.Go, runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(w, "nats-server %s (embedded)\n", b.NATS)
}
