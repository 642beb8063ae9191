package jsbench_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkDiskFsync is the floor under every shape: N writers, each
// appending a record to a file of its own and fsyncing it, as N streams'
// write loops do, with no server in between. It shows how many fsyncs the
// disk completes per second as writers are added, i.e. how far shards can
// scale before the disk itself is the wall.
func BenchmarkDiskFsync(b *testing.B) {
	for _, files := range []int{1, 2, 4, 8, 16} {
		b.Run(fmt.Sprintf("files=%d", files), func(b *testing.B) {
			dir := b.TempDir()
			fds := make([]*os.File, files)
			for i := range fds {
				f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("blk%d", i)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { f.Close() })
				fds[i] = f
			}
			drive(b, files, "fsyncs", 1, func(_ context.Context, w, _ int) error {
				if _, err := fds[w].Write(record); err != nil {
					return err
				}
				return fds[w].Sync()
			})
		})
	}
}
