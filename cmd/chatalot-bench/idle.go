package main

import (
	"fmt"
	"time"
)

// Issue 12: "idle: server started and left alone for 10 s". What it costs to
// keep a server running that nobody uses: CPU over the 10 s and the memory
// it holds (the runner adds RSS and VmHWM at the end).
var idleFor = 10 * time.Second // a variable so that the tests can shorten it

func runIdle(r *Run) error {
	r.res.add("startup_ms", ms(r.srv.StartedIn))
	w, err := begin(r.ctx, r.srv)
	if err != nil {
		return err
	}
	select {
	case <-r.ctx.Done():
		return r.ctx.Err()
	case <-time.After(idleFor):
	}
	u, err := w.end(r.ctx)
	if err != nil {
		return err
	}
	r.res.addUsage("", u, 0, "")
	r.res.add("server_cpu_ms_per_idle_s", ms(u.ServerCPU)/idleFor.Seconds())
	if !r.srv.Alive() {
		return fmt.Errorf("the server exited while idle")
	}
	return nil
}
