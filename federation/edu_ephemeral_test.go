package federation

import (
	"encoding/json"
	"strconv"
	"testing"
)

// The EDUs kept for a destination are bounded (the newest kept), taken a
// transaction's worth at a time, and put back in order when the
// transaction fails.
func TestQueuedEDUsAreBoundedAndRestoredInOrder(t *testing.T) {
	q := &queue{wake: make(chan bool, 1)}
	for i := range maxEphemeral + 50 {
		q.addEphemeral(json.RawMessage(strconv.Itoa(i)))
	}
	if len(q.ephemeral) != maxEphemeral || string(q.ephemeral[0]) != "50" {
		t.Fatalf("kept %d EDUs from %s, want %d from 50", len(q.ephemeral), q.ephemeral[0], maxEphemeral)
	}
	first := q.takeEphemeral(maxEDUs)
	if len(first) != maxEDUs || string(first[0]) != "50" || len(q.ephemeral) != maxEphemeral-maxEDUs {
		t.Fatalf("took %d from %s, %d left", len(first), first[0], len(q.ephemeral))
	}
	q.addEphemeral(json.RawMessage(`"new"`))
	q.putBackEphemeral(first)
	// 201 EDUs for a bound of 200: the oldest, 50, goes.
	if string(q.ephemeral[0]) != "51" || string(q.ephemeral[len(q.ephemeral)-1]) != `"new"` {
		t.Fatalf("after a failed transaction the queue runs %s … %s", q.ephemeral[0], q.ephemeral[len(q.ephemeral)-1])
	}
	if len(q.ephemeral) != maxEphemeral {
		t.Fatalf("%d EDUs kept after the restore, want the bound %d", len(q.ephemeral), maxEphemeral)
	}
}
