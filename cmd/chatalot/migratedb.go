package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/chatalot/chatalot/server/app"
	"github.com/chatalot/chatalot/storage"
)

const migrateDBUsage = `migrate-db --to postgres://USER:PASSWORD@HOST:PORT/DB [flags]
        copy a stopped server's SQLite database (chatalot.db in data_dir)
        into an empty PostgreSQL database, table by table, checking each
        table's row count and content hash; run it again after an
        interruption and it goes on where it stopped`

// migrateMarkers is the table in the target that records each table
// copied (its row count and content hash), so that a second run after an
// interruption goes on rather than copying a table twice. It stays after
// the copy, as the record of what was verified.
const migrateMarkers = "chatalot_migrate_db"

// migrateComplete is the marker's name for the copy as a whole, written
// once every table is verified: a server refuses a database without it.
const migrateComplete = ""

// migrateDBLock is the advisory lock a copy holds on its target.
const migrateDBLock int64 = 0x6d69677261746564 // "migrated"

// migrateAfterTable, when a test sets it, runs after each table's copy
// commits (to interrupt a migration at a known point).
var migrateAfterTable func(table string) error

// migrateDB runs `chatalot migrate-db`: the offline move of a data
// directory's SQLite database into PostgreSQL. The data directory's lock is
// held throughout, so no server writes to the source meanwhile. Each table
// is copied in one PostgreSQL transaction together with its done marker:
// an interruption leaves a table either copied and marked, or empty.
func migrateDB(args []string, stdout io.Writer) error {
	fs := newFlagSet("migrate-db")
	configPath, set := configFlags(fs)
	to := fs.String("to", "", "the PostgreSQL database to copy into, a postgres:// `URL`; it must be empty, or hold an interrupted copy of this data directory")
	help := commandHelp(migrateDBUsage, fs, true)
	if err := parseFlags(fs, args, help); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("migrate-db: unexpected arguments %q", fs.Args())
	}
	if !storage.IsPostgresURL(*to) {
		return usagef("migrate-db: --to must be a postgres:// URL (the database to copy into)")
	}
	cfg, _, err := loadConfig(fs, configPath, set)
	if err != nil {
		return err
	}
	if cfg.onPostgres() {
		return errors.New("migrate-db: the database setting already names a PostgreSQL database; migrate-db copies the SQLite file of data_dir (leave database empty for this command)")
	}
	p := pathsOf(cfg.DataDir)
	if err := requireDataDir(p.dir); err != nil {
		return fmt.Errorf("migrate-db: %w", err)
	}
	if _, err := os.Stat(p.db); err != nil {
		return fmt.Errorf("migrate-db: no SQLite database at %s", p.db)
	}
	lock, err := lockDataDir(p.dir)
	if err != nil {
		return fmt.Errorf("migrate-db: %w (the server must be stopped while its database is copied)", err)
	}
	defer lock.release()
	ctx := context.Background()
	m := &dbMigration{out: stdout}
	return m.run(ctx, p, cfg, *to)
}

type dbMigration struct {
	out    io.Writer
	src    *storage.DB
	dst    *pgx.Conn
	copied int
}

