package ingress

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"tms/ops"
)

// metrics are the request counter and latency histogram, labelled by
// listener, method, route pattern and status code.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

var metricLabels = []string{"listener", "method", "route", "code"}

// newMetrics registers the request metrics on reg. Both listeners (and a
// test building several routers) share one registry, so a collector that
// is already registered is reused rather than refused.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tms_http_requests_total",
		Help: "HTTP requests answered, by listener, method, route pattern and status code.",
	}, metricLabels)
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tms_http_request_duration_seconds",
		Help:    "Time to answer an HTTP request, by listener, method, route pattern and status code.",
		Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, metricLabels)
	var err error
	if requests, err = ops.Register(reg, requests); err != nil {
		return nil, err
	}
	if duration, err = ops.Register(reg, duration); err != nil {
		return nil, err
	}
	return &metrics{requests: requests, duration: duration}, nil
}

// knownMethods keeps the method label bounded: anything else is "other".
var knownMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
	http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace,
}

func methodLabel(m string) string {
	for _, k := range knownMethods {
		if m == k {
			return m
		}
	}
	return "other"
}
