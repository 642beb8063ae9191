package ops_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"tms/ops"
)

// TestLockDir: a second lock of one directory is refused naming the
// holder's pid, even from the same process (flock locks are per open
// file); after Close it can be taken again.
func TestLockDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first, err := ops.LockDir(dir)
	if err != nil {
		t.Fatalf("first lock: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, ops.LockFileName))
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Fatalf("lock file holds %q (%v), want this pid %d", b, err, os.Getpid())
	}
	_, err = ops.LockDir(dir)
	var locked *ops.DirLockedError
	if !errors.As(err, &locked) || !errors.Is(err, ops.ErrDirLocked) || locked.PID != os.Getpid() || locked.Dir != dir {
		t.Fatalf("second lock: %v, want a DirLockedError naming pid %d", err, os.Getpid())
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := ops.LockDir(dir)
	if err != nil {
		t.Fatalf("lock after Close: %v", err)
	}
	again.Close()
}

func TestLockDirMissing(t *testing.T) {
	t.Parallel()
	_, err := ops.LockDir(filepath.Join(t.TempDir(), "nosuch"))
	if err == nil || errors.Is(err, ops.ErrDirLocked) {
		t.Fatalf("lock of a missing dir: %v, want an error that is not ErrDirLocked", err)
	}
}