func (m *dbMigration) run(ctx context.Context, p dataPaths, cfg Config, target string) error {
	start := time.Now()
	schemas := append([]storage.Schema{identitySchema}, app.Schemas...)

	// The source, brought up to this binary's schema first (as a start of
	// the server would): both sides then have the same tables.
	src, err := storage.Open(p.db, storage.Options{Durability: cfg.Durability})
	if err != nil {
		return fmt.Errorf("migrate-db: %w", err)
	}
	defer src.Close()
	if err := src.Migrate(ctx, schemas...); err != nil {
		return fmt.Errorf("migrate-db: upgrade the SQLite database: %w", err)
	}
	printMigrations(m.out, src, p.dir)
	m.src = src

	dst, err := pgx.Connect(ctx, target)
	if err != nil {
		return fmt.Errorf("migrate-db: connect to the target: %w", err)
	}
	defer dst.Close(context.Background())
	m.dst = dst
	// One copy into a database at a time (another data directory's, say).
	var alone bool
	if err := dst.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, migrateDBLock).Scan(&alone); err != nil {
		return fmt.Errorf("migrate-db: %w", err)
	}
	if !alone {
		return errors.New("migrate-db: another migrate-db is copying into this database; wait for it, or stop it")
	}
	resumed, err := m.checkTarget(ctx)
	if err != nil {
		return err
	}
	if resumed {
		// A finished copy may be served already: it is left alone.
		var complete bool
		if err := dst.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+migrateMarkers+` WHERE table_name = $1)`, migrateComplete).Scan(&complete); err != nil {
			return fmt.Errorf("migrate-db: %w", err)
		}
		if complete {
			fmt.Fprintf(m.out, "the copy into this database was finished by an earlier run: nothing to do; start the server with database = %q\n", redactDSN(target))
			return nil
		}
	}
	if !resumed {
		// The markers first: from here on the database is this copy's.
		if _, err := dst.Exec(ctx, `CREATE TABLE `+migrateMarkers+` (
			table_name   TEXT   PRIMARY KEY,
			row_count    BIGINT NOT NULL,
			content_hash TEXT   NOT NULL
		)`); err != nil {
			return fmt.Errorf("migrate-db: %w", err)
		}
	}
	// The target's tables, made by the same migrations the server runs
	// (nothing to do when an interrupted run made them).
	tdb, err := storage.Open(target, storage.Options{Readers: 1, FilePath: p.db})
	if err != nil {
		return fmt.Errorf("migrate-db: %w", err)
	}
	err = tdb.Migrate(ctx, schemas...)
	tdb.Close()
	if err != nil {
		return fmt.Errorf("migrate-db: create the tables in PostgreSQL: %w", err)
	}
	if err := m.sameVersions(ctx); err != nil {
		return err
	}
	tables, err := m.tables(ctx)
	if err != nil {
		return err
	}
	done, err := m.markers(ctx)
	if err != nil {
		return err
	}
	if len(done) > 0 {
		fmt.Fprintf(m.out, "resuming: %d of %d tables were copied by an earlier run\n", len(done), len(tables))
	}
	fmt.Fprintf(m.out, "%-32s %10s  %s\n", "table", "rows", "content hash")
	for _, t := range tables {
		if err := m.table(ctx, t, done); err != nil {
			return fmt.Errorf("migrate-db: table %s: %w", t.name, err)
		}
	}
	var from, got int64
	if err := src.QueryRow(ctx, `SELECT position FROM stream_position`).Scan(&from); err != nil {
		return fmt.Errorf("migrate-db: %w", err)
	}
	if err := dst.QueryRow(ctx, `SELECT position FROM stream_position`).Scan(&got); err != nil || got != from {
		return fmt.Errorf("migrate-db: the stream position in PostgreSQL is %d, want %d (%v)", got, from, err)
	}
	if _, err := dst.Exec(ctx, `INSERT INTO `+migrateMarkers+` (table_name, row_count, content_hash) VALUES ($1, $2, 'complete')
		ON CONFLICT (table_name) DO NOTHING`, migrateComplete, len(tables)); err != nil {
		return fmt.Errorf("migrate-db: %w", err)
	}
	fmt.Fprintf(m.out, "copied %d tables (%d verified from an earlier run) in %s; stream position %d\n",
		len(tables), len(tables)-m.copied, time.Since(start).Round(time.Millisecond), from)
	fmt.Fprintf(m.out, "start the server with database = %q (the signing key and media stay in %s)\n", redactDSN(target), p.dir)
	return nil
}

