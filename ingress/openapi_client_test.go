package ingress

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"tms/examples/apiclient"
	"tms/ops/testkit"
)

// TestGeneratedClient drives the client that oapi-codegen generated from
// the public document (examples/apiclient) against a real public listener
// over real NATS and Postgres: every call must get its documented
// success status and decode into the generated type.
func TestGeneratedClient(t *testing.T) {
	e := newTicketEnv(t, ticketEnvOptions{})
	srv := httptest.NewServer(e.handler)
	t.Cleanup(srv.Close)
	ctx := testkit.Context(t, time.Minute)
	c, err := apiclient.NewClientWithResponses(srv.URL)
	if err != nil {
		t.Fatalf("NewClientWithResponses: %v", err)
	}

	acc, err := c.CreateAccountWithResponse(ctx, apiclient.CreateAccountRequest{
		ClientName: "Acme Corp", OfficialEmail: "ops@acme.example", Password: "correct horse battery"})
	if err != nil || acc.JSON201 == nil {
		t.Fatalf("create account: %s", show(err, acc))
	}
	client := acc.JSON201.ClientId
	login, err := c.LoginWithResponse(ctx, apiclient.LoginRequest{ClientId: client, Password: "correct horse battery"})
	if err != nil || login.JSON200 == nil || login.JSON200.Token == "" {
		t.Fatalf("login: %s", show(err, login))
	}
	bearer := apiclient.RequestEditorFn(func(_ context.Context, r *http.Request) error {
		r.Header.Set("Authorization", "Bearer "+login.JSON200.Token)
		return nil
	})

	agent, err := c.CreateAgentWithResponse(ctx, apiclient.CreateAgentRequest{ClientId: client, Name: "Ada Lovelace"}, bearer)
	if err != nil || agent.JSON201 == nil || agent.JSON201.AgentStatus != apiclient.AgentStatusAvailable {
		t.Fatalf("create agent: %s", show(err, agent))
	}
	key := apiclient.IdempotencyKey("order-4711")
	subject := "Printer on floor 3 is offline"
	created, err := c.CreateTicketWithResponse(ctx, &apiclient.CreateTicketParams{IdempotencyKey: &key},
		apiclient.CreateTicketRequest{ClientId: client, TicketType: apiclient.GOLD, Subject: &subject}, bearer)
	if err != nil || created.JSON201 == nil || created.JSON201.AgentId != agent.JSON201.AgentId {
		t.Fatalf("create ticket: %s", show(err, created))
	}
	ticket := created.JSON201.TicketId
	if !created.JSON201.Deadline.Equal(created.JSON201.CreatedAt.Add(2 * time.Hour)) {
		t.Errorf("deadline %v, created %v: not 2 h", created.JSON201.Deadline, created.JSON201.CreatedAt)
	}

	got, err := c.GetTicketWithResponse(ctx, ticket, bearer)
	if err != nil || got.JSON200 == nil || got.JSON200.TicketId != ticket || got.JSON200.TicketType != apiclient.GOLD ||
		got.JSON200.Subject == nil || *got.JSON200.Subject != subject || got.JSON200.Description != nil {
		t.Fatalf("get ticket: %s", show(err, got))
	}
	limit := 10
	list, err := c.ListTicketsWithResponse(ctx, &apiclient.ListTicketsParams{Limit: &limit}, bearer)
	if err != nil || list.JSON200 == nil || len(list.JSON200.Tickets) != 1 || list.JSON200.Tickets[0].TicketId != ticket {
		t.Fatalf("list tickets: %s", show(err, list))
	}
	cancelled, err := c.CancelTicketWithResponse(ctx, apiclient.TicketIDRequest{TicketId: ticket}, bearer)
	if err != nil || cancelled.JSON200 == nil || cancelled.JSON200.TicketId != ticket {
		t.Fatalf("cancel ticket: %s", show(err, cancelled))
	}
	got, err = c.GetTicketWithResponse(ctx, ticket, bearer)
	if err != nil || got.JSON200 == nil || got.JSON200.Status != apiclient.TicketStatusCancelled {
		t.Fatalf("get cancelled ticket: %s", show(err, got))
	}
	// The status page's calendar decodes too: the cancelled ticket's
	// minute is free again.
	cal, err := c.GetCalendarWithResponse(ctx, nil, bearer)
	if err != nil || cal.JSON200 == nil || len(cal.JSON200.Agents) != 1 || len(cal.JSON200.Agents[0].Minutes) != 0 {
		t.Fatalf("calendar: %s", show(err, cal))
	}
	// An error answer decodes into the documented error type too.
	missing, err := c.GetTicketWithResponse(ctx, "nosuchticket", bearer)
	if err != nil || missing.JSON404 == nil || missing.JSON404.Error != apiclient.ErrorErrorTicketNotFound {
		t.Fatalf("get unknown ticket: %s", show(err, missing))
	}
}

// show is a generated client's answer (status and body) or its error, for
// a failure message.
func show(err error, r any) string {
	v := reflect.ValueOf(r)
	if err != nil || v.IsNil() {
		return fmt.Sprintf("error %v", err)
	}
	v = v.Elem()
	resp, _ := v.FieldByName("HTTPResponse").Interface().(*http.Response)
	if resp == nil {
		return "no answer"
	}
	return fmt.Sprintf("%d %s", resp.StatusCode, v.FieldByName("Body").Bytes())
}
