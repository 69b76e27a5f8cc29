package rooms

import (
	"context"
	"fmt"
	"slices"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/chatalot/chatalot/sync/wake"
)

// The per-room group commit: what happens to events once send.go (or
// another operation of the package) has built them. Everything a /sync must
// see of an event is written in one transaction of storage's single
// writer, in the order of builder.write; memory and the wake follow only
// once it has committed (builder.published), so a reader never sees a change
// that could still be rolled back.
//
// Two levels of grouping meet here, for two reasons. The room's write lock
// orders the room's events, each built on the one before: sends queued
// while it is held are built as one group and committed with one write (a
// sendGroup). The single writer orders stream positions across rooms, and
// commits the writes of every room queued meanwhile in one transaction, so
// that a busy server pays one fsync per batch rather than per event; each
// write runs in its own savepoint, so a write that fails is rolled back
// alone (storage/writer.go).

// commitOpts are a commit's choices beyond its events. The zero value
// commits the events of an existing room.
type commitOpts struct {
	// NewRoom marks a room's first events: the rooms row (naming Creator)
	// is written first, and the room becomes known once committed.
	NewRoom bool
	Creator spec.UserID
	// Device and TxnID are the transaction the last event answers (a
	// redaction); a group of sends sets them per event (send.go).
	Device, TxnID string
	// Also writes more rows in the same transaction: a new room's alias
	// and directory entry, an upgrade's moved aliases.
	Also func(*storage.Tx) error
	// After is the write this one follows: the group of sends the events
	// were built on, still being written.
	After *storage.Pending
}

// commit persists the built events and waits: on success the new state is
// published and the users concerned are woken; on error nothing is stored
// and memory is unchanged.
func (b *builder) commit(ctx context.Context, o commitOpts) error {
	if len(b.evs) == 0 {
		return nil
	}
	err := b.submit(ctx, o).Wait()
	if err != nil {
		b.failed()
	}
	return err
}

// commitGroup submits a group of sends, built on the pipeline's newest group
// (after), and returns at once with the group in the room's pipeline. Its
// requests are answered once it is written; the room's write lock is held.
func (b *builder) commitGroup(ctx context.Context, after *storage.Pending, sends []builtSend, txns map[txnKey]*Event) *sendGroup {
	r := b.r
	g := &sendGroup{final: b.snap, done: make(chan struct{})}
	for k, ev := range txns {
		if g.events == nil {
			g.events = map[txnKey]spec.EventID{}
		}
		g.events[k] = ev.PDU.EventID()
	}
	g.write = b.submit(ctx, commitOpts{After: after})
	r.pushGroup(g)
	go func() {
		err := g.write.Wait()
		if err != nil {
			b.failed()
		} else {
			// Before groupDone forgets them: the commit's own hook may run
			// later, when its position is published.
			b.s.rememberTxns(b.evs)
		}
		r.groupDone(g, err)
		for _, p := range sends {
			p.answer(err)
		}
	}()
	return g
}

// failed forgets the positions of events whose write failed.
func (b *builder) failed() {
	for _, ev := range b.evs {
		ev.Position = 0
	}
}

// submit queues the write of the built events on storage's writer and
// returns at once. What can be done before the write is done here, under
// the room's lock but off the single writer: who to wake, and push's rule
// evaluation.
func (b *builder) submit(ctx context.Context, o commitOpts) *storage.Pending {
	if o.TxnID != "" {
		last := b.evs[len(b.evs)-1]
		last.DeviceID, last.TxnID = o.Device, o.TxnID
	}
	final := b.snap
	woken := b.s.usersToWake(b.base, b.evs, final)
	var hook func(*storage.Tx) error
	if b.s.hook != nil {
		hook = b.s.hook.PrepareCommit(b.r.id, b.evs, final)
	}
	return b.s.db.Submit(ctx, o.After, func(tx *storage.Tx) error {
		if err := b.write(tx, o, hook); err != nil {
			return err
		}
		pos := b.evs[len(b.evs)-1].Position
		tx.AfterCommit(func() { b.published(pos, final, woken, o.NewRoom) })
		return nil
	})
}

