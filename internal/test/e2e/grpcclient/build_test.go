package grpcclient

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
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

// app is one build of testdata/grpc.
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

// grpcApp builds testdata/grpc against a.Grpc with a.Toolchain, once per
// run: a copy of the module whose go line is the toolchain's, with the
// grpc-go requirement changed and tidied through the module proxy.
func grpcApp(t *testing.T, a app) string {
	t.Helper()
	return builds.Get(t, a.name(), func(out string) error {
		src := filepath.Join(e2e.RepoRoot(), "testdata", "grpc")
		dir, err := os.MkdirTemp(builds.Dir, "src-")
		if err != nil {
			return err
		}
		for _, f := range []string{"main.go", "go.mod", "go.sum"} {
			data, err := os.ReadFile(filepath.Join(src, f))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
				return err
			}
		}
		env := []string{"GOWORK=off", "GOFLAGS=-mod=mod"}
		if a.Toolchain != "" {
			env = append(env, "GOTOOLCHAIN="+a.Toolchain)
		}
		run := func(args ...string) error {
			cmd := exec.Command("go", args...)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), env...)
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
			}
			return nil
		}
		if err := run("mod", "edit", "-require=google.golang.org/grpc@"+a.Grpc); err != nil {
			return err
		}
		if a.Toolchain != "" {
			minor := regexp.MustCompile(`^go(1\.\d+)`).FindStringSubmatch(a.Toolchain)
			if minor == nil {
				return fmt.Errorf("bad toolchain %q", a.Toolchain)
			}
			// grpc-go may need a newer go line than the copy's; the
			// toolchain's own is always enough for what it can build.
			if err := run("mod", "edit", "-go="+minor[1]); err != nil {
				return err
			}
		}
		if err := run("mod", "tidy"); err != nil {
			return err
		}
		var args []string
		if a.PIE {
			args = append(args, "-buildmode=pie")
		}
		if a.Trimpath {
			args = append(args, "-trimpath")
		}
		if a.Stripped {
			args = append(args, "-ldflags=-s -w")
		}
		return e2e.GoBuild(dir, env, append(args, "-o", out, ".")...)
	})
}
