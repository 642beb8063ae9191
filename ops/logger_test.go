package ops_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"tms/ops"
)

func TestNewLogger(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log, err := ops.NewLogger(&buf, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("hidden")
	log.Info("shown", "tenant", "t1")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("want one JSON line, got %q: %v", buf.String(), err)
	}
	if line["msg"] != "shown" || line["tenant"] != "t1" {
		t.Fatalf("got %v", line)
	}

	buf.Reset()
	log, err = ops.NewLogger(&buf, "DEBUG", "text")
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("visible")
	if !strings.Contains(buf.String(), "msg=visible") {
		t.Fatalf("got %q", buf.String())
	}
}

func TestNewLoggerRefusesBadConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ level, format, want string }{
		{"loud", "text", "log level"},
		{"info", "xml", "log format"},
	} {
		_, err := ops.NewLogger(&bytes.Buffer{}, tc.level, tc.format)
		if !errors.Is(err, ops.ErrBadLogConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewLogger(%q, %q) = %v, want ErrBadLogConfig naming %s", tc.level, tc.format, err, tc.want)
		}
	}
}

func TestNewMetrics(t *testing.T) {
	t.Parallel()
	families, err := ops.NewMetrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range families {
		names[f.GetName()] = true
	}
	for _, want := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if !names[want] {
			t.Errorf("metric %s missing", want)
		}
	}
}

func TestRedactURLs(t *testing.T) {
	t.Parallel()
	got := ops.RedactURLs("postgres://u:secret@h1:5432/db?sslmode=disable, postgres://postgres@h2/db")
	if strings.Contains(got, "secret") || !strings.Contains(got, "u:xxxxx@h1:5432") || !strings.Contains(got, "postgres@h2") {
		t.Fatalf("got %q", got)
	}
}
