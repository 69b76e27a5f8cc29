package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// Config is what federation is allowed to do. The package is built only
// when federation is on.
type Config struct {
	// Allow, when not empty, is the only servers this one talks to; Deny
	// are servers it never talks to (both ways: their requests are
	// refused and nothing is sent to them).
	Allow, Deny []spec.ServerName
	// CAFile is a PEM bundle trusted beside the system roots to verify
	// other servers' certificates (a private or test CA).
	CAFile string
}

// Deps are what federation runs on.
type Deps struct {
	DB       *storage.DB
	Rooms    *rooms.Service
	Peers    *Peers // built before rooms (NewPeers)
	Stopping <-chan struct{}
	// Commits is the commit-hook list the outbound queue joins: an event
	// is queued for other servers in the transaction that stores it.
	Commits *rooms.CommitHooks
	// Media serves this server's media to others; nil: no media routes.
	Media MediaRoutes
}

// MediaRoutes is the content repository's federation side (media.Service),
// mounted behind this package's X-Matrix check.
type MediaRoutes interface {
	FederationRoutes(g gin.IRoutes)
}

// Service is this server's federation: the inbound routes and the
// outbound queue, over the client side it shares with rooms (Peers).
type Service struct {
	*Peers
	db    *storage.DB
	rooms *rooms.Service
	media MediaRoutes

	stopping <-chan struct{}
	walks    walkLimit
	mu       sync.Mutex
	queues   map[spec.ServerName]*queue
}

// Schema is federation's tables: the keys of other servers and the
// outbound queue.
var Schema = storage.Schema{Domain: "federation", Migrations: []string{`
CREATE TABLE federation_server_keys (
	server_name    TEXT   NOT NULL,
	key_id         TEXT   NOT NULL,
	public_key     TEXT   NOT NULL, -- unpadded base64
	valid_until_ts BIGINT NOT NULL,
	expired_ts     BIGINT NOT NULL,
	PRIMARY KEY (server_name, key_id)
);
-- The outbound queue: an event waiting for a destination, by its stream
-- position (the event itself stays in events, never copied).
CREATE TABLE federation_outbound (
	destination TEXT   NOT NULL,
	position    BIGINT NOT NULL,
	PRIMARY KEY (destination, position)
);`,
}}

// New builds the federation service; Start runs its senders.
func New(d Deps) *Service {
	s := &Service{Peers: d.Peers, db: d.DB, rooms: d.Rooms, media: d.Media, stopping: d.Stopping, queues: map[spec.ServerName]*queue{}}
	d.Commits.Join(s)
	return s
}

// ownKeys answers for this server's own key without a request to itself,
// and asks the key fetcher for every other server's.
type ownKeys struct {
	name, keyID string
	pub         ed25519.PublicKey
	remote      KeySource
}

func (k *ownKeys) VerifyKey(ctx context.Context, server, keyID string, at time.Time) (ed25519.PublicKey, error) {
	if server == k.name {
		if keyID == k.keyID {
			return k.pub, nil
		}
		return nil, fmt.Errorf("no key %s of this server", keyID)
	}
	return k.remote.VerifyKey(ctx, server, keyID, at)
}

// keyStore keeps fetched keys in federation_server_keys.
type keyStore struct{ db *storage.DB }

func (k keyStore) LoadKey(ctx context.Context, server, keyID string) (ServerKey, bool, error) {
	var pub64 string
	var until, expired int64
	err := k.db.QueryRow(ctx, `SELECT public_key, valid_until_ts, expired_ts FROM federation_server_keys WHERE server_name = $1 AND key_id = $2`,
		server, keyID).Scan(&pub64, &until, &expired)
	if err != nil {
		return ServerKey{}, false, nil // sql.ErrNoRows, or a read error: fetch again
	}
	pub, err := decodeKey(pub64)
	if err != nil {
		return ServerKey{}, false, nil
	}
	sk := ServerKey{Public: pub, ValidUntil: time.UnixMilli(until)}
	if expired != 0 {
		sk.Expired = time.UnixMilli(expired)
	}
	return sk, len(pub) == ed25519.PublicKeySize, nil
}

func (k keyStore) StoreKey(ctx context.Context, server, keyID string, sk ServerKey) error {
	var expired int64
	if !sk.Expired.IsZero() {
		expired = sk.Expired.UnixMilli()
	}
	return k.db.Write(ctx, func(tx *storage.Tx) error {
		_, err := tx.Exec(`INSERT INTO federation_server_keys (server_name, key_id, public_key, valid_until_ts, expired_ts) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (server_name, key_id) DO UPDATE SET public_key = excluded.public_key, valid_until_ts = excluded.valid_until_ts, expired_ts = excluded.expired_ts`,
			server, keyID, base64.RawStdEncoding.EncodeToString(sk.Public), sk.ValidUntil.UnixMilli(), expired)
		return err
	})
}