// checkTarget refuses a target that holds anything but an interrupted
// copy; it reports whether the target is one (the tables exist).
func (m *dbMigration) checkTarget(ctx context.Context) (resumed bool, _ error) {
	names, err := pgStrings(ctx, m.dst, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = current_schema() ORDER BY table_name`)
	if err != nil {
		return false, fmt.Errorf("migrate-db: list the target's tables: %w", err)
	}
	for _, n := range names {
		if n == migrateMarkers {
			return true, nil
		}
	}
	if len(names) > 0 {
		return false, fmt.Errorf("migrate-db: the target database is not empty (it has the tables %s); give a new, empty database", strings.Join(names, ", "))
	}
	return false, nil
}

// sameVersions checks that both databases are at this binary's schema.
func (m *dbMigration) sameVersions(ctx context.Context) error {
	want, err := m.src.SchemaVersions(ctx)
	if err != nil {
		return fmt.Errorf("migrate-db: %w", err)
	}
	rows, err := m.dst.Query(ctx, `SELECT domain, version FROM schema_versions`)
	if err != nil {
		return fmt.Errorf("migrate-db: %w", err)
	}
	got := map[string]int{}
	for rows.Next() {
		var d string
		var v int
		if err := rows.Scan(&d, &v); err != nil {
			return err
		}
		got[d] = v
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for d, v := range want {
		if got[d] != v {
			return fmt.Errorf("migrate-db: schema %s is at version %d in PostgreSQL and %d in SQLite (an interrupted copy by another Chatalot version?): give a new, empty database", d, got[d], v)
		}
	}
	return nil
}

// pgTable is one table to copy and its columns, as PostgreSQL has them.
type pgTable struct {
	name     string
	columns  []pgColumn
	identity []string // columns whose sequence is set past the copied values
}

type pgColumn struct{ name, typ string }

// tables lists the target's tables in the order their migrations made
// them, each after the tables its foreign keys point at.
func (m *dbMigration) tables(ctx context.Context) ([]pgTable, error) {
	names, err := pgStrings(ctx, m.dst, `SELECT c.relname FROM pg_class c
		WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'
			AND c.relname NOT IN ('schema_versions', '`+migrateMarkers+`')
		ORDER BY c.oid`)
	if err != nil {
		return nil, err
	}
	deps := map[string][]string{}
	rows, err := m.dst.Query(ctx, `SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c
		WHERE c.contype = 'f' AND c.connamespace = current_schema()::regnamespace`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var from, to string
		if err := rows.Scan(&from, &to); err != nil {
			return nil, err
		}
		deps[from] = append(deps[from], to)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var ordered []string
	placed := map[string]bool{}
	var place func(n string, depth int)
	place = func(n string, depth int) {
		if placed[n] || depth > len(names) {
			return
		}
		for _, d := range deps[n] {
			if d != n {
				place(d, depth+1)
			}
		}
		if !placed[n] {
			placed[n] = true
			ordered = append(ordered, n)
		}
	}
	for _, n := range names {
		place(n, 0)
	}
	srcTables, err := storage.Strings[string](m.src.Query(ctx, `SELECT name FROM sqlite_master WHERE type = 'table'`))
	if err != nil {
		return nil, err
	}
	inSource := map[string]bool{}
	for _, n := range srcTables {
		inSource[n] = true
	}
	inTarget := map[string]bool{"schema_versions": true}
	for _, n := range ordered {
		inTarget[n] = true
	}
	for _, n := range srcTables {
		if !inTarget[n] && !strings.HasPrefix(n, "sqlite_") {
			return nil, fmt.Errorf("the SQLite table %s has no PostgreSQL counterpart: its rows would be lost", n)
		}
	}
	var out []pgTable
	for _, n := range ordered {
		if !inSource[n] {
			// A table only PostgreSQL's migrations make: nothing to copy.
			continue
		}
		t := pgTable{name: n}
		rows, err := m.dst.Query(ctx, `SELECT column_name, data_type, is_identity FROM information_schema.columns
			WHERE table_schema = current_schema() AND table_name = $1 AND is_generated = 'NEVER' ORDER BY ordinal_position`, n)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var c pgColumn
			var ident string
			if err := rows.Scan(&c.name, &c.typ, &ident); err != nil {
				return nil, err
			}
			t.columns = append(t.columns, c)
			if ident == "YES" {
				t.identity = append(t.identity, c.name)
			}
		}
		if err := rows.Err(); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// markers reads the tables earlier runs copied: row count and hash.
func (m *dbMigration) markers(ctx context.Context) (map[string]tableSum, error) {
	rows, err := m.dst.Query(ctx, `SELECT table_name, row_count, content_hash FROM `+migrateMarkers)
	if err != nil {
		return nil, err
	}
	out := map[string]tableSum{}
	for rows.Next() {
		var n string
		var s tableSum
		if err := rows.Scan(&n, &s.rows, &s.hash); err != nil {
			return nil, err
		}
		if n != migrateComplete {
			out[n] = s
		}
	}
	return out, rows.Err()
}

// tableSum is what verification compares: the number of rows and a hash
// of their contents that does not depend on the order they are read in
// (the two databases may sort text differently).
type tableSum struct {
	rows int64
	hash string
}

// table copies one table unless an earlier run did, and checks the copy.
func (m *dbMigration) table(ctx context.Context, t pgTable, done map[string]tableSum) error {
	cols := make([]string, len(t.columns))
	for i, c := range t.columns {
		cols[i] = quoteIdent(c.name)
	}
	sel := `SELECT ` + strings.Join(cols, ", ") + ` FROM ` + quoteIdent(t.name)
	if prev, ok := done[t.name]; ok {
		// Copied by an earlier run: the source must still be what was
		// copied (the lock kept servers out, but not between the runs).
		sum, err := m.sourceSum(ctx, t, sel)
		if err != nil {
			return err
		}
		if sum != prev {
			return fmt.Errorf("the SQLite database changed since the interrupted run copied it (%d rows %s then, %d rows %s now): drop and recreate the PostgreSQL database, then run migrate-db again",
				prev.rows, prev.hash, sum.rows, sum.hash)
		}
		fmt.Fprintf(m.out, "%-32s %10d  %s (copied before)\n", t.name, sum.rows, sum.hash)
		return nil
	}
	tx, err := m.dst.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // after Commit this is a no-op
	// Rows the target's migrations seeded (the stream position's) give way
	// to the source's.
	if _, err := tx.Exec(ctx, `DELETE FROM `+quoteIdent(t.name)); err != nil {
		return err
	}
	rows, err := m.src.Query(ctx, sel)
	if err != nil {
		return err
	}
	defer rows.Close()
	src := newSummer()
	vals := make([]any, len(t.columns))
	ptrs := make([]any, len(t.columns))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var convErr error
	n, err := tx.CopyFrom(ctx, pgx.Identifier{t.name}, columnNames(t), pgx.CopyFromFunc(func() ([]any, error) {
		if !rows.Next() {
			return nil, rows.Err()
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		row := make([]any, len(vals))
		for i, v := range vals {
			if row[i], convErr = toPostgres(v, t.columns[i].typ); convErr != nil {
				return nil, fmt.Errorf("column %s: %w", t.columns[i].name, convErr)
			}
		}
		src.add(row)
		return row, nil
	}))
	if err != nil {
		return err
	}
	rows.Close()
	for _, c := range t.identity {
		if _, err := tx.Exec(ctx, `SELECT setval(pg_get_serial_sequence($1, $2), coalesce(max(`+quoteIdent(c)+`), 0) + 1, false) FROM `+quoteIdent(t.name),
			quoteIdent(t.name), c); err != nil {
			return fmt.Errorf("identity %s: %w", c, err)
		}
	}
	// Verify: what PostgreSQL now holds, read back, against what was read.
	want := src.sum()
	got, err := pgSum(ctx, tx, t, sel)
	if err != nil {
		return err
	}
	if got != want || n != want.rows {
		return fmt.Errorf("the copy differs: %d rows %s read from SQLite, %d rows %s in PostgreSQL", want.rows, want.hash, got.rows, got.hash)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO `+migrateMarkers+` (table_name, row_count, content_hash) VALUES ($1, $2, $3)`,
		t.name, got.rows, got.hash); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	m.copied++
	fmt.Fprintf(m.out, "%-32s %10d  %s\n", t.name, got.rows, got.hash)
	if migrateAfterTable != nil {
		return migrateAfterTable(t.name)
	}
	return nil
}

