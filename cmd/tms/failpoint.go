package main

import (
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// failpointEnv arms a failpoint: TEST ONLY. Its value is <point>:<n>, and
// the process kills itself with SIGKILL at the n-th time it reaches the
// point, as a crash would, with no shutdown and no flush. The fault tests
// of cmd/tms use it to crash a process exactly where a ticket is half
// done. It is not a flag on purpose: nothing in production sets it, and a
// process that has it logs so at start, loudly.
const failpointEnv = "TMS_FAILPOINT"

// The failpoints, and the commands whose parts reach them.
var failpoints = map[string]string{
	// after the responder wrote a ticket's confirmed record, before the answer
	"ingress.after_reserve": "serve ingress",
	// before an allocator writes a ticket event into a tenant database
	"allocator.before_commit": "serve worker",
	// after that write committed, before the ack
	"allocator.after_commit": "serve worker",
}

// failpoint is an armed TMS_FAILPOINT; the zero value is none.
type failpoint struct {
	Name string
	At   int64
}

// parseFailpoint reads TMS_FAILPOINT's value for command.
func parseFailpoint(v, command string) (failpoint, error) {
	if v == "" {
		return failpoint{}, nil
	}
	name, count, ok := strings.Cut(v, ":")
	roles, known := failpoints[name]
	n, err := strconv.ParseInt(count, 10, 64)
	if !ok || !known || err != nil || n < 1 {
		return failpoint{}, usagef("%s=%q: want <point>:<n> with n >= 1, point one of %s (test only)",
			failpointEnv, v, strings.Join(slices.Sorted(maps.Keys(failpoints)), ", "))
	}
	if !strings.Contains(" "+roles+" ", " "+command+" ") {
		return failpoint{}, usagef("%s=%q: tms %s never reaches %s (test only)", failpointEnv, v, command, name)
	}
	return failpoint{Name: name, At: n}, nil
}

// hook returns the function to install at point: nil unless fp arms it.
// The returned function SIGKILLs the process at its fp.At-th call.
func (fp failpoint) hook(point string, logger *slog.Logger) func(ticket string) {
	if fp.Name != point {
		return nil
	}
	var calls atomic.Int64
	return func(ticket string) {
		if calls.Add(1) != fp.At {
			return
		}
		logger.Warn("TEST FAILPOINT reached: killing this process with SIGKILL", "failpoint", fp.Name,
			"call", fp.At, "ticket", ticket, "pid", os.Getpid())
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way; do not go on with the ticket
	}
}

// warn logs an armed failpoint at start, so no one mistakes the process
// for a production one.
func (fp failpoint) warn(logger *slog.Logger) {
	if fp.Name == "" {
		return
	}
	logger.Warn(fmt.Sprintf("TEST ONLY: %s is set: this process SIGKILLs itself at call %d of %s; never set it in production",
		failpointEnv, fp.At, fp.Name), "failpoint", fp.Name, "at", fp.At)
}
