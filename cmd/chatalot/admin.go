package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/mail"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/chatalot/chatalot/admin"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/rs/zerolog"
)

const adminUsage = `Usage: chatalot admin COMMAND [flags]

Commands work on the data directory whether or not the server is running;
it must exist, and record the same server_name. Each takes the server's
settings (--config, --data-dir, --server-name, …); "chatalot admin COMMAND
-h" shows a command's flags.
Every command that changes something is recorded in the audit log, with
"cli" as the actor. While the server runs, it applies what it keeps in
memory (open sessions, room memberships) within a second.

  create-user NAME [--admin] [--password-stdin]
        create an account; without --password-stdin a strong password is
        generated and printed once
  reset-password NAME [--password-stdin] [--keep-devices]
        set a new password (generated when not on standard input); every
        device is logged out unless --keep-devices
  make-admin NAME [--revoke]
        make the account a server admin (--revoke: no longer one)
  deactivate NAME [--erase]
        close the account for good: it is logged out everywhere, leaves
        every room and can never log in again; --erase also removes the
        display name and avatar
  token create [TOKEN] [--uses N] [--expires DURATION]
        create an invite code (generated when TOKEN is omitted)
  token list [--valid | --invalid]
        list invite codes with their uses (pending, completed, allowed)
  token revoke TOKEN
        delete an invite code: registrations using it fail from now on
        ("registration-token create|list|delete" are the same commands)
  rooms list [--search TERM] [--limit N]
        list the server's rooms, largest first
  audit-log [--limit N] [--actor WHO] [--action WHAT] [--target ID] [--json]
        show the audit log, newest first
  backup DIR
        copy the database, media and signing key into DIR, consistently,
        while the server runs (DIR: new, empty, or an earlier backup)
  restore DIR [--force]
        restore a backup into the data directory; refused while a server
        uses it; --force moves existing data aside first
  compact
        rewrite the database file without its free pages (VACUUM) and
        switch it to incremental vacuum; prints the size before and after
        (writes wait while it runs)
`

// adminCommand runs `chatalot admin …`.
func adminCommand(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, adminUsage)
		return usagef("admin: expected a command")
	}
	switch args[0] {
	case "create-user":
		return adminCreateUser(args[1:], os.Stdin, os.Stdout)
	case "reset-password":
		return adminResetPassword(args[1:], os.Stdin, os.Stdout)
	case "make-admin":
		return adminMakeAdmin(args[1:], os.Stdout)
	case "deactivate":
		return adminDeactivate(args[1:], os.Stdout)
	case "registration-token", "token":
		return adminRegistrationToken(args[1:], os.Stdout)
	case "rooms":
		return adminRooms(args[1:], os.Stdout)
	case "audit-log":
		return adminAuditLog(args[1:], os.Stdout)
	case "backup":
		return adminBackup(args[1:], os.Stdout)
	case "restore":
		return adminRestore(args[1:], os.Stdout)
	case "compact":
		return adminCompact(args[1:], os.Stdout)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(os.Stdout, adminUsage)
		return nil
	}
	return usagef("admin: unknown command %q (run \"chatalot admin -h\" for the list)", args[0])
}

// adminFlags parses the server's settings plus a command's own flags;
// positional arguments may come before or after the flags.
func adminFlags(name string, args []string, own func(fs *flag.FlagSet)) (Config, []string, error) {
	fs := newFlagSet("admin " + name)
	configPath, set := configFlags(fs)
	if own != nil {
		own(fs)
	}
	help := commandHelp(adminHelpBlock(name), fs, true)
	var pos []string
	for len(args) > 0 {
		if err := parseFlags(fs, args, help); err != nil {
			return Config{}, nil, err
		}
		args = fs.Args()
		if len(args) > 0 {
			pos = append(pos, args[0])
			args = args[1:]
		}
	}
	cfg, _, err := loadConfig(fs, configPath, set)
	return cfg, pos, err
}

// cliAdmin is the admin service the CLI drives, on the data directory's
// database.
type cliAdmin struct {
	*admin.Service
	auth  *auth.Service
	db    *storage.DB
	cfg   Config
	rooms *rooms.Service
}