func columnNames(t pgTable) []string {
	out := make([]string, len(t.columns))
	for i, c := range t.columns {
		out[i] = c.name
	}
	return out
}

// sourceSum reads a table of the SQLite database as a copy would.
func (m *dbMigration) sourceSum(ctx context.Context, t pgTable, sel string) (tableSum, error) {
	rows, err := m.src.Query(ctx, sel)
	if err != nil {
		return tableSum{}, err
	}
	defer rows.Close()
	s := newSummer()
	vals := make([]any, len(t.columns))
	ptrs := make([]any, len(t.columns))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return tableSum{}, err
		}
		row := make([]any, len(vals))
		for i, v := range vals {
			if row[i], err = toPostgres(v, t.columns[i].typ); err != nil {
				return tableSum{}, err
			}
		}
		s.add(row)
	}
	return s.sum(), rows.Err()
}

// pgSum reads a table of the PostgreSQL database back.
func pgSum(ctx context.Context, tx pgx.Tx, t pgTable, sel string) (tableSum, error) {
	rows, err := tx.Query(ctx, sel)
	if err != nil {
		return tableSum{}, err
	}
	defer rows.Close()
	s := newSummer()
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return tableSum{}, err
		}
		s.add(vals)
	}
	return s.sum(), rows.Err()
}

