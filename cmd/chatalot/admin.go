package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/rs/zerolog"
)

const adminUsage = `Usage: chatalot admin COMMAND [flags]

Commands work on the data directory whether or not the server is running.
Each takes the server's settings (--config, --data-dir, --server-name, …).

  create-user NAME [--admin] [--password-stdin]
        create an account; without --password-stdin a strong password is
        generated and printed once
  registration-token create [TOKEN] [--uses N] [--expires DURATION]
        create an invite code (generated when TOKEN is omitted)
  registration-token list
        list invite codes with their uses (pending, completed, allowed)
  registration-token delete TOKEN
        delete an invite code
  backup DIR
        copy the database, media and signing key into DIR, consistently,
        while the server runs (DIR: new, empty, or an earlier backup)
  restore DIR [--force]
        restore a backup into the data directory; refused while a server
        uses it; --force moves existing data aside first
`

// adminCommand runs `chatalot admin …`.
func adminCommand(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, adminUsage)
		return errors.New("admin: expected a command")
	}
	switch args[0] {
	case "create-user":
		return adminCreateUser(args[1:], os.Stdin, os.Stdout)
	case "registration-token":
		return adminRegistrationToken(args[1:], os.Stdout)
	case "backup":
		return adminBackup(args[1:], os.Stdout)
	case "restore":
		return adminRestore(args[1:], os.Stdout)
	}
	return fmt.Errorf("admin: unknown command %q", args[0])
}

// adminFlags parses the server's settings plus a command's own flags;
// positional arguments may come before or after the flags.
func adminFlags(name string, args []string, own func(fs *flag.FlagSet)) (Config, []string, error) {
	fs := flag.NewFlagSet("admin "+name, flag.ContinueOnError)
	configPath, set := configFlags(fs)
	if own != nil {
		own(fs)
	}
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
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

// openAuth opens the data directory's database with only the accounts
// tables, for commands that work whether or not the server runs: SQLite
// serialises the two processes' writes. These commands take no stream
// position, so the running server's in-memory position stays right.
func openAuth(cfg Config) (*auth.Service, func(), error) {
	p := pathsOf(cfg.DataDir)
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("create data directory: %w", err)
	}
	db, err := storage.Open(p.db, storage.Options{Durability: cfg.Durability})
	if err != nil {
		return nil, nil, err
	}
	if err := db.Migrate(context.Background(), auth.Schema); err != nil {
		db.Close()
		return nil, nil, err
	}
	ac, err := cfg.authConfig()
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	log := zerolog.New(os.Stderr).Level(zerolog.WarnLevel)
	svc, err := auth.New(auth.Deps{DB: db, ServerName: spec.ServerName(cfg.ServerName), Config: ac, Log: log})
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return svc, func() { db.Close() }, nil
}

// adminCreateUser: chatalot admin create-user NAME [--admin] [--password-stdin]
func adminCreateUser(args []string, stdin io.Reader, stdout io.Writer) error {
	var admin, fromStdin bool
	cfg, pos, err := adminFlags("create-user", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&admin, "admin", false, "make the user a server admin")
		fs.BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of standard input")
	})
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("admin create-user: expected one user name")
	}
	password, generated := "", false
	if fromStdin {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read password: %w", err)
		}
		password = strings.TrimRight(line, "\r\n")
		if password == "" {
			return errors.New("admin create-user: the password on standard input is empty")
		}
	} else {
		b := make([]byte, 18)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		password, generated = base64.RawURLEncoding.EncodeToString(b), true
	}
	svc, closeDB, err := openAuth(cfg)
	if err != nil {
		return err
	}
	defer closeDB()
	id, err := svc.CreateUser(context.Background(), pos[0], password, admin)
	if err != nil {
		return fmt.Errorf("admin create-user: %w", err)
	}
	kind := "user"
	if admin {
		kind = "admin"
	}
	fmt.Fprintf(stdout, "created %s %s\n", kind, id)
	if generated {
		fmt.Fprintf(stdout, "password: %s\n(shown once; change it after the first login)\n", password)
	}
	return nil
}

// adminRegistrationToken: chatalot admin registration-token create|list|delete
func adminRegistrationToken(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("admin registration-token: expected create, list or delete")
	}
	sub := args[0]
	var uses int64
	var expires string
	cfg, pos, err := adminFlags("registration-token "+sub, args[1:], func(fs *flag.FlagSet) {
		if sub == "create" {
			fs.Int64Var(&uses, "uses", 0, "how many accounts the token may create (0: unlimited)")
			fs.StringVar(&expires, "expires", "", "how long the token stays valid, such as 168h (empty: forever)")
		}
	})
	if err != nil {
		return err
	}
	ctx := context.Background()
	switch sub {
	case "create":
		if len(pos) > 1 {
			return errors.New("admin registration-token create: at most one token")
		}
		var usesAllowed *int64
		if uses < 0 {
			return errors.New("--uses must not be negative")
		} else if uses > 0 {
			usesAllowed = &uses
		}
		var expiry time.Time
		if expires != "" {
			d, err := time.ParseDuration(expires)
			if err != nil || d <= 0 {
				return fmt.Errorf("--expires: %q is not a duration such as 168h", expires)
			}
			expiry = time.Now().Add(d)
		}
		tok := ""
		if len(pos) == 1 {
			tok = pos[0]
		}
		svc, closeDB, err := openAuth(cfg)
		if err != nil {
			return err
		}
		defer closeDB()
		t, err := svc.CreateRegistrationToken(ctx, tok, usesAllowed, expiry)
		if err != nil {
			return fmt.Errorf("admin registration-token create: %w", err)
		}
		fmt.Fprintln(stdout, t.Token)
		return nil
	case "list":
		svc, closeDB, err := openAuth(cfg)
		if err != nil {
			return err
		}
		defer closeDB()
		list, err := svc.RegistrationTokens(ctx)
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
	case "delete":
		if len(pos) != 1 {
			return errors.New("admin registration-token delete: expected one token")
		}
		svc, closeDB, err := openAuth(cfg)
		if err != nil {
			return err
		}
		defer closeDB()
		if err := svc.DeleteRegistrationToken(ctx, pos[0]); err != nil {
			return fmt.Errorf("admin registration-token delete: %w", err)
		}
		fmt.Fprintln(stdout, "deleted", pos[0])
		return nil
	}
	return fmt.Errorf("admin registration-token: unknown subcommand %q", sub)
}
