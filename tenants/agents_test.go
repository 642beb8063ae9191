package tenants_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tms/ops/testkit"
	"tms/ops/testkit/tenantstest"
	"tms/subjects"
	"tms/tenants"
)

func TestAgents(t *testing.T) {
	t.Parallel()
	e := newTenantEnv(t)
	ctx := testkit.Context(t, 60*time.Second)
	clock := testkit.NewClock(time.Date(2030, 5, 6, 7, 8, 9, 123456789, time.UTC))
	agents := tenantstest.NewAgents(t, tenants.AgentsConfig{Pools: e.Pools, JS: e.js, Now: clock.Now})
	kv, err := e.js.KeyValue(ctx, subjects.BucketAgents)
	if err != nil {
		t.Fatal(err)
	}
	a := e.createAccount(t, "Agents A", "a@agents.example")
	b := e.createAccount(t, "Agents B", "b@agents.example")

	t0 := clock.Now().Truncate(time.Microsecond)
	ann, err := agents.Create(ctx, a, "  Ann  ")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ann.ID, "a") || len(ann.ID) != 21 || ann.Name != "Ann" || ann.Status != subjects.AgentAvailable ||
		ann.AvailableSince == nil || !ann.AvailableSince.Equal(t0) || !ann.CreatedAt.Equal(t0) {
		t.Errorf("created %+v", ann)
	}
	checkRecord(t, kv, a.ID, ann)
	clock.Advance(time.Minute)
	bob, err := agents.Create(ctx, a, "Bob")
	if err != nil {
		t.Fatal(err)
	}

	clock.Advance(time.Minute)
	t2 := clock.Now().Truncate(time.Microsecond)
	off, err := agents.SetStatus(ctx, a, ann.ID, subjects.AgentUnavailable)
	if err != nil {
		t.Fatal(err)
	}
	if off.Status != subjects.AgentUnavailable || off.AvailableSince != nil || !off.UpdatedAt.Equal(t2) || !off.CreatedAt.Equal(t0) {
		t.Errorf("after unavailable: %+v", off)
	}
	checkRecord(t, kv, a.ID, off)

	clock.Advance(time.Minute)
	t3 := clock.Now().Truncate(time.Microsecond)
	on, err := agents.SetStatus(ctx, a, ann.ID, subjects.AgentAvailable)
	if err != nil {
		t.Fatal(err)
	}
	if on.AvailableSince == nil || !on.AvailableSince.Equal(t3) {
		t.Errorf("after available again: %+v", on)
	}
	clock.Advance(time.Minute)
	same, err := agents.SetStatus(ctx, a, ann.ID, subjects.AgentAvailable)
	if err != nil {
		t.Fatal(err)
	}
	if same.AvailableSince == nil || !same.AvailableSince.Equal(t3) {
		t.Errorf("repeating available moved available_since: %+v", same)
	}
	checkRecord(t, kv, a.ID, same)

	list, err := agents.List(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != ann.ID || list[1].ID != bob.ID || !agentEqual(list[0], same) || !agentEqual(list[1], bob) {
		t.Errorf("List = %+v", list)
	}

	// Tenant b sees nothing of a and cannot touch a's agents.
	if list, err := agents.List(ctx, b); err != nil || len(list) != 0 {
		t.Errorf("List(b) = %+v, %v", list, err)
	}
	for _, id := range []string{ann.ID, "anonexistentagentxxxx", "a.b", "", "*", strings.Repeat("a", 65)} {
		if _, err := agents.SetStatus(ctx, b, id, subjects.AgentUnavailable); !errors.Is(err, tenants.ErrAgentNotFound) {
			t.Errorf("SetStatus(b, %.20q) = %v, want ErrAgentNotFound", id, err)
		}
	}
	if _, err := kv.Get(ctx, subjects.AgentKey(b.ID, ann.ID)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("KV has a's agent under b: %v", err)
	}

	for _, c := range []struct{ name, status, field string }{
		{"", "", "name"}, {"   ", "", "name"}, {strings.Repeat("n", 101), "", "name"}, {"a\x00b", "", "name"},
		{"", "busy", "agent_status"}, {"", "Available", "agent_status"}, {"", "", "agent_status"},
	} {
		var err error
		if c.field == "name" {
			_, err = agents.Create(ctx, a, c.name)
		} else {
			_, err = agents.SetStatus(ctx, a, ann.ID, c.status)
		}
		var fe *tenants.FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("name %.10q status %q: %v, want a FieldError for %s", c.name, c.status, err, c.field)
		}
	}
	if list, err := agents.List(ctx, a); err != nil || len(list) != 2 {
		t.Errorf("bad input changed the agents: %d, %v", len(list), err)
	}
}

func agentEqual(x, y tenants.Agent) bool {
	sinceEq := (x.AvailableSince == nil) == (y.AvailableSince == nil) &&
		(x.AvailableSince == nil || x.AvailableSince.Equal(*y.AvailableSince))
	return x.ID == y.ID && x.Name == y.Name && x.Status == y.Status && sinceEq &&
		x.CreatedAt.Equal(y.CreatedAt) && x.UpdatedAt.Equal(y.UpdatedAt)
}

func checkRecord(t *testing.T, kv jetstream.KeyValue, tenant string, want tenants.Agent) {
	t.Helper()
	e, err := kv.Get(testkit.Context(t, 5*time.Second), subjects.AgentKey(tenant, want.ID))
	if err != nil {
		t.Fatalf("agent record: %v", err)
	}
	var rec subjects.AgentRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		t.Fatal(err)
	}
	got := tenants.Agent{ID: rec.ID, Name: rec.Name, Status: rec.Status, AvailableSince: rec.AvailableSince,
		CreatedAt: want.CreatedAt, UpdatedAt: rec.UpdatedAt}
	if rec.Tenant != tenant || !agentEqual(got, want) {
		t.Errorf("agent record %+v, want %+v of tenant %s", rec, want, tenant)
	}
}
