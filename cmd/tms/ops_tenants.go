package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"tms/ops"
	"tms/subjects"
	"tms/tenants"
)

// tenantView is one tenant as tms ops shows it: never its password hash,
// never a database password.
type tenantView struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	SubDomain string    `json:"sub_domain"`
	Email     string    `json:"email"`
	CreatedAt time.Time `json:"created_at"`
	DBName    string    `json:"db_name"`
	DBServer  string    `json:"db_server"`
	Agents    int       `json:"agents"`
	// LiveTickets is the tenant database's tickets not cancelled; nil
	// with LiveTicketsError when it could not be counted.
	LiveTickets      *int64 `json:"live_tickets"`
	LiveTicketsError string `json:"live_tickets_error,omitempty"`
	// AgentList is tenants show's, from the agents bucket (what the
	// ETA responders see).
	AgentList []subjects.AgentRecord `json:"agent_list,omitempty"`
}

// maxTenantRecord bounds a registry value read (anyone with access to the
// bucket may write one).
const maxTenantRecord = 16 << 10

// decodeTenantRecord reads a registry value back for key's tenant.
func decodeTenantRecord(id string, data []byte) (tenants.Tenant, error) {
	if len(data) > maxTenantRecord {
		return tenants.Tenant{}, fmt.Errorf("tenant %s: record of %d bytes", id, len(data))
	}
	var r subjects.TenantRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return tenants.Tenant{}, fmt.Errorf("tenant %s: record does not decode: %v", id, err)
	}
	if r.ID != id {
		return tenants.Tenant{}, fmt.Errorf("tenant %s: record names tenant %q", id, r.ID)
	}
	return tenants.Tenant{ID: r.ID, Name: r.Name, Email: r.Email, SubDomain: r.SubDomain,
		DBServer: r.DBServer, DBName: r.DBName, CreatedAt: r.CreatedAt}, nil
}

// tenantRecords is every tenant of the registry, by id. A tenant whose
// record does not decode is left out and named in the error.
func (c *opsClient) tenantRecords(ctx context.Context) ([]tenants.Tenant, error) {
	kv, err := c.js.KeyValue(ctx, subjects.BucketTenants)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil // no tenant yet
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", subjects.BucketTenants, err)
	}
	lister, err := kv.ListKeysFiltered(ctx, subjects.TenantKeys)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", subjects.BucketTenants, err)
	}
	var ids []string
	for k := range lister.Keys() {
		if id, err := subjects.ParseTenantKey(k); err == nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	var out []tenants.Tenant
	var bad []string
	for _, id := range ids {
		e, err := kv.Get(ctx, subjects.TenantKey(id))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return out, fmt.Errorf("reading tenant %s: %w", id, err)
		}
		t, err := decodeTenantRecord(id, e.Value())
		if err != nil {
			bad = append(bad, err.Error())
			continue
		}
		out = append(out, t)
	}
	if len(bad) > 0 {
		return out, errors.New(strings.Join(bad, "; "))
	}
	return out, nil
}

// agentCounts counts each tenant's keys in the agents bucket.
func (c *opsClient) agentCounts(ctx context.Context) (map[string]int, error) {
	counts := map[string]int{}
	kv, err := c.js.KeyValue(ctx, subjects.BucketAgents)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return counts, nil
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", subjects.BucketAgents, err)
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", subjects.BucketAgents, err)
	}
	for k := range lister.Keys() {
		if tenant, _, err := subjects.ParseAgentKey(k); err == nil {
			counts[tenant]++
		}
	}
	return counts, nil
}

// tenantAgents is one tenant's agents from the agents bucket, oldest id
// first; records that do not decode are skipped.
func (c *opsClient) tenantAgents(ctx context.Context, tenant string) ([]subjects.AgentRecord, error) {
	kv, err := c.js.KeyValue(ctx, subjects.BucketAgents)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", subjects.BucketAgents, err)
	}
	lister, err := kv.ListKeysFiltered(ctx, subjects.TenantAgents(tenant))
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", subjects.BucketAgents, err)
	}
	var out []subjects.AgentRecord
	for k := range lister.Keys() {
		ten, agent, err := subjects.ParseAgentKey(k)
		if err != nil || ten != tenant {
			continue
		}
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var a subjects.AgentRecord
		if len(e.Value()) > maxTenantRecord || json.Unmarshal(e.Value(), &a) != nil || a.ID != agent {
			continue
		}
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b subjects.AgentRecord) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// liveTickets counts the tickets not cancelled in each tenant's database,
// through the tenants package's pools (which find the database by its
// placement), a few tenants at once. A tenant that cannot be counted gets
// the reason instead.
func (c *opsClient) liveTickets(ctx context.Context, views []tenantView, ts []tenants.Tenant) {
	fail := func(reason string) {
		for i := range views {
			views[i].LiveTicketsError = reason
		}
	}
	cfg := config{DatabaseURL: c.cfg.DatabaseURL}
	prov, err := tenants.NewProvisioner(tenants.ProvisionerConfig{ServerURLs: cfg.databaseURLs()})
	if err != nil {
		fail("--database-url: " + err.Error())
		return
	}
	defer prov.Close()
	pools := tenants.NewPools(tenants.PoolsConfig{Provisioner: prov, ConnsPerTenant: 1, MaxConnsPerServer: 4,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	pctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = pools.Run(pctx)
	}()
	defer func() {
		stop()
		<-done
	}()
	work := make(chan int)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				var n int64
				err := pools.Do(ctx, ts[i], func(ctx context.Context, conn *pgxpool.Conn) error {
					return conn.QueryRow(ctx, `SELECT count(*) FROM tickets WHERE status <> 'cancelled'`).Scan(&n)
				})
				if err != nil {
					views[i].LiveTicketsError = ops.RedactURLs(oneLine(err))
					continue
				}
				views[i].LiveTickets = &n
			}
		}()
	}
	for i := range ts {
		work <- i
	}
	close(work)
	wg.Wait()
}