func (c *cliAdmin) Close() { c.db.Close() }

// openAdmin opens the data directory's database with the accounts and
// admin tables (and the rooms', withRooms), for commands that work whether
// or not the server runs: SQLite serialises the two processes' writes.
// These commands take no stream position, so the running server's
// in-memory position stays right; what the server keeps in memory is
// brought up to date through the admin package's follow-ups (admin/cli.go).
func openAdmin(cfg Config, withRooms bool) (*cliAdmin, error) {
	p := pathsOf(cfg.DataDir)
	if err := requireDataDir(p.dir); err != nil {
		return nil, err
	}
	db, err := storage.Open(cfg.databaseAt(p), storage.Options{Durability: cfg.Durability, FilePath: p.db})
	if err != nil {
		return nil, err
	}
	schemas := []storage.Schema{identitySchema, auth.Schema, admin.Schema}
	if withRooms {
		schemas = append(schemas, rooms.Schema)
	}
	ctx := context.Background()
	if err := checkSQLiteLeftBehind(ctx, db, p); err != nil {
		db.Close()
		return nil, err
	}
	if err := db.Migrate(ctx, schemas...); err != nil {
		db.Close()
		return nil, err
	}
	printMigrations(os.Stderr, db, p.dir)
	if err := checkServerName(ctx, db, p.dir, cfg.ServerName); err != nil {
		db.Close()
		return nil, err
	}
	ac, err := cfg.authConfig()
	if err != nil {
		db.Close()
		return nil, err
	}
	log := zerolog.New(os.Stderr).Level(zerolog.WarnLevel)
	server := spec.ServerName(cfg.ServerName)
	authSvc, err := auth.New(auth.Deps{DB: db, ServerName: server, Config: ac, Log: log})
	if err != nil {
		db.Close()
		return nil, err
	}
	var roomsSvc *rooms.Service
	if withRooms {
		// Read-only here: the CLI lists rooms, it never sends an event.
		if roomsSvc, err = rooms.New(ctx, rooms.Deps{DB: db, Server: server, Log: log}); err != nil {
			db.Close()
			return nil, err
		}
	}
	d := admin.Deps{DB: db, ServerName: server, Auth: authSvc, Log: log, Config: cfg.adminConfig(), CLI: true}
	if roomsSvc != nil {
		d.Rooms = roomsSvc // a nil *rooms.Service would not be a nil admin.Rooms
	}
	svc, err := admin.New(ctx, d)
	if err != nil {
		db.Close()
		return nil, err
	}
	return &cliAdmin{Service: svc, auth: authSvc, db: db, cfg: cfg, rooms: roomsSvc}, nil
}

// readPassword reads the first line of stdin, or generates a strong
// password when fromStdin is false.
func readPassword(stdin io.Reader, fromStdin bool) (password string, generated bool, err error) {
	if fromStdin {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", false, fmt.Errorf("read password: %w", err)
		}
		password = strings.TrimRight(line, "\r\n")
		if password == "" {
			return "", false, errors.New("the password on standard input is empty")
		}
		return password, false, nil
	}
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return "", false, err
	}
	return base64.RawURLEncoding.EncodeToString(b), true, nil
}

// userArg turns NAME (a localpart or a full user ID of this server) into a
// user ID. Both forms are lower-cased, as account creation lower-cases
// names, so that every command finds the account create-user made.
func userArg(cfg Config, name string) (spec.UserID, error) {
	localpart := name
	if strings.HasPrefix(name, "@") {
		u, err := spec.ParseUserID(name)
		if err != nil {
			return "", fmt.Errorf("%q is not a user ID", name)
		}
		if string(u.Server()) != cfg.ServerName {
			return "", fmt.Errorf("%s is not a user of this server (%s)", u, cfg.ServerName)
		}
		localpart = u.Localpart()
	}
	u := spec.NewUserID(strings.ToLower(localpart), spec.ServerName(cfg.ServerName))
	if _, err := spec.ParseUserID(string(u)); err != nil || localpart == "" {
		return "", fmt.Errorf("%q is not a user name", name)
	}
	return u, nil
}

