package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// TestNoGinContextAsContext: no *gin.Context is used as a context.Context
// (or any other interface) anywhere in the module, tests included; handlers
// pass c.Request.Context().
//
// Why: gin reuses a Context for the next request as soon as the handler
// returns, but database/sql keeps the context it is given (Rows watches
// ctx.Done() from a goroutine until the rows are closed), and so may a
// goroutine or a context derived with context.WithoutCancel. Given c, that
// later read of c races with gin resetting it — `go test -race` reports it —
// and a query can be cancelled by an unrelated request. The request's own
// context has none of that: it lives as long as anything holds it.
//
// The check type-checks every package with go/types against the export
// data `go list -export` produces, so it follows types, not names: a
// *gin.Context reported here really is converted to an interface (call
// argument, assignment, return, composite literal, conversion, channel send),
// asserted back from one, or captured by a go statement.
func TestNoGinContextAsContext(t *testing.T) {
	if testing.Short() {
		t.Skip("type-checks the whole module")
	}
	root, pkgs := listModule(t)
	var found []string
	checked := 0
	for _, p := range pkgs {
		if !p.target {
			continue
		}
		files := make([]string, len(p.GoFiles))
		for i, f := range p.GoFiles {
			files[i] = filepath.Join(p.Dir, f)
		}
		found = append(found, checkGinContext(t, pkgs, p, files)...)
		checked++
	}
	if checked < 10 {
		t.Fatalf("only %d packages checked: the package listing is wrong", checked)
	}
	sort.Strings(found)
	for _, f := range found {
		if rel, err := filepath.Rel(root, f); err == nil {
			f = rel
		}
		t.Errorf("%s (use c.Request.Context())", f)
	}
}

// TestGinContextCheckFindsMisuse: the check above reports each kind of
// misuse, so that its silence means something.
func TestGinContextCheckFindsMisuse(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the module's export data")
	}
	_, pkgs := listModule(t)
	var self *listedPackage
	for _, p := range pkgs {
		if strings.HasSuffix(p.ImportPath, "/api") {
			self = p
		}
	}
	if self == nil {
		t.Fatal("api package not listed")
	}
	const src = `package bad

import (
	"context"
	"database/sql"

	"github.com/gin-gonic/gin"
)

type deps struct{ ctx context.Context }

func query(db *sql.DB, c *gin.Context) {
	db.QueryRowContext(c, "SELECT 1")               // argument
	_ = context.WithoutCancel(c)                     // argument
	var ctx context.Context = c                      // declaration
	ctx = c                                          // assignment
	_ = deps{ctx: c}                                 // field
	_ = []context.Context{c}                         // element
	_ = context.Context(c)                           // conversion
	go func() { _ = c.Param("x") }()                 // capture
	_, _ = ctx.(*gin.Context)                        // assertion
	_ = db.QueryRowContext(c.Request.Context(), "") // fine
}

func ret(c *gin.Context) context.Context { return c } // return
`
	dir := t.TempDir()
	file := filepath.Join(dir, "bad.go")
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	got := checkGinContext(t, pkgs, self, []string{file})
	lines := map[string]bool{}
	for _, g := range got {
		lines[strings.Split(strings.TrimPrefix(g, file+":"), ":")[0]] = true
	}
	for i, l := range strings.Split(src, "\n") {
		want := strings.Contains(l, "// ") && !strings.Contains(l, "// fine")
		if lines[fmt.Sprint(i+1)] != want {
			t.Errorf("line %d %q: reported %v, want %v", i+1, strings.TrimSpace(l), lines[fmt.Sprint(i+1)], want)
		}
	}
}

type listedPackage struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	Export     string
	ImportMap  map[string]string
	Module     *struct{ Path string }
	Error      *struct{ Err string }

	target bool // a package of this module to check
}

