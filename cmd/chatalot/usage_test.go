package main

import (
	"reflect"
	"testing"
	"time"
)

// TestDurationSettingsSayDuration: help and config check call a setting
// whose default is a duration a "duration", so that an operator knows to
// write "30s" and not 30 (write_idle_timeout was once shown as a string).
func TestDurationSettingsSayDuration(t *testing.T) {
	d := reflect.ValueOf(defaults())
	for _, f := range fields() {
		v := d.FieldByIndex(f.Index)
		if v.Kind() != reflect.String || v.String() == "" {
			continue
		}
		if _, err := time.ParseDuration(v.String()); err != nil {
			continue
		}
		if typ := settingType(f); typ != "duration" {
			t.Errorf("%s (default %s) is shown as %q, want duration", f.Tag.Get("toml"), v.String(), typ)
		}
	}
}