// existing checks that the account exists (deactivated or not).
func (c *cliAdmin) existing(user spec.UserID) (auth.UserInfo, error) {
	info, found, err := c.auth.User(context.Background(), user)
	if err != nil {
		return info, err
	}
	if !found {
		return info, fmt.Errorf("no account %s", user)
	}
	return info, nil
}

// adminCreateUser: chatalot admin create-user NAME [--admin] [--password-stdin]
func adminCreateUser(args []string, stdin io.Reader, stdout io.Writer) error {
	var isAdmin, fromStdin bool
	cfg, pos, err := adminFlags("create-user", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&isAdmin, "admin", false, "make the user a server admin")
		fs.BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of standard input")
	})
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("admin create-user: expected one user name")
	}
	user, err := userArg(cfg, pos[0]) // reserved names: admin.Service.CreateUser refuses them
	if err != nil {
		return fmt.Errorf("admin create-user: %w", err)
	}
	password, generated, err := readPassword(stdin, fromStdin)
	if err != nil {
		return fmt.Errorf("admin create-user: %w", err)
	}
	a, err := openAdmin(cfg, false)
	if err != nil {
		return err
	}
	defer a.Close()
	id, err := a.CreateUser(context.Background(), admin.CLIActor, user.Localpart(), password, isAdmin)
	if err != nil {
		return fmt.Errorf("admin create-user: %w", err)
	}
	kind := "user"
	if isAdmin {
		kind = "admin"
	}
	fmt.Fprintf(stdout, "created %s %s\n", kind, id)
	if generated {
		fmt.Fprintf(stdout, "password: %s\n(shown once; change it after the first login)\n", password)
	}
	return nil
}

// adminResetPassword: chatalot admin reset-password NAME [--password-stdin] [--keep-devices]
func adminResetPassword(args []string, stdin io.Reader, stdout io.Writer) error {
	var fromStdin, keep bool
	cfg, pos, err := adminFlags("reset-password", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of standard input")
		fs.BoolVar(&keep, "keep-devices", false, "do not log the user's devices out")
	})
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("admin reset-password: expected one user name")
	}
	user, err := userArg(cfg, pos[0])
	if err != nil {
		return fmt.Errorf("admin reset-password: %w", err)
	}
	password, generated, err := readPassword(stdin, fromStdin)
	if err != nil {
		return fmt.Errorf("admin reset-password: %w", err)
	}
	a, err := openAdmin(cfg, false)
	if err != nil {
		return err
	}
	defer a.Close()
	if info, err := a.existing(user); err != nil {
		return fmt.Errorf("admin reset-password: %w", err)
	} else if info.Deactivated {
		return fmt.Errorf("admin reset-password: %s is deactivated", user)
	}
	if err := a.ResetPassword(context.Background(), admin.CLIActor, user, password, !keep, ""); err != nil {
		return fmt.Errorf("admin reset-password: %w", err)
	}
	fmt.Fprintf(stdout, "password of %s changed\n", user)
	if generated {
		fmt.Fprintf(stdout, "password: %s\n(shown once)\n", password)
	}
	return nil
}

// adminMakeAdmin: chatalot admin make-admin NAME [--revoke]
func adminMakeAdmin(args []string, stdout io.Writer) error {
	var revoke bool
	cfg, pos, err := adminFlags("make-admin", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&revoke, "revoke", false, "remove the admin rights instead")
	})
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("admin make-admin: expected one user name")
	}
	user, err := userArg(cfg, pos[0])
	if err != nil {
		return fmt.Errorf("admin make-admin: %w", err)
	}
	a, err := openAdmin(cfg, false)
	if err != nil {
		return err
	}
	defer a.Close()
	if _, err := a.existing(user); err != nil {
		return fmt.Errorf("admin make-admin: %w", err)
	}
	if err := a.SetAdmin(context.Background(), admin.CLIActor, user, !revoke); err != nil {
		return fmt.Errorf("admin make-admin: %w", err)
	}
	if revoke {
		fmt.Fprintf(stdout, "%s is no longer a server admin\n", user)
	} else {
		fmt.Fprintf(stdout, "%s is a server admin\n", user)
	}
	return nil
}

