package rooms

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/tidwall/gjson"
	"golang.org/x/text/unicode/norm"
)

// The search index: the project's own word index in plain SQL tables
// (migration 5), so that search needs no SQLite extension and the same SQL
// runs on PostgreSQL. An event's searchable text is cut into words (runs of
// letters and digits), each folded to lower case without diacritics, so
// "Café" is found by "cafe"; search_words keeps each word's count in the
// event and search_docs the event's word count. A query word matches every
// indexed word it is a prefix of ("fox" finds "foxes"), as a range scan of
// the primary key; an event matches when it has every query word.

// maxWordBytes is the longest word kept: longer ones are cut (a prefix
// query still finds them) and longer query words are ignored.
const maxWordBytes = 100

// splitWords cuts text into folded words, repeats included.
func splitWords(text string) []string {
	fields := strings.FieldsFunc(text, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
	out := fields[:0]
	for _, f := range fields {
		if w := foldWord(f); w != "" {
			out = append(out, w)
		}
	}
	return out
}

// foldWord lower-cases a word and removes its diacritics (decomposes it and
// drops the combining marks), cut to maxWordBytes on a rune boundary.
func foldWord(w string) string {
	var b strings.Builder
	for _, r := range norm.NFD.String(strings.ToLower(w)) {
		if unicode.Is(unicode.Mn, r) {
			continue
		}
		if b.Len()+utf8.RuneLen(r) > maxWordBytes {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// indexWords records the words of the event at position.
func indexWords(tx *storage.Tx, position int64, text string) error {
	words := splitWords(text)
	if len(words) == 0 {
		return nil
	}
	hits := map[string]int{}
	for _, w := range words {
		hits[w]++
	}
	if _, err := tx.Exec(`INSERT INTO search_docs (position, words) VALUES ($1, $2)`, position, len(words)); err != nil {
		return err
	}
	for w, n := range hits {
		if _, err := tx.Exec(`INSERT INTO search_words (word, position, hits) VALUES ($1, $2, $3)`, w, position, n); err != nil {
			return err
		}
	}
	return nil
}

// searchText is the text indexed for an event, if any.
func searchText(p *events.PDU, encrypted bool) string {
	sk, isState := p.StateKey()
	c := p.Content()
	switch p.Type() {
	case spec.MRoomMessage:
		if isState || encrypted {
			return ""
		}
		return c.Get("body").String()
	case spec.MRoomName:
		if sk != "" || !isState {
			return ""
		}
		return c.Get("name").String()
	case spec.MRoomTopic:
		if sk != "" || !isState {
			return ""
		}
		// The topic, and the text/plain m.topic if it says something else.
		topic := ""
		if t := c.Get("topic"); t.Type == gjson.String {
			topic = t.Str
		}
		if plain := plainTopic(p); plain != topic {
			topic = strings.TrimSpace(topic + "\n" + plain)
		}
		return topic
	}
	return ""
}

// indexSearch records the words of a newly stored event; encrypted says
// whether its room was encrypted when it was sent.
func indexSearch(tx *storage.Tx, ev *Event, encrypted bool) error {
	if err := indexWords(tx, ev.Position, searchText(ev.PDU, encrypted)); err != nil {
		return fmt.Errorf("index for search: %w", err)
	}
	return nil
}

// unindexSearch forgets the words of a redacted event.
func unindexSearch(tx *storage.Tx, id spec.EventID) error {
	for _, q := range []string{
		`DELETE FROM search_words WHERE position = (SELECT position FROM events WHERE event_id = $1)`,
		`DELETE FROM search_docs WHERE position = (SELECT position FROM events WHERE event_id = $1)`,
	} {
		if _, err := tx.Exec(q, string(id)); err != nil {
			return fmt.Errorf("unindex for search: %w", err)
		}
	}
	return nil
}

// prefixEnd is above every string that starts with the prefix: no UTF-8
// text continues past U+10FFFF.
const prefixEnd = string(utf8.MaxRune)

// wordMatches is the subquery of the positions that hold every word (as a
// prefix) with their score, and its arguments ($1 onwards). The score is
// how much of the event the query's words make up, so that the message
// that says "fox" most, for its length, ranks first.
func wordMatches(words []string) (string, []any) {
	var parts []string
	var args []any
	for i, w := range words {
		n := len(args)
		parts = append(parts, fmt.Sprintf(`SELECT %d AS term, position, hits FROM search_words WHERE word >= $%d AND word < $%d`, i, n+1, n+2))
		args = append(args, w, w+prefixEnd)
	}
	q := `SELECT w.position, SUM(w.hits) * 1.0 / MAX(d.words) AS score
		FROM (` + strings.Join(parts, " UNION ALL ") + `) w
		JOIN search_docs d ON d.position = w.position
		GROUP BY w.position HAVING COUNT(DISTINCT w.term) = ` + strconv.Itoa(len(words))
	return q, args
}

// tsvectorMatches is wordMatches on PostgreSQL, through search_tsv's GIN
// index (migration 10): every word as a prefix lexeme, ranked by ts_rank
// divided by 1 + log(lexemes), so that a shorter event ranks first, as the
// word index ranks by how much of the event the query makes up.
// The tsquery is written out, not parsed by to_tsquery or
// websearch_to_tsquery, because the words are already folded and cut as
// the index's are (splitWords: letters and digits only, so nothing in them
// needs quoting), which keeps PostgreSQL's matches the same as SQLite's.
func tsvectorMatches(words []string) (string, []any) {
	terms := make([]string, len(words))
	for i, w := range words {
		terms[i] = "'" + w + "':*"
	}
	q := `SELECT t.position, ts_rank(t.tsv, q.query, 1) AS score
		FROM search_tsv t, (SELECT $1::tsquery AS query) q
		WHERE t.tsv @@ q.query`
	return q, []any{strings.Join(terms, " & ")}
}

// reindexSearch indexes the events stored before the word index existed,
// once (migration 5 leaves the search_reindex mark): the same events the
// commit hook indexes, plaintext messages of rooms not yet encrypted when
// they were sent, room names and topics, none redacted.
func (s *Service) reindexSearch(ctx context.Context) error {
	var pending int
	if err := s.db.QueryRow(ctx, `SELECT count(*) FROM search_reindex`).Scan(&pending); err != nil || pending == 0 {
		return err
	}
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(`DELETE FROM search_words; DELETE FROM search_docs;`); err != nil {
			return err
		}
		rows, err := tx.Query(`SELECT e.position, e.event_id, e.json, r.version FROM events e JOIN rooms r ON r.room_id = e.room_id
			WHERE e.redacted_by IS NULL AND (
				(e.type = 'm.room.message' AND e.state_key IS NULL
					AND NOT EXISTS (SELECT 1 FROM events enc WHERE enc.room_id = e.room_id AND enc.type = 'm.room.encryption'
						AND enc.state_key = '' AND enc.position < e.position))
				OR (e.type IN ('m.room.name', 'm.room.topic') AND e.state_key = ''))
			ORDER BY e.position`)
		if err != nil {
			return err
		}
		type doc struct {
			position int64
			text     string
		}
		var docs []doc
		for rows.Next() {
			var pos int64
			var id, raw, version string
			if err := rows.Scan(&pos, &id, &raw, &version); err != nil {
				rows.Close()
				return err
			}
			p, err := events.LoadPDU([]byte(raw), spec.RoomVersion(version), spec.EventID(id))
			if err != nil {
				rows.Close()
				return fmt.Errorf("stored event at %d does not parse: %w", pos, err)
			}
			docs = append(docs, doc{pos, searchText(p, false)}) // the query left out encrypted rooms' messages
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, d := range docs {
			if err := indexWords(tx, d.position, d.text); err != nil {
				return err
			}
		}
		_, err = tx.Exec(`DELETE FROM search_reindex`)
		return err
	})
}
