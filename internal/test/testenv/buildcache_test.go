package testenv

import (
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
