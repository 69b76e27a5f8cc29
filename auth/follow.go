package auth

import (
	"context"
	"fmt"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// Following the other nodes of a cluster (docs/scaling.md). What auth keeps
// in memory moves with the other nodes' writes in two ways:
//
//   - account data has stream positions: the follower reads the rows the
//     other nodes wrote and applies them as a local commit does (positions,
//     ignore lists, the /sync wake);
//   - revocations have none: the revoking node stores a change row
//     (auth_changes) at a new position, and the follower drops the user's
//     cached tokens. A token missing from the cache is looked up in the
//     database on a cluster node (session), so the tokens still live, and
//     those other nodes issued, come back on their next use.
//
// Outside a cluster none of this runs: the cache holds every live token
// and a miss is an unknown token, with no database read.

// Kinds of auth_changes.
const (
	// changeTokens: some of the user's tokens were revoked, or the admin
	// flag changed.
	changeTokens = "tokens"
	// changeAccount: the account was deactivated or erased: tokens and
	// account data memory go.
	changeAccount = "account"
)

// changed stores a change for the other nodes of a cluster; outside one it
// does nothing.
func (s *Service) changed(tx *storage.Tx, kind string, user spec.UserID) error {
	if !s.cluster {
		return nil
	}
	return insertChange(tx, kind, user, s.now())
}

// loadFollowing loads memory inside a write and registers the follower
// there: the writer holds the stream position's lock (storage/cluster.go),
// so the follower starts exactly where the load ends.
func (s *Service) loadFollowing(ctx context.Context) error {
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		if err := s.loadMemory(tx.Query); err != nil {
			return err
		}
		s.db.OnFollow(s.follow)
		return nil
	})
}

// follow applies what other nodes committed at positions in (from, to]
// (a storage.Follower). It reads everything before changing memory, so a
// failed follow changes nothing.
func (s *Service) follow(tx *storage.Tx, from, to int64) error {
	changes, err := changesBetween(tx, from, to)
	if err != nil {
		return fmt.Errorf("read followed auth changes: %w", err)
	}
	data, err := accountDataAt(tx, from, to)
	if err != nil {
		return fmt.Errorf("read followed account data: %w", err)
	}
	for _, c := range changes {
		s.tokens.removeDevice(c.user, "")
		if c.kind == changeAccount {
			s.adMu.Lock()
			delete(s.accountDataPos, c.user)
			delete(s.ignored, c.user)
			s.adMu.Unlock()
			s.dropMemoryGrants(c.user)
		}
	}
	for _, r := range data {
		s.accountDataStored(r)
	}
	return nil
}

// session finds the live session of a token hash: in the cache, or on a
// cluster node in the database (another node may have issued it, or this
// node dropped it on a change), caching what it finds. nil: no such token.
func (s *Service) session(ctx context.Context, hash string) (*session, error) {
	if sess := s.tokens.get(hash); sess != nil || !s.cluster {
		return sess, nil
	}
	// A revocation followed while the database is read would be undone by
	// caching the row read before it: cache only if nothing was dropped
	// meanwhile (the follower runs after the revoking commit, so after a
	// read that could have missed it started).
	gen := s.tokens.generation()
	row, admin, found, err := s.tokenByHash(ctx, hash)
	if err != nil || !found {
		return nil, err
	}
	return s.tokens.addIfUnchanged(s.newSession(row, admin, s.now().UnixMilli()), gen), nil
}

// GlobalAccountDataBetween returns the users' global account data of one
// type that any node stored at positions in (from, to], newest last, for
// another package's follower (push follows m.push_rules this way).
func GlobalAccountDataBetween(tx *storage.Tx, typ string, from, to int64) (users []spec.UserID, contents [][]byte, err error) {
	rows, err := tx.Query(`SELECT user_id, content FROM account_data
		WHERE position > $1 AND position <= $2 AND room_id = '' AND type = $3 ORDER BY position`, from, to, typ)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var u string
		var c []byte
		if err := rows.Scan(&u, &c); err != nil {
			return nil, nil, err
		}
		users, contents = append(users, spec.UserID(u)), append(contents, c)
	}
	return users, contents, rows.Err()
}
