package admin

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// Schema is the admin package's tables. Only this file touches them.
//
// admin_audit_log is the audit log: who (an admin's user ID, or "cli"),
// what (an action name), on what (a user, room, token or media ID), when,
// and the action's parameters — never message content, passwords or
// display names. admin_user_flags holds what admins set on accounts beyond
// auth's own columns (locked, suspended, erased). admin_followups are
// changes the CLI made while the server may be running, which the server
// must still apply to its memory and to other packages (CLI.go).
var Schema = storage.Schema{Domain: "admin", Migrations: []string{`
CREATE TABLE admin_audit_log (
	id      BIGINT PRIMARY KEY,
	ts      BIGINT NOT NULL,
	actor   TEXT   NOT NULL CHECK (actor <> ''),
	origin  TEXT   NOT NULL CHECK (origin IN ('api', 'cli')),
	action  TEXT   NOT NULL CHECK (action <> ''),
	target  TEXT   NOT NULL,
	details TEXT   NOT NULL
);
CREATE INDEX admin_audit_log_target ON admin_audit_log (target, id);
CREATE TABLE admin_user_flags (
	user_id   TEXT    PRIMARY KEY,
	locked    BOOLEAN NOT NULL DEFAULT FALSE,
	suspended BOOLEAN NOT NULL DEFAULT FALSE,
	erased    BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE admin_blocked_rooms (
	room_id    TEXT   PRIMARY KEY,
	blocked_by TEXT   NOT NULL,
	ts         BIGINT NOT NULL
);
CREATE TABLE admin_notice_rooms (
	user_id TEXT PRIMARY KEY,
	room_id TEXT NOT NULL UNIQUE
);
CREATE TABLE admin_settings (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
);
CREATE TABLE admin_followups (
	id      BIGINT PRIMARY KEY,
	kind    TEXT   NOT NULL CHECK (kind IN ('sessions', 'deactivated')),
	user_id TEXT   NOT NULL,
	devices TEXT   NOT NULL
);`,
	// Room deletions whose purge has not committed yet: the server resumes
	// them at start, so a crash between the members' leaving and the purge
	// does not leave a shut-down room's data behind. The row goes in the
	// purge's own transaction.
	`CREATE TABLE admin_pending_purges (
	room_id     TEXT    PRIMARY KEY,
	delete_id   TEXT    NOT NULL,
	actor       TEXT    NOT NULL,
	force_purge BOOLEAN NOT NULL,
	ts          BIGINT  NOT NULL
);`,
}}

// AuditEntry is one row of the audit log.
type AuditEntry struct {
	ID      int64          `json:"id"`
	TS      int64          `json:"ts"`
	Actor   string         `json:"actor"`
	Origin  string         `json:"origin"`
	Action  string         `json:"action"`
	Target  string         `json:"target"`
	Details map[string]any `json:"details"`
}

