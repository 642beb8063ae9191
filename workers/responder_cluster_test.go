package workers_test

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"tms/ops/testkit"
	"tms/subjects"
	"tms/workers"
)

// TestResponderRacesOverFreedSlotsR3: on a replicated bucket, an update
// over a freed slot (a released record) that loses the race comes back
// from nats.go as the raw error 10164, not ErrKeyExists. Two responders
// racing for the same freed slots must treat that as "taken, try the next
// one": every freed slot is taken exactly once and nobody gets a 503.
func TestResponderRacesOverFreedSlotsR3(t *testing.T) {
	t.Parallel()
	e := newClusterRespEnv(t)
	ten := e.account(t, "Replicated Co")
	e.agentAt(t, ten, respT0)
	r1 := e.responder(t, nil)
	r2 := e.responder(t, nil)
	nc := e.connect(t)

	// Fill the GOLD window (120 slots), then free every third slot.
	var held []subjects.ETAReply
	for i := range 120 {
		r := mustAsk(t, nc, newReserve(ten.ID, subjects.Gold, respT0))
		if r.Code != http.StatusCreated {
			t.Fatalf("fill %d: %+v", i, r)
		}
		held = append(held, r)
	}
	freed := 0
	for i, r := range held {
		if i%3 != 0 {
			continue
		}
		rel := mustAsk(t, nc, releaseReq(ten.ID, subjects.Gold, respT0, r))
		if rel.Code != http.StatusOK {
			t.Fatalf("release %d: %+v", i, rel)
		}
		freed++
	}
	first, last := respT0, respT0.Add(119*time.Minute)
	for _, r := range []*workers.Responder{r1, r2} {
		testkit.Eventually(t, 10*time.Second, func() bool { return r.FreeSlots(ten.ID, first, last) == freed },
			"both responders see the freed slots")
	}

	// Race for them: more requests than free slots, from several clients,
	// spread over both responders by the queue group.
	const requests = 100
	codes := make(chan int, requests)
	var wg sync.WaitGroup
	for range 10 {
		conn := e.connect(t)
		wg.Go(func() {
			for range requests / 10 {
				r, err := ask(t, conn, subjects.ETA(ten.ID), newReserve(ten.ID, subjects.Gold, respT0))
				if err != nil {
					t.Errorf("race request: %v", err)
					return
				}
				codes <- r.Code
			}
		})
	}
	wg.Wait()
	close(codes)
	count := map[int]int{}
	for c := range codes {
		count[c]++
	}
	if count[http.StatusCreated] != freed || count[http.StatusConflict] != requests-freed || len(count) != 2 {
		t.Fatalf("answers %v, want %d x 201 and %d x 409 (a lost race is not an outage)", count, freed, requests-freed)
	}
	if keys := e.busyKeys(t, ten.ID); len(keys) != 120 {
		t.Fatalf("%d busy slot keys after the race, want the full window of 120", len(keys))
	}
}
