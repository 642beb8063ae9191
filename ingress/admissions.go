package ingress

import (
	"context"
	"encoding/json"
	"io"
	"net/http"

	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"

	"tms/ops"
	"tms/subjects"
)

// tms_admissions_total counts every create_ticket decision of the front,
// HTTP and NATS API alike, by the ticket type asked for and the outcome:
// the one number that says how much of the demand is admitted and why the
// rest is not, whichever limit or dependency refused it.

// Labels of tms_admissions_total. A type that is not GOLD, SILVER or
// BRONZE (or a body without one) is "invalid", so a hostile caller cannot
// grow the series.
const (
	admissionTypeInvalid = "invalid"

	outcomeAccepted    = "accepted"
	outcomeNoSlot      = "no_slot"
	outcomeRateLimited = "rate_limited"
	outcomeShed        = "shed"
	outcomeUnavailable = "unavailable"
	outcomeInvalid     = "invalid"
)

var (
	admissionTypes    = []string{subjects.Gold, subjects.Silver, subjects.Bronze, admissionTypeInvalid}
	admissionOutcomes = []string{outcomeAccepted, outcomeNoSlot, outcomeRateLimited, outcomeShed, outcomeUnavailable, outcomeInvalid}
)

// admissions is tms_admissions_total.
type admissions struct {
	total  *prometheus.CounterVec
	recent *recentAdmissions // GET /admissions/recent (recent.go)
}

// newAdmissions registers tms_admissions_total on reg (reused when the
// public router and the NATS API of a process share reg), every child at
// zero.
func newAdmissions(reg prometheus.Registerer) (*admissions, error) {
	total, err := ops.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tms_admissions_total",
		Help: "create_ticket decisions over HTTP and the NATS API, by ticket type asked for (GOLD, SILVER, BRONZE, invalid) and outcome (accepted, no_slot, rate_limited, shed, unavailable, invalid).",
	}, []string{"type", "outcome"}))
	if err != nil {
		return nil, err
	}
	for _, typ := range admissionTypes {
		for _, o := range admissionOutcomes {
			total.WithLabelValues(typ, o)
		}
	}
	recent, err := ops.Register(reg, newRecentAdmissions())
	if err != nil {
		return nil, err
	}
	return &admissions{total: total, recent: recent}, nil
}

// decision is one create_ticket decision as tms_admissions_total labels
// it, and the error code of its answer ("" for a success).
type decision struct{ typ, outcome, code string }

// newDecision names the decision of an answer: typ is the type the
// request asked for (any string), status and code the answer's HTTP
// status and error code.
func newDecision(typ string, status int, code string) decision {
	return decision{typ: admissionType(typ), outcome: admissionOutcome(status, code), code: code}
}

// decided counts the decision of note's request and, when its tenant is
// known, keeps it among the tenant's recent ones: its labels are named
// once for both.
func (ad *admissions) decided(note *admissionNote, typ string, status int) {
	d := newDecision(typ, status, note.code)
	ad.total.WithLabelValues(d.typ, d.outcome).Inc()
	ad.recent.record(note.tenant, d, note.ticketID)
}

// admissionType is typ when it is a ticket type, else "invalid".
func admissionType(typ string) string {
	if _, ok := subjects.SLA(typ); ok {
		return typ
	}
	return admissionTypeInvalid
}

// admissionOutcome names the decision an answer stands for. Any other 5xx
// than shedding (storage or ETA responders out, an internal error) is
// "unavailable": the ticket was not admitted for a reason of the
// service's, and the client may retry; any other 4xx is the request's
// fault.
func admissionOutcome(status int, code string) string {
	switch {
	case status < 300:
		return outcomeAccepted
	case code == codeSLAUnavailable:
		return outcomeNoSlot
	case code == codeRateLimited:
		return outcomeRateLimited
	case code == codeOverloaded:
		return outcomeShed
	case status >= 500:
		return outcomeUnavailable
	}
	return outcomeInvalid
}

// peekTicketType is the ticket_type of a create_ticket body that was
// refused before it was decoded (a rate limit, a shed NATS request): the
// type still labels the decision. Anything that is not a JSON object with
// a string ticket_type is "", and so is a body over the size limit (a NATS
// message may be far larger than an HTTP body may).
func peekTicketType(data []byte) string {
	if len(data) > maxBodyBytes {
		return ""
	}
	var body struct {
		TicketType string `json:"ticket_type"`
	}
	if json.Unmarshal(data, &body) != nil {
		return ""
	}
	return body.TicketType
}

// admissionNote travels in a create_ticket's context: the handler notes
// the type it decoded, writeError the error code it answered, so the
// count needs no second decoding on the hot path.
type admissionNote struct {
	typ   string
	typed bool // the body was decoded: typ is what it asked for
	code  string
	// tenant is the request's, once authenticated (HTTP) or resolved from
	// the subject (NATS); ticketID the accepted ticket's.
	tenant, ticketID string
}

type admissionNoteKey struct{}

func withAdmissionNote(ctx context.Context, n *admissionNote) context.Context {
	return context.WithValue(ctx, admissionNoteKey{}, n)
}

// noteTicketType records the decoded request's type, when ctx is a
// create_ticket's.
func noteTicketType(ctx context.Context, typ string) {
	if n, ok := ctx.Value(admissionNoteKey{}).(*admissionNote); ok {
		n.typ, n.typed = typ, true
	}
}

// noteTenant records the request's tenant, when ctx is a create_ticket's.
func noteTenant(ctx context.Context, tenant string) {
	if n, ok := ctx.Value(admissionNoteKey{}).(*admissionNote); ok {
		n.tenant = tenant
	}
}

// noteAccepted records the accepted ticket, when ctx is a create_ticket's.
func noteAccepted(ctx context.Context, ticketID string) {
	if n, ok := ctx.Value(admissionNoteKey{}).(*admissionNote); ok {
		n.ticketID = ticketID
	}
}

// noteSessionTenant is the middleware, after authenticate, that records
// the session's tenant of a create_ticket for its recent decisions.
func noteSessionTenant(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		noteTenant(r.Context(), sessionFrom(r.Context()).tenant.ID)
		next.ServeHTTP(w, r)
	})
}

// noteErrorCode records the code of the error answer, when ctx is a
// create_ticket's.
func noteErrorCode(ctx context.Context, code string) {
	if n, ok := ctx.Value(admissionNoteKey{}).(*admissionNote); ok {
		n.code = code
	}
}

// countAdmissions is the middleware of POST /create_ticket, outside
// authentication and the tenant rate limit, so that their refusals are
// decisions too. A request refused before its body was decoded has the
// body read here, bounded as the decoder bounds it, for its type.
func countAdmissions(ad *admissions) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			note := &admissionNote{}
			ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
			next.ServeHTTP(ww, r.WithContext(withAdmissionNote(r.Context(), note)))
			status := ww.Status()
			if status == 0 {
				status = http.StatusOK
			}
			typ := note.typ
			if !note.typed && r.Body != nil {
				data, _ := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes))
				typ = peekTicketType(data)
			}
			ad.decided(note, typ, status)
		})
	}
}
