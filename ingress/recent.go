package ingress

import (
	"container/list"
	"hash/maphash"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// GET /admissions/recent (docs/api.md, "Status page"): the last create_ticket
// decisions of the caller's tenant that this ingress process answered, over
// HTTP and the NATS API alike. It is per process, in memory: another ingress
// process has its own, and a restart starts empty.
//
// The hot path takes two short locks: its shard's (to find the tenant's
// ring) and its tenant's ring's own. No lock is shared by every tenant.

// Bounds of the recent decisions kept: per tenant, and how many tenants
// (the least recently decided one is forgotten first).
const (
	recentPerTenant = 50
	recentShards    = 16
	recentTenants   = 1024 // recentShards * recentPerShard
	recentPerShard  = recentTenants / recentShards
)

// Outcomes of a recent decision.
const (
	recentAccepted = "accepted"
	recentRefused  = "refused"
)

// recentDecision is one create_ticket decision as GET /admissions/recent
// shows it.
type recentDecision struct {
	At         string `json:"at"`
	TicketType string `json:"ticket_type"`
	Outcome    string `json:"outcome"`
	// Reason is tms_admissions_total's outcome label (no_slot,
	// rate_limited, shed, unavailable, invalid) and Code the error code of
	// the answer; both absent when accepted, TicketID absent when refused.
	Reason   string `json:"reason,omitempty"`
	Code     string `json:"code,omitempty"`
	TicketID string `json:"ticket_id,omitempty"`
}

// recentBody is GET /admissions/recent's 200: newest first.
type recentBody struct {
	Decisions []recentDecision `json:"decisions"`
	Limit     int              `json:"limit"`
	Scope     string           `json:"scope"`
}

// recentRing is one tenant's last decisions.
type recentRing struct {
	mu   sync.Mutex
	buf  [recentPerTenant]recentEntry
	next int // where the next entry goes
	n    int // entries held
}

// recentEntry is a decision as kept: every string is a constant or an id
// the service made, so a hostile request cannot grow it.
type recentEntry struct {
	at time.Time
	decision
	ticketID string
}

func (g *recentRing) add(e recentEntry) {
	g.mu.Lock()
	g.buf[g.next] = e
	g.next = (g.next + 1) % recentPerTenant
	if g.n < recentPerTenant {
		g.n++
	}
	g.mu.Unlock()
}

// newestFirst is a copy of the ring's entries, newest first.
func (g *recentRing) newestFirst() []recentEntry {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]recentEntry, 0, g.n)
	for i := 1; i <= g.n; i++ {
		out = append(out, g.buf[(g.next-i+recentPerTenant)%recentPerTenant])
	}
	return out
}

// recentShard is the rings of the tenants that hash to it, least recently
// decided last in lru.
type recentShard struct {
	mu    sync.Mutex
	rings map[string]*list.Element // value: *recentTenant
	lru   *list.List
}

type recentTenant struct {
	id   string
	ring *recentRing
}

// recentAdmissions is every tenant's ring. It is a prometheus collector
// (tms_recent_admissions_tenants, how many tenants it holds) so that the
// public router and the NATS API of one process, which share a registry,
// share one (ops.Register returns the collector registered first).
type recentAdmissions struct {
	seed   maphash.Seed
	shards [recentShards]recentShard
	now    func() time.Time
}

var recentTenantsDesc = prometheus.NewDesc("tms_recent_admissions_tenants",
	"Tenants whose last create_ticket decisions this process keeps for GET /admissions/recent (at most 1024).", nil, nil)

func newRecentAdmissions() *recentAdmissions {
	r := &recentAdmissions{seed: maphash.MakeSeed(), now: time.Now}
	for i := range r.shards {
		r.shards[i].rings = map[string]*list.Element{}
		r.shards[i].lru = list.New()
	}
	return r
}

// Describe and Collect make recentAdmissions a prometheus.Collector.
func (r *recentAdmissions) Describe(ch chan<- *prometheus.Desc) { ch <- recentTenantsDesc }

func (r *recentAdmissions) Collect(ch chan<- prometheus.Metric) {
	n := 0
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		n += len(s.rings)
		s.mu.Unlock()
	}
	ch <- prometheus.MustNewConstMetric(recentTenantsDesc, prometheus.GaugeValue, float64(n))
}

func (r *recentAdmissions) shard(tenant string) *recentShard {
	return &r.shards[maphash.String(r.seed, tenant)%recentShards]
}

// ring is tenant's ring; create makes one when there is none (forgetting
// the shard's least recently decided tenant when it is full).
func (r *recentAdmissions) ring(tenant string, create bool) *recentRing {
	s := r.shard(tenant)
	s.mu.Lock()
	defer s.mu.Unlock()
	if el, ok := s.rings[tenant]; ok {
		if create {
			s.lru.MoveToFront(el)
		}
		return el.Value.(*recentTenant).ring
	}
	if !create {
		return nil
	}
	if s.lru.Len() >= recentPerShard {
		old := s.lru.Back()
		s.lru.Remove(old)
		delete(s.rings, old.Value.(*recentTenant).id)
	}
	g := &recentRing{}
	s.rings[tenant] = s.lru.PushFront(&recentTenant{id: tenant, ring: g})
	return g
}

// record keeps decision d of tenant ("" when the request never got as
// far as a tenant: nothing is kept); ticketID is the accepted ticket's.
func (r *recentAdmissions) record(tenant string, d decision, ticketID string) {
	if r == nil || tenant == "" {
		return
	}
	e := recentEntry{at: r.now(), decision: d}
	if d.outcome == outcomeAccepted {
		e.ticketID = ticketID
	} else {
		e.code = boundedCode(d.code)
	}
	r.ring(tenant, true).add(e)
}

// boundedCode is an error code as kept: the project's codes are short
// constants; anything else (none expected) is cut.
func boundedCode(code string) string {
	const maxCode = 64
	if len(code) > maxCode {
		return code[:maxCode]
	}
	return code
}

// recent is tenant's decisions, newest first.
func (r *recentAdmissions) recent(tenant string) recentBody {
	body := recentBody{Decisions: []recentDecision{}, Limit: recentPerTenant, Scope: "process"}
	g := r.ring(tenant, false)
	if g == nil {
		return body
	}
	for _, e := range g.newestFirst() {
		d := recentDecision{At: timestamp(e.at), TicketType: e.typ, Outcome: recentAccepted, TicketID: e.ticketID}
		if e.outcome != outcomeAccepted {
			d.Outcome, d.Reason, d.Code = recentRefused, e.outcome, e.code
		}
		body.Decisions = append(body.Decisions, d)
	}
	return body
}

// recentAdmissionsHTTP is GET /admissions/recent.
func (a *api) recentAdmissionsHTTP(r *recentAdmissions) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		if err := noQuery(req.URL); err != nil {
			writeError(w, req, a.logger, err)
			return
		}
		writeJSON(w, http.StatusOK, r.recent(sessionFrom(req.Context()).tenant.ID))
	}
}
