package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/chatalot/chatalot/spec"
)

// settingTypes names what a string setting holds when it is more than
// text, for help and error messages. Integer and boolean settings are
// named by their Go type; settings whose key ends in _bytes are sizes.
var settingTypes = map[string]string{
	"listen":                         "HOST:PORT",
	"metrics_listen":                 "HOST:PORT",
	"federation_listen":              "HOST:PORT",
	"federation_tls_cert":            "FILE",
	"federation_tls_key":             "FILE",
	"federation_ca_file":             "FILE",
	"public_baseurl":                 "URL",
	"support_page":                   "URL",
	"data_dir":                       "DIR",
	"jwt_key_file":                   "FILE",
	"shutdown_grace":                 "duration",
	"read_header_timeout":            "duration",
	"body_idle_timeout":              "duration",
	"write_idle_timeout":             "duration",
	"oauth_access_token_lifetime":    "duration",
	"turn_user_lifetime":             "duration",
	"access_token_lifetime":          "duration",
	"refresh_token_lifetime":         "duration",
	"push_retry_backoff":             "duration",
	"push_retry_limit":               "duration",
	"retention_default_max_lifetime": "duration",
	"retention_min_lifetime":         "duration",
	"retention_max_lifetime":         "duration",
	"retention_purge_interval":       "duration",

	// Media retention and forgotten rooms.
	"media_retention_local_unaccessed":  "duration",
	"media_retention_max_age":           "duration",
	"media_retention_interval":          "duration",
	"media_retention_remote_unaccessed": "duration",
	"forgotten_room_retention_period":   "duration",
}

// settingType is the word help shows after a setting's flag: duration,
// integer, size, HOST:PORT… (empty for booleans, which take no value).
func settingType(f reflect.StructField) string {
	key := f.Tag.Get("toml")
	switch f.Type.Kind() {
	case reflect.Bool:
		return ""
	case reflect.Int64:
		if strings.HasSuffix(key, "_bytes") {
			return "size"
		}
		return "integer"
	}
	if t, ok := settingTypes[key]; ok {
		return t
	}
	if strings.HasPrefix(key, "rate_limit_") {
		return "COUNT/PERIOD"
	}
	return "string"
}

// decodeConfigFile reads a TOML file into c. A file that is not TOML is an
// error; every key that is unknown or has the wrong type is a problem of
// its own, so that one run of `config check` names them all.
func decodeConfigFile(path string, c *Config) (ConfigError, error) {
	var raw map[string]any
	if _, err := toml.DecodeFile(path, &raw); err != nil {
		return nil, err
	}
	byKey := map[string]reflect.StructField{}
	for _, f := range fields() {
		byKey[f.Tag.Get("toml")] = f
	}
	var problems ConfigError
	v := reflect.ValueOf(c).Elem()
	for key, val := range raw {
		f, ok := byKey[key]
		if !ok {
			problems = append(problems, Problem{key, "unknown key" + suggestion(key, byKey)})
			continue
		}
		if err := setTOMLValue(v.FieldByIndex(f.Index), val); err != nil {
			problems = append(problems, Problem{key, fmt.Sprintf("must be %s, not %s", wantedTOML(f), describeTOML(val))})
		}
	}
	return problems, nil
}

// setTOMLValue stores one decoded TOML value in a field of the same kind.
func setTOMLValue(field reflect.Value, val any) error {
	switch x := val.(type) {
	case string:
		if field.Kind() == reflect.String {
			field.SetString(x)
			return nil
		}
	case bool:
		if field.Kind() == reflect.Bool {
			field.SetBool(x)
			return nil
		}
	case int64:
		if field.Kind() == reflect.Int64 {
			field.SetInt(x)
			return nil
		}
	}
	return errors.New("wrong type")
}

// wantedTOML says what a field's TOML value looks like.
func wantedTOML(f reflect.StructField) string {
	switch f.Type.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int64:
		return "a whole number without quotes"
	}
	switch t := settingType(f); t {
	case "duration":
		return `a duration in quotes, such as "10s" or "1h"`
	case "string":
		return "a string in quotes"
	default:
		return "a string in quotes (" + t + ")"
	}
}

func describeTOML(val any) string {
	switch x := val.(type) {
	case string:
		return fmt.Sprintf("the string %q", x)
	case bool:
		return fmt.Sprintf("the boolean %v", x)
	case int64:
		return fmt.Sprintf("the integer %d", x)
	case float64:
		return fmt.Sprintf("the number %v", x)
	case map[string]any:
		return "a table"
	case []any, []map[string]any:
		return "an array"
	}
	return fmt.Sprintf("%v", val)
}

