package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Program builds the std-only program in testdata/<dir> as v (PGO is not
// supported here), once per run, named <dir>-<v.Name>. An older toolchain
// builds a copy in a module of its own, as for HTTPServer.
func (b *Builds) Program(t testing.TB, dir string, v Variant) string {
	t.Helper()
	return b.Get(t, dir+"-"+v.Name, func(out string) error {
		var args, env, ldflags []string
		if v.Stripped {
			ldflags = append(ldflags, "-s", "-w")
		}
		if v.External {
			ldflags = append(ldflags, "-linkmode=external")
			env = append(env, "CGO_ENABLED=1")
			if _, err := exec.LookPath("gcc"); err != nil {
				return fmt.Errorf("external linking needs gcc: %w", err)
			}
		}
		if len(ldflags) > 0 {
			args = append(args, "-ldflags="+strings.Join(ldflags, " "))
		}
		if v.PIE {
			args = append(args, "-buildmode=pie")
		}
		if v.PGO {
			return fmt.Errorf("building %s: PGO is not supported by Program", dir)
		}
		if v.Toolchain == "" {
			return GoBuild(RepoRoot(), env, append(args, "-o", out, "./testdata/"+dir)...)
		}
		src, tcEnv, err := b.moduleCopy(filepath.Join(RepoRoot(), "testdata", dir), v.Toolchain)
		if err != nil {
			return err
		}
		return GoBuild(src, append(env, tcEnv...), append(args, "-o", out, ".")...)
	})
}
