package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tms/subjects"
)

// workerView is one worker's answer as tms ops shows it.
type workerView = subjects.WorkerInfo

// workersWait is how long the answers to one SubjectWorkersInfo request
// are gathered: every worker answers at once, so a worker that has not
// answered by then is overloaded or gone.
const workersWait = 500 * time.Millisecond

// maxWorkers bounds the answers kept from one request (anyone may answer).
const maxWorkers = 10000

// gatherWorkers asks every worker for its WorkerInfo and collects the
// answers for wait, until ctx is done, or, when expect > 0, until that
// many workers answered. Answers that do not decode are
// skipped (anyone with access may publish on the inbox's subject): the
// error says how many, beside the ones that did.
func (c *opsClient) gatherWorkers(ctx context.Context, wait time.Duration, expect int) ([]workerView, error) {
	inbox := c.nc.NewRespInbox()
	ch := make(chan *nats.Msg, 256)
	sub, err := c.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := c.nc.PublishRequest(subjects.SubjectWorkersInfo, inbox, nil); err != nil {
		return nil, fmt.Errorf("asking the workers: %w", err)
	}
	if err := c.nc.FlushWithContext(ctx); err != nil {
		return nil, fmt.Errorf("asking the workers: %w", err)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	byID := map[string]workerView{}
	invalid := 0
	for {
		select {
		case m := <-ch:
			if len(m.Data) == 0 && m.Header.Get("Status") != "" {
				// The server's "no responders": no worker is subscribed.
				continue
			}
			w, err := subjects.DecodeWorkerInfo(m.Data)
			if err != nil || len(byID) >= maxWorkers {
				invalid++
				continue
			}
			byID[w.ID] = w
			if expect > 0 && len(byID) >= expect {
				return sortedWorkers(byID), invalidErr(invalid)
			}
		case <-timer.C:
			return sortedWorkers(byID), invalidErr(invalid)
		case <-ctx.Done():
			return sortedWorkers(byID), invalidErr(invalid)
		}
	}
}

func invalidErr(n int) error {
	if n == 0 {
		return nil
	}
	return fmt.Errorf("%d answers on %s were not a worker's info (skipped)", n, subjects.SubjectWorkersInfo)
}

func sortedWorkers(byID map[string]workerView) []workerView {
	out := make([]workerView, 0, len(byID))
	for _, w := range byID {
		out = append(out, w)
	}
	slices.SortFunc(out, func(a, b workerView) int { return strings.Compare(a.ID, b.ID) })
	return out
}

func printWorkers(out io.Writer, workers []workerView) {
	tw := newTable(out)
	fmt.Fprintln(tw, "WORKER\tCOMMAND\tVERSION\tUP\tCONCURRENCY\tSOURCE\tREVISION\tWRITING\tIN FLIGHT\tSETTLED\tRATE/S\tTENANTS DOWN")
	for _, w := range workers {
		up := "-"
		if !w.Started.IsZero() {
			up = ago(time.Since(w.Started))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%d\t%d\t%d\t%d\t%.1f\t%d\n", w.ID, w.Command, w.Version, up, w.Concurrency,
			w.ConcurrencySource, w.SettingsRevision, w.Writing, w.InFlight, w.Settled, w.Rate, w.TenantsDown)
	}
	tw.Flush()
}

// workersDoc is the --json of workers and workers scale.
type workersDoc struct {
	Workers []workerView `json:"workers"`
	// Settings is the live setting (nil: none, each process its flag);
	// Revision its revision in the ops bucket.
	Settings *subjects.AllocatorSettings `json:"settings"`
	Revision uint64                      `json:"revision,omitempty"`
	Error    string                      `json:"error,omitempty"`
}

func (c *opsClient) workersTable(ctx context.Context, out io.Writer) error {
	workers, werr := c.gatherWorkers(ctx, workersWait, 0)
	doc := workersDoc{Workers: workers}
	if werr != nil {
		doc.Error = werr.Error()
	}
	settings, rev, err := c.readSettings(ctx)
	if err != nil {
		return err
	}
	doc.Settings, doc.Revision = settings, rev
	return printWorkersDoc(out, c.cfg.JSON, doc)
}

func printWorkersDoc(out io.Writer, asJSON bool, doc workersDoc) error {
	if asJSON {
		return writeJSON(out, doc)
	}
	if doc.Settings != nil {
		fmt.Fprintf(out, "live setting: concurrency %d (revision %d, by %s at %s)\n", doc.Settings.Concurrency, doc.Revision,
			doc.Settings.UpdatedBy, doc.Settings.UpdatedAt.UTC().Format(time.RFC3339))
	} else {
		fmt.Fprintln(out, "live setting: none (each worker runs with its --alloc-concurrency)")
	}
	if doc.Error != "" {
		fmt.Fprintln(out, "warning: "+doc.Error)
	}
	if len(doc.Workers) == 0 {
		fmt.Fprintln(out, "no worker answered")
		return nil
	}
	fmt.Fprintln(out)
	printWorkers(out, doc.Workers)
	return nil
}

// opsBucket is the live-settings bucket; create makes it (OpsBucketConfig
// with --replicas) when it does not exist yet. Without create, a missing
// bucket is nil and no error.
func (c *opsClient) opsBucket(ctx context.Context, create bool) (jetstream.KeyValue, error) {
	kv, err := c.js.KeyValue(ctx, subjects.BucketOps)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		if !create {
			return nil, nil
		}
		kv, err = c.js.CreateKeyValue(ctx, subjects.OpsBucketConfig(c.cfg.Replicas))
		if errors.Is(err, jetstream.ErrBucketExists) { // a worker made it meanwhile
			kv, err = c.js.KeyValue(ctx, subjects.BucketOps)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("opening the bucket %s: %w", subjects.BucketOps, err)
	}
	return kv, nil
}

// readSettings is the live allocator setting, nil when there is none.
func (c *opsClient) readSettings(ctx context.Context) (*subjects.AllocatorSettings, uint64, error) {
	kv, err := c.opsBucket(ctx, false)
	if err != nil || kv == nil {
		return nil, 0, err
	}
	e, err := kv.Get(ctx, subjects.KeyAllocatorSettings)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("reading %s/%s: %w", subjects.BucketOps, subjects.KeyAllocatorSettings, err)
	}
	s, err := subjects.DecodeAllocatorSettings(e.Value())
	if err != nil {
		return nil, e.Revision(), fmt.Errorf("%s/%s at revision %d: %w (the workers ignore it; set it again with tms ops workers scale)",
			subjects.BucketOps, subjects.KeyAllocatorSettings, e.Revision(), err)
	}
	return &s, e.Revision(), nil
}

