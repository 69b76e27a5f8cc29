package tests

import (
	"debug/elf"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/tests/harness"
	"maunium.net/go/mautrix"
)

// The server binary's size is most of its idle resident memory (issue 12):
// its code and read-only data are file-backed pages, mapped as they are
// touched. These tests keep out the two things that once made up half of it.

// TestBinaryLinksNoUnusedMethods: a binary that executes a text/template or
// html/template (or otherwise calls a method by a computed name) keeps every
// exported method of every type ever put in an interface. gin's (*Context).
// BindYAML, which nothing calls, stands for them all.
func TestBinaryLinksNoUnusedMethods(t *testing.T) {
	syms := binarySymbols(t)
	for _, name := range []string{
		"github.com/gin-gonic/gin.(*Context).BindYAML",
		"text/template.(*state).evalField",
	} {
		if syms[name] {
			t.Errorf("the chatalot binary contains %s: something executes a template or calls a method by name", name)
		}
	}
}

// TestBinaryLinksNoMsgpack: the nomsgpack build tag keeps gin's MessagePack
// codec (ugorji) out; the Makefile and the test harness build with the same tags.
func TestBinaryLinksNoMsgpack(t *testing.T) {
	for name := range binarySymbols(t) {
		if strings.HasPrefix(name, "github.com/ugorji/") {
			t.Fatalf("the chatalot binary contains %s: built without the nomsgpack tag?", name)
		}
	}
	mk, err := os.ReadFile(filepath.Join(opsRepoRoot(t), "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^TAGS\s*:=\s*(.*)$`).FindSubmatch(mk)
	if m == nil || strings.TrimSpace(string(m[1])) != harness.Tags {
		t.Fatalf("Makefile TAGS %q, test harness %q: they must be the same", m, harness.Tags)
	}
}

func binarySymbols(t *testing.T) map[string]bool {
	t.Helper()
	f, err := elf.Open(harness.Binary(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	list, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	syms := make(map[string]bool, len(list))
	for _, s := range list {
		syms[s.Name] = true
	}
	return syms
}

// TestPlainBuildServes: `go build ./cmd/chatalot` with no build tag (what
// `go install …@latest` and `go run` do) gives a working server: it starts
// on a new data directory and serves /sync and /search (whose index needs
// no SQLite extension).
func TestPlainBuildServes(t *testing.T) {
	s := harness.Start(t, harness.WithBinary(harness.BuildPlain(t)))
	ctx := t.Context()
	alice := newClient(t, s.URL, "plainalice")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	sent, err := alice.SendText(ctx, room.RoomID, "a plain build finds this message")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := alice.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range resp.Rooms.Join[room.RoomID].Timeline.Events {
		found = found || ev.ID == sent.EventID
	}
	if !found {
		t.Fatal("/sync does not show the message")
	}
	var res struct {
		SearchCategories struct {
			RoomEvents struct {
				Results []struct {
					Result struct {
						EventID string `json:"event_id"`
					} `json:"result"`
				} `json:"results"`
			} `json:"room_events"`
		} `json:"search_categories"`
	}
	body := map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "plain build"}}}
	if _, err := alice.MakeRequest(ctx, "POST", alice.BuildClientURL("v3", "search"), body, &res); err != nil {
		t.Fatal(err)
	}
	got := res.SearchCategories.RoomEvents.Results
	if len(got) != 1 || got[0].Result.EventID != string(sent.EventID) {
		t.Fatalf("search: %+v", got)
	}
}