func insertAudit(tx *storage.Tx, e AuditEntry) error {
	details, err := json.Marshal(e.Details)
	if err != nil {
		return err
	}
	if e.Details == nil {
		details = []byte("{}")
	}
	var id int64
	// The single writer makes max+1 safe.
	if err := tx.QueryRow(`SELECT COALESCE(max(id), 0) + 1 FROM admin_audit_log`).Scan(&id); err != nil {
		return err
	}
	_, err = tx.Exec(`INSERT INTO admin_audit_log (id, ts, actor, origin, action, target, details) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		id, e.TS, e.Actor, e.Origin, e.Action, e.Target, string(details))
	return err
}

// AuditFilter selects audit log entries.
type AuditFilter struct {
	Actor, Action, Target string // exact matches; "" for any
	From, Limit           int
	Oldest                bool // oldest first; newest first by default
}

// AuditLog returns a page of the audit log and how many entries match.
func (s *Service) AuditLog(ctx context.Context, f AuditFilter) ([]AuditEntry, int, error) {
	where, args := ` WHERE 1 = 1`, []any{}
	for _, c := range []struct{ col, val string }{{"actor", f.Actor}, {"action", f.Action}, {"target", f.Target}} {
		if c.val != "" {
			args = append(args, c.val)
			where += ` AND ` + c.col + ` = $` + strconv.Itoa(len(args))
		}
	}
	var total int
	if err := s.db.QueryRow(ctx, `SELECT count(*) FROM admin_audit_log`+where, args...).Scan(&total); err != nil {
		return nil, 0, err
	}
	order := ` ORDER BY id DESC`
	if f.Oldest {
		order = ` ORDER BY id`
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	rows, err := s.db.Query(ctx, `SELECT id, ts, actor, origin, action, target, details FROM admin_audit_log`+where+order+
		` LIMIT `+strconv.Itoa(f.Limit)+` OFFSET `+strconv.Itoa(max(f.From, 0)), args...)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	out := []AuditEntry{}
	for rows.Next() {
		var e AuditEntry
		var details string
		if err := rows.Scan(&e.ID, &e.TS, &e.Actor, &e.Origin, &e.Action, &e.Target, &details); err != nil {
			return nil, 0, err
		}
		_ = json.Unmarshal([]byte(details), &e.Details)
		out = append(out, e)
	}
	return out, total, rows.Err()
}

// userFlags is what admins set on an account beyond auth's columns.
type userFlags struct{ Locked, Suspended, Erased bool }

func loadFlags(ctx context.Context, db *storage.DB) (map[spec.UserID]userFlags, error) {
	rows, err := db.Query(ctx, `SELECT user_id, locked, suspended, erased FROM admin_user_flags`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[spec.UserID]userFlags{}
	for rows.Next() {
		var u string
		var f userFlags
		if err := rows.Scan(&u, &f.Locked, &f.Suspended, &f.Erased); err != nil {
			return nil, err
		}
		out[spec.UserID(u)] = f
	}
	return out, rows.Err()
}

// setFlag sets one flag of an account: flag is locked, suspended or erased.
func setFlag(tx *storage.Tx, user spec.UserID, flag string, v bool) error {
	switch flag {
	case "locked", "suspended", "erased":
	default:
		return errors.New("unknown account flag " + flag)
	}
	_, err := tx.Exec(`INSERT INTO admin_user_flags (user_id, `+flag+`) VALUES ($1, $2)
		ON CONFLICT (user_id) DO UPDATE SET `+flag+` = excluded.`+flag, string(user), v)
	return err
}

func loadBlocked(ctx context.Context, db *storage.DB) (map[spec.RoomID]spec.UserID, error) {
	rows, err := db.Query(ctx, `SELECT room_id, blocked_by FROM admin_blocked_rooms`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[spec.RoomID]spec.UserID{}
	for rows.Next() {
		var r, by string
		if err := rows.Scan(&r, &by); err != nil {
			return nil, err
		}
		out[spec.RoomID(r)] = spec.UserID(by)
	}
	return out, rows.Err()
}

func setBlocked(tx *storage.Tx, room spec.RoomID, by string, block bool, now int64) error {
	if !block {
		_, err := tx.Exec(`DELETE FROM admin_blocked_rooms WHERE room_id = $1`, string(room))
		return err
	}
	_, err := tx.Exec(`INSERT INTO admin_blocked_rooms (room_id, blocked_by, ts) VALUES ($1, $2, $3)
		ON CONFLICT (room_id) DO NOTHING`, string(room), by, now)
	return err
}

func loadNoticeRooms(ctx context.Context, db *storage.DB) (map[spec.UserID]spec.RoomID, error) {
	rows, err := db.Query(ctx, `SELECT user_id, room_id FROM admin_notice_rooms`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[spec.UserID]spec.RoomID{}
	for rows.Next() {
		var u, r string
		if err := rows.Scan(&u, &r); err != nil {
			return nil, err
		}
		out[spec.UserID(u)] = spec.RoomID(r)
	}
	return out, rows.Err()
}

func setNoticeRoom(tx *storage.Tx, user spec.UserID, room spec.RoomID) error {
	_, err := tx.Exec(`INSERT INTO admin_notice_rooms (user_id, room_id) VALUES ($1, $2)
		ON CONFLICT (user_id) DO UPDATE SET room_id = excluded.room_id`, string(user), string(room))
	return err
}

func (s *Service) setting(ctx context.Context, key string) (string, error) {
	var v string
	err := s.db.QueryRow(ctx, `SELECT value FROM admin_settings WHERE key = $1`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return v, err
}

func putSetting(tx *storage.Tx, key, value string) error {
	_, err := tx.Exec(`INSERT INTO admin_settings (key, value) VALUES ($1, $2)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
	return err
}

// followup is a change the CLI made that the server must still apply.
type followup struct {
	ID      int64
	Kind    string // "sessions" or "deactivated"
	User    spec.UserID
	Devices []string
}

func insertFollowup(tx *storage.Tx, kind string, user spec.UserID, devices []string) error {
	var id int64
	if err := tx.QueryRow(`SELECT COALESCE(max(id), 0) + 1 FROM admin_followups`).Scan(&id); err != nil {
		return err
	}
	if devices == nil {
		devices = []string{}
	}
	d, _ := json.Marshal(devices)
	_, err := tx.Exec(`INSERT INTO admin_followups (id, kind, user_id, devices) VALUES ($1, $2, $3, $4)`, id, kind, string(user), string(d))
	return err
}

func (s *Service) pendingFollowups(ctx context.Context) ([]followup, error) {
	rows, err := s.db.Query(ctx, `SELECT id, kind, user_id, devices FROM admin_followups ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []followup
	for rows.Next() {
		var f followup
		var u, d string
		if err := rows.Scan(&f.ID, &f.Kind, &u, &d); err != nil {
			return nil, err
		}
		f.User = spec.UserID(u)
		_ = json.Unmarshal([]byte(d), &f.Devices)
		out = append(out, f)
	}
	return out, rows.Err()
}

func (s *Service) deleteFollowup(ctx context.Context, id int64) error {
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		_, err := tx.Exec(`DELETE FROM admin_followups WHERE id = $1`, id)
		return err
	})
}

// lowerContains is a case-insensitive substring test.
func lowerContains(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

// forgetNoticeRoom deletes the notice-room mapping of a purged room.
func forgetNoticeRoom(tx *storage.Tx, room spec.RoomID, removed storage.Removed) error {
	return tx.Delete(removed, "admin_notice_rooms", `DELETE FROM admin_notice_rooms WHERE room_id = $1`, string(room))
}

// pendingPurge is a room deletion whose purge is still to run.
type pendingPurge struct {
	Room     spec.RoomID
	DeleteID string
	Actor    string
	Force    bool
}

func addPendingPurge(tx *storage.Tx, p pendingPurge, ts int64) error {
	_, err := tx.Exec(`INSERT INTO admin_pending_purges (room_id, delete_id, actor, force_purge, ts) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (room_id) DO UPDATE SET delete_id = excluded.delete_id, actor = excluded.actor, force_purge = excluded.force_purge, ts = excluded.ts`,
		string(p.Room), p.DeleteID, p.Actor, p.Force, ts)
	return err
}

func forgetPendingPurge(tx *storage.Tx, room spec.RoomID, removed storage.Removed) error {
	return tx.Delete(removed, "admin_pending_purges", `DELETE FROM admin_pending_purges WHERE room_id = $1`, string(room))
}

func (s *Service) pendingPurges(ctx context.Context) ([]pendingPurge, error) {
	rows, err := s.db.Query(ctx, `SELECT room_id, delete_id, actor, force_purge FROM admin_pending_purges ORDER BY ts`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []pendingPurge
	for rows.Next() {
		var p pendingPurge
		if err := rows.Scan(&p.Room, &p.DeleteID, &p.Actor, &p.Force); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}
