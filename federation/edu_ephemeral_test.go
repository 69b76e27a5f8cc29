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
	for i := range maxQueuedEDUs + 50 {
		q.addEDU(json.RawMessage(strconv.Itoa(i)))
	}
	if len(q.edus) != maxQueuedEDUs || string(q.edus[0]) != "50" {
		t.Fatalf("kept %d EDUs from %s, want %d from 50", len(q.edus), q.edus[0], maxQueuedEDUs)
	}
	first := q.takeEDUs()
	if len(first) != maxEDUs || string(first[0]) != "50" || len(q.edus) != maxQueuedEDUs-maxEDUs {
		t.Fatalf("took %d from %s, %d left", len(first), first[0], len(q.edus))
	}
	q.addEDU(json.RawMessage(`"new"`))
	q.restoreEDUs(first)
	// 201 EDUs for a bound of 200: the oldest, 50, goes.
	if string(q.edus[0]) != "51" || string(q.edus[len(q.edus)-1]) != `"new"` {
		t.Fatalf("after a failed transaction the queue runs %s … %s", q.edus[0], q.edus[len(q.edus)-1])
	}
	if len(q.edus) != maxQueuedEDUs {
		t.Fatalf("%d EDUs kept after the restore, want the bound %d", len(q.edus), maxQueuedEDUs)
	}
}
