// Package testenv is what every test of obsd may need from its environment,
// with nothing but the standard library behind it (so that a package's test
// binary, fuzzing builds included, stays small): whether CI requires every
// test to run (Required, Skip), the repository root, the supported Go
// toolchains, and a shared build cache for test programs.
//
// # Test programs
//
// A program under test (a server or client in some testdata directory) is
// built through the BuildCache, so that each toolchain × flavour build
// happens once per machine, whichever test package asks first, and later
// runs reuse it:
//
//	bin, err := testenv.SharedBuildCache().Build(testenv.Program{
//		Name:      "grpcserver",
//		Src:       filepath.Join(testenv.RepoRoot(), "testdata", "grpcserver"),
//		Toolchain: "go1.22.12",                        // "" is the go on PATH
//		Flavour:   testenv.Flavour{PIE: true},
//		Require:   []string{"google.golang.org/grpc v1.70.0"},
//	})
//
// End-to-end suites call the same through internal/test/e2e
// (builds.Program, builds.HTTPServer), which also fails the test on error.
// The cache (in $OBSD_TEST_BUILDS, else <user cache dir>/obsd-test-builds)
// keys a program by its resolved Go version, flavour, tags, requirements and
// source bytes, and locks each entry, so two test packages running at once
// never build the same program twice. Every build but an External or CGO
// one is CGO_ENABLED=0: a toolchain then compiles the standard library once
// per flavour (plain, PIE, cgo PIE, PGO) for every program and package. PGO
// builds use one recorded profile per toolchain (BuildCache.Profile). A
// Src with a go.mod of its own (testdata/grpc) is built as that module,
// Require overriding its requirements. Third-party commands come through
// the same cache, keyed by path@version and Go version
// (BuildCache.GoInstall, builds.GoInstall in e2e suites).
package testenv

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Toolchains are the releases the flavour tests build with, one per
// supported minor version ("" is the Go running the tests).
var Toolchains = []string{"go1.21.13", "go1.22.12", "go1.23.12", "go1.24.9", "go1.25.14", "", "go1.27.3"}

// Required reports whether OBSD_REQUIRE_BPF=1 (CI): every test must then
// run, so whatever would skip one is a failure.
func Required() bool { return os.Getenv("OBSD_REQUIRE_BPF") == "1" }

// Skip skips the test with the reason given, or fails it when
// OBSD_REQUIRE_BPF=1. Every skip in obsd's tests goes through here (or
// internal/test/e2e, which calls it), so CI never reports a test as passed
// that did not run.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Required() {
		t.Fatalf("OBSD_REQUIRE_BPF=1 but %s", msg)
	}
	t.Skip(msg + " (set OBSD_REQUIRE_BPF=1 to make this a failure)")
}

// RepoRoot finds the directory holding the root go.mod, from the working
// directory up (a test runs in its package's directory).
func RepoRoot() string {
	dir, _ := os.Getwd()
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/obsd-dev/obsd\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			panic("testenv: root go.mod not found")
		}
		dir = parent
	}
}
