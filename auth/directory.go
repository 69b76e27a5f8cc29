package auth

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// The user directory (client-server API, "User directory") searches the
// global profiles of the users the searcher may see. Chatalot searches no
// more than the spec's minimum: the users who share a room with the
// searcher and those joined to a room with a public join rule or
// world_readable history (rooms decides, from memory). Room-specific
// display names are not searched nor shown: a name given in one room is
// for that room, and the directory would tell it to people outside it.
//
// Profiles are held in memory (profileIndex) so that a search, typed a key
// at a time, reads no database.

// DirectoryRooms is what the user directory asks of rooms.
type DirectoryRooms interface {
	// DirectoryUsers returns the users the user may find, from memory.
	DirectoryUsers(user spec.UserID) map[spec.UserID]bool
}

// Limits of a search.
const (
	defaultDirectoryLimit = 10
	maxDirectoryLimit     = 100
	maxSearchTermBytes    = 1024
	maxSearchWords        = 16
)

// directoryProfile is a local active user's global profile, with the
// folded forms a search compares.
type directoryProfile struct {
	displayName, avatarURL string
	foldedName             string
	foldedID               string
	foldedLocal            string // the localpart
}

// profileIndex holds the global profile of every active local account.
// Every write of a profile, account creation, deactivation and
// reactivation in this process updates it; a user it does not know (an
// account the admin CLI created in another process) is looked up once and
// kept, and absent marks a user known to have no active account.
type profileIndex struct {
	mu     sync.RWMutex
	byUser map[spec.UserID]*directoryProfile // nil value: no active account
}

func newProfileIndex() *profileIndex {
	return &profileIndex{byUser: map[spec.UserID]*directoryProfile{}}
}

func (ix *profileIndex) set(user spec.UserID, displayName, avatarURL string) {
	p := &directoryProfile{displayName: displayName, avatarURL: avatarURL,
		foldedName: fold(displayName), foldedID: fold(string(user)), foldedLocal: fold(user.Localpart())}
	ix.mu.Lock()
	ix.byUser[user] = p
	ix.mu.Unlock()
}

// absent records that the user has no active account.
func (ix *profileIndex) absent(user spec.UserID) {
	ix.mu.Lock()
	ix.byUser[user] = nil
	ix.mu.Unlock()
}

// forget drops what the index knows of a user: the next search looks the
// user up again.
func (ix *profileIndex) forget(user spec.UserID) {
	ix.mu.Lock()
	delete(ix.byUser, user)
	ix.mu.Unlock()
}

// loadProfileIndex reads every active account's profile at start-up.
func (s *Service) loadProfileIndex(ctx context.Context) error {
	rows, err := s.db.Query(ctx, `SELECT user_id, displayname, avatar_url FROM users WHERE NOT deactivated`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var dn, av sql.NullString
		if err := rows.Scan(&id, &dn, &av); err != nil {
			return err
		}
		s.profiles.set(spec.UserID(id), dn.String, av.String)
	}
	return rows.Err()
}

// reloadProfile brings the index in line with the database for one user.
func (s *Service) reloadProfile(ctx context.Context, user spec.UserID) {
	dn, av, err := s.loadProfile(ctx, user)
	var notFound *spec.Error
	switch {
	case err == nil:
		s.profiles.set(user, dn, av)
	case errors.As(err, &notFound) && notFound.Code == spec.ErrNotFound:
		s.profiles.absent(user)
	default:
		s.profiles.forget(user) // unknown: looked up at the next search
	}
}

type directoryRequest struct {
	SearchTerm *string `json:"search_term"`
	Limit      *int    `json:"limit"`
}

type directoryUser struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"display_name,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// POST /_matrix/client/v3/user_directory/search: the users the caller may
// see whose user ID or global display name contains every word of the
// search term, case-insensitively; the caller is not among them.
func (s *Service) searchUserDirectory(c *gin.Context) error {
	words, limit, err := readDirectoryRequest(c)
	if err != nil {
		return err
	}
	results, limited := s.searchUsers(c.Request.Context(), DeviceFrom(c).UserID, words, limit)
	c.JSON(http.StatusOK, gin.H{"results": results, "limited": limited})
	return nil
}

