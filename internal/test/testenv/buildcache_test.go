package testenv

import (
	"archive/zip"
	"debug/buildinfo"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A program is built once per content: asking again (from a new cache value,
// as another test process would) returns the same file untouched, and a
// change to a source file, the flavour or the tags builds a new one.
func TestBuildCacheKeyedByContent(t *testing.T) {
	src := t.TempDir()
	write := func(body string) {
		t.Helper()
		prog := "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(" + body + ") }\n"
		if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(prog), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := func(bin string) string {
		t.Helper()
		out, err := exec.Command(bin).Output()
		if err != nil {
			t.Fatalf("running %s: %v", bin, err)
		}
		return strings.TrimSpace(string(out))
	}
	dir := t.TempDir()
	build := func(p Program) string {
		t.Helper()
		p.Name, p.Src = "tiny", src
		path, err := (&BuildCache{Dir: dir}).Build(p)
		if err != nil {
			t.Fatal(err)
		}
		return path
	}
	write(`"one"`)
	first := build(Program{})
	if got := run(first); got != "one" {
		t.Fatalf("first build printed %q", got)
	}
	st, err := os.Stat(first)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // a rebuild would show in the modification time
	if again := build(Program{}); again != first {
		t.Errorf("same content: %s, then %s", first, again)
	} else if st2, _ := os.Stat(again); !st2.ModTime().Equal(st.ModTime()) {
		t.Error("same content was built again")
	}
	stripped := build(Program{Flavour: Flavour{Stripped: true}})
	tagged := build(Program{Tags: []string{"x"}})
	write(`"two"`)
	changed := build(Program{})
	if got := run(changed); got != "two" {
		t.Errorf("after a source change the cache returned a build printing %q", got)
	}
	paths := map[string]bool{first: true, stripped: true, tagged: true, changed: true}
	if len(paths) != 4 {
		t.Errorf("4 different builds share paths: %s %s %s %s", first, stripped, tagged, changed)
	}
}

// Two test processes asking for the same entry at once build it once: the
// second waits on the entry's lock and finds the file.
func TestBuildCacheBuildsOnceUnderContention(t *testing.T) {
	dir := t.TempDir()
	var builds atomic.Int32
	var wg sync.WaitGroup
	paths := make([]string, 4)
	errs := make([]error, 4)
	for i := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &BuildCache{Dir: dir} // one per "process": nothing shared but the directory
			paths[i], errs[i] = c.entry("thing", func(out string) error {
				builds.Add(1)
				time.Sleep(200 * time.Millisecond)
				return os.WriteFile(out, []byte("built"), 0o644)
			})
		}()
	}
	wg.Wait()
	for i := range paths {
		if errs[i] != nil || paths[i] != filepath.Join(dir, "thing") {
			t.Errorf("caller %d: %q, %v", i, paths[i], errs[i])
		}
	}
	if n := builds.Load(); n != 1 {
		t.Errorf("built %d times, want 1", n)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "thing")); err != nil || string(b) != "built" {
		t.Errorf("entry holds %q, %v", b, err)
	}
}

// A release name resolves to itself, without running (or downloading) that
// toolchain: go1.21.999 does not exist.
func TestGoVersionOfReleaseName(t *testing.T) {
	c := &BuildCache{Dir: t.TempDir()}
	for _, tc := range []struct{ toolchain, want string }{
		{"go1.21.999", "go1.21.999"},
		{"go1.27.3", "go1.27.3"},
	} {
		if got, err := c.goVersion(tc.toolchain); err != nil || got != tc.want {
			t.Errorf("goVersion(%q) = %q, %v; want %q", tc.toolchain, got, err, tc.want)
		}
	}
}

