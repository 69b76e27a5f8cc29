package authrules

import (
	"bytes"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The protocol core (identifiers, events, auth rules, state resolution) is
// pure: no I/O, no database, no HTTP, no other package of the server. These
// tests hold it to that over the whole transitive closure of its imports, as
// `go list -deps` sees it, so that an import two packages down cannot bring
// storage in.

const module = "github.com/chatalot/chatalot"

// pureCore maps each pure package to the module packages its closure may
// hold besides itself.
var pureCore = map[string][]string{
	"spec":            nil,
	"events":          {"spec"},
	"rooms/authrules": {"spec", "events"},
	"rooms/stateres":  {"spec", "events", "rooms/authrules"},
}

// pureThirdParty is all the closure may hold from outside the module and the
// standard library: the JSON reader events uses, and its own dependencies.
var pureThirdParty = []string{
	"github.com/tidwall/gjson",
	"github.com/tidwall/match",
	"github.com/tidwall/pretty",
}

// impureStd are the standard packages (and their subpackages) that do I/O a
// pure package has no use for; so does net itself, matched alone since
// net/netip (spec) only parses. os and syscall are left out: fmt needs them.
var impureStd = []string{"database/sql", "net/http", "net/rpc", "net/smtp", "os/exec", "crypto/tls", "plugin"}

// buildTags are the tag sets the closure is checked under: none, and the
// project's (Makefile TAGS), since files can differ between them.
var buildTags = []string{"", "sqlite_fts5 goolm nomsgpack"}

func TestPureCoreImports(t *testing.T) {
	for _, tags := range buildTags {
		for pkg, allowed := range pureCore {
			t.Run(pkg+" tags="+strings.ReplaceAll(tags, " ", ","), func(t *testing.T) {
				root := module + "/" + pkg
				graph := goListDeps(t, tags, root)
				bad := impurities(graph, root, allowed)
				for _, b := range bad {
					if by := graph.cleanImporters(root, b, bad); len(by) > 0 {
						t.Errorf("%s must stay pure, but %s imports %s (import chain: %s)",
							pkg, strings.Join(by, ", "), b, strings.Join(graph.path(root, b), " -> "))
					}
				}
			})
		}
	}
}

// TestNothingImportsCmd keeps the binaries at the top of the import graph:
// no package of the module, tests included, imports one under cmd/ unless
// it belongs to the same binary.
func TestNothingImportsCmd(t *testing.T) {
	for _, tags := range buildTags {
		out := goList(t, tags, "-f",
			"{{.ImportPath}} {{join .Imports \" \"}} {{join .TestImports \" \"}} {{join .XTestImports \" \"}}",
			module+"/...")
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			fields := strings.Fields(line)
			if len(fields) == 0 {
				continue
			}
			pkg := fields[0]
			for _, imp := range fields[1:] {
				if bin := cmdBinary(imp); bin != "" && cmdBinary(pkg) != bin {
					t.Errorf("%s imports %s (tags %q): nothing may import a package under cmd/", pkg, imp, tags)
				}
			}
		}
	}
}

// cmdBinary is the cmd/<name> a module package belongs to, or "".
func cmdBinary(pkg string) string {
	rest, ok := strings.CutPrefix(pkg, module+"/cmd/")
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(rest, "/")
	return name
}

// impurities lists the packages of the graph that root may not depend on:
// module packages outside allowed, third-party packages outside
// pureThirdParty, and the impure standard packages.
func impurities(g depGraph, root string, allowed []string) []string {
	var bad []string
	for pkg, info := range g {
		switch {
		case pkg == root:
		case info.standard:
			for _, p := range impureStd {
				if pkg == p || strings.HasPrefix(pkg, p+"/") {
					bad = append(bad, pkg)
				}
			}
			if pkg == "net" {
				bad = append(bad, pkg)
			}
		case pkg == module || strings.HasPrefix(pkg, module+"/"):
			if !slices.Contains(allowed, strings.TrimPrefix(pkg, module+"/")) {
				bad = append(bad, pkg)
			}
		default:
			if !slices.ContainsFunc(pureThirdParty, func(p string) bool {
				return pkg == p || strings.HasPrefix(pkg, p+"/")
			}) {
				bad = append(bad, pkg)
			}
		}
	}
	slices.Sort(bad)
	return bad
}

// depGraph is the import graph of a closure: each package, whether it is
// in the standard library, and what it imports.
type depGraph map[string]depInfo

type depInfo struct {
	standard bool
	imports  []string
}

// cleanImporters lists the packages that import pkg and that root reaches
// without passing through a package of bad: where the closure turns
// impure. Packages only an impure one brings in are left out, so that one
// forbidden import is reported once and not with all that follow it.
func (g depGraph) cleanImporters(root, pkg string, bad []string) []string {
	var out []string
	seen := map[string]bool{root: true}
	queue := []string{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, next := range g[p].imports {
			if next == pkg {
				out = append(out, p)
			}
			if !seen[next] && !slices.Contains(bad, next) {
				seen[next] = true
				queue = append(queue, next)
			}
		}
	}
	slices.Sort(out)
	return out
}

// path is a shortest import chain from root to pkg.
func (g depGraph) path(root, pkg string) []string {
	from := map[string]string{root: ""}
	queue := []string{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p == pkg {
			var chain []string
			for ; p != ""; p = from[p] {
				chain = append(chain, p)
			}
			slices.Reverse(chain)
			return chain
		}
		for _, next := range g[p].imports {
			if _, seen := from[next]; !seen {
				from[next] = p
				queue = append(queue, next)
			}
		}
	}
	return []string{root, "?", pkg}
}

// goListDeps reads the import graph of pkg's closure.
func goListDeps(t *testing.T, tags, pkg string) depGraph {
	t.Helper()
	out := goList(t, tags, "-deps", "-f", "{{.ImportPath}} {{.Standard}} {{join .Imports \" \"}}", pkg)
	g := depGraph{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			t.Fatalf("go list: unexpected line %q", line)
		}
		g[fields[0]] = depInfo{standard: fields[1] == "true", imports: fields[2:]}
	}
	if _, ok := g[pkg]; !ok {
		t.Fatalf("go list -deps %s did not list the package itself", pkg)
	}
	return g
}

// goList runs the go command's list with the build tags. A missing go
// command fails the test: purity unchecked is not purity.
func goList(t *testing.T, tags string, args ...string) string {
	t.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to check imports: %v", err)
	}
	cmd := exec.Command(goCmd, append([]string{"list", "-tags", tags}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}
