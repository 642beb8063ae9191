package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// composeFile is the part of docker-compose.yml the test reads. Anchors
// and merge keys (<<) are resolved by the decoder, as compose does.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Configs  map[string]struct {
		Content string `yaml:"content"`
	} `yaml:"configs"`
}

type composeService struct {
	Image       string         `yaml:"image"`
	Build       any            `yaml:"build"`
	Command     []string       `yaml:"command"`
	Environment any            `yaml:"environment"` // a map or a list of KEY=VALUE
	EnvFile     []string       `yaml:"env_file"`
	Ports       []any          `yaml:"ports"`
	Profiles    []string       `yaml:"profiles"`
	DependsOn   map[string]any `yaml:"depends_on"`
	Healthcheck *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
}

// environment is the service's variables, from either form.
func (s composeService) environment(t *testing.T, name string) map[string]string {
	t.Helper()
	env := map[string]string{}
	switch e := s.Environment.(type) {
	case nil:
	case map[string]any:
		for k, v := range e {
			env[k] = fmt.Sprint(v)
		}
	case []any:
		for _, kv := range e {
			k, v, _ := strings.Cut(fmt.Sprint(kv), "=")
			env[k] = v
		}
	default:
		t.Fatalf("service %s: environment is a %T", name, e)
	}
	return env
}

// envFileVars is the variables of an env file: KEY=VALUE lines, # comments.
func envFileVars(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q is not KEY=VALUE", path, line)
		}
		vars[k] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return vars
}

// portRange is the ports of "8080" or "18080-18089".
func portRange(t *testing.T, s string) (lo, hi int) {
	t.Helper()
	a, b, isRange := strings.Cut(strings.TrimSuffix(strings.TrimSuffix(s, "/tcp"), "/udp"), "-")
	lo, err := strconv.Atoi(a)
	if err != nil {
		t.Fatalf("port %q: %v", s, err)
	}
	hi = lo
	if isRange {
		if hi, err = strconv.Atoi(b); err != nil {
			t.Fatalf("port %q: %v", s, err)
		}
	}
	return lo, hi
}

// publishedPorts is every host and container port range of a ports list,
// short ("[ip:]host:container") or long (target, published) syntax.
func publishedPorts(t *testing.T, ports []any) [][2]int {
	t.Helper()
	var out [][2]int
	for _, p := range ports {
		switch p := p.(type) {
		case string:
			parts := strings.Split(p, ":")
			for _, part := range parts[max(0, len(parts)-2):] {
				lo, hi := portRange(t, part)
				out = append(out, [2]int{lo, hi})
			}
		case int:
			out = append(out, [2]int{p, p})
		case map[string]any:
			for _, k := range []string{"target", "published"} {
				if v, ok := p[k]; ok {
					lo, hi := portRange(t, fmt.Sprint(v))
					out = append(out, [2]int{lo, hi})
				}
			}
		default:
			t.Fatalf("ports entry %v is a %T", p, p)
		}
	}
	return out
}

// longRunning are the tms commands that serve until stopped, and so have
// a readiness to check.
var longRunning = []string{"serve", "ingress", "worker"}

