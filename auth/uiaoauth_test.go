package auth

import (
	"testing"
	"time"

	"github.com/chatalot/chatalot/spec"
	"github.com/rs/zerolog"
)

// An approval of the m.oauth stage is for one user's cross-signing upload
// session, once, and cuts the session's life to the approval's.
func TestApproveCrossSigningReset(t *testing.T) {
	s := &Service{uia: newUIAStore(15 * time.Minute), log: zerolog.Nop()}
	add := func(user, op string, flows [][]string) string {
		u := &uiaSession{op: op, user: spec.UserID("@" + user + ":example.org"), device: "DEV", flows: flows}
		if err := s.uia.create(u); err != nil {
			t.Fatal(err)
		}
		return u.id
	}
	reset := add("ann", opCrossSigningUpload, [][]string{{stageOAuth}})
	password := add("ann", opCrossSigningUpload, passwordFlows)
	other := add("ann", "POST /account/password", [][]string{{stageOAuth}})

	if s.ApproveCrossSigningReset("@bob:example.org", reset) {
		t.Error("another user approved the reset")
	}
	if s.ApproveCrossSigningReset("@ann:example.org", password) || s.ApproveCrossSigningReset("@ann:example.org", other) {
		t.Error("a session without m.oauth, or for another request, was approved")
	}
	if got := s.CrossSigningResets("@ann:example.org"); len(got) != 1 || got[0].Session != reset || got[0].Approved || got[0].DeviceID != "DEV" {
		t.Errorf("pending resets: %+v", got)
	}
	before := time.Now()
	if !s.ApproveCrossSigningReset("@ann:example.org", reset) {
		t.Fatal("the reset was not approved")
	}
	if s.ApproveCrossSigningReset("@ann:example.org", reset) {
		t.Error("approved twice")
	}
	u := s.uia.get(reset)
	if u == nil || !u.done() || u.expires.After(before.Add(crossSigningApprovalLifetime+time.Second)) {
		t.Fatalf("approved session: %+v", u)
	}
	// Once the approval's time is up, the session is gone with it.
	u.expires = time.Now().Add(-time.Second)
	if s.uia.get(reset) != nil || len(s.CrossSigningResets("@ann:example.org")) != 0 || s.ApproveCrossSigningReset("@ann:example.org", reset) {
		t.Error("an expired approval lives on")
	}
}