// adminDeactivate: chatalot admin deactivate NAME [--erase]
func adminDeactivate(args []string, stdout io.Writer) error {
	var erase bool
	cfg, pos, err := adminFlags("deactivate", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&erase, "erase", false, "also erase the account: profile, keys, account data, uploads no room needs; its messages are kept redacted (the running server, or the next start, finishes the erasure)")
	})
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("admin deactivate: expected one user name")
	}
	user, err := userArg(cfg, pos[0])
	if err != nil {
		return fmt.Errorf("admin deactivate: %w", err)
	}
	a, err := openAdmin(cfg, false)
	if err != nil {
		return err
	}
	defer a.Close()
	info, err := a.existing(user)
	if err != nil {
		return fmt.Errorf("admin deactivate: %w", err)
	}
	if info.Deactivated {
		fmt.Fprintf(stdout, "%s was already deactivated\n", user)
		return nil
	}
	if err := a.Deactivate(context.Background(), admin.CLIActor, user, erase); err != nil {
		return fmt.Errorf("admin deactivate: %w", err)
	}
	fmt.Fprintf(stdout, "deactivated %s\n", user)
	return nil
}

// adminRegistrationToken: chatalot admin token (or registration-token)
// create|list|revoke (or delete)
func adminRegistrationToken(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("admin token: expected create, list or revoke")
	}
	sub := args[0]
	if isHelp(sub) {
		for _, c := range []string{"token create", "token list", "token revoke"} {
			fmt.Fprintln(stdout, "Usage: chatalot "+adminHelpBlock(c)+"\n")
		}
		return nil
	}
	var uses int64
	var expires string
	var valid, invalid bool
	cfg, pos, err := adminFlags("token "+sub, args[1:], func(fs *flag.FlagSet) {
		switch sub {
		case "create":
			fs.Int64Var(&uses, "uses", 0, "how many accounts the token may create (0: unlimited)")
			fs.StringVar(&expires, "expires", "", "how long the token stays valid, a `duration` such as 168h (empty: forever)")
		case "list":
			fs.BoolVar(&valid, "valid", false, "only tokens that can still register an account")
			fs.BoolVar(&invalid, "invalid", false, "only expired or used-up tokens")
		}
	})
	if err != nil {
		return err
	}
	switch sub {
	case "create":
		return tokenCreate(cfg, pos, uses, expires, stdout)
	case "list":
		return tokenList(cfg, valid, invalid, stdout)
	case "revoke", "delete":
		return tokenRevoke(cfg, pos, stdout)
	}
	return usagef("admin token: unknown command %q (expected create, list or revoke)", sub)
}

// tokenCreate: chatalot admin token create [TOKEN] [--uses N] [--expires D]
func tokenCreate(cfg Config, pos []string, uses int64, expires string, stdout io.Writer) error {
	if len(pos) > 1 {
		return usagef("admin token create: at most one token")
	}
	var usesAllowed *int64
	if uses < 0 {
		return errors.New("--uses must not be negative")
	} else if uses > 0 {
		usesAllowed = &uses
	}
	var expiry *int64
	if expires != "" {
		d, err := time.ParseDuration(expires)
		if err != nil || d <= 0 {
			return fmt.Errorf("--expires: %q is not a duration such as 168h", expires)
		}
		ms := time.Now().Add(d).UnixMilli()
		expiry = &ms
	}
	tok := ""
	if len(pos) == 1 {
		tok = pos[0]
	}
	a, err := openAdmin(cfg, false)
	if err != nil {
		return err
	}
	defer a.Close()
	t, err := a.CreateToken(context.Background(), admin.CLIActor, tok, 16, usesAllowed, expiry)
	if err != nil {
		return fmt.Errorf("admin token create: %w", err)
	}
	fmt.Fprintln(stdout, t.Token)
	return nil
}

