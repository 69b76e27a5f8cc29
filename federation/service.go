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
	// Presence sends and accepts m.presence EDUs (off: presence stays on
	// this server; it is on only when presence itself is).
	Presence bool
	// ProfilesToRoomMates answers query/profile only for users who share
	// a room with a user of the asking server (profile_lookup =
	// shared_rooms: other servers see no more than local users do).
	ProfilesToRoomMates bool
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
	// Ephemeral takes the typing, receipts and presence of other servers'
	// users (sync; nil: they are dropped).
	Ephemeral Ephemeral
	// Profiles answers query/profile (nil: no profile is given).
	Profiles rooms.Profiles
	// Media serves this server's media to others; nil: no media routes.
	Media MediaRoutes
	// Keys is the E2EE directory: it receives the to-device and device-list
	// EDUs and answers the user key queries (nil: those EDUs are dropped
	// and the queries find no keys).
	Keys Keys
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
	db        *storage.DB
	rooms     *rooms.Service
	media     MediaRoutes
	e2ee      Keys
	ephemeral Ephemeral
	profiles  rooms.Profiles

	stopping <-chan struct{}
	walks    walkLimit
	mu       sync.Mutex
	queues   map[spec.ServerName]*queue
}

// Schema is federation's tables: the keys of other servers and the
// outbound queues (of PDUs and of reliable EDUs).
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
);`, `
-- Reliable EDUs (to-device messages, device-list and signing-key updates)
-- waiting for a destination, oldest id first. The id is a stream position
-- taken for the row: unique for ever, so a transaction named after its
-- ids never repeats one a destination has seen.
CREATE TABLE federation_outbound_edus (
	destination TEXT   NOT NULL,
	id          BIGINT NOT NULL,
	edu_type    TEXT   NOT NULL CHECK (length(edu_type) BETWEEN 1 AND 255),
	content     TEXT   NOT NULL,
	PRIMARY KEY (destination, id)
);`,
}}

// New builds the federation service; Start runs its senders.
func New(d Deps) *Service {
	s := &Service{Peers: d.Peers, db: d.DB, rooms: d.Rooms, media: d.Media, e2ee: d.Keys, ephemeral: d.Ephemeral, profiles: d.Profiles,
		stopping: d.Stopping, queues: map[spec.ServerName]*queue{}}
	if s.e2ee == nil {
		s.e2ee = noKeys{}
	}
	d.Commits.Join(s)
	// EDUs queued through Peers (by keys, built before this service) wake
	// this service's senders from now on; what was queued before is found
	// by Start.
	d.Peers.outMu.Lock()
	d.Peers.senders = s
	d.Peers.outMu.Unlock()
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