// suggestion is ", did you mean KEY?" when a known key is a small typo
// away, else empty.
func suggestion[T any](name string, known map[string]T) string {
	best, dist := "", 3
	for k := range known {
		if d := editDistance(name, k); d < dist || d == dist && k < best {
			best, dist = k, d
		}
	}
	if best == "" || dist > 2 || len(name) < 4 {
		return ""
	}
	return "; did you mean " + best + "?"
}

// editDistance is the Levenshtein distance of two short ASCII names.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// otherVariables are CHATALOT_* variables that are not settings.
var otherVariables = map[string]bool{"CHATALOT_CONFIG": true, "CHATALOT_CPU_PROFILE": true, "CHATALOT_HEAP_PROFILE": true}

// unknownVariables checks the CHATALOT_* environment variables that are not
// settings. One a typo away from a setting (CHATALOT_SERVERNAME) is a
// problem: the operator meant that setting and would otherwise run without
// it. Others (a test suite's own variables) are only worth a warning.
func unknownVariables(environ []string) (problems ConfigError, warnings []string) {
	known := map[string]bool{}
	for _, f := range fields() {
		known[envName(f)] = true
	}
	for name := range otherVariables {
		known[name] = true
	}
	var names []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "CHATALOT_") && !known[name] {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		if s := suggestion(name, known); s != "" {
			problems = append(problems, Problem{name, "not a Chatalot setting" + s})
			continue
		}
		warnings = append(warnings, name+" is not a Chatalot setting; it is ignored")
	}
	return problems, warnings
}

// validateAddresses checks the settings that end up in every user ID and
// in the listening socket.
func (c *Config) validateAddresses(add func(key, format string, args ...any)) {
	if err := checkHostPort(c.Listen); err != nil {
		add("listen", "%q: %v", c.Listen, err)
	}
	// A metrics_listen that is not HOST:PORT at all is validateMetrics'
	// to report, and only when metrics are on.
	if _, _, err := net.SplitHostPort(c.MetricsListen); err == nil {
		if err := checkHostPort(c.MetricsListen); err != nil {
			add("metrics_listen", "%q: %v", c.MetricsListen, err)
		}
	}
	name := c.ServerName
	switch {
	case !validServerName(name):
		// Validate says so.
	case strings.ToLower(name) != name:
		add("server_name", "%q has capital letters: write it in lower case (%q); it becomes part of every user ID as written", name, strings.ToLower(name))
	case serverNameHasPort(name) && !c.Federation:
		add("server_name", "%q has a port: use the host name alone; clients find the server's port through public_baseurl and /.well-known/matrix/client", name)
	}
}

// checkHostPort accepts HOST:PORT with a numeric port 0–65535 (0: any free
// port).
func checkHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("not HOST:PORT, such as 127.0.0.1:8008")
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 || strings.HasPrefix(port, "+") {
		return fmt.Errorf("the port %q is not a number from 0 to 65535", port)
	}
	return nil
}

func validServerName(name string) bool {
	_, err := spec.ParseServerName(name)
	return err == nil
}

func serverNameHasPort(name string) bool {
	if strings.HasPrefix(name, "[") {
		_, rest, _ := strings.Cut(name, "]")
		return strings.HasPrefix(rest, ":")
	}
	return strings.Contains(name, ":")
}

// checkDataDir is what `config check` adds to the validation: the data
// directory must be a directory this user can write, which the README has
// be the service's own user. One that does not exist yet is only a
// warning: the server creates it at the first start (under systemd,
// StateDirectory= does), if it may.
func checkDataDir(dir string) (problem *Problem, warning string) {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Sprintf("the data directory %s does not exist yet: the first start creates it (the server needs write access to %s for that, or systemd's StateDirectory=)", dir, filepath.Dir(filepath.Clean(dir)))
	case err != nil:
		return &Problem{"data_dir", err.Error()}, ""
	case !fi.IsDir():
		return &Problem{"data_dir", fmt.Sprintf("%s is not a directory", dir)}, ""
	}
	f, err := os.CreateTemp(dir, ".chatalot-check-*")
	if err != nil {
		return &Problem{"data_dir", fmt.Sprintf("the data directory %s is not writable by this user (uid %d): %v", dir, os.Geteuid(), errors.Unwrap(err))}, ""
	}
	f.Close()
	os.Remove(f.Name())
	return nil, ""
}