// tokenList: chatalot admin token list [--valid|--invalid]
func tokenList(cfg Config, valid, invalid bool, stdout io.Writer) error {
	var only *bool
	switch {
	case valid && invalid:
		return errors.New("admin token list: --valid and --invalid exclude each other")
	case valid, invalid:
		only = &valid
	}
	a, err := openAdmin(cfg, false)
	if err != nil {
		return err
	}
	defer a.Close()
	list, err := a.Tokens(context.Background(), only)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%-24s %8s %9s %7s  %s\n", "TOKEN", "PENDING", "COMPLETED", "ALLOWED", "EXPIRES")
	for _, t := range list {
		allowed, exp := "-", "never"
		if t.UsesAllowed != nil {
			allowed = strconv.FormatInt(*t.UsesAllowed, 10)
		}
		if t.ExpiryTime != nil {
			exp = time.UnixMilli(*t.ExpiryTime).UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(stdout, "%-24s %8d %9d %7s  %s\n", t.Token, t.Pending, t.Completed, allowed, exp)
	}
	return nil
}

// tokenRevoke: chatalot admin token revoke TOKEN
func tokenRevoke(cfg Config, pos []string, stdout io.Writer) error {
	if len(pos) != 1 {
		return usagef("admin token revoke: expected one token")
	}
	a, err := openAdmin(cfg, false)
	if err != nil {
		return err
	}
	defer a.Close()
	if err := a.RevokeToken(context.Background(), admin.CLIActor, pos[0]); err != nil {
		return fmt.Errorf("admin token revoke: %w", err)
	}
	fmt.Fprintln(stdout, "deleted", pos[0])
	return nil
}

// adminRooms: chatalot admin rooms list [--search TERM] [--limit N]
func adminRooms(args []string, stdout io.Writer) error {
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprintln(stdout, "Usage: chatalot "+adminHelpBlock("rooms list"))
		return nil
	}
	if len(args) == 0 || args[0] != "list" {
		return usagef("admin rooms: expected list")
	}
	var search string
	var limit int
	cfg, pos, err := adminFlags("rooms list", args[1:], func(fs *flag.FlagSet) {
		fs.StringVar(&search, "search", "", "only rooms whose name, alias or ID contains TERM")
		fs.IntVar(&limit, "limit", 100, "list at most N rooms")
	})
	if err != nil {
		return err
	}
	if len(pos) > 0 || limit < 0 {
		return usagef("admin rooms list: unexpected arguments")
	}
	a, err := openAdmin(cfg, true)
	if err != nil {
		return err
	}
	defer a.Close()
	list, total, err := a.Rooms(context.Background(), admin.RoomQuery{Limit: limit, OrderBy: "joined_members", SearchTerm: search})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%-48s %7s %7s  %-10s %s\n", "ROOM", "MEMBERS", "VERSION", "ENCRYPTED", "NAME")
	for _, r := range list {
		enc := "no"
		if r.Encryption != "" {
			enc = "yes"
		}
		name := r.Name
		if r.CanonicalAlias != "" {
			name = strings.TrimSpace(name + " " + r.CanonicalAlias)
		}
		fmt.Fprintf(stdout, "%-48s %7d %7s  %-10s %s\n", r.RoomID, r.NumJoinedMembers, r.RoomVersion, enc, name)
	}
	fmt.Fprintf(stdout, "%d of %d rooms\n", len(list), total)
	return nil
}

