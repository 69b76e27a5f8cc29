package stateres

import (
	"slices"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/rooms/authrules"
	"github.com/chatalot/chatalot/spec"
)

// FuzzResolve resolves state sets made of arbitrary picks of the events of
// the published scenarios' rooms: the state after START with the picked
// events applied. Whatever the picks, resolution must not fail internally,
// must not depend on the order of the state sets, and must hold the create
// event and only events of the room, each under its own key.
func FuzzResolve(f *testing.F) {
	file := loadScenarios(f, "published.json")
	type room struct {
		d     *dag
		names []string
	}
	var rooms []room
	for _, v := range []spec.RoomVersion{spec.RoomV11, spec.RoomV12} {
		for _, c := range file.Cases {
			d := buildDAG(f, v, file.Initial, c)
			var names []string
			for _, n := range c.Events {
				if d.byNode[n.ID].IsState() {
					names = append(names, n.ID)
				}
			}
			rooms = append(rooms, room{d, names})
		}
	}
	f.Add(uint8(0), []byte{0x01, 0x12, 0x23})
	f.Add(uint8(3), []byte{0x00, 0x10, 0x21, 0x05, 0x15})
	f.Add(uint8(13), []byte{0x02, 0x13, 0x04, 0x24, 0x35})
	f.Fuzz(func(t *testing.T, which uint8, picks []byte) {
		r := rooms[int(which)%len(rooms)]
		if len(r.names) == 0 {
			return
		}
		// Each pick: high nibble the state set (up to 4), low nibble the event.
		var applied [4][]string
		for _, p := range picks {
			set := int(p>>4) % len(applied)
			applied[set] = append(applied[set], r.names[int(p&0x0f)%len(r.names)])
		}
		var sets []authrules.StateMap
		for _, names := range applied {
			if names != nil {
				sets = append(sets, r.d.stateWith(names...))
			}
		}
		if len(sets) == 0 {
			return
		}
		got, err := Resolve(r.d.v, sets, r.d.fetch)
		if err != nil {
			if strings.Contains(err.Error(), "internal") {
				t.Fatal(err)
			}
			return
		}
		slices.Reverse(sets)
		again, err := Resolve(r.d.v, sets, r.d.fetch)
		if err != nil || !sameState(got, again) {
			t.Fatalf("the order of the state sets changed the result (%v)", err)
		}
		if got.Get(spec.MRoomCreate, "") == nil {
			t.Fatal("the result has no create event")
		}
		for k, ev := range got {
			if sk, _ := ev.StateKey(); ev.Type() != k.Type || sk != k.StateKey {
				t.Fatalf("%s under (%s, %s)", r.d.name(ev), k.Type, k.StateKey)
			}
			if _, ok := r.d.byID[ev.EventID()]; !ok {
				t.Fatalf("result holds an unknown event %s", ev.EventID())
			}
		}
	})
}
