package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/chatalot/chatalot/events"
)

// The signing key file holds one line, "ed25519 <key version> <unpadded
// base64 seed>", the format Synapse also uses, so that keys can move between
// servers.
const signingKeyFile = "signing.key"

// loadOrCreateSigningKey reads the server's ed25519 key, creating it (mode
// 0600) on first start. The key signs every event this server creates; it
// must never change for a server name that already has rooms.
func loadOrCreateSigningKey(path, serverName string) (events.SigningKey, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return createSigningKey(path, serverName)
	}
	if err != nil {
		return events.SigningKey{}, fmt.Errorf("read signing key: %w", err)
	}
	parts := strings.Fields(string(data))
	if len(parts) != 3 || parts[0] != "ed25519" {
		return events.SigningKey{}, fmt.Errorf("signing key %s: expected \"ed25519 VERSION SEED\"", path)
	}
	seed, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(parts[2], "="))
	if err != nil || len(seed) != ed25519.SeedSize {
		return events.SigningKey{}, fmt.Errorf("signing key %s: the seed is not %d bytes of base64", path, ed25519.SeedSize)
	}
	return events.SigningKey{ServerName: serverName, KeyID: "ed25519:" + parts[1], Private: ed25519.NewKeyFromSeed(seed)}, nil
}

func createSigningKey(path, serverName string) (events.SigningKey, error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return events.SigningKey{}, err
	}
	ver := make([]byte, 4)
	if _, err := rand.Read(ver); err != nil {
		return events.SigningKey{}, err
	}
	version := "a_" + hex.EncodeToString(ver) // key versions allow [a-zA-Z0-9_] only
	line := fmt.Sprintf("ed25519 %s %s\n", version, base64.RawStdEncoding.EncodeToString(seed))
	// O_EXCL: two servers started at once on one directory never overwrite
	// each other's key.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return events.SigningKey{}, fmt.Errorf("create signing key: %w", err)
	}
	if _, err := f.WriteString(line); err != nil {
		f.Close()
		return events.SigningKey{}, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return events.SigningKey{}, err
	}
	if err := f.Close(); err != nil {
		return events.SigningKey{}, err
	}
	return events.SigningKey{ServerName: serverName, KeyID: "ed25519:" + version, Private: ed25519.NewKeyFromSeed(seed)}, nil
}
