package grpcclient

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

var builds *e2e.Builds

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "obsd-e2e-grpcclient-")
	if err != nil {
		panic(err)
	}
	builds = e2e.NewBuilds(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// app is one build of testdata/grpc, CGO_ENABLED=0 as every e2e.Program
// without a cgo flavour.
type app struct {
	// Grpc is the grpc-go version, e.g. "v1.69.4".
	Grpc string
	// Toolchain is a GOTOOLCHAIN value; "" is the Go running the tests.
	Toolchain string
	PIE       bool
	Trimpath  bool
	Stripped  bool // -ldflags='-s -w': no symbols, no DWARF
}

func (a app) name() string {
	tc := a.Toolchain
	if tc == "" {
		tc = "current"
	}
	n := "grpcapp-" + a.Grpc + "-" + tc
	if a.PIE {
		n += "-pie"
	}
	if a.Trimpath {
		n += "-trimpath"
	}
	if a.Stripped {
		n += "-stripped"
	}
	return n
}

// grpcApp builds testdata/grpc (a module of its own) with grpc-go at
// a.Grpc and a.Toolchain, through the shared build cache, so that a build
// grpcserver's tests (or a later run) made is reused.
func grpcApp(t *testing.T, a app) string {
	t.Helper()
	return builds.Program(t, e2e.Program{
		Name:      "grpcapp",
		Src:       filepath.Join(e2e.RepoRoot(), "testdata", "grpc"),
		Toolchain: a.Toolchain,
		Flavour:   e2e.Flavour{PIE: a.PIE, Trimpath: a.Trimpath, Stripped: a.Stripped},
		Require:   []string{"google.golang.org/grpc " + a.Grpc},
	})
}

// eofClient builds testdata/eofclient with the grpc-go the root module
// requires (once built inside it), through the shared build cache.
func eofClient(t *testing.T) string {
	t.Helper()
	mod, err := os.ReadFile(filepath.Join(e2e.RepoRoot(), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*google\.golang\.org/grpc (v\S+)`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("the root go.mod does not require google.golang.org/grpc")
	}
	return builds.Program(t, e2e.Program{
		Name:    "eofclient",
		Src:     filepath.Join("testdata", "eofclient"),
		Require: []string{"google.golang.org/grpc " + string(m[1])},
	})
}
