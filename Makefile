# make help lists the targets. Go 1.26 is needed; /usr/local/go/bin is
# searched too, so a fresh Debian machine with Go there works as it is.
export PATH := $(PATH):/usr/local/go/bin

GO        ?= go
BIN       := bin/tms
FUZZTIME  ?= 10s
# The Postgres server make run uses: TMS_DATABASE_URL if set, else the
# developer default (trust auth for user postgres on 127.0.0.1:5432). When
# nothing answers there, make run starts a private cluster under ./var
# instead (scripts/run).
TMS_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
export TMS_DATABASE_URL
# Extra flags for make run, e.g. make run ARGS='--http-addr :9090'.
ARGS      ?=
# What make bench runs against its fresh tms serve, e.g.
# make bench BENCH_ARGS='--rate 800 --duration 30s --type GOLD'.
BENCH_ARGS ?= --sweep 500,1000,2000 --duration 5s

.DEFAULT_GOAL := help
.PHONY: help build run test lint fuzz postgres browser clean bench

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  make %-9s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/tms
	$(GO) build -o $(BIN) ./cmd/tms

run: build ## run tms serve: embedded NATS on 127.0.0.1:4223, HTTP on :8080 and 127.0.0.1:8081, data in ./var; a private PostgreSQL in ./var/postgres if none answers
	@scripts/run $(BIN) serve $(ARGS)

bench: build ## start a fresh tms serve on loopback (temp data dir, throwaway databases), run tms bench against it (BENCH_ARGS: a 500,1000,2000/s sweep, 5s each), stop it and drop its databases
	@scripts/bench $(BIN) $(BENCH_ARGS)

# The load tests (TestSaturation*) saturate the process they measure, so they
# run after the others, alone on the machine: beside the other packages'
# test binaries their figures, and their fairness checks, would be those
# of whatever else ran at the same time.
test: browser ## run every test with the race detector (what CI runs; needs Postgres, see README, and Chromium: make browser)
	$(GO) test -race -count=1 -timeout 12m -skip '^TestSaturation' ./...
	$(GO) test -race -count=1 -timeout 5m -run '^TestSaturation' ./cmd/tms

lint: ## go vet and gofmt; staticcheck and govulncheck too when installed
	$(GO) vet ./...
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@if command -v staticcheck >/dev/null; then echo staticcheck ./...; staticcheck ./...; \
	else echo "staticcheck not installed: skipped (go install honnef.co/go/tools/cmd/staticcheck@latest)"; fi
	@if command -v govulncheck >/dev/null; then echo govulncheck ./...; govulncheck ./...; \
	else echo "govulncheck not installed: skipped (go install golang.org/x/vuln/cmd/govulncheck@latest)"; fi

fuzz: ## run each fuzz target for FUZZTIME (default 10s); the corpus lives in testdata/fuzz
	@set -e; for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "$(GO) test -run '^$$' -fuzz '^$$f$$' -fuzztime $(FUZZTIME) $$pkg"; \
			$(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

postgres: ## make sure PostgreSQL runs on 127.0.0.1:5432 with trust auth for postgres (installs it with apt-get if missing; needs root)
	.ci/postgres

browser: ## make sure headless Chromium is at /usr/bin/chromium for the status page's browser test (installs Debian's chromium with apt-get if missing; needs root)
	.ci/chromium

clean: ## remove bin/ (./var, the embedded NATS store and a private PostgreSQL, is kept: it holds the tenants)
	rm -rf bin