// TestComposeFile: docker-compose.yml works as an operator expects.
// Every long-running tms service has a healthcheck on the /readyz of one
// of its own listeners and waits for every NATS node to be healthy (each
// has a healthcheck on the monitor port's /healthz, which the NATS config
// enables); the internal port 8081 is never published on the host; no
// password is written in the file, the secrets come from tms.env (whose
// example is committed); and every TMS_* variable a tms service gets, and
// every flag its command line gives, is one of its command's flags.
func TestComposeFile(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	// No inline secret: no password in a URL, no *PASSWORD* variable set
	// in the file.
	if m := regexp.MustCompile(`://[^/\s:@]+:[^@\s]+@`).Find(raw); m != nil {
		t.Errorf("docker-compose.yml has a password in a URL: %s", m)
	}
	example := envFileVars(t, "../../tms.env.example")
	for _, v := range []string{"POSTGRES_PASSWORD", "TMS_DATABASE_URL"} {
		if example[v] == "" {
			t.Errorf("tms.env.example does not set %s", v)
		}
	}

	var natsNodes []string
	for name, s := range c.Services {
		if strings.HasPrefix(s.Image, "nats:") {
			natsNodes = append(natsNodes, name)
			if s.Healthcheck == nil || !strings.Contains(strings.Join(s.Healthcheck.Test, " "), ":8222/healthz") {
				t.Errorf("NATS service %s: want a healthcheck on the monitor port's /healthz", name)
			}
		}
	}
	if len(natsNodes) == 0 {
		t.Fatal("no NATS service")
	}
	if !regexp.MustCompile(`(?m)^\s*http_port:\s*8222\s*$`).MatchString(c.Configs["nats-conf"].Content) {
		t.Error("the NATS config does not enable the monitor port 8222 (http_port)")
	}

	tmsServices := 0
	for name, s := range c.Services {
		env := s.environment(t, name)
		for k := range env {
			if strings.Contains(k, "PASSWORD") {
				t.Errorf("service %s sets %s in docker-compose.yml; it belongs in tms.env", name, k)
			}
		}
		for _, p := range publishedPorts(t, s.Ports) {
			if p[0] <= 8081 && 8081 <= p[1] {
				t.Errorf("service %s publishes port 8081 (%v): the internal listener must stay inside the network", name, s.Ports)
			}
		}
		if s.Build == nil {
			continue // not the tms image
		}
		tmsServices++
		if len(s.Command) == 0 {
			t.Errorf("service %s: no command", name)
			continue
		}
		cmd := s.Command[0]
		flags := map[string]bool{}
		newFlagSet(cmd, &config{}).VisitAll(func(f *flag.Flag) { flags[f.Name] = true })
		allowed := map[string]bool{}
		for f := range flags {
			allowed[envName(f)] = true
		}
		if cmd == "ops" {
			// tms ops' flags are its own (another part of issue 11);
			// these are the ones it shares with every command.
			for _, v := range []string{"TMS_NATS_URL", "TMS_LOG_LEVEL", "TMS_LOG_FORMAT"} {
				allowed[v] = true
			}
		}
		vars := map[string]string{}
		for _, f := range s.EnvFile {
			if f != "tms.env" {
				t.Errorf("service %s: env_file %s, want tms.env (tms.env.example is its template)", name, f)
			}
			for k, v := range example {
				vars[k] = v
			}
		}
		for k, v := range env {
			vars[k] = v
		}
		for k := range vars {
			if strings.HasPrefix(k, "TMS_") && !allowed[k] {
				t.Errorf("service %s (tms %s) gets %s, which is no flag of tms %s", name, cmd, k, cmd)
			}
		}
		if !slices.Contains(longRunning, cmd) {
			continue
		}
		for _, arg := range s.Command[1:] {
			if f, ok := strings.CutPrefix(arg, "--"); ok {
				if f, _, _ = strings.Cut(f, "="); !flags[f] {
					t.Errorf("service %s: --%s is no flag of tms %s", name, f, cmd)
				}
			}
		}
		if _, ok := env["TMS_DATABASE_URL"]; ok || !slices.Contains(s.EnvFile, "tms.env") {
			t.Errorf("service %s: want TMS_DATABASE_URL from env_file tms.env, not in the file", name)
		}

		// The healthcheck asks /readyz of a listener this service runs.
		if s.Healthcheck == nil {
			t.Errorf("service %s: no healthcheck", name)
		} else {
			test := strings.Join(s.Healthcheck.Test, " ")
			m := regexp.MustCompile(`http://(?:127\.0\.0\.1|localhost):(\d+)/readyz\b`).FindStringSubmatch(test)
			if m == nil {
				t.Errorf("service %s: healthcheck %q does not ask /readyz", name, test)
			} else {
				own := false
				for _, v := range []string{"TMS_HTTP_ADDR", "TMS_INTERNAL_ADDR", "TMS_OPS_ADDR"} {
					if addr, ok := vars[v]; ok && strings.HasSuffix(addr, ":"+m[1]) {
						own = true
					}
				}
				if !own {
					t.Errorf("service %s: healthcheck asks port %s, which none of its listeners has", name, m[1])
				}
			}
		}
		for _, n := range natsNodes {
			dep, _ := s.DependsOn[n].(map[string]any)
			if dep["condition"] != "service_healthy" {
				t.Errorf("service %s: depends_on %s is %v, want condition service_healthy", name, n, s.DependsOn[n])
			}
		}
	}
	if tmsServices < 3 {
		t.Errorf("%d tms services, want ingress, worker and ops", tmsServices)
	}
	ops, ok := c.Services["ops"]
	if !ok || !slices.Contains(ops.Profiles, "tools") || len(ops.Command) < 2 || ops.Command[0] != "ops" || ops.Command[1] != "status" ||
		!slices.Contains(ops.Command, "--nats-url") {
		t.Errorf("ops service %+v: want `tms ops status --nats-url ...` in profile tools", ops)
	}
}