// write stores the events and everything derived from them, inside the
// writer's transaction.
func (b *builder) write(tx *storage.Tx, o commitOpts, hook func(*storage.Tx) error) error {
	if err := b.s.leases.fence(tx, b.r.id); err != nil {
		return err
	}
	if o.NewRoom {
		if err := insertRoom(tx, b.r, o.Creator, b.s.now().UnixMilli()); err != nil {
			return err
		}
	}
	for _, ev := range b.evs {
		ev.Position = tx.NextPosition()
		if err := insertEvent(tx, ev); err != nil {
			return err
		}
		if err := setCurrentState(tx, ev.PDU); err != nil {
			return err
		}
		if err := recordTxnID(tx, ev); err != nil {
			return err
		}
		if err := setResolvedState(tx, b.r.id, ev); err != nil {
			return err
		}
	}
	if err := applyRedactions(tx, b.redactions, b.evs); err != nil {
		return err
	}
	// The relations and search indexes change with the events.
	if err := indexEvents(tx, b.base, b.evs, b.redactions); err != nil {
		return err
	}
	if o.Also != nil {
		if err := o.Also(tx); err != nil {
			return err
		}
	}
	// Push's notifications and unread counts (CommitHook).
	if hook != nil {
		return hook(tx)
	}
	return nil
}

// published runs once the write has committed, in commit order: it makes
// the events and the state after them visible in memory, then notifies the
// users concerned.
func (b *builder) published(pos int64, final *snapshot, w toWake, newRoom bool) {
	// final may be the base of the next group, being built now: publish a
	// copy.
	snap := &snapshot{position: pos, state: final.state, extremity: final.extremity, forks: final.forks, depth: final.depth}
	snap.joinedCache.Store(final.joinedCache.Load())
	b.r.apply(b.evs, snap, b.redactions)
	b.s.rememberTxns(b.evs)
	b.s.publishMemberships(b.r, b.evs, newRoom)
	b.s.wake(b.r, pos, b.evs, w)
}

// wake notifies the users concerned by a room's events, published at pos.
func (s *Service) wake(r *liveRoom, pos int64, evs []*Event, w toWake) {
	c := wake.Change{Kind: wake.Timeline, Room: r.id, FilterState: w.filterState}
	// The room rose in bump_stamp order if its stamp is now one of these
	// events (a bump type, or the latest event when memory holds none).
	c.Bump = len(evs) > 0 && r.bumpStamp(pos) >= evs[0].Position
	if len(w.others) > 0 {
		s.notify.Notify(pos, c, w.others...)
	}
	if len(w.members) > 0 {
		c.Membership = true
		s.notify.Notify(pos, c, w.members...)
	}
}

// publishMemberships updates the per-user room index after a commit.
func (s *Service) publishMemberships(r *liveRoom, evs []*Event, newRoom bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if newRoom {
		s.rooms[r.id] = r
	}
	for _, ev := range evs {
		// State resolution's changes take effect after the event (dag.go).
		for p := range ev.changes {
			if p.Type() != spec.MRoomMember {
				continue
			}
			sk, _ := p.StateKey()
			s.setUserRoom(spec.UserID(sk), r.id, p.Content().Get("membership").String())
		}
	}
}

// toWake is whom a commit wakes and what it tells them: members are the
// users whose membership the events change (a joiner, an invitee, a kicked
// user), told so; others are everyone else joined after the events (and a
// non-member a member event names without changing it).
type toWake struct {
	others, members []spec.UserID
	filterState     bool // the events change state a room list filter reads
}

// filterStateTypes are the state a sliding sync list filter reads: the room
// type, encryption (is_encrypted) and a space's children (spaces).
var filterStateTypes = map[string]bool{spec.MRoomCreate: true, spec.MRoomEncryption: true, "m.space.child": true}