// fakeProxy serves modules from a file:// GOPROXY in a temporary directory,
// with a module cache of its own, so that tests of module builds need no
// network and leave the machine's module cache alone. mods maps
// "path@version" to the module's files (go.mod included).
func fakeProxy(t *testing.T, mods map[string]map[string]string) {
	t.Helper()
	proxy := t.TempDir()
	for mv, files := range mods {
		path, version, _ := strings.Cut(mv, "@")
		dir := filepath.Join(proxy, path, "@v")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		list, _ := os.ReadFile(filepath.Join(dir, "list"))
		writeFile(t, filepath.Join(dir, "list"), string(list)+version+"\n")
		writeFile(t, filepath.Join(dir, version+".info"), `{"Version":"`+version+`"}`)
		writeFile(t, filepath.Join(dir, version+".mod"), files["go.mod"])
		f, err := os.Create(filepath.Join(dir, version+".zip"))
		if err != nil {
			t.Fatal(err)
		}
		zw := zip.NewWriter(f)
		for name, body := range files {
			w, err := zw.Create(mv + "/" + name)
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(w, body)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	modcache := t.TempDir()
	t.Setenv("GOPROXY", "file://"+proxy)
	t.Setenv("GOSUMDB", "off")
	t.Setenv("GOMODCACHE", modcache)
	// The module cache is read-only, which t.TempDir cannot remove.
	t.Cleanup(func() { exec.Command("go", "clean", "-modcache").Run() })
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// greetModule is a library module whose Version is its own version.
func greetModule(version string) map[string]string {
	return map[string]string{
		"go.mod":   "module example.com/greet\n\ngo 1.21\n",
		"greet.go": "package greet\n\nconst Version = \"" + version + "\"\n",
	}
}

// GoInstall builds a main package of the module proxy once per version,
// under the name go install gives it; a new cache value (another test
// process) finds it untouched, and another version is another entry.
func TestGoInstallCached(t *testing.T) {
	hello := func(version string) map[string]string {
		return map[string]string{
			"go.mod":         "module example.com/hello/v2\n\ngo 1.21\n",
			"cmd/hi/main.go": "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hi " + version + "\") }\n",
		}
	}
	fakeProxy(t, map[string]map[string]string{
		"example.com/hello/v2@v2.0.0": hello("v2.0.0"),
		"example.com/hello/v2@v2.1.0": hello("v2.1.0"),
		"example.com/tool/v3@v3.0.0": {
			"go.mod":  "module example.com/tool/v3\n\ngo 1.21\n",
			"main.go": "package main\n\nfunc main() {}\n",
		},
	})
	dir := t.TempDir()
	install := func(pkg string) string {
		t.Helper()
		bin, err := (&BuildCache{Dir: dir}).GoInstall(pkg)
		if err != nil {
			t.Fatal(err)
		}
		return bin
	}
	first := install("example.com/hello/v2/cmd/hi@v2.0.0")
	if filepath.Base(first) != "hi" {
		t.Errorf("installed as %s, want go install's name hi", first)
	}
	if out, err := exec.Command(first).Output(); err != nil || string(out) != "hi v2.0.0\n" {
		t.Fatalf("%s printed %q, %v", first, out, err)
	}
	st, err := os.Stat(first)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // a reinstall would show in the modification time
	if again := install("example.com/hello/v2/cmd/hi@v2.0.0"); again != first {
		t.Errorf("same package: %s, then %s", first, again)
	} else if st2, _ := os.Stat(again); !st2.ModTime().Equal(st.ModTime()) {
		t.Error("same package was installed again")
	}
	next := install("example.com/hello/v2/cmd/hi@v2.1.0")
	if out, err := exec.Command(next).Output(); next == first || err != nil || string(out) != "hi v2.1.0\n" {
		t.Errorf("v2.1.0 at %s printed %q, %v", next, out, err)
	}
	// A command at the root of a /vN module is named for the module, and
	// so is its entry (people read the cache).
	if tool := install("example.com/tool/v3@v3.0.0"); filepath.Base(tool) != "tool" || !strings.HasPrefix(filepath.Base(filepath.Dir(tool)), "tool-") {
		t.Errorf("example.com/tool/v3 installed as %s, want tool-*/tool", tool)
	}
	for _, bad := range []string{"example.com/hello/v2/cmd/hi", "example.com/hello/v2/cmd/hi@latest"} {
		if _, err := (&BuildCache{Dir: dir}).GoInstall(bad); err == nil {
			t.Errorf("GoInstall(%q) succeeded; only exact versions are keys", bad)
		}
	}
}

// A Src with a go.mod is built as that module: its module path and its
// requirements, but Require's version for a module it names and the
// flavour's -trimpath, as the binary's build information (read by
// debug/buildinfo) shows. A change to go.mod is a new build.
func TestBuildModuleOfItsOwn(t *testing.T) {
	fakeProxy(t, map[string]map[string]string{
		"example.com/greet@v1.0.0": greetModule("v1.0.0"),
		"example.com/greet@v1.1.0": greetModule("v1.1.0"),
	})
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "main.go"), "package main\n\nimport (\n\t\"fmt\"\n\n\t\"example.com/greet\"\n)\n\nfunc main() { fmt.Println(greet.Version) }\n")
	writeFile(t, filepath.Join(src, "go.mod"), "module example.com/app\n\ngo 1.21\n\nrequire example.com/greet v1.0.0\n")
	dir := t.TempDir()
	build := func(p Program) (string, *buildinfo.BuildInfo) {
		t.Helper()
		p.Name, p.Src = "app", src
		bin, err := (&BuildCache{Dir: dir}).Build(p)
		if err != nil {
			t.Fatal(err)
		}
		info, err := buildinfo.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		return bin, info
	}
	setting := func(info *buildinfo.BuildInfo, key string) string {
		for _, s := range info.Settings {
			if s.Key == key {
				return s.Value
			}
		}
		return ""
	}
	for _, tc := range []struct {
		name     string
		p        Program
		greet    string
		trimpath string
	}{
		{"its own requirement", Program{}, "v1.0.0", ""},
		{"Require replaces it", Program{Require: []string{"example.com/greet v1.1.0"}}, "v1.1.0", ""},
		{"trimpath", Program{Flavour: Flavour{Trimpath: true}}, "v1.0.0", "true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin, info := build(tc.p)
			if info.Main.Path != "example.com/app" {
				t.Errorf("main module %q, want go.mod's example.com/app", info.Main.Path)
			}
			if len(info.Deps) != 1 || info.Deps[0].Path != "example.com/greet" || info.Deps[0].Version != tc.greet {
				var deps []string
				for _, d := range info.Deps {
					deps = append(deps, d.Path+"@"+d.Version)
				}
				t.Errorf("dependencies %v, want example.com/greet@%s", deps, tc.greet)
			}
			if got := setting(info, "-trimpath"); got != tc.trimpath {
				t.Errorf("-trimpath setting %q, want %q", got, tc.trimpath)
			}
			if out, err := exec.Command(bin).Output(); err != nil || string(out) != tc.greet+"\n" {
				t.Errorf("printed %q, %v", out, err)
			}
		})
	}
	before, _ := build(Program{})
	writeFile(t, filepath.Join(src, "go.mod"), "module example.com/app\n\ngo 1.21\n\nrequire example.com/greet v1.1.0\n")
	after, info := build(Program{})
	if after == before || info.Deps[0].Version != "v1.1.0" {
		t.Errorf("after go.mod changed: %s (was %s), greet %s", after, before, info.Deps[0].Version)
	}
}
