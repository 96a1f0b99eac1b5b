package manual_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/obsd-dev/obsd/manual"
)

type fence struct {
	lang, body string
	line       int
}

func readmeBlocks(t *testing.T) []fence {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var out []fence
	var cur *fence
	for i, l := range strings.SplitAfter(string(b), "\n") {
		trimmed := strings.TrimRight(l, "\n")
		switch {
		case cur == nil && strings.HasPrefix(trimmed, "```"):
			cur = &fence{lang: strings.TrimPrefix(trimmed, "```"), line: i + 1}
		case cur != nil && trimmed == "```":
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			cur.body += l
		}
	}
	if cur != nil {
		t.Fatalf("README.md: code block at line %d never closes", cur.line)
	}
	return out
}

// TestReadmeBlocksAreTestedPrograms: every Go block of the README is the
// full text of a program under examples/, whose own test builds and runs
// it; every YAML block is a probe configuration whose timeouts leave the
// default check deadline room; no other kind of block exists unchecked.
func TestReadmeBlocksAreTestedPrograms(t *testing.T) {
	programs := map[string]string{}
	err := filepath.WalkDir("examples", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		b, err := os.ReadFile(path)
		programs[string(b)] = path
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeBlocks(t)
	goBlocks := 0
	for _, b := range blocks {
		switch b.lang {
		case "go":
			goBlocks++
			path, ok := programs[b.body]
			if !ok {
				t.Errorf("README.md line %d: Go block is not the text of any program under examples/", b.line)
				continue
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(path), "main_test.go")); err != nil {
				t.Errorf("README.md line %d: %s has no test that runs it", b.line, path)
			}
		case "yaml":
			ts := regexp.MustCompile(`timeoutSeconds: *(\d+)`).FindAllStringSubmatch(b.body, -1)
			if len(ts) == 0 {
				t.Errorf("README.md line %d: YAML block without timeoutSeconds", b.line)
			}
			for _, m := range ts {
				n, _ := strconv.Atoi(m[1])
				if time.Duration(n)*time.Second-manual.DefaultCheckTimeout < 100*time.Millisecond {
					t.Errorf("README.md line %d: timeoutSeconds %d leaves the %s check deadline no room", b.line, n, manual.DefaultCheckTimeout)
				}
			}
		default:
			t.Errorf("README.md line %d: block of kind %q that no test checks", b.line, b.lang)
		}
	}
	if goBlocks == 0 {
		t.Error("README.md has no Go block: the quick start is gone")
	}
}