// usersToWake is whom the events, built on base, wake: everyone joined
// after them, and every user a member event names; those whose membership
// it changes are told so (a display name change is no membership change).
func (s *Service) usersToWake(base *snapshot, evs []*Event, final *snapshot) toWake {
	var w toWake
	var named map[spec.UserID]bool
	for _, ev := range evs {
		// What state resolution changed besides the event (dag.go) wakes
		// as the event's own change would.
		for p := range ev.changes {
			if _, ok := p.StateKey(); ok && filterStateTypes[p.Type()] {
				w.filterState = true
			}
			if p.Type() == spec.MRoomMember {
				sk, _ := p.StateKey()
				if named == nil {
					named = map[spec.UserID]bool{}
				}
				named[spec.UserID(sk)] = true
			}
		}
	}
	joined := final.joined()
	if named == nil {
		w.others = slices.Clone(joined)
		return w
	}
	changed := func(u spec.UserID) bool {
		was := ""
		if base != nil {
			was = base.membership(u)
		}
		return was != final.membership(u)
	}
	w.others = make([]spec.UserID, 0, len(joined))
	for _, u := range joined {
		if !named[u] || !changed(u) {
			w.others = append(w.others, u)
		}
	}
	for u := range named {
		switch {
		case changed(u):
			w.members = append(w.members, u)
		case final.membership(u) != spec.Join:
			w.others = append(w.others, u) // told, as before, though not joined
		}
	}
	return w
}

// The rows of the rooms package's own tables (store.go has their schema).

// insertRoom writes a new room's row.
func insertRoom(tx *storage.Tx, r *liveRoom, creator spec.UserID, ts int64) error {
	if _, err := tx.Exec(`INSERT INTO rooms (room_id, version, creator, created_ts) VALUES ($1, $2, $3, $4)`,
		string(r.id), string(r.version), string(creator), ts); err != nil {
		return fmt.Errorf("insert room: %w", err)
	}
	return nil
}

