package auth

import (
	"context"
	"sort"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// ServerNamesInUse lists the server names of the accounts in db, sorted:
// one on a data directory in use, none on a new one. It tells which server
// a data directory from before its server name was recorded belongs to.
// It reads every account once; a community server has thousands at most.
func ServerNamesInUse(ctx context.Context, db *storage.DB) ([]spec.ServerName, error) {
	rows, err := db.Query(ctx, `SELECT user_id FROM users`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	seen := map[spec.ServerName]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		if u, err := spec.ParseUserID(id); err == nil {
			seen[u.Server()] = true
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]spec.ServerName, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}
