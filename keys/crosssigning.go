package keys

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strings"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// The usages of the three cross-signing keys.
const (
	usageMaster = "master"
	usageSelf   = "self_signing"
	usageUser   = "user_signing"
)

// xsKey is a stored cross-signing key: its base64 public key and its
// canonical JSON without signatures (they live in key_signatures).
type xsKey struct {
	pub  string
	json string
}

// crossSigningKeys reads a user's cross-signing keys by usage.
func (s *Service) crossSigningKeys(ctx context.Context, u spec.UserID) (map[string]xsKey, error) {
	rows, err := s.db.Query(ctx, `SELECT usage, public_key, key_json FROM cross_signing_keys WHERE user_id = $1`, string(u))
	if err != nil {
		return nil, err
	}
	return scanCrossSigningKeys(rows)
}

func txCrossSigningKeys(tx *storage.Tx, u spec.UserID) (map[string]xsKey, error) {
	rows, err := tx.Query(`SELECT usage, public_key, key_json FROM cross_signing_keys WHERE user_id = $1`, string(u))
	if err != nil {
		return nil, err
	}
	return scanCrossSigningKeys(rows)
}

func scanCrossSigningKeys(rows *sql.Rows) (map[string]xsKey, error) {
	defer rows.Close()
	out := map[string]xsKey{}
	for rows.Next() {
		var usage string
		var k xsKey
		if err := rows.Scan(&usage, &k.pub, &k.json); err != nil {
			return nil, err
		}
		out[usage] = k
	}
	return out, rows.Err()
}

// xsIn is a validated cross-signing key from an upload.
type xsIn struct {
	usage string
	pub   string
	full  []byte // canonical, as uploaded (with signatures)
	bare  []byte // canonical, without signatures and unsigned: what is stored
	sigs  map[string]map[string]string
}

// parseCrossSigningKey validates a cross-signing key object: it names the
// caller, has the usage asked for, and holds exactly one ed25519 key whose
// key ID is its public key.
func parseCrossSigningKey(raw json.RawMessage, user spec.UserID, usage, what string) (*xsIn, error) {
	m, err := object(raw, what)
	if err != nil {
		return nil, err
	}
	u, err := requiredStr(m, "user_id", what)
	if err != nil {
		return nil, err
	}
	if u != string(user) {
		return nil, spec.InvalidParam("%s.user_id must be the authenticated user %s", what, user)
	}
	usageRaw, ok := m["usage"]
	if !ok {
		return nil, spec.MissingParam("%s.usage is required", what)
	}
	usages, err := strList(usageRaw, what+".usage")
	if err != nil {
		return nil, err
	}
	if len(usages) != 1 || usages[0] != usage {
		return nil, spec.InvalidParam("%s.usage must be [%q]", what, usage)
	}
	keysRaw, ok := m["keys"]
	if !ok {
		return nil, spec.MissingParam("%s.keys is required", what)
	}
	keys, err := strMap(keysRaw, what+".keys")
	if err != nil {
		return nil, err
	}
	if len(keys) != 1 {
		return nil, spec.InvalidParam("%s.keys must hold exactly one key", what)
	}
	var pub string
	for id, k := range keys {
		if id != "ed25519:"+k || !canonicalKey(k) {
			return nil, spec.InvalidParam("%s.keys must map ed25519:<public key> to the unpadded base64 public key", what)
		}
		pub = k
	}
	sigs, err := signaturesOf(m, what)
	if err != nil {
		return nil, err
	}
	bare, err := withoutSignatures(raw)
	if err != nil {
		return nil, err
	}
	return &xsIn{usage: usage, pub: pub, full: raw, bare: bare, sigs: sigs}, nil
}

// sigRow is one verified signature to store.
type sigRow struct {
	targetUser spec.UserID
	targetKey  string
	signerUser spec.UserID
	signerKey  string // "ed25519:…"
	signature  string
}

