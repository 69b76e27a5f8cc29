package storage

import "database/sql"

// Strings reads a query's one text column into a slice, closing the rows:
// pass Query's results straight in, as Strings[spec.RoomID](db.Query(…)).
func Strings[T ~string](rows *sql.Rows, err error) ([]T, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, T(v))
	}
	return out, rows.Err()
}
