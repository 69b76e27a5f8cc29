package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// metric is one reported figure; the unit is part of the name
// (…_ms, …_s, …_mib, …_per_s).
type metric struct {
	Name  string
	Value float64
}

// Result is everything one scenario run reports.
type Result struct {
	Scenario string
	Params   map[string]int // the growth parameters this run used
	Metrics  []metric       // in the order they are printed
	Failures []string       // correctness failures: the run fails
	Problems []string       // what the server logged or did wrong (errors, crash)
	Err      string         // the scenario could not finish
}

func (r *Result) add(name string, v float64) { r.Metrics = append(r.Metrics, metric{name, v}) }

// addCount adds a count that must be zero for the run to pass.
func (r *Result) addCount(name string, n int) {
	r.add(name, float64(n))
	if n != 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%s = %d", name, n))
	}
}

func (r *Result) failf(format string, args ...any) {
	r.Failures = append(r.Failures, fmt.Sprintf(format, args...))
}

// addUsage reports a phase's wall time, CPU and, for n units of work, the
// server's CPU per unit.
func (r *Result) addUsage(prefix string, u usage, n int, unit string) {
	r.add(prefix+"wall_s", seconds(u.Wall))
	r.add(prefix+"server_cpu_s", seconds(u.ServerCPU))
	r.add(prefix+"client_cpu_s", seconds(u.ClientCPU))
	if n > 0 {
		r.add(fmt.Sprintf("%sserver_cpu_ms_per_%s", prefix, unit), ms(u.ServerCPU)/float64(n))
	}
	if u.NotQuiet {
		r.Problems = append(r.Problems, fmt.Sprintf("%sserver CPU still rising %v after the phase ended", prefix, quietLimit))
	}
}

// addLatency reports p50, p99 and max of sorted durations.
func (r *Result) addLatency(prefix string, sorted []time.Duration) {
	r.add(prefix+"p50_ms", ms(percentile(sorted, 50)))
	r.add(prefix+"p99_ms", ms(percentile(sorted, 99)))
	r.add(prefix+"max_ms", ms(percentile(sorted, 100)))
}

func (r *Result) failed() bool {
	return r.Err != "" || len(r.Failures) > 0 || r.crashed()
}

func (r *Result) crashed() bool {
	for _, p := range r.Problems {
		if strings.HasPrefix(p, "server exited during") || strings.HasPrefix(p, "exit after SIGTERM") {
			return true
		}
	}
	return false
}

func (r *Result) title() string {
	if len(r.Params) == 0 {
		return r.Scenario
	}
	keys := make([]string, 0, len(r.Params))
	for k := range r.Params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(r.Scenario)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%d", k, r.Params[k])
	}
	return b.String()
}

// printTable writes one table for all results, then what went wrong in
// each.
func printTable(w io.Writer, results []*Result) {
	t := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(t, "scenario\tfigure\tvalue")
	fmt.Fprintln(t, "--------\t------\t-----")
	for i, r := range results {
		if i > 0 {
			fmt.Fprintln(t, "\t\t")
		}
		name := r.title()
		for _, m := range r.Metrics {
			fmt.Fprintf(t, "%s\t%s\t%s\n", name, m.Name, formatValue(m.Value))
			name = ""
		}
		status := "ok"
		if r.failed() {
			status = "FAILED"
		}
		fmt.Fprintf(t, "%s\tresult\t%s\n", name, status)
	}
	t.Flush()
	for _, r := range results {
		if len(r.Failures) == 0 && r.Err == "" && len(r.Problems) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s:\n", r.title())
		for _, f := range r.Failures {
			fmt.Fprintf(w, "  failure: %s\n", indent(f))
		}
		if r.Err != "" {
			fmt.Fprintf(w, "  error: %s\n", indent(r.Err))
		}
		for _, p := range r.Problems {
			fmt.Fprintf(w, "  server: %s\n", indent(p))
		}
	}
}

func indent(s string) string { return strings.ReplaceAll(s, "\n", "\n      ") }

// formatValue prints integers as integers and other values with three
// significant digits or so.
func formatValue(v float64) string {
	switch {
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case math.Abs(v) >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

// jsonResult is the -json form: metrics as one object.
type jsonResult struct {
	Scenario string             `json:"scenario"`
	Params   map[string]int     `json:"params,omitempty"`
	OK       bool               `json:"ok"`
	Metrics  map[string]float64 `json:"metrics"`
	Failures []string           `json:"failures,omitempty"`
	Problems []string           `json:"server_problems,omitempty"`
	Err      string             `json:"error,omitempty"`
}

func printJSON(w io.Writer, results []*Result) error {
	out := make([]jsonResult, 0, len(results))
	for _, r := range results {
		m := make(map[string]float64, len(r.Metrics))
		for _, x := range r.Metrics {
			m[x.Name] = x.Value
		}
		out = append(out, jsonResult{r.Scenario, r.Params, !r.failed(), m, r.Failures, r.Problems, r.Err})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
