package oauth

import (
	"context"
	"database/sql"
	"errors"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// Schema is the oauth package's tables. Only this file touches them.
//
// A grant is one consent turned into a session: one client, one user, one
// device. Its refresh tokens form a chain; at most one is "current" (the
// latest issued) and one "previous" (the one it replaced, still accepted
// while the current one was never used: the client may have lost the
// answer). A "spent" token presented again means two parties hold the
// chain, so the whole grant and its device are revoked.
var Schema = storage.Schema{Domain: "oauth", Migrations: []string{`
CREATE TABLE oauth_clients (
	client_id     TEXT   PRIMARY KEY,
	metadata      TEXT   NOT NULL,
	metadata_hash TEXT   NOT NULL UNIQUE,
	created_ts    BIGINT NOT NULL
);
CREATE TABLE oauth_grants (
	grant_id   TEXT   PRIMARY KEY,
	client_id  TEXT   NOT NULL REFERENCES oauth_clients (client_id),
	user_id    TEXT   NOT NULL,
	device_id  TEXT   NOT NULL CHECK (device_id <> ''),
	scope      TEXT   NOT NULL,
	created_ts BIGINT NOT NULL
);
CREATE INDEX oauth_grants_device ON oauth_grants (user_id, device_id);
CREATE TABLE oauth_refresh_tokens (
	token_hash TEXT   PRIMARY KEY,
	grant_id   TEXT   NOT NULL REFERENCES oauth_grants (grant_id) ON DELETE CASCADE,
	state      TEXT   NOT NULL CHECK (state IN ('current', 'previous', 'spent')),
	created_ts BIGINT NOT NULL
);
CREATE INDEX oauth_refresh_tokens_grant ON oauth_refresh_tokens (grant_id, state);`,
}}

// Refresh token states.
const (
	stateCurrent  = "current"
	statePrevious = "previous"
	stateSpent    = "spent"
)

// clientByMetadata finds the registration of identical metadata: clients
// register at every sign-in (the spec asks them to), and sharing one
// client_id between them keeps the table from growing with each.
func clientByMetadata(tx *storage.Tx, hash string) (string, bool, error) {
	var m string
	err := tx.QueryRow(`SELECT metadata FROM oauth_clients WHERE metadata_hash = $1`, hash).Scan(&m)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	return m, err == nil, err
}

func insertClient(tx *storage.Tx, id, metadata, hash string, now int64) error {
	_, err := tx.Exec(`INSERT INTO oauth_clients (client_id, metadata, metadata_hash, created_ts) VALUES ($1, $2, $3, $4)`, id, metadata, hash, now)
	return err
}

// loadClientMetadata returns a client's registered metadata (JSON).
func (s *Service) loadClientMetadata(ctx context.Context, id string) (string, bool, error) {
	var m string
	err := s.db.QueryRow(ctx, `SELECT metadata FROM oauth_clients WHERE client_id = $1`, id).Scan(&m)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	return m, err == nil, err
}

// grantRow is one grant as stored.
type grantRow struct {
	id, clientID string
	user         spec.UserID
	deviceID     string
	scope        string
}

func insertGrant(tx *storage.Tx, g grantRow, now int64) error {
	_, err := tx.Exec(`INSERT INTO oauth_grants (grant_id, client_id, user_id, device_id, scope, created_ts) VALUES ($1, $2, $3, $4, $5, $6)`,
		g.id, g.clientID, string(g.user), g.deviceID, g.scope, now)
	return err
}

func insertRefreshToken(tx *storage.Tx, hash, grantID, state string, now int64) error {
	_, err := tx.Exec(`INSERT INTO oauth_refresh_tokens (token_hash, grant_id, state, created_ts) VALUES ($1, $2, $3, $4)`, hash, grantID, state, now)
	return err
}

// grantByRefresh finds the grant of a refresh token and the token's state.
func grantByRefresh(tx *storage.Tx, hash string) (g grantRow, state string, found bool, err error) {
	var user string
	err = tx.QueryRow(`SELECT g.grant_id, g.client_id, g.user_id, g.device_id, g.scope, t.state
		FROM oauth_refresh_tokens t JOIN oauth_grants g ON g.grant_id = t.grant_id WHERE t.token_hash = $1`, hash).
		Scan(&g.id, &g.clientID, &user, &g.deviceID, &g.scope, &state)
	if errors.Is(err, sql.ErrNoRows) {
		return g, "", false, nil
	}
	g.user = spec.UserID(user)
	return g, state, err == nil, err
}

func setRefreshState(tx *storage.Tx, grantID, from, to string) error {
	_, err := tx.Exec(`UPDATE oauth_refresh_tokens SET state = $1 WHERE grant_id = $2 AND state = $3`, to, grantID, from)
	return err
}

func setTokenState(tx *storage.Tx, hash, to string) error {
	_, err := tx.Exec(`UPDATE oauth_refresh_tokens SET state = $1 WHERE token_hash = $2`, to, hash)
	return err
}

// pruneSpent keeps the spent tokens of a grant that are recent enough to be
// worth recognising; older ones are only an unknown token.
func pruneSpent(tx *storage.Tx, grantID string, before int64) error {
	_, err := tx.Exec(`DELETE FROM oauth_refresh_tokens WHERE grant_id = $1 AND state = $2 AND created_ts < $3`, grantID, stateSpent, before)
	return err
}

func deleteGrant(tx *storage.Tx, id string) error {
	_, err := tx.Exec(`DELETE FROM oauth_grants WHERE grant_id = $1`, id)
	return err
}

// deleteDeviceGrants deletes every grant of a device (a device has one
// session at a time).
func deleteDeviceGrants(tx *storage.Tx, user spec.UserID, deviceID string) error {
	_, err := tx.Exec(`DELETE FROM oauth_grants WHERE user_id = $1 AND device_id = $2`, string(user), deviceID)
	return err
}

func loadGrant(ctx context.Context, db *storage.DB, id string) (g grantRow, found bool, err error) {
	var user string
	err = db.QueryRow(ctx, `SELECT grant_id, client_id, user_id, device_id, scope FROM oauth_grants WHERE grant_id = $1`, id).
		Scan(&g.id, &g.clientID, &user, &g.deviceID, &g.scope)
	if errors.Is(err, sql.ErrNoRows) {
		return g, false, nil
	}
	g.user = spec.UserID(user)
	return g, err == nil, err
}

// deviceHasGrant reports whether a device's session was granted here.
func deviceHasGrant(ctx context.Context, db *storage.DB, user spec.UserID, deviceID string) (bool, error) {
	var n int
	err := db.QueryRow(ctx, `SELECT count(*) FROM oauth_grants WHERE user_id = $1 AND device_id = $2`, string(user), deviceID).Scan(&n)
	return n > 0, err
}
