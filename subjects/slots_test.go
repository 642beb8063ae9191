package subjects

import (
	"testing"
	"time"
)

func TestSlotSubject(t *testing.T) {
	t.Parallel()
	m := time.Date(2030, 1, 2, 3, 4, 0, 0, time.UTC)
	want := "$KV." + SlotBucket(SlotShard("c1", 4)) + ".c1.a1.203001020304"
	if got := SlotSubject("c1", "a1", m, 4); got != want {
		t.Errorf("SlotSubject = %q, want %q", got, want)
	}
}