// insertEvent writes the event at its position.
func insertEvent(tx *storage.Tx, ev *Event) error {
	p := ev.PDU
	var stateKey any
	if sk, ok := p.StateKey(); ok {
		stateKey = sk
	}
	var device, txn any
	if ev.TxnID != "" {
		device, txn = ev.DeviceID, ev.TxnID
	}
	if _, err := tx.Exec(`INSERT INTO events (position, event_id, room_id, type, state_key, sender, origin_server_ts, depth, json, sender_device, txn_id)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		ev.Position, string(p.EventID()), string(p.RoomID()), p.Type(), stateKey, string(p.Sender()),
		p.OriginServerTS(), p.Depth(), string(p.JSON()), device, txn); err != nil {
		return fmt.Errorf("insert event: %w", err)
	}
	return nil
}

// setCurrentState makes a state event the room's current state at its
// (type, state_key): the state delta of one event.
func setCurrentState(tx *storage.Tx, p *events.PDU) error {
	sk, ok := p.StateKey()
	if !ok {
		return nil
	}
	if _, err := tx.Exec(`INSERT INTO room_state (room_id, type, state_key, event_id) VALUES ($1, $2, $3, $4)
		ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id`,
		string(p.RoomID()), p.Type(), sk, string(p.EventID())); err != nil {
		return fmt.Errorf("update room state: %w", err)
	}
	return nil
}

// recordTxnID records the transaction ID an event answers, so that a retry
// after a restart gets the same event.
func recordTxnID(tx *storage.Tx, ev *Event) error {
	if ev.TxnID == "" {
		return nil
	}
	p := ev.PDU
	if _, err := tx.Exec(`INSERT INTO txn_ids (user_id, device_id, scope, txn_id, event_id, ts) VALUES ($1, $2, $3, $4, $5, $6)`,
		string(p.Sender()), ev.DeviceID, txnScope(p), ev.TxnID, string(p.EventID()), p.OriginServerTS()); err != nil {
		return fmt.Errorf("record transaction ID: %w", err)
	}
	return nil
}

// applyRedactions rewrites stored events to their redacted form inside the
// commit's transaction.
func applyRedactions(tx *storage.Tx, redactions []*events.PDU, by []*Event) error {
	for _, p := range redactions {
		var redactor string
		for _, ev := range by {
			if ev.PDU.Type() == spec.MRoomRedaction && ev.PDU.Redacts() == p.EventID() {
				redactor = string(ev.PDU.EventID())
			}
		}
		if _, err := tx.Exec(`UPDATE events SET json = $1, redacted_by = $2 WHERE event_id = $3`,
			string(p.JSON()), redactor, string(p.EventID())); err != nil {
			return fmt.Errorf("redact stored event: %w", err)
		}
	}
	return nil
}

// indexEvents writes the relations and search rows of newly stored events
// and removes those of redacted ones. before is the room's state before the
// events (to know whether it was encrypted); the SQL is the indexes' own
// (relations.go, searchindex.go).
func indexEvents(tx *storage.Tx, before *snapshot, evs []*Event, redacted []*events.PDU) error {
	encrypted := before != nil && before.get(spec.MRoomEncryption, "") != nil
	for _, ev := range evs {
		if err := indexRelation(tx, ev); err != nil {
			return err
		}
		if err := indexSearch(tx, ev, encrypted); err != nil {
			return err
		}
		if sk, ok := ev.PDU.StateKey(); ok && sk == "" && ev.PDU.Type() == spec.MRoomEncryption {
			encrypted = true
		}
	}
	for _, p := range redacted {
		// A redacted child no longer relates to anything, and redacted
		// text is no longer searchable.
		if err := unindexRelation(tx, p.EventID()); err != nil {
			return err
		}
		if err := unindexSearch(tx, p.EventID()); err != nil {
			return err
		}
	}
	return nil
}

// The pipeline of a room's sends: a group is built on the state after the
// group before it while that one is still being written. Every other write
// drains the pipeline first (lockWrites).

// sendGroup is a group of sends written in one transaction.
type sendGroup struct {
	final  *snapshot        // the room's state after the group
	write  *storage.Pending // the group's write
	epoch  int
	seq    int
	events map[txnKey]spec.EventID // the group's transaction IDs
	done   chan struct{}           // closed once written (or failed): err is set
	err    error
}

// lockWrites takes the write lock for a write that is not a plain send: it
// also waits until every group of sends in flight is committed, so that the
// write is built on committed state and committed before the next.
func (r *liveRoom) lockWrites() {
	r.writeMu.Lock()
	r.drainPipeline()
}

// drainPipeline waits until every group of sends in flight is written; the
// write lock is held.
func (r *liveRoom) drainPipeline() {
	for {
		r.pipeMu.Lock()
		tail := r.pipeTail
		r.pipeMu.Unlock()
		if tail == nil {
			return
		}
		<-tail.done
	}
}

// tip is the state the next group of sends is built on, and the write it
// must follow (nil when the room's current state is committed).
func (r *liveRoom) tip() (*snapshot, *storage.Pending) {
	r.pipeMu.Lock()
	defer r.pipeMu.Unlock()
	if r.pipeTail != nil {
		return r.pipeTail.final, r.pipeTail.write
	}
	return r.cur.Load(), nil
}

// pushGroup makes g the pipeline's newest group.
func (r *liveRoom) pushGroup(g *sendGroup) {
	r.pipeMu.Lock()
	defer r.pipeMu.Unlock()
	r.pipeSeq++
	g.epoch, g.seq = r.pipeEpoch, r.pipeSeq
	r.pipeTail = g
	if len(g.events) > 0 && r.pipeTxns == nil {
		r.pipeTxns = map[txnKey]*sendGroup{}
	}
	for k := range g.events {
		r.pipeTxns[k] = g
	}
}

// groupDone records a group's outcome. A failure ends the pipeline the
// group is in, unless a newer one has already started.
func (r *liveRoom) groupDone(g *sendGroup, err error) {
	r.pipeMu.Lock()
	defer r.pipeMu.Unlock()
	if t := r.pipeTail; t != nil && (t == g || err != nil && t.epoch == g.epoch && t.seq > g.seq) {
		r.pipeTail = nil
		if err != nil {
			r.pipeEpoch++
		}
	}
	for k := range g.events {
		if r.pipeTxns[k] == g {
			delete(r.pipeTxns, k)
		}
	}
	g.err = err
	close(g.done)
}

// pendingTxn returns the group in flight that holds a transaction ID.
func (r *liveRoom) pendingTxn(k txnKey) (*sendGroup, spec.EventID) {
	r.pipeMu.Lock()
	defer r.pipeMu.Unlock()
	if g := r.pipeTxns[k]; g != nil {
		return g, g.events[k]
	}
	return nil, ""
}
