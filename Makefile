# Chatalot — the two commands: `make run` and `make test`.
GO       ?= go
# nomsgpack: gin without its MessagePack binding, which Chatalot never uses;
# it would link the ugorji codec: 9 MB of the binary, ~6 MiB of idle RSS
# (issue 12). tests/binary_test.go checks the binary for it.
# None is needed for a working server (TestPlainBuildServes): sqlite_fts5 only
# lets a build open a database from before rooms migration 4 (which drops the
# old FTS5 search index); goolm is for the mautrix-go E2EE test.
TAGS     := sqlite_fts5 goolm nomsgpack
BIN      := bin/chatalot
FUZZTIME ?= 3s

# The PostgreSQL tests fail, rather than skip, where PostgreSQL is not
# installed (internal/pgtest): the suite never passes by skipping them.
export CHATALOT_REQUIRE_POSTGRES ?= 1

.PHONY: run build test test-go test-race test-postgres fuzz-short fuzz soak vet bench complement clean

run: build
	./$(BIN) serve

build:
	$(GO) build -tags '$(TAGS)' -o $(BIN) ./cmd/chatalot

vet:
	$(GO) vet -tags '$(TAGS)' ./...

# The full suite CI runs: unit, package and end-to-end tests, the packages
# whose goroutines share the most under the race detector, each fuzz target
# briefly, then Complement's client-server packages.
test: vet test-go test-race test-postgres fuzz-short complement

test-go:
	$(GO) test -tags '$(TAGS)' -count=1 -timeout 20m ./...

# The package tests and the end-to-end suite again with every test server
# on PostgreSQL (a throwaway cluster started by internal/pgtest), for the
# packages that pass there; storage's own tests run on both backends in
# test-go. ./tests adds about five minutes.
PG_PACKAGES := ./auth ./rooms ./sync ./keys ./push ./media ./admin ./schedule ./server/app ./tests
test-postgres:
	CHATALOT_TEST_DATABASE=postgres $(GO) test -tags '$(TAGS)' -count=1 -timeout 20m $(PG_PACKAGES)

# Sends are pipelined (rooms, storage), counts shared with /sync (push,
# sync): their tests run again with -race.
test-race:
	$(GO) test -race -tags '$(TAGS)' -count=1 -timeout 20m ./storage ./rooms ./push ./sync ./schedule

# Each fuzz target for FUZZTIME (short in `make test`, 60s in `make fuzz`).
fuzz-short:
	@./scripts/fuzz-all $(FUZZTIME)

fuzz:
	@./scripts/fuzz-all 60s

# The long form of the reliability suite: 200 crash cycles, a minute of
# idle for the telemetry check, and a minute of each fuzz target.
soak:
	CHATALOT_SOAK=1 CHATALOT_CRASH_CYCLES=200 $(GO) test -tags '$(TAGS)' -count=1 -v -timeout 60m \
		-run 'TestCrashCycles|TestZeroTelemetry|TestGarbageOnEveryRoute|TestNoPartialWrites' ./tests ./cmd/chatalot
	@./scripts/fuzz-all 60s

# The load generator against a freshly started server per scenario (issue
# 12); prints a table. Other runs: make bench BENCH_ARGS='-scenario growth'.
BENCH_ARGS ?= -scenario all
bench: build
	$(GO) build -o bin/chatalot-bench ./cmd/chatalot-bench && ./bin/chatalot-bench $(BENCH_ARGS)

# Complement (the Matrix project's homeserver suite) against bin/chatalot;
# fails on any failure in tests/csapi and tests (scripts/complement).
complement: build
	@./scripts/complement

clean:
	rm -rf bin