func viewOf(t tenants.Tenant) tenantView {
	return tenantView{ID: t.ID, Name: t.Name, SubDomain: t.SubDomain, Email: t.Email, CreatedAt: t.CreatedAt,
		DBName: t.DBName, DBServer: t.DBServer}
}

func (c *opsClient) tenantsList(ctx context.Context, out io.Writer) error {
	ts, err := c.tenantRecords(ctx)
	if err != nil && len(ts) == 0 {
		return err
	}
	warning := ""
	if err != nil {
		warning = err.Error()
	}
	counts, err := c.agentCounts(ctx)
	if err != nil {
		return err
	}
	views := make([]tenantView, len(ts))
	for i, t := range ts {
		views[i] = viewOf(t)
		views[i].Agents = counts[t.ID]
	}
	c.liveTickets(ctx, views, ts)
	if c.cfg.JSON {
		return writeJSON(out, struct {
			Tenants []tenantView `json:"tenants"`
			Warning string       `json:"warning,omitempty"`
		}{views, warning})
	}
	if warning != "" {
		fmt.Fprintln(out, "warning: "+warning)
	}
	if len(views) == 0 {
		fmt.Fprintln(out, "no tenants")
		return nil
	}
	tw := newTable(out)
	fmt.Fprintln(tw, "ID\tNAME\tSUB-DOMAIN\tDATABASE\tSERVER\tAGENTS\tLIVE TICKETS")
	for _, v := range views {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", v.ID, oneLineText(v.Name), v.SubDomain, v.DBName, v.DBServer, v.Agents, liveText(v))
	}
	tw.Flush()
	return nil
}

func liveText(v tenantView) string {
	if v.LiveTickets != nil {
		return fmt.Sprint(*v.LiveTickets)
	}
	return "unknown (" + v.LiveTicketsError + ")"
}

func (c *opsClient) tenantsShow(ctx context.Context, out io.Writer) error {
	id := c.cfg.Args[0]
	kv, err := c.js.KeyValue(ctx, subjects.BucketTenants)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Errorf("no tenant %s (no tenant registry on this NATS)", id)
	}
	if err != nil {
		return fmt.Errorf("opening %s: %w", subjects.BucketTenants, err)
	}
	e, err := kv.Get(ctx, subjects.TenantKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("no tenant %s (see tms ops tenants list)", id)
	}
	if err != nil {
		return fmt.Errorf("reading tenant %s: %w", id, err)
	}
	t, err := decodeTenantRecord(id, e.Value())
	if err != nil {
		return err
	}
	v := viewOf(t)
	if v.AgentList, err = c.tenantAgents(ctx, id); err != nil {
		return err
	}
	v.Agents = len(v.AgentList)
	views := []tenantView{v}
	c.liveTickets(ctx, views, []tenants.Tenant{t})
	v = views[0]
	if c.cfg.JSON {
		if v.AgentList == nil {
			v.AgentList = []subjects.AgentRecord{}
		}
		return writeJSON(out, v)
	}
	tw := newTable(out)
	fmt.Fprintf(tw, "id:\t%s\n", v.ID)
	fmt.Fprintf(tw, "name:\t%s\n", oneLineText(v.Name))
	fmt.Fprintf(tw, "sub-domain:\t%s\n", v.SubDomain)
	fmt.Fprintf(tw, "e-mail:\t%s\n", v.Email)
	fmt.Fprintf(tw, "created:\t%s\n", v.CreatedAt.UTC().Format(time.RFC3339))
	fmt.Fprintf(tw, "database:\t%s on %s\n", v.DBName, v.DBServer)
	fmt.Fprintf(tw, "live tickets:\t%s\n", liveText(v))
	fmt.Fprintf(tw, "agents:\t%d\n", v.Agents)
	tw.Flush()
	if len(v.AgentList) > 0 {
		fmt.Fprintln(out)
		tw = newTable(out)
		fmt.Fprintln(tw, "AGENT\tNAME\tSTATUS\tAVAILABLE SINCE\tUPDATED")
		for _, a := range v.AgentList {
			since := "-"
			if a.AvailableSince != nil {
				since = a.AvailableSince.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.ID, oneLineText(a.Name), a.Status, since, a.UpdatedAt.UTC().Format(time.RFC3339))
		}
		tw.Flush()
	}
	return nil
}