// toPostgres turns a value read from SQLite, whose columns take any type,
// into the Go value of the PostgreSQL column's type: a BOOLEAN is stored
// by SQLite as 0 or 1, text and blobs may come back as either.
func toPostgres(v any, typ string) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch typ {
	case "boolean":
		switch x := v.(type) {
		case bool:
			return x, nil
		case int64:
			return x != 0, nil
		case string:
			return strconv.ParseBool(x)
		}
	case "bigint", "integer", "smallint":
		switch x := v.(type) {
		case int64:
			return x, nil
		case float64:
			if x == math.Trunc(x) {
				return int64(x), nil
			}
		case string:
			return strconv.ParseInt(x, 10, 64)
		case []byte:
			return strconv.ParseInt(string(x), 10, 64)
		}
	case "bytea":
		switch x := v.(type) {
		case []byte:
			return x, nil
		case string:
			return []byte(x), nil
		}
	case "text", "character varying":
		var s string
		switch x := v.(type) {
		case string:
			s = x
		case []byte:
			s = string(x)
		case int64:
			s = strconv.FormatInt(x, 10)
		default:
			return nil, fmt.Errorf("a %T in a text column", v)
		}
		if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
			return nil, errors.New("text that PostgreSQL cannot store (not UTF-8, or a NUL character)")
		}
		return s, nil
	default:
		return v, nil
	}
	return nil, fmt.Errorf("a %T (%v) in a %s column", v, v, typ)
}

// summer hashes rows, each one on its own, and adds the hashes up in four
// 64-bit lanes: the sum does not depend on the order of the rows, and two
// equal rows do not cancel out.
type summer struct {
	n     int64
	lanes [4]uint64
	buf   []byte
}

func newSummer() *summer { return &summer{} }

func (s *summer) add(row []any) {
	b := s.buf[:0]
	for _, v := range row {
		switch x := v.(type) {
		case nil:
			b = append(b, 'n')
		case bool:
			if x {
				b = append(b, 't')
			} else {
				b = append(b, 'f')
			}
		case int64:
			b = binary.BigEndian.AppendUint64(append(b, 'i'), uint64(x))
		case int32:
			b = binary.BigEndian.AppendUint64(append(b, 'i'), uint64(int64(x)))
		case int16:
			b = binary.BigEndian.AppendUint64(append(b, 'i'), uint64(int64(x)))
		case string:
			b = append(binary.BigEndian.AppendUint64(append(b, 's'), uint64(len(x))), x...)
		case []byte:
			b = append(binary.BigEndian.AppendUint64(append(b, 'b'), uint64(len(x))), x...)
		default:
			s := fmt.Sprint(x)
			b = append(binary.BigEndian.AppendUint64(append(b, '?'), uint64(len(s))), s...)
		}
	}
	s.buf = b
	h := sha256.Sum256(b)
	for i := range s.lanes {
		s.lanes[i] += binary.BigEndian.Uint64(h[i*8:])
	}
	s.n++
}

func (s *summer) sum() tableSum {
	var b []byte
	for _, l := range s.lanes {
		b = binary.BigEndian.AppendUint64(b, l)
	}
	return tableSum{rows: s.n, hash: hex.EncodeToString(b[:16])}
}

func pgStrings(ctx context.Context, c *pgx.Conn, q string) ([]string, error) {
	rows, err := c.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func quoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }

// redactDSN shows a database URL without its password.
func redactDSN(s string) string {
	cfg, err := pgx.ParseConfig(s)
	if err != nil || cfg.Password == "" {
		return s
	}
	return strings.Replace(s, ":"+cfg.Password+"@", ":…@", 1)
}
