package spec

import "testing"

// TestRoomVersionFeatures pins which room versions have each change, as the
// rooms/vN pages introduce them.
func TestRoomVersionFeatures(t *testing.T) {
	features := []struct {
		name  string
		has   func(RoomVersion) bool
		since int // first version with the feature; a negative value: versions before -since
	}{
		{"EventIDInEvent", RoomVersion.EventIDInEvent, -3},
		{"URLSafeEventIDs", RoomVersion.URLSafeEventIDs, 4},
		{"StrictCanonicalJSON", RoomVersion.StrictCanonicalJSON, 6},
		{"RedactionAuthRule", RoomVersion.RedactionAuthRule, -3},
		{"AliasesAuthRule", RoomVersion.AliasesAuthRule, -6},
		{"NotificationsAuthRule", RoomVersion.NotificationsAuthRule, 6},
		{"Knocking", RoomVersion.Knocking, 7},
		{"RestrictedJoins", RoomVersion.RestrictedJoins, 8},
		{"KnockRestricted", RoomVersion.KnockRestricted, 10},
		{"IntegerPowerLevels", RoomVersion.IntegerPowerLevels, 10},
		{"StateResV2", RoomVersion.StateResV2, 2},
		{"AtLeast11", RoomVersion.AtLeast11, 11},
		{"AtLeast12", RoomVersion.AtLeast12, 12},
	}
	if len(SupportedRoomVersions) != 12 {
		t.Fatalf("%d supported versions, want the 12 stable ones", len(SupportedRoomVersions))
	}
	for i, v := range SupportedRoomVersions {
		n := i + 1
		if !v.Supported() {
			t.Errorf("v%s not supported", v)
		}
		for _, f := range features {
			want := n >= f.since
			if f.since < 0 {
				want = n < -f.since
			}
			if got := f.has(v); got != want {
				t.Errorf("v%s %s = %v, want %v", v, f.name, got, want)
			}
		}
	}
	for _, v := range []RoomVersion{"", "0", "13", "1.0", "org.matrix.msc1234", "01"} {
		if v.Supported() {
			t.Errorf("%q supported", v)
		}
		for _, f := range features {
			if f.has(v) {
				t.Errorf("unknown version %q has %s", v, f.name)
			}
		}
	}
}
