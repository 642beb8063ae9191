package ops

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// LockFileName is the lock file LockDir keeps in the directory it locks.
const LockFileName = "tms.lock"

// DirLock is an exclusive lock on a directory, held by this process until
// Close. It is an OS file lock (flock) on LockFileName, which the kernel
// drops when the process exits in any way: a process killed with SIGKILL
// leaves no stale lock behind, and the file left on disk means nothing by
// itself.
type DirLock struct{ f *os.File }

// DirLockedError reports that another process holds the lock of Dir.
// PID is the holder's process id as it wrote it into the lock file, 0
// when that could not be read.
type DirLockedError struct {
	Dir string
	PID int
}

func (e *DirLockedError) Error() string {
	if e.PID > 0 {
		return fmt.Sprintf("%s is locked by process %d", e.Dir, e.PID)
	}
	return fmt.Sprintf("%s is locked by another process", e.Dir)
}

func (e *DirLockedError) Unwrap() error { return ErrDirLocked }

// LockDir takes the lock of dir (which must exist) without waiting, and
// writes this process's id into the lock file for whoever finds it taken.
// Two processes that would write one store refuse each other this way.
func LockDir(dir string) (*DirLock, error) {
	name := filepath.Join(dir, LockFileName)
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("lock file %s: %w", name, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid := readPID(f)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &DirLockedError{Dir: dir, PID: pid}
		}
		return nil, fmt.Errorf("locking %s: %w", name, err)
	}
	// The id is only a hint for an operator who finds the lock taken; the
	// lock itself is the flock, so failing to write it harms no one.
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return &DirLock{f: f}, nil
}

// Close releases the lock.
func (l *DirLock) Close() error { return l.f.Close() }

func readPID(f *os.File) int {
	buf := make([]byte, 32)
	n, _ := f.ReadAt(buf, 0)
	pid, err := strconv.Atoi(string(bytes.TrimSpace(buf[:n])))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}
