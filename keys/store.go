package keys

import "github.com/chatalot/chatalot/storage"

// Schema is the keys package's tables. Only this package reads or writes
// them; other packages go through the Service.
//
// key_devices is this package's own view of which devices exist and their
// display names (fed by DeviceAdded, DeviceUpdated, DeviceDeleted and key
// uploads): every per-device row hangs off
// it with ON DELETE CASCADE, so deleting a device removes its keys, one-time
// keys, fallback keys and to-device inbox in one statement.
var Schema = storage.Schema{Domain: "keys", Migrations: []string{`
CREATE TABLE key_devices (
	user_id      TEXT NOT NULL,
	device_id    TEXT NOT NULL CHECK (length(device_id) BETWEEN 1 AND 255),
	display_name TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (user_id, device_id)
);

CREATE TABLE device_keys (
	user_id    TEXT NOT NULL,
	device_id  TEXT NOT NULL,
	ed25519    TEXT NOT NULL CHECK (length(ed25519) = 43),
	curve25519 TEXT NOT NULL CHECK (length(curve25519) = 43),
	key_json   TEXT NOT NULL,
	PRIMARY KEY (user_id, device_id),
	FOREIGN KEY (user_id, device_id) REFERENCES key_devices (user_id, device_id) ON DELETE CASCADE
);

CREATE TABLE one_time_keys (
	user_id   TEXT   NOT NULL,
	device_id TEXT   NOT NULL,
	algorithm TEXT   NOT NULL CHECK (length(algorithm) BETWEEN 1 AND 255),
	key_id    TEXT   NOT NULL CHECK (length(key_id) BETWEEN 1 AND 255),
	seq       BIGINT NOT NULL,
	key_json  TEXT   NOT NULL,
	PRIMARY KEY (user_id, device_id, algorithm, key_id),
	FOREIGN KEY (user_id, device_id) REFERENCES key_devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX one_time_keys_by_age ON one_time_keys (user_id, device_id, algorithm, seq);

CREATE TABLE fallback_keys (
	user_id   TEXT    NOT NULL,
	device_id TEXT    NOT NULL,
	algorithm TEXT    NOT NULL CHECK (length(algorithm) BETWEEN 1 AND 255),
	key_id    TEXT    NOT NULL CHECK (length(key_id) BETWEEN 1 AND 255),
	key_json  TEXT    NOT NULL,
	used      BOOLEAN NOT NULL DEFAULT FALSE,
	PRIMARY KEY (user_id, device_id, algorithm),
	FOREIGN KEY (user_id, device_id) REFERENCES key_devices (user_id, device_id) ON DELETE CASCADE
);

CREATE TABLE cross_signing_keys (
	user_id    TEXT NOT NULL,
	usage      TEXT NOT NULL CHECK (usage IN ('master', 'self_signing', 'user_signing')),
	public_key TEXT NOT NULL CHECK (length(public_key) = 43),
	key_json   TEXT NOT NULL,
	PRIMARY KEY (user_id, usage)
);

-- Signatures uploaded through /keys/signatures/upload or carried by a master
-- key at upload, each verified before it was stored. target_key is a device
-- ID or the base64 public key of a cross-signing key (the spec keeps the two
-- namespaces apart); signer_key_id is "ed25519:<device ID or public key>".
CREATE TABLE key_signatures (
	target_user   TEXT NOT NULL,
	target_key    TEXT NOT NULL,
	signer_user   TEXT NOT NULL,
	signer_key_id TEXT NOT NULL,
	signature     TEXT NOT NULL CHECK (length(signature) = 86),
	PRIMARY KEY (target_user, target_key, signer_user, signer_key_id)
);
CREATE INDEX key_signatures_by_signer ON key_signatures (signer_user, signer_key_id);

-- The latest stream position at which a user's devices or cross-signing
-- keys changed.
CREATE TABLE device_list_changes (
	user_id  TEXT   PRIMARY KEY,
	position BIGINT NOT NULL CHECK (position > 0)
);

CREATE TABLE to_device_messages (
	user_id   TEXT   NOT NULL,
	device_id TEXT   NOT NULL,
	position  BIGINT NOT NULL CHECK (position > 0),
	message   TEXT   NOT NULL,
	PRIMARY KEY (user_id, device_id, position),
	FOREIGN KEY (user_id, device_id) REFERENCES key_devices (user_id, device_id) ON DELETE CASCADE
);

CREATE TABLE to_device_txns (
	user_id    TEXT   NOT NULL,
	device_id  TEXT   NOT NULL,
	txn_id     TEXT   NOT NULL CHECK (length(txn_id) BETWEEN 1 AND 255),
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (user_id, device_id, txn_id)
);
CREATE INDEX to_device_txns_by_age ON to_device_txns (created_ts);

CREATE TABLE dehydrated_devices (
	user_id     TEXT PRIMARY KEY,
	device_id   TEXT NOT NULL,
	device_data TEXT NOT NULL,
	FOREIGN KEY (user_id, device_id) REFERENCES key_devices (user_id, device_id) ON DELETE CASCADE
);

-- A deleted backup version keeps its row (deleted = TRUE) so that its
-- number is never handed out again and a repeated DELETE still succeeds.
CREATE TABLE backup_versions (
	user_id   TEXT    NOT NULL,
	version   BIGINT  NOT NULL CHECK (version > 0),
	algorithm TEXT    NOT NULL CHECK (length(algorithm) BETWEEN 1 AND 255),
	auth_data TEXT    NOT NULL,
	etag      BIGINT  NOT NULL DEFAULT 0,
	deleted   BOOLEAN NOT NULL DEFAULT FALSE,
	PRIMARY KEY (user_id, version)
);

CREATE TABLE backup_keys (
	user_id             TEXT    NOT NULL,
	version             BIGINT  NOT NULL,
	room_id             TEXT    NOT NULL,
	session_id          TEXT    NOT NULL CHECK (length(session_id) BETWEEN 1 AND 255),
	first_message_index BIGINT  NOT NULL CHECK (first_message_index >= 0),
	forwarded_count     BIGINT  NOT NULL CHECK (forwarded_count >= 0),
	is_verified         BOOLEAN NOT NULL,
	session_data        TEXT    NOT NULL,
	PRIMARY KEY (user_id, version, room_id, session_id),
	FOREIGN KEY (user_id, version) REFERENCES backup_versions (user_id, version) ON DELETE CASCADE
);`, `
-- The stream ID of the last m.device_list_update sent for a local user.
CREATE TABLE device_list_streams (
	user_id   TEXT   PRIMARY KEY,
	stream_id BIGINT NOT NULL CHECK (stream_id > 0)
);

-- Remote users' device lists, cached while they share a room with a local
-- user. stream_id is that of the last m.device_list_update applied (0:
-- fetched by /user/keys/query, which has none); devices is a JSON object
-- of device ID to device keys as the user's server answered them.
CREATE TABLE remote_device_lists (
	user_id          TEXT   PRIMARY KEY,
	stream_id        BIGINT NOT NULL CHECK (stream_id >= 0),
	devices          TEXT   NOT NULL,
	master_key       TEXT   NOT NULL DEFAULT '',
	self_signing_key TEXT   NOT NULL DEFAULT ''
);`, `
-- On a cluster node (docs/scaling.md): a device whose one-time or fallback
-- keys changed, or that was deleted, at a stream position, for the other
-- nodes to reload (follow.go).
CREATE TABLE key_changes (
	position   BIGINT NOT NULL,
	user_id    TEXT   NOT NULL,
	device_id  TEXT   NOT NULL,
	created_ts BIGINT NOT NULL
);
CREATE INDEX key_changes_position ON key_changes (position);
CREATE INDEX key_changes_created ON key_changes (created_ts);
-- What the followers read by position.
CREATE INDEX to_device_messages_by_position ON to_device_messages (position);
CREATE INDEX device_list_changes_by_position ON device_list_changes (position);`,
}}
