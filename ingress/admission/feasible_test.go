package admission

import (
	"reflect"
	"testing"
	"time"

	"tms/subjects"
)

// TestCapacityOf: a capacity reply reaches a client only as the contract
// has it: one entry per ticket type, in the API's order, and a planned
// slot inside the type's window of the instant judged from exactly when
// some are available.
func TestCapacityOf(t *testing.T) {
	t.Parallel()
	asOf := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	slot := time.Date(2030, 1, 2, 3, 5, 0, 0, time.UTC)
	good := []subjects.TypeCapacity{
		{Type: subjects.Bronze, Available: 900, Agent: "a1", SlotTime: slot.Add(time.Hour), Moves: 0},
		{Type: subjects.Gold, Available: 3, Agent: "a2", SlotTime: slot, Moves: 2},
		{Type: subjects.Silver, Available: 0, Agent: "ignored", SlotTime: slot, Moves: 0},
	}
	got, err := capacityOf(good, asOf)
	if err != nil {
		t.Fatalf("a good reply refused: %v", err)
	}
	want := []TypeCapacity{
		{Type: subjects.Gold, Available: 3, Agent: "a2", SlotTime: slot, Moves: 2},
		{Type: subjects.Silver},
		{Type: subjects.Bronze, Available: 900, Agent: "a1", SlotTime: slot.Add(time.Hour)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("capacityOf = %+v, want %+v", got, want)
	}
	for name, change := range map[string]func([]subjects.TypeCapacity) []subjects.TypeCapacity{
		"a type missing":   func(c []subjects.TypeCapacity) []subjects.TypeCapacity { return c[:2] },
		"a type twice":     func(c []subjects.TypeCapacity) []subjects.TypeCapacity { return append(c, c[0]) },
		"an unknown type":  func(c []subjects.TypeCapacity) []subjects.TypeCapacity { c[2].Type = "gold"; return c },
		"negative":         func(c []subjects.TypeCapacity) []subjects.TypeCapacity { c[2].Available = -1; return c },
		"negative moves":   func(c []subjects.TypeCapacity) []subjects.TypeCapacity { c[1].Moves = -1; return c },
		"no planned agent": func(c []subjects.TypeCapacity) []subjects.TypeCapacity { c[1].Agent = ""; return c },
		"no planned slot":  func(c []subjects.TypeCapacity) []subjects.TypeCapacity { c[1].SlotTime = time.Time{}; return c },
		"slot before asOf": func(c []subjects.TypeCapacity) []subjects.TypeCapacity {
			c[1].SlotTime = slot.Add(-time.Minute)
			return c
		},
		"slot past the SLA": func(c []subjects.TypeCapacity) []subjects.TypeCapacity {
			c[1].SlotTime = slot.Add(2 * time.Hour)
			return c
		},
		"not a whole minute": func(c []subjects.TypeCapacity) []subjects.TypeCapacity {
			c[1].SlotTime = slot.Add(time.Second)
			return c
		},
	} {
		entries := change(append([]subjects.TypeCapacity(nil), good...))
		if got, err := capacityOf(entries, asOf); err == nil {
			t.Errorf("%s: accepted as %+v", name, got)
		}
	}
}

// TestAtRiskOf: an at-risk list is passed on only with ids, known types
// and whole-minute slots; an empty list is empty, not nil (the API's
// "tickets": []).
func TestAtRiskOf(t *testing.T) {
	t.Parallel()
	slot := time.Date(2030, 1, 2, 3, 5, 0, 0, time.UTC)
	good := subjects.AtRiskTicket{Ticket: "t1", Type: subjects.Silver, Agent: "a1", SlotTime: slot, Deadline: slot.Add(time.Hour)}
	got, err := atRiskOf([]subjects.AtRiskTicket{good})
	want := []AtRiskTicket{{TicketID: "t1", Type: subjects.Silver, Agent: "a1", SlotTime: slot, Deadline: slot.Add(time.Hour)}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("atRiskOf = %+v, %v, want %+v", got, err, want)
	}
	if got, err := atRiskOf(nil); err != nil || got == nil || len(got) != 0 {
		t.Errorf("atRiskOf(nil) = %#v, %v, want an empty list", got, err)
	}
	for name, change := range map[string]func(*subjects.AtRiskTicket){
		"no ticket id":  func(r *subjects.AtRiskTicket) { r.Ticket = "" },
		"a bad type":    func(r *subjects.AtRiskTicket) { r.Type = "PLATINUM" },
		"no agent":      func(r *subjects.AtRiskTicket) { r.Agent = "" },
		"no slot":       func(r *subjects.AtRiskTicket) { r.SlotTime = time.Time{} },
		"a broken slot": func(r *subjects.AtRiskTicket) { r.SlotTime = slot.Add(time.Second) },
		"no deadline":   func(r *subjects.AtRiskTicket) { r.Deadline = time.Time{} },
	} {
		r := good
		change(&r)
		if got, err := atRiskOf([]subjects.AtRiskTicket{r}); err == nil {
			t.Errorf("%s: accepted as %+v", name, got)
		}
	}
}

// TestFitsOf: a refusal's fits are the known types in the API's order,
// and an empty list (not absent) when the responders name none.
func TestFitsOf(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, want []string }{
		{nil, []string{}},
		{[]string{subjects.Bronze, subjects.Silver}, []string{subjects.Silver, subjects.Bronze}},
		{[]string{"bronze", subjects.Gold, subjects.Gold}, []string{subjects.Gold}},
	} {
		if got := fitsOf(c.in); got == nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("fitsOf(%q) = %#v, want %q", c.in, got, c.want)
		}
	}
}
