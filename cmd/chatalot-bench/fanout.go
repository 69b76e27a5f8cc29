package main

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Issue 12: "fanout: one room, 50 members each in a /sync long-poll loop;
// 4 senders send 500 messages total, 16 in flight" and "fanout-rate: the same
// room; 10 messages/s for 20 s". The senders are members too, so a message
// is delivered to every member, its sender included: a delivery is one
// receiver seeing one event.
const (
	fanoutMessages = 500
	fanoutInFlight = 16
	fanoutSenders  = 4
	rateInterval   = 100 * time.Millisecond
)

// rateTotal is 10 messages/s for 20 s (a variable so that the tests can
// shorten it).
var rateTotal = 200

// fanoutRoom is the set-up both fanout scenarios share: the room, its
// members, and every member long-polling.
type fanoutRoom struct {
	roomID  string
	members []*Client
	aud     *audience
}

func setupFanout(r *Run) (*fanoutRoom, error) {
	members, err := r.register("fan", r.p.Members)
	if err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	roomID, err := members[0].CreateRoom(r.ctx)
	if err != nil {
		return nil, err
	}
	r.logf("%d members join %s", len(members)-1, roomID)
	if err := r.joinAll(members[1:], roomID); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	r.logf("%d members start long-polling", len(members))
	aud, err := listen(r.ctx, members)
	if err != nil {
		return nil, fmt.Errorf("initial sync: %w", err)
	}
	return &fanoutRoom{roomID: roomID, members: members, aud: aud}, nil
}

func runFanout(r *Run) error {
	return fanout(r, func(ctx context.Context, f *fanoutRoom, sent *sentLog) {
		pool(ctx, fanoutMessages, fanoutInFlight, func(ctx context.Context, i int) error {
			sent.send(ctx, f.members[i%fanoutSenders], f.roomID, int64(i))
			return nil
		})
	})
}

func runFanoutRate(r *Run) error {
	return fanout(r, func(ctx context.Context, f *fanoutRoom, sent *sentLog) {
		tick := time.NewTicker(rateInterval)
		defer tick.Stop()
		var wg sync.WaitGroup
		for i := range rateTotal {
			if i > 0 {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
			wg.Add(1)
			go func() { // a slow answer must not delay the next send
				defer wg.Done()
				sent.send(ctx, f.members[i%fanoutSenders], f.roomID, int64(i))
			}()
		}
		wg.Wait()
	})
}

// fanout sets the room up, measures sendAll and the deliveries it causes,
// and checks that every member saw every message exactly once.
func fanout(r *Run, sendAll func(context.Context, *fanoutRoom, *sentLog)) error {
	f, err := setupFanout(r)
	if err != nil {
		return err
	}
	defer f.aud.stop()

	w, err := begin(r.ctx, r.srv)
	if err != nil {
		return err
	}
	r.logf("sending")
	sent := newSentLog()
	sendAll(r.ctx, f, sent)
	target := int64(len(f.members) * sent.count())
	if !f.aud.await(r.ctx, target, r.p.DeliverTimeout) {
		r.logf("not every delivery arrived within %v", r.p.DeliverTimeout)
	}
	allDelivered := time.Since(sent.first)
	u, err := w.end(r.ctx)
	if err != nil {
		return err
	}
	f.aud.stop()

	r.res.add("members", float64(len(f.members)))
	sent.report(r.res, "")
	f.aud.check(r.res, sent)
	r.res.add("all_delivered_s", allDelivered.Seconds())
	r.res.addUsage("", u, 0, "")
	if d := f.aud.unique.Load(); d > 0 {
		r.res.add("server_cpu_s_per_1k_deliveries", ms(u.ServerCPU)/float64(d))
	}
	if n := sent.count(); n > 0 {
		r.res.add("server_cpu_ms_per_event", ms(u.ServerCPU)/float64(n))
	}
	return nil
}