// operator is user@host of whoever runs tms ops, for the setting's
// UpdatedBy.
func operator() string {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	host, _ := os.Hostname()
	s := name + "@" + host
	if len(s) > 256 {
		s = s[:256]
	}
	return s
}

// scalePoll is how often scale asks the workers again while it waits.
const scalePoll = 100 * time.Millisecond

// scale writes (or with --reset deletes) the live setting, then waits
// until every worker that answers has applied it.
func (c *opsClient) scale(ctx context.Context, out io.Writer) error {
	kv, err := c.opsBucket(ctx, true)
	if err != nil {
		return err
	}
	var rev uint64
	var settings *subjects.AllocatorSettings
	if c.cfg.Reset {
		if err := kv.Delete(ctx, subjects.KeyAllocatorSettings); err != nil {
			return fmt.Errorf("deleting %s/%s: %w", subjects.BucketOps, subjects.KeyAllocatorSettings, err)
		}
	} else {
		s := subjects.AllocatorSettings{Concurrency: c.cfg.Concurrency, UpdatedAt: time.Now().UTC(), UpdatedBy: operator()}
		data, err := subjects.EncodeAllocatorSettings(s)
		if err != nil {
			return err
		}
		if rev, err = kv.Put(ctx, subjects.KeyAllocatorSettings, data); err != nil {
			return fmt.Errorf("writing %s/%s: %w", subjects.BucketOps, subjects.KeyAllocatorSettings, err)
		}
		settings = &s
	}
	applied := func(w workerView) bool {
		if c.cfg.Reset {
			return w.ConcurrencySource == subjects.ConcurrencyFromFlag
		}
		return w.SettingsRevision >= rev && w.Concurrency == c.cfg.Concurrency && w.ConcurrencySource == subjects.ConcurrencyFromOps
	}
	var workers []workerView
	var werr error
	var lastLaggards []string
	for {
		// A round waits for a fresh set of answers: a worker that went
		// away stops counting, one that starts is counted. The first
		// waits the whole window; the next end as soon as as many
		// workers answered as the one before (a worker that starts
		// meanwhile may be missed by one round, not by all).
		workers, werr = c.gatherWorkers(ctx, workersWait, len(workers))
		var laggards []string
		for _, w := range workers {
			if !applied(w) {
				laggards = append(laggards, fmt.Sprintf("%s (concurrency %d from %s, revision %d)", w.ID, w.Concurrency, w.ConcurrencySource, w.SettingsRevision))
			}
		}
		if len(laggards) == 0 && ctx.Err() == nil {
			break
		}
		if ctx.Err() == nil || len(workers) > 0 {
			lastLaggards = laggards
		}
		if ctx.Err() != nil {
			// A round the deadline cut short says less than the last
			// whole one.
			laggards = lastLaggards
			if len(laggards) == 0 {
				laggards = []string{"(no answer before the deadline)"}
			}
			want := fmt.Sprintf("concurrency %d at revision %d", c.cfg.Concurrency, rev)
			if c.cfg.Reset {
				want = "their own --alloc-concurrency"
			}
			return fmt.Errorf("the setting is written, but not every worker applied it (%s) within --timeout %s: %s",
				want, c.cfg.Timeout, strings.Join(laggards, "; "))
		}
		select {
		case <-ctx.Done():
		case <-time.After(scalePoll):
		}
	}
	doc := workersDoc{Workers: workers, Settings: settings, Revision: rev}
	if werr != nil {
		doc.Error = werr.Error()
	}
	if !c.cfg.JSON {
		switch {
		case len(workers) == 0:
			fmt.Fprintln(out, "setting written; no worker answered: each applies it when it starts")
		case c.cfg.Reset:
			fmt.Fprintf(out, "live setting deleted: %d workers back on their --alloc-concurrency\n", len(workers))
		default:
			fmt.Fprintf(out, "concurrency %d applied by %d workers\n", c.cfg.Concurrency, len(workers))
		}
	}
	return printWorkersDoc(out, c.cfg.JSON, doc)
}
