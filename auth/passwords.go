package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/chatalot/chatalot/spec"
	"golang.org/x/crypto/argon2"
)

// hasher hashes and verifies passwords with Argon2id.
//
// Why a semaphore: one Argon2id hash with the default parameters allocates
// 19 MiB. Without a bound, a flood of login attempts would allocate that
// much per request and exhaust memory long before the CPU saturates. The
// semaphore caps memory at slots × MemoryKiB; requests beyond the slots wait,
// and beyond the queue bound they are refused with 429 so that waiting
// goroutines cannot pile up either.
type hasher struct {
	params  Argon2Params
	slots   chan struct{}
	queue   int64
	waiting atomic.Int64
	running atomic.Int64
	peak    atomic.Int64 // the most hashes that ever ran at once (tests)
	dummy   string       // a hash to verify against for unknown users
}

const (
	saltLen = 16
	keyLen  = 32
)

func newHasher(p Argon2Params, concurrency, queue int) (*hasher, error) {
	h := &hasher{params: p, slots: make(chan struct{}, concurrency), queue: int64(queue)}
	// The dummy only has to cost a full Argon2id verification with the
	// current parameters; random salt and key make it match no password.
	// Computing a real hash here would cost a hash's memory at every start.
	salt, key := make([]byte, saltLen), make([]byte, keyLen)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	h.dummy = encodePHC(p, salt, key)
	return h, nil
}

// acquire takes a hashing slot, or fails with 429 if too many requests wait,
// or with the context's error.
func (h *hasher) acquire(ctx context.Context) error {
	if h.waiting.Add(1) > h.queue+int64(cap(h.slots)) {
		h.waiting.Add(-1)
		return spec.LimitExceeded(1000)
	}
	defer h.waiting.Add(-1)
	select {
	case h.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	n := h.running.Add(1)
	for {
		p := h.peak.Load()
		if n <= p || h.peak.CompareAndSwap(p, n) {
			break
		}
	}
	return nil
}

func (h *hasher) release() {
	h.running.Add(-1)
	<-h.slots
}

// Hash returns the PHC string of password with the current parameters.
func (h *hasher) Hash(ctx context.Context, password string) (string, error) {
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	defer h.release()
	return h.hashUnbounded([]byte(password))
}

func (h *hasher) hashUnbounded(password []byte) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	p := h.params
	key := argon2.IDKey(password, salt, p.Iterations, p.MemoryKiB, p.Parallelism, keyLen)
	return encodePHC(p, salt, key), nil
}

// Verify checks password against a PHC string in constant time. stale
// reports that the hash used other parameters than the current ones and
// should be replaced. An empty encoded hash (no password set) is checked
// against a dummy so that the time taken does not reveal it; it never
// matches.
func (h *hasher) Verify(ctx context.Context, encoded, password string) (ok, stale bool, err error) {
	noPassword := encoded == ""
	if noPassword {
		encoded = h.dummy
	}
	p, salt, want, err := decodePHC(encoded)
	if err != nil {
		return false, false, err
	}
	if err := h.acquire(ctx); err != nil {
		return false, false, err
	}
	got := argon2.IDKey([]byte(password), salt, p.Iterations, p.MemoryKiB, p.Parallelism, uint32(len(want)))
	h.release()
	ok = subtle.ConstantTimeCompare(got, want) == 1 && !noPassword
	return ok, p != h.params || len(want) != keyLen || len(salt) != saltLen, nil
}

var b64 = base64.RawStdEncoding

// encodePHC writes $argon2id$v=19$m=…,t=…,p=…$salt$key.
func encodePHC(p Argon2Params, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.MemoryKiB, p.Iterations, p.Parallelism, b64.EncodeToString(salt), b64.EncodeToString(key))
}

var errBadPHC = errors.New("stored password hash is not an argon2id PHC string")

func decodePHC(s string) (p Argon2Params, salt, key []byte, err error) {
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" || parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, nil, nil, errBadPHC
	}
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return p, nil, nil, errBadPHC
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return p, nil, nil, errBadPHC
		}
		switch k {
		case "m":
			p.MemoryKiB = uint32(n)
		case "t":
			p.Iterations = uint32(n)
		case "p":
			if n > 255 {
				return p, nil, nil, errBadPHC
			}
			p.Parallelism = uint8(n)
		default:
			return p, nil, nil, errBadPHC
		}
	}
	// A stored hash is trusted data, but its parameters still decide how
	// much memory verifying it takes: refuse absurd ones rather than
	// allocate them.
	if p.Iterations == 0 || p.Parallelism == 0 || p.MemoryKiB == 0 || p.MemoryKiB > 4<<20 || p.Iterations > 64 {
		return p, nil, nil, errBadPHC
	}
	salt, err1 := b64.DecodeString(parts[4])
	key, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(salt) < 8 || len(key) < 16 {
		return p, nil, nil, errBadPHC
	}
	return p, salt, key, nil
}

// checkNewPassword enforces the length rules on a password being set.
func checkNewPassword(password string, minLen int) error {
	if len(password) > MaxPasswordLength {
		return spec.NewError(spec.ErrWeakPassword, "the password is longer than %d bytes", MaxPasswordLength)
	}
	if !utf8.ValidString(password) {
		return spec.NewError(spec.ErrWeakPassword, "the password is not valid UTF-8")
	}
	if utf8.RuneCountInString(password) < minLen {
		return spec.NewError(spec.ErrWeakPassword, "the password must be at least %d characters", minLen)
	}
	return nil
}
