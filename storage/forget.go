package storage

import "fmt"

// Removed counts, by table, the rows a purge deleted (or, in a dry run,
// would delete). The admin API answers it as is, so an operator sees what
// went, table by table.
type Removed map[string]int64

// Total is the number of rows over every table.
func (r Removed) Total() int64 {
	var n int64
	for _, v := range r {
		n += v
	}
	return n
}

// Delete runs a DELETE statement in the write transaction and adds the
// rows it removed to removed[table] (a table with nothing to remove is
// listed too, with 0: the answer says it was looked at).
func (t *Tx) Delete(removed Removed, table, query string, args ...any) error {
	res, err := t.Exec(query, args...)
	if err != nil {
		return fmt.Errorf("delete from %s: %w", table, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("delete from %s: %w", table, err)
	}
	removed[table] += n
	return nil
}