// readDirectoryRequest reads a search: its folded words and the limit
// (spec default 10; at most maxDirectoryLimit).
func readDirectoryRequest(c *gin.Context) (words []string, limit int, err error) {
	var req directoryRequest
	if err := api.ReadJSON(c, &req); err != nil {
		return nil, 0, err
	}
	if req.SearchTerm == nil {
		return nil, 0, spec.MissingParam("search_term is required")
	}
	limit = defaultDirectoryLimit
	if req.Limit != nil {
		limit = *req.Limit
	}
	if limit < 0 {
		return nil, 0, spec.InvalidParam("limit must not be negative")
	}
	words = strings.Fields(fold(*req.SearchTerm))
	if len(*req.SearchTerm) > maxSearchTermBytes || len(words) > maxSearchWords {
		return nil, 0, spec.InvalidParam("search_term is over %d bytes or %d words", maxSearchTermBytes, maxSearchWords)
	}
	return words, min(limit, maxDirectoryLimit), nil
}

// directoryMatch is a user found, with how well they matched.
type directoryMatch struct {
	user    spec.UserID
	profile *directoryProfile
	rank    int
}

// searchUsers finds the visible users matching every word, best first.
func (s *Service) searchUsers(ctx context.Context, searcher spec.UserID, words []string, limit int) ([]directoryUser, bool) {
	results := []directoryUser{}
	if len(words) == 0 || s.directory == nil {
		return results, false
	}
	visible := s.directory.DirectoryUsers(searcher)
	delete(visible, searcher)
	s.lookUpUnindexed(ctx, visible)

	var found []directoryMatch
	s.profiles.mu.RLock()
	for user := range visible {
		p := s.profiles.byUser[user]
		if p == nil {
			continue // deactivated, or not a local account
		}
		if rank := matchRank(p, words); rank > 0 {
			found = append(found, directoryMatch{user, p, rank})
		}
	}
	s.profiles.mu.RUnlock()

	// Spec: "ordered by rank and then whether or not profile info is
	// available"; then by user ID, so that pages are stable.
	slices.SortFunc(found, func(a, b directoryMatch) int {
		if c := cmp.Compare(b.rank, a.rank); c != 0 {
			return c
		}
		if c := cmp.Compare(hasProfile(b.profile), hasProfile(a.profile)); c != 0 {
			return c
		}
		return strings.Compare(string(a.user), string(b.user))
	})
	limited := len(found) > limit
	for _, m := range found[:min(limit, len(found))] {
		results = append(results, directoryUser{UserID: string(m.user), DisplayName: m.profile.displayName, AvatarURL: m.profile.avatarURL})
	}
	return results, limited
}

// lookUpUnindexed reads, once, the local users the index does not know.
func (s *Service) lookUpUnindexed(ctx context.Context, users map[spec.UserID]bool) {
	var missing []spec.UserID
	s.profiles.mu.RLock()
	for u := range users {
		if _, known := s.profiles.byUser[u]; !known && u.Server() == s.serverName {
			missing = append(missing, u)
		}
	}
	s.profiles.mu.RUnlock()
	for _, u := range missing {
		s.reloadProfile(ctx, u)
	}
}

func hasProfile(p *directoryProfile) int {
	if p.displayName != "" || p.avatarURL != "" {
		return 1
	}
	return 0
}

// Ranks of a match: every word must at least be inside the user ID or
// the display name.
const (
	rankInside    = 1 // every word is inside the ID or the name
	rankWordStart = 2 // every word starts a word of the ID or the name
	rankExact     = 3 // the search term is the whole name or localpart
)

// matchRank says how well a user matches the (folded) words: 0 for not at
// all.
func matchRank(p *directoryProfile, words []string) int {
	whole := strings.Join(words, " ")
	if whole == p.foldedName || whole == p.foldedLocal || whole == p.foldedID {
		return rankExact
	}
	rank := rankWordStart
	for _, w := range words {
		switch {
		case startsWord(p.foldedName, w) || startsWord(p.foldedID, w):
		case strings.Contains(p.foldedName, w) || strings.Contains(p.foldedID, w):
			rank = rankInside
		default:
			return 0
		}
	}
	return rank
}

// startsWord reports whether w occurs in s at the start of a word (after
// the start or a character that is neither a letter nor a digit). A w
// that starts with such a character (":server") starts a word wherever it
// is.
func startsWord(s, w string) bool {
	if first, _ := utf8.DecodeRuneInString(w); !isWordRune(first) {
		return strings.Contains(s, w)
	}
	for i := 0; i+len(w) <= len(s); {
		j := strings.Index(s[i:], w)
		if j < 0 {
			return false
		}
		at := i + j
		if before, _ := utf8.DecodeLastRuneInString(s[:at]); at == 0 || !isWordRune(before) {
			return true
		}
		i = at + 1
	}
	return false
}

func isWordRune(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }

// fold is the case-insensitive form searches compare.
func fold(s string) string { return strings.ToLower(s) }
