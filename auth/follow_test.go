package auth

import "testing"

// A session read from the database while a revocation was followed is
// used for that request but not cached: the read may predate the
// revocation (follow.go).
func TestTokenCacheAddIfUnchanged(t *testing.T) {
	tc := newTokenCache()
	gen := tc.generation()
	tc.removeDevice("@u:test", "") // a followed revocation during the read
	sess := &session{hash: "h", user: "@u:test", deviceID: "D"}
	if got := tc.addIfUnchanged(sess, gen); got != sess {
		t.Fatal("the session read is not used")
	}
	if tc.get("h") != nil {
		t.Fatal("a session read across a revocation was cached")
	}
	if got := tc.addIfUnchanged(sess, tc.generation()); got != sess || tc.get("h") != sess {
		t.Fatal("a session read with no change meanwhile was not cached")
	}
	// Two requests reading the same token share the first one cached.
	again := &session{hash: "h", user: "@u:test", deviceID: "D"}
	if got := tc.addIfUnchanged(again, tc.generation()); got != sess {
		t.Fatal("a second read replaced the cached session")
	}
}