// adminAuditLog: chatalot admin audit-log [--limit N] [--actor WHO] [--action WHAT] [--target ID] [--json]
func adminAuditLog(args []string, stdout io.Writer) error {
	var f admin.AuditFilter
	var asJSON bool
	cfg, pos, err := adminFlags("audit-log", args, func(fs *flag.FlagSet) {
		fs.IntVar(&f.Limit, "limit", 50, "show at most N entries")
		fs.StringVar(&f.Actor, "actor", "", "only actions of this admin (a user ID, or cli)")
		fs.StringVar(&f.Action, "action", "", "only this action, such as deactivate_user")
		fs.StringVar(&f.Target, "target", "", "only actions on this user, room, token or mxc:// URI")
		fs.BoolVar(&asJSON, "json", false, "one JSON object per line")
	})
	if err != nil {
		return err
	}
	if len(pos) > 0 || f.Limit < 1 {
		return usagef("admin audit-log: unexpected arguments")
	}
	a, err := openAdmin(cfg, false)
	if err != nil {
		return err
	}
	defer a.Close()
	list, _, err := a.AuditLog(context.Background(), f)
	if err != nil {
		return err
	}
	for _, e := range list {
		details, _ := json.Marshal(e.Details)
		if asJSON {
			line, _ := json.Marshal(e)
			fmt.Fprintln(stdout, string(line))
			continue
		}
		fmt.Fprintf(stdout, "%s  %-28s %-26s %s %s\n", time.UnixMilli(e.TS).UTC().Format(time.RFC3339), e.Actor, e.Action, e.Target, details)
	}
	return nil
}

// validateAdmin checks the support and server-notices settings.
func (c *Config) validateAdmin(add func(key, format string, args ...any)) {
	for key, v := range map[string]string{"support_admin_contacts": c.SupportAdminContacts, "support_security_contacts": c.SupportSecurityContacts} {
		if _, err := parseContacts(v, ""); err != nil {
			add(key, "%v", err)
		}
	}
	if c.SupportPage != "" {
		if u, err := url.Parse(c.SupportPage); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			add("support_page", "%q is not an http(s) URL", c.SupportPage)
		}
	}
	if !slices.Contains(adminAPIModes, c.AdminAPI) {
		add("admin_api", "%q is not one of %s", c.AdminAPI, strings.Join(adminAPIModes, ", "))
	}
	if err := spec.ValidateLocalpart(c.ServerNoticesUser); err != nil || c.ServerNoticesUser == "" {
		add("server_notices_user", "%q is not a valid user name", c.ServerNoticesUser)
	}
}

// parseContacts reads a comma-separated list of Matrix IDs and email
// addresses into support contacts with the given role.
func parseContacts(list, role string) ([]admin.Contact, error) {
	var out []admin.Contact
	for _, v := range strings.Split(list, ",") {
		if v = strings.TrimSpace(v); v == "" {
			continue
		}
		if strings.HasPrefix(v, "@") {
			if _, err := spec.ParseUserID(v); err != nil {
				return nil, fmt.Errorf("%q is not a Matrix user ID", v)
			}
			out = append(out, admin.Contact{MatrixID: v, Role: role})
			continue
		}
		if a, err := mail.ParseAddress(v); err != nil || a.Address != v {
			return nil, fmt.Errorf("%q is neither a Matrix user ID nor an email address", v)
		}
		out = append(out, admin.Contact{Email: v, Role: role})
	}
	return out, nil
}

// adminConfig turns the configuration into the admin package's.
func (c *Config) adminConfig() admin.Config {
	contacts, _ := parseContacts(c.SupportAdminContacts, "m.role.admin") // validated at load
	security, _ := parseContacts(c.SupportSecurityContacts, "m.role.security")
	return admin.Config{
		Version:                version,
		Contacts:               append(contacts, security...),
		SupportPage:            c.SupportPage,
		NoticesUser:            c.ServerNoticesUser,
		LogIPAddresses:         c.LogIPAddresses,
		Retention:              c.durations.retention,
		MediaRetention:         c.durations.mediaRetention,
		ForgottenRoomRetention: c.durations.forgottenRoomRetention,
	}
}

// adminCompact runs `chatalot admin compact`: VACUUM the database, which
// gives the space of purged rows back to the file system.
func adminCompact(args []string, stdout io.Writer) error {
	cfg, pos, err := adminFlags("compact", args, nil)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("admin compact: unexpected arguments")
	}
	a, err := openAdmin(cfg, false)
	if err != nil {
		return err
	}
	defer a.Close()
	before, after, err := a.Compact(context.Background(), admin.CLIActor)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "database: %d bytes before, %d bytes after (%d freed); auto_vacuum %s\n",
		before.FileBytes, after.FileBytes, before.FileBytes-after.FileBytes, after.AutoVacuum)
	return nil
}