// POST /_matrix/client/v3/keys/device_signing/upload: publish the caller's
// cross-signing keys. The self-signing and user-signing keys must be signed
// by the master key. Replacing existing keys needs user-interactive
// authentication; the first upload, and re-sending exactly the stored keys
// (a retry), do not, as the spec allows since v1.11.
func (s *Service) handleDeviceSigningUpload(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	body, err := api.ReadCanonical(c, s.cfg.MaxKeyUploadBytes) // kept whole for user-interactive auth
	if err != nil {
		return err
	}
	m, err := object(body, "the request body")
	if err != nil {
		return err
	}
	var in []*xsIn
	for _, f := range []struct{ member, usage string }{
		{"master_key", usageMaster}, {"self_signing_key", usageSelf}, {"user_signing_key", usageUser},
	} {
		raw, ok := m[f.member]
		if !ok || isNull(raw) {
			continue
		}
		k, err := parseCrossSigningKey(raw, dev.UserID, f.usage, f.member)
		if err != nil {
			return err
		}
		in = append(in, k)
	}
	if len(in) == 0 {
		c.JSON(http.StatusOK, gin.H{})
		return nil
	}
	existing, err := s.crossSigningKeys(c.Request.Context(), dev.UserID)
	if err != nil {
		return err
	}
	rows, err := s.checkCrossSigningUpload(c.Request.Context(), dev.UserID, in, existing)
	if err != nil {
		return err
	}
	changes := false
	for _, k := range in {
		if existing[k.usage].pub != k.pub {
			changes = true
		}
	}
	if !changes {
		c.JSON(http.StatusOK, gin.H{}) // the same keys again: an idempotent retry
		return nil
	}
	finish := func() {} // no UIA for a first upload
	if _, ok := existing[usageMaster]; ok {
		if s.uia == nil {
			return spec.Forbidden("replacing cross-signing keys needs user-interactive authentication, which is not available")
		}
		var err error
		if finish, err = s.uia(c, dev, body); err != nil {
			return err
		}
	}
	if err := s.storeCrossSigningKeys(c.Request.Context(), dev.UserID, in, existing, rows); err != nil {
		return err
	}
	finish()
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// checkCrossSigningUpload verifies an upload against the stored keys and
// returns the signatures to store: the master key's signature on the other
// two keys, and valid signatures on the master key by the user's devices or
// by itself. Invalid signatures on the master key are dropped, never stored.
func (s *Service) checkCrossSigningUpload(ctx context.Context, user spec.UserID, in []*xsIn, existing map[string]xsKey) ([]sigRow, error) {
	var master *xsIn
	for _, k := range in {
		if k.usage == usageMaster {
			master = k
		}
	}
	masterPub := existing[usageMaster].pub
	if master != nil {
		masterPub = master.pub
	}
	var rows []sigRow
	for _, k := range in {
		if k.usage == usageMaster {
			continue
		}
		if masterPub == "" {
			return nil, spec.MissingParam("no master signing key is available to check the %s key against", k.usage)
		}
		if err := verify(k.full, user, "ed25519:"+masterPub, masterPub); err != nil {
			return nil, spec.NewError(spec.ErrInvalidSignature, "the %s key is not signed by the master key", k.usage)
		}
		rows = append(rows, sigRow{user, k.pub, user, "ed25519:" + masterPub, k.sigs[string(user)]["ed25519:"+masterPub]})
	}
	if master != nil {
		keyIDs := make([]string, 0, len(master.sigs[string(user)]))
		for keyID := range master.sigs[string(user)] {
			keyIDs = append(keyIDs, keyID)
		}
		sort.Strings(keyIDs)
		for _, keyID := range keyIDs {
			sig := master.sigs[string(user)][keyID]
			signerPub := ""
			if keyID == "ed25519:"+master.pub {
				signerPub = master.pub
			} else if dev, ok := strings.CutPrefix(keyID, "ed25519:"); ok {
				ed, err := s.storedDeviceKey(ctx, user, dev)
				if err != nil {
					return nil, err
				}
				signerPub = ed
			}
			if signerPub == "" || verify(master.full, user, keyID, signerPub) != nil {
				continue
			}
			rows = append(rows, sigRow{user, master.pub, user, keyID, sig})
		}
	}
	// A device ID equal to a cross-signing public key would make the two
	// key-ID namespaces collide (the spec forbids it).
	for _, k := range in {
		var n int
		if err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM key_devices WHERE user_id = $1 AND device_id = $2`,
			string(user), k.pub).Scan(&n); err != nil {
			return nil, err
		}
		if n > 0 {
			return nil, spec.Forbidden("the %s public key is the ID of one of your devices", k.usage)
		}
	}
	return rows, nil
}

// storeCrossSigningKeys replaces the uploaded keys in one write. Signatures
// made by a replaced key, or on it, are deleted with it; a new master key
// also drops the stored self-signing and user-signing keys that are not in
// the upload, since they are no longer signed by the master key.
func (s *Service) storeCrossSigningKeys(ctx context.Context, user spec.UserID, in []*xsIn, before map[string]xsKey, rows []sigRow) error {
	watchers := s.watchers(user)
	u := string(user)
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		existing, err := txCrossSigningKeys(tx, user)
		if err != nil {
			return err
		}
		for usage, k := range before {
			if existing[usage] != k {
				return spec.NewError(spec.ErrUnknown, "the cross-signing keys changed during the upload; try again").WithStatus(http.StatusConflict)
			}
		}
		if len(existing) != len(before) {
			return spec.NewError(spec.ErrUnknown, "the cross-signing keys changed during the upload; try again").WithStatus(http.StatusConflict)
		}
		drop := func(usage string) error {
			old, ok := existing[usage]
			if !ok {
				return nil
			}
			if _, err := tx.Exec(`DELETE FROM key_signatures WHERE signer_user = $1 AND signer_key_id = $2`, u, "ed25519:"+old.pub); err != nil {
				return err
			}
			if _, err := tx.Exec(`DELETE FROM key_signatures WHERE target_user = $1 AND target_key = $2`, u, old.pub); err != nil {
				return err
			}
			_, err := tx.Exec(`DELETE FROM cross_signing_keys WHERE user_id = $1 AND usage = $2`, u, usage)
			return err
		}
		uploaded := map[string]bool{}
		newMaster := false
		for _, k := range in {
			uploaded[k.usage] = true
			if existing[k.usage].pub == k.pub {
				continue
			}
			if k.usage == usageMaster {
				newMaster = true
			}
			if err := drop(k.usage); err != nil {
				return err
			}
			if _, err := tx.Exec(`INSERT INTO cross_signing_keys (user_id, usage, public_key, key_json) VALUES ($1, $2, $3, $4)`,
				u, k.usage, k.pub, string(k.bare)); err != nil {
				return err
			}
		}
		if newMaster {
			for _, usage := range []string{usageSelf, usageUser} {
				if !uploaded[usage] {
					if err := drop(usage); err != nil {
						return err
					}
				}
			}
		}
		if err := insertSignatures(tx, rows); err != nil {
			return err
		}
		if err := s.announceSigningKeys(tx, watchers, user); err != nil {
			return err
		}
		return s.markChanged(tx, watchers, user)
	})
}

func insertSignatures(tx *storage.Tx, rows []sigRow) error {
	for _, r := range rows {
		// Every row was verified, so its signature decodes; store it in the
		// canonical unpadded form.
		raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(r.signature, "="))
		if err != nil || len(raw) != ed25519.SignatureSize {
			return spec.NewError(spec.ErrInvalidSignature, "invalid signature encoding")
		}
		r.signature = base64.RawStdEncoding.EncodeToString(raw)
		if _, err := tx.Exec(`INSERT INTO key_signatures (target_user, target_key, signer_user, signer_key_id, signature)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (target_user, target_key, signer_user, signer_key_id) DO UPDATE SET signature = excluded.signature`,
			string(r.targetUser), r.targetKey, string(r.signerUser), r.signerKey, r.signature); err != nil {
			return err
		}
	}
	return nil
}

// sigFailure is one entry of signatures/upload's "failures".
func sigFailure(code spec.ErrCode, msg string) gin.H {
	return gin.H{"errcode": code, "error": msg}
}

// POST /_matrix/client/v3/keys/signatures/upload: add signatures by the
// caller's keys to keys already published. Each signature is verified
// against the signer's public key; per-key failures are reported and only
// valid signatures are stored.
func (s *Service) handleSignaturesUpload(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	req, err := readObjectBody(c, s.cfg.MaxKeyUploadBytes)
	if err != nil {
		return err
	}
	type item struct {
		user  spec.UserID
		keyID string
		obj   json.RawMessage
	}
	var items []item
	for u, byKey := range req {
		uid, err := spec.ParseUserID(u)
		if err != nil {
			return spec.InvalidParam("%q is not a user ID", u)
		}
		objs, err := object(byKey, u)
		if err != nil {
			return err
		}
		for keyID, obj := range objs {
			items = append(items, item{uid, keyID, obj})
		}
	}
	sort.Slice(items, func(i, j int) bool {
		if items[i].user != items[j].user {
			return items[i].user < items[j].user
		}
		return items[i].keyID < items[j].keyID
	})
	own, err := s.crossSigningKeys(c.Request.Context(), dev.UserID)
	if err != nil {
		return err
	}
	failures := map[spec.UserID]map[string]gin.H{}
	fail := func(u spec.UserID, keyID string, f gin.H) {
		if failures[u] == nil {
			failures[u] = map[string]gin.H{}
		}
		failures[u][keyID] = f
	}
	var rows []sigRow
	var checks []check
	for _, it := range items {
		r, ch, f, err := s.checkSignature(c.Request.Context(), dev.UserID, own, it.user, it.keyID, it.obj)
		if err != nil {
			return err
		}
		if f != nil {
			fail(it.user, it.keyID, f)
		}
		rows = append(rows, r...)
		checks = append(checks, ch...)
	}
	if len(rows) > 0 {
		if err := s.storeSignatures(c.Request.Context(), dev.UserID, rows, checks); err != nil {
			return err
		}
	}
	c.JSON(http.StatusOK, gin.H{"failures": failures})
	return nil
}

// check is a condition verified again inside the write: the key a signature
// was verified against is still the one stored.
type check struct {
	user  spec.UserID
	usage string // a cross-signing usage, or "" for a device
	dev   string
	pub   string
}

func (ch check) holds(tx *storage.Tx) (bool, error) {
	var pub string
	var err error
	if ch.usage != "" {
		err = tx.QueryRow(`SELECT public_key FROM cross_signing_keys WHERE user_id = $1 AND usage = $2`, string(ch.user), ch.usage).Scan(&pub)
	} else {
		err = tx.QueryRow(`SELECT ed25519 FROM device_keys WHERE user_id = $1 AND device_id = $2`, string(ch.user), ch.dev).Scan(&pub)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil && pub == ch.pub, err
}

// checkSignature verifies the caller's signatures on one uploaded object and
// returns the valid ones with the conditions they rely on, or a failure.
// The object is one of three: another user's master key, signed by the
// caller's user-signing key; the caller's own master key, signed by the
// caller's devices; or one of the caller's devices, signed by the caller's
// self-signing key.
func (s *Service) checkSignature(ctx context.Context, caller spec.UserID, own map[string]xsKey, target spec.UserID, keyID string, obj json.RawMessage) ([]sigRow, []check, gin.H, error) {
	m, err := object(obj, "signed object")
	if err != nil {
		return sigFailed(spec.ErrBadJSON, "the signed object must be a JSON object")
	}
	sigs, err := signaturesOf(m, "signed object")
	if err != nil {
		return sigFailed(spec.ErrBadJSON, "invalid signatures")
	}
	bare, err := withoutSignatures(obj)
	if err != nil {
		return sigFailed(spec.ErrBadJSON, "invalid signed object")
	}
	if !s.isLocal(target) {
		return sigFailed(spec.ErrNotFound, "keys of users on other servers are unknown here")
	}
	u := signedUpload{caller: caller, own: own, target: target, keyID: keyID, obj: obj, bare: bare, mine: sigs[string(caller)]}
	if target != caller {
		return s.checkUserSigning(ctx, u)
	}
	if master, ok := own[usageMaster]; ok && master.pub == keyID {
		return s.checkMasterByDevices(ctx, u, master)
	}
	return s.checkSelfSigning(ctx, u)
}

// signedUpload is one object of a signatures upload and what checking it
// needs.
type signedUpload struct {
	caller spec.UserID
	own    map[string]xsKey // the caller's cross-signing keys by usage
	target spec.UserID
	keyID  string
	obj    json.RawMessage   // as uploaded, with its signatures
	bare   []byte            // without signatures (and unsigned)
	mine   map[string]string // the caller's signatures on it, by signing key ID
}

// sigFailed is checkSignature's answer for an object it refuses.
func sigFailed(code spec.ErrCode, msg string) ([]sigRow, []check, gin.H, error) {
	return nil, nil, sigFailure(code, msg), nil
}

// checkUserSigning checks another user's master key, signed by the
// caller's user-signing key.
func (s *Service) checkUserSigning(ctx context.Context, u signedUpload) ([]sigRow, []check, gin.H, error) {
	theirs, err := s.crossSigningKeys(ctx, u.target)
	if err != nil {
		return nil, nil, nil, err
	}
	master, ok := theirs[usageMaster]
	if !ok || master.pub != u.keyID {
		return sigFailed(spec.ErrNotFound, "unknown key")
	}
	if string(u.bare) != master.json {
		return sigFailed(spec.ErrInvalidSignature, "the signed object does not match the stored key")
	}
	usk, ok := u.own[usageUser]
	if !ok {
		return sigFailed(spec.ErrNotFound, "you have no user-signing key")
	}
	signer := "ed25519:" + usk.pub
	sig, ok := u.mine[signer]
	if !ok {
		return sigFailed(spec.ErrInvalidSignature, "missing a signature by your user-signing key")
	}
	if verify(u.obj, u.caller, signer, usk.pub) != nil {
		return sigFailed(spec.ErrInvalidSignature, "invalid signature")
	}
	return []sigRow{{u.target, u.keyID, u.caller, signer, sig}},
		[]check{{u.caller, usageUser, "", usk.pub}, {u.target, usageMaster, "", master.pub}}, nil, nil
}

// checkMasterByDevices checks the caller's own master key, signed by the
// caller's devices: every signature but the key's own must verify, and at
// least one must be there.
func (s *Service) checkMasterByDevices(ctx context.Context, u signedUpload, master xsKey) ([]sigRow, []check, gin.H, error) {
	if string(u.bare) != master.json {
		return sigFailed(spec.ErrInvalidSignature, "the signed object does not match the stored key")
	}
	var rows []sigRow
	var checks []check
	signers := make([]string, 0, len(u.mine))
	for signer := range u.mine {
		signers = append(signers, signer)
	}
	sort.Strings(signers)
	for _, signer := range signers {
		if signer == "ed25519:"+master.pub {
			continue // its own signature proves nothing new
		}
		dev, ok := strings.CutPrefix(signer, "ed25519:")
		if !ok {
			return sigFailed(spec.ErrInvalidSignature, "unsupported signing algorithm")
		}
		ed, err := s.storedDeviceKey(ctx, u.caller, dev)
		if err != nil {
			return nil, nil, nil, err
		}
		if ed == "" {
			return sigFailed(spec.ErrNotFound, "unknown signing device "+dev)
		}
		if verify(u.obj, u.caller, signer, ed) != nil {
			return sigFailed(spec.ErrInvalidSignature, "invalid signature")
		}
		rows = append(rows, sigRow{u.caller, u.keyID, u.caller, signer, u.mine[signer]})
		checks = append(checks, check{u.caller, "", dev, ed})
	}
	if len(rows) == 0 {
		return sigFailed(spec.ErrInvalidSignature, "missing a signature by one of your devices")
	}
	return rows, append(checks, check{u.caller, usageMaster, "", master.pub}), nil, nil
}

// checkSelfSigning checks one of the caller's devices, signed by the
// caller's self-signing key.
func (s *Service) checkSelfSigning(ctx context.Context, u signedUpload) ([]sigRow, []check, gin.H, error) {
	var stored string
	err := s.db.QueryRow(ctx, `SELECT key_json FROM device_keys WHERE user_id = $1 AND device_id = $2`, string(u.caller), u.keyID).Scan(&stored)
	if errors.Is(err, sql.ErrNoRows) {
		return sigFailed(spec.ErrNotFound, "unknown key")
	}
	if err != nil {
		return nil, nil, nil, err
	}
	storedBare, err := withoutSignatures([]byte(stored))
	if err != nil {
		return nil, nil, nil, err
	}
	if string(u.bare) != string(storedBare) {
		return sigFailed(spec.ErrInvalidSignature, "the signed object does not match the stored device keys")
	}
	ssk, ok := u.own[usageSelf]
	if !ok {
		return sigFailed(spec.ErrNotFound, "you have no self-signing key")
	}
	signer := "ed25519:" + ssk.pub
	sig, ok := u.mine[signer]
	if !ok {
		return sigFailed(spec.ErrInvalidSignature, "missing a signature by your self-signing key")
	}
	if verify(u.obj, u.caller, signer, ssk.pub) != nil {
		return sigFailed(spec.ErrInvalidSignature, "invalid signature")
	}
	ed, err := s.storedDeviceKey(ctx, u.caller, u.keyID)
	if err != nil {
		return nil, nil, nil, err
	}
	return []sigRow{{u.caller, u.keyID, u.caller, signer, sig}},
		[]check{{u.caller, usageSelf, "", ssk.pub}, {u.caller, "", u.keyID, ed}}, nil, nil
}

// storeSignatures stores verified signatures if every key they were
// verified against is still the stored one, and marks the device lists of
// the signer and of the signed users changed.
func (s *Service) storeSignatures(ctx context.Context, caller spec.UserID, rows []sigRow, checks []check) error {
	changed := []spec.UserID{caller}
	seen := map[spec.UserID]bool{caller: true}
	for _, r := range rows {
		if !seen[r.targetUser] {
			seen[r.targetUser] = true
			changed = append(changed, r.targetUser)
		}
	}
	watchers := s.watchers(changed...)
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		for _, ch := range checks {
			ok, err := ch.holds(tx)
			if err != nil {
				return err
			}
			if !ok {
				return spec.NewError(spec.ErrUnknown, "keys changed during the upload; try again").WithStatus(http.StatusConflict)
			}
		}
		if err := insertSignatures(tx, rows); err != nil {
			return err
		}
		if err := s.announceSignatures(tx, watchers, rows); err != nil {
			return err
		}
		return s.markChanged(tx, watchers, changed...)
	})
}
