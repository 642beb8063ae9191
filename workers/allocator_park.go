package workers

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/subjects"
	"tms/tenants"
)

// A tenant whose database fails is parked: its records are set aside on
// the parked stream and acked on their slot stream, so that they neither
// wait in the shard consumer's MaxAckPending (shared with every other
// tenant of the shard) nor age out with the slot bucket. While the tenant
// is down (DownBackoff after each failure) its records are parked without
// trying the database; the parked consumer retries them per tenant as
// the slot consumers' records are, given back until the tenant is up.

// errTenantDown is the outcome of a write not tried because its tenant's
// database failed a moment ago.
var errTenantDown = fmt.Errorf("%w: the tenant's database failed a moment ago; not tried", tenants.ErrUnavailable)

// tenantDown is a tenant whose database failed failures times in a row,
// left alone until until.
type tenantDown struct {
	until    time.Time
	failures int
}

// downFor is how long tenant is still left alone; 0: try it.
func (a *Allocator) downFor(tenant string) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	return max(time.Until(a.down[tenant].until), 0)
}

// markDown counts one more failure of tenant's database and returns how
// long the tenant is left alone for it.
func (a *Allocator) markDown(tenant string) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	d := a.down[tenant]
	d.failures++
	wait := a.downOff(d.failures)
	d.until = time.Now().Add(wait)
	a.down[tenant] = d
	a.m.tenantsDown(len(a.down))
	return wait
}

// markUp ends tenant's failures: its database answered.
func (a *Allocator) markUp(tenant string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.down[tenant]; !ok {
		return
	}
	delete(a.down, tenant)
	a.m.tenantsDown(len(a.down))
	a.log.Info("tenant database reachable again; writing its records", slog.String("tenant", tenant))
}

// park publishes the records of items to the parked stream, all at once,
// and returns those the stream confirmed, for the caller to ack on their
// slot stream; the others are given back.
func (a *Allocator) park(ctx context.Context, items []*allocItem) []*allocItem {
	if len(items) == 0 {
		return nil
	}
	futures := make([]jetstream.PubAckFuture, len(items))
	errs := make([]error, len(items))
	for i, it := range items {
		rec := parkedRecord(it.d, it.dec)
		rec.Header.Set(headerOriginalTime, it.stamp.UTC().Format(time.RFC3339Nano))
		futures[i], errs[i] = a.js.PublishMsgAsync(rec,
			jetstream.WithMsgID(subjects.ParkedMsgID(it.d.subject, it.d.seq)),
			jetstream.WithExpectStream(subjects.StreamParked))
	}
	pctx, cancel := withNATSDeadline(ctx)
	defer cancel()
	var parked []*allocItem
	for i, it := range items {
		if errs[i] == nil {
			select {
			case <-futures[i].Ok():
			case errs[i] = <-futures[i].Err():
			case <-pctx.Done():
				errs[i] = pctx.Err()
			}
		}
		if errs[i] != nil {
			a.redeliver(it.log, it.msg, redeliverOf(it.d, it.dec, retryParkPublish, errs[i], a.backoff))
			continue
		}
		a.m.parked(it.dec.record)
		it.log.Debug("slot record parked", slog.String("record", it.dec.record), slog.Any("err", it.dec.err))
		parked = append(parked, it)
	}
	return parked
}

// parkedRecord is the parked copy of delivery d, a record of a slot
// stream, for the decision dec: its body and headers under its ticket's
// parked subject, with its subject and stream sequence.
func parkedRecord(d delivery, dec decision) *nats.Msg {
	m := &nats.Msg{Subject: subjects.ParkedSubject(dec.tenant, dec.ticket), Data: d.data, Header: nats.Header{}}
	for k, vs := range d.header {
		if strings.HasPrefix(k, "Nats-") {
			continue
		}
		m.Header[k] = append([]string(nil), vs...)
	}
	m.Header.Set(subjects.HeaderOriginalSubject, d.subject)
	m.Header.Set(subjects.HeaderOriginalSequence, strconv.FormatUint(d.seq, 10))
	return m
}

// headerOriginalTime is a parked record's original's stream timestamp
// (RFC 3339), so that its allocation latency counts from its admission,
// not from its parking.
const headerOriginalTime = "Tms-Original-Time"

// originalTime is the time in h's headerOriginalTime, or def when it has
// none that parses (a record parked by an older version, or written by
// hand) or it lies after def (a parked copy cannot predate its original).
func originalTime(h nats.Header, def time.Time) time.Time {
	v := h.Get(headerOriginalTime)
	if v == "" || len(v) > 64 {
		return def
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil || t.After(def) {
		return def
	}
	return t
}
