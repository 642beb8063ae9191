package main_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"tms/ops/testkit"
)

// readmeBlock is one sh block of the README's walk-through and the
// answers shown after it.
type readmeBlock struct {
	line int // of the opening fence in README.md
	code string
	want []string // non-empty lines of the output blocks that follow
}

// walkthrough reads the sh blocks between the walk-through's heading and
// the next section that has no commands to run.
func walkthrough(t *testing.T) []readmeBlock {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var blocks []readmeBlock
	in, fence, kind := false, 0, ""
	var body []string
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case !in && line == "## A walk through the API":
			in = true
		case in && line == "## Errors":
			in = false
		case !in:
		case kind == "" && strings.HasPrefix(line, "```"):
			kind, fence, body = strings.TrimPrefix(line, "```")+" ", n, nil
		case kind != "" && line == "```":
			switch strings.TrimSpace(kind) {
			case "sh":
				blocks = append(blocks, readmeBlock{line: fence, code: strings.Join(body, "\n")})
			case "json", "":
				if len(blocks) == 0 {
					t.Fatalf("README.md:%d: an answer before any command", fence)
				}
				for _, l := range body {
					if strings.TrimSpace(l) != "" {
						blocks[len(blocks)-1].want = append(blocks[len(blocks)-1].want, l)
					}
				}
			}
			kind = ""
		case kind != "":
			body = append(body, line)
		}
	}
	if len(blocks) < 10 {
		t.Fatalf("found %d sh blocks in the README's walk-through; the headings moved?", len(blocks))
	}
	return blocks
}

// TestReadmeWalkthrough runs the README's walk-through as written, every
// sh block in order in one bash, against a fresh tms serve (the README's
// addresses replaced by this one's random ports), and compares each
// answer with the one the README shows: the same fields, the same values
// except ids, tokens and times, the same lines of text with any number.
func TestReadmeWalkthrough(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"bash", "curl", "sed", "mktemp", "seq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the README walk-through needs %s: %v (.ci/run installs curl on a fresh machine)", tool, err)
		}
	}
	blocks := walkthrough(t)
	prefix := testkit.DatabasePrefix(t)
	serve := startTMS(t, nil, serveArgs(t, prefix)...)
	listening := serve.logEvent("listening")
	natsURL := str(t, serve.logEvent("embedded NATS started"), "nats_url")
	pub, internal := str(t, listening, "public"), str(t, listening, "internal")
	newAPI(t, pub).waitReady(serve)

	addrs := strings.NewReplacer("localhost:8080", pub, "127.0.0.1:8081", internal, "nats://127.0.0.1:4223", natsURL)
	var script strings.Builder
	script.WriteString("set -eu\n")
	for i, b := range blocks {
		fmt.Fprintf(&script, "printf '\\n@@@ block %d\\n'\n%s\n", i, addrs.Replace(b.code))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sh := exec.CommandContext(ctx, "bash", "-c", script.String())
	sh.Dir = filepath.Join("..", "..") // go run ./examples/natsreq
	sh.Env = append(cleanEnv(), "PATH="+filepath.Dir(goBinary())+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := sh.CombinedOutput()
	got := splitBlocks(string(out))
	if err != nil {
		t.Errorf("the walk-through failed (%v) in block %d; output:\n%s", err, len(got)-1, out)
	}
	for i, b := range blocks {
		if i >= len(got) {
			break
		}
		if msg := compareAnswers(b.want, got[i]); msg != "" {
			t.Errorf("README.md:%d: %s\nwant:\n%s\ngot:\n%s", b.line, msg, strings.Join(b.want, "\n"), strings.Join(got[i], "\n"))
		}
	}
	serve.stop()
}

var blockMark = regexp.MustCompile(`^@@@ block (\d+)$`)

// splitBlocks cuts the walk-through's output at the block marks.
func splitBlocks(out string) [][]string {
	var blocks [][]string
	for _, l := range strings.Split(out, "\n") {
		if m := blockMark.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			for len(blocks) <= n {
				blocks = append(blocks, nil)
			}
			continue
		}
		if strings.TrimSpace(l) != "" && len(blocks) > 0 {
			blocks[len(blocks)-1] = append(blocks[len(blocks)-1], l)
		}
	}
	return blocks
}

// compareAnswers says how got differs from the README's want, "" if not.
func compareAnswers(want, got []string) string {
	if len(want) != len(got) {
		return fmt.Sprintf("%d lines of answer, the README shows %d", len(got), len(want))
	}
	for i := range want {
		var w, g any
		if json.Unmarshal([]byte(want[i]), &w) == nil {
			if err := json.Unmarshal([]byte(got[i]), &g); err != nil {
				return fmt.Sprintf("line %d is not JSON: %v", i+1, err)
			}
			if msg := compareJSON("", w, g); msg != "" {
				return fmt.Sprintf("line %d: %s", i+1, msg)
			}
			continue
		}
		if !numbersAnyRE(want[i]).MatchString(got[i]) {
			return fmt.Sprintf("line %d differs beyond its numbers", i+1)
		}
	}
	return ""
}

// volatile are the fields whose values differ on every run.
var volatile = map[string]bool{
	"client_id": true, "token": true, "expires_at": true, "agent_id": true, "ticket_id": true, "slot_id": true,
	"available_since": true, "created_at": true, "updated_at": true, "slot_time": true, "deadline": true,
	"hold_expires_at": true, "as_of": true,
}

func compareJSON(key string, want, got any) string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Sprintf("%s: want an object, got %v", key, got)
		}
		for k := range g {
			if _, ok := w[k]; !ok {
				return fmt.Sprintf("field %s is not in the README", k)
			}
		}
		for k, wv := range w {
			gv, ok := g[k]
			if !ok {
				return fmt.Sprintf("field %s is missing", k)
			}
			// The README says a ticket read right after its create may
			// still be accepted rather than allocated.
			if _, ticket := w["deadline"]; k == "status" && ticket && wv == "allocated" && gv == "accepted" {
				continue
			}
			if msg := compareJSON(k, wv, gv); msg != "" {
				return msg
			}
		}
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return fmt.Sprintf("%s: want %d elements, got %v", key, len(w), got)
		}
		for i := range w {
			if msg := compareJSON(key, w[i], g[i]); msg != "" {
				return msg
			}
		}
	default:
		if volatile[key] {
			if s, ok := got.(string); !ok || s == "" {
				return fmt.Sprintf("%s: want a value like %v, got %v", key, want, got)
			}
			return ""
		}
		if !reflect.DeepEqual(want, got) {
			return fmt.Sprintf("%s: %v, the README shows %v", key, got, want)
		}
	}
	return ""
}

var digits = regexp.MustCompile(`[0-9]+`)

// numbersAnyRE matches line with any number where it has one.
func numbersAnyRE(line string) *regexp.Regexp {
	parts := digits.Split(line, -1)
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return regexp.MustCompile("^" + strings.Join(parts, "[0-9]+") + "$")
}