// listModule runs go list -export over the module and its tests, with the
// Makefile's build tags, and marks the packages to check: each of the
// module's packages in its test variant (its own files plus its _test.go
// files) where it has one, the plain package otherwise.
func listModule(t *testing.T) (root string, pkgs map[string]*listedPackage) {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	root = filepath.Dir(strings.TrimSpace(string(gomod)))
	cmd := exec.Command("go", "list", "-e", "-json", "-export", "-deps", "-test",
		"-tags", "sqlite_fts5 goolm nomsgpack", "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	const module = "github.com/chatalot/chatalot"
	pkgs = map[string]*listedPackage{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		p := new(listedPackage)
		if err := dec.Decode(p); err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs[p.ImportPath] = p
	}
	for id, p := range pkgs {
		if p.Module == nil || p.Module.Path != module || strings.HasSuffix(id, ".test") || len(p.GoFiles) == 0 {
			continue
		}
		if p.Error != nil {
			t.Fatalf("%s: %s", id, p.Error.Err)
		}
		if _, ok := pkgs[id+" ["+id+".test]"]; ok {
			continue // checked as its test variant
		}
		p.target = true
	}
	return root, pkgs
}

// checkGinContext type-checks files as package p (its imports resolved as
// go list resolved p's) and returns the misuses of *gin.Context found, one
// "file:line:col: what" each.
func checkGinContext(t *testing.T, pkgs map[string]*listedPackage, p *listedPackage, files []string) []string {
	t.Helper()
	fset := token.NewFileSet()
	var syntax []*ast.File
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		syntax = append(syntax, f)
	}
	lookup := func(path string) (io.ReadCloser, error) {
		id := path
		if m, ok := p.ImportMap[path]; ok {
			id = m
		}
		dep, ok := pkgs[id]
		if !ok || dep.Export == "" {
			return nil, fmt.Errorf("no export data for %s", id)
		}
		return os.Open(dep.Export)
	}
	info := &types.Info{
		Types: map[ast.Expr]types.TypeAndValue{},
		Defs:  map[*ast.Ident]types.Object{},
		Uses:  map[*ast.Ident]types.Object{},
	}
	conf := types.Config{Importer: importer.ForCompiler(fset, "gc", lookup)}
	if _, err := conf.Check(p.ImportPath, fset, syntax, info); err != nil {
		t.Fatalf("type-checking %s: %v", p.ImportPath, err)
	}
	v := &ginVisitor{fset: fset, info: info}
	for _, f := range syntax {
		v.walk(f, nil)
	}
	return v.found
}

type ginVisitor struct {
	fset  *token.FileSet
	info  *types.Info
	found []string
}

func isGinContext(t types.Type) bool {
	ptr, ok := t.(*types.Pointer)
	if !ok {
		return false
	}
	named, ok := ptr.Elem().(*types.Named)
	return ok && named.Obj().Name() == "Context" && named.Obj().Pkg() != nil &&
		named.Obj().Pkg().Path() == "github.com/gin-gonic/gin"
}

func (v *ginVisitor) report(pos token.Pos, format string, args ...any) {
	v.found = append(v.found, fmt.Sprintf("%s: %s", v.fset.Position(pos), fmt.Sprintf(format, args...)))
}

// into reports e if it is a *gin.Context that lands in a slot of type to.
func (v *ginVisitor) into(e ast.Expr, to types.Type, what string) {
	if to != nil && isGinContext(v.info.TypeOf(e)) && types.IsInterface(to) {
		v.report(e.Pos(), "*gin.Context as %s (%s)", types.TypeString(to, nil), what)
	}
}

