package main

import (
	"context"
	"fmt"
)

// Issue 12: "register: 200 users registered, 16 at a time". Almost all of
// the cost is the password hash (Argon2id with the server's configured
// parameters); VmHWM shows how many hashes the server let run at once, since
// each holds its memory cost while it runs.
const (
	registerUsers    = 200
	registerInFlight = 16
)

func runRegister(r *Run) error {
	var lat latencies
	w, err := begin(r.ctx, r.srv)
	if err != nil {
		return err
	}
	r.logf("registering %d users, %d at a time", registerUsers, registerInFlight)
	err = pool(r.ctx, registerUsers, registerInFlight, func(ctx context.Context, i int) error {
		return lat.timed(func() error {
			_, err := register(ctx, r.hc, r.srv.BaseURL, &r.retries, fmt.Sprintf("reg%d", i))
			return err
		})
	})
	if err != nil {
		return err
	}
	u, err := w.end(r.ctx)
	if err != nil {
		return err
	}
	r.res.add("users", registerUsers)
	r.res.add("users_per_s", registerUsers/u.Wall.Seconds())
	r.res.addLatency("register_", lat.sorted())
	r.res.addUsage("", u, registerUsers, "user")
	return nil
}
