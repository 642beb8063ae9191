package subjects

import (
	"testing"
)

func TestIdempotencySubject(t *testing.T) {
	t.Parallel()
	if got := IdempotencySubject("c1", "ab12"); got != "$KV.TMS_IDEMPOTENCY.c1.ab12" {
		t.Errorf("IdempotencySubject = %q", got)
	}
}