// walk inspects n; sig is the signature of the function whose body n is in,
// for return statements.
func (v *ginVisitor) walk(n ast.Node, sig *types.Signature) {
	ast.Inspect(n, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.FuncDecl:
			if n.Body != nil {
				v.walk(n.Body, v.info.Defs[n.Name].Type().(*types.Signature))
			}
			return false
		case *ast.FuncLit:
			v.walk(n.Body, v.info.TypeOf(n).(*types.Signature))
			return false
		case *ast.CallExpr:
			if tv := v.info.Types[n.Fun]; tv.IsType() {
				if len(n.Args) == 1 {
					v.into(n.Args[0], tv.Type, "conversion")
				}
				return true
			}
			fsig, ok := v.info.TypeOf(n.Fun).Underlying().(*types.Signature)
			if !ok {
				return true
			}
			params := fsig.Params()
			for i, a := range n.Args {
				var pt types.Type
				switch {
				case fsig.Variadic() && i >= params.Len()-1:
					pt = params.At(params.Len() - 1).Type()
					if n.Ellipsis == token.NoPos {
						pt = pt.(*types.Slice).Elem()
					}
				case i < params.Len():
					pt = params.At(i).Type()
				}
				v.into(a, pt, "argument to "+types.ExprString(n.Fun))
			}
		case *ast.AssignStmt:
			if n.Tok != token.DEFINE && len(n.Lhs) == len(n.Rhs) {
				for i := range n.Lhs {
					v.into(n.Rhs[i], v.info.TypeOf(n.Lhs[i]), "assignment")
				}
			}
		case *ast.ValueSpec:
			if n.Type != nil {
				for _, e := range n.Values {
					v.into(e, v.info.TypeOf(n.Type), "declaration")
				}
			}
		case *ast.ReturnStmt:
			if sig != nil && sig.Results().Len() == len(n.Results) {
				for i, e := range n.Results {
					v.into(e, sig.Results().At(i).Type(), "return")
				}
			}
		case *ast.CompositeLit:
			v.compositeLit(n)
		case *ast.SendStmt:
			if ch, ok := v.info.TypeOf(n.Chan).Underlying().(*types.Chan); ok {
				v.into(n.Value, ch.Elem(), "channel send")
			}
		case *ast.TypeAssertExpr:
			if n.Type != nil && isGinContext(v.info.TypeOf(n.Type)) {
				v.report(n.Pos(), "type assertion to *gin.Context")
			}
		case *ast.GoStmt:
			if lit, ok := n.Call.Fun.(*ast.FuncLit); ok {
				ast.Inspect(lit.Body, func(m ast.Node) bool {
					if id, ok := m.(*ast.Ident); ok {
						obj, ok := v.info.Uses[id].(*types.Var)
						if ok && isGinContext(obj.Type()) && (obj.Pos() < lit.Pos() || obj.Pos() >= lit.End()) {
							v.report(id.Pos(), "goroutine captures *gin.Context %s", id.Name)
						}
					}
					return true
				})
			}
			for _, a := range n.Call.Args {
				if isGinContext(v.info.TypeOf(a)) {
					v.report(a.Pos(), "*gin.Context passed to a goroutine")
				}
			}
		}
		return true
	})
}

func (v *ginVisitor) compositeLit(n *ast.CompositeLit) {
	t := v.info.TypeOf(n)
	if t == nil {
		return
	}
	var key, elem types.Type
	switch u := t.Underlying().(type) {
	case *types.Struct:
		for i, el := range n.Elts {
			if kv, ok := el.(*ast.KeyValueExpr); ok {
				if id, ok := kv.Key.(*ast.Ident); ok {
					if f, ok := v.info.Uses[id].(*types.Var); ok {
						v.into(kv.Value, f.Type(), "field "+id.Name)
					}
				}
			} else if i < u.NumFields() {
				v.into(el, u.Field(i).Type(), "field "+u.Field(i).Name())
			}
		}
		return
	case *types.Slice:
		elem = u.Elem()
	case *types.Array:
		elem = u.Elem()
	case *types.Map:
		key, elem = u.Key(), u.Elem()
	default:
		return
	}
	for _, el := range n.Elts {
		if kv, ok := el.(*ast.KeyValueExpr); ok {
			if key != nil {
				v.into(kv.Key, key, "map key")
			}
			el = kv.Value
		}
		v.into(el, elem, "element")
	}
}
