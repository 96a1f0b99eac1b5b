package testenv

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
)

// Flavour is how a program is built, beyond its toolchain.
type Flavour struct {
	Stripped bool // -ldflags='-s -w': no symbols, no DWARF
	PIE      bool // -buildmode=pie
	// External links with the C linker (CGO_ENABLED=1, -linkmode=external),
	// as distributions build: with PIE, the line table of Go 1.21–1.24 is
	// in .data.rel.ro.gopclntab. Needs gcc.
	External bool
	// CGO builds with CGO_ENABLED=1 and the linker's default mode (which
	// may be the C linker's, for a PIE of Go 1.21–1.24); External implies
	// it. The standard library compiled for CGO PIE builds is reused by
	// External ones.
	CGO bool
	// PGO builds with the toolchain's CPU profile (BuildCache.Profile), in
	// which net/http's server path is hot, so the compiler may inline the
	// probed functions.
	PGO bool
	// Trimpath builds with -trimpath: file names in the binary start with
	// the module path instead of a directory.
	Trimpath bool
}

// key names f in a program's cache key. Written out rather than with %+v,
// so that a field added later (Trimpath) counts only where it is set and
// leaves the keys, and the cached builds, of every other program as they
// were.
func (f Flavour) key() string {
	k := fmt.Sprintf("{Stripped:%t PIE:%t External:%t CGO:%t PGO:%t}", f.Stripped, f.PIE, f.External, f.CGO, f.PGO)
	if f.Trimpath {
		k += "+trimpath"
	}
	return k
}

// Program is one build of a main package: the *.go files of Src (not its
// subdirectories) copied into a module of their own whose go line is the
// toolchain's (the go line decides ServeMux's behaviour, and an older
// toolchain cannot build inside the root module). A Src holding a go.mod
// (and go.sum) is built as that module instead: its requirements stand
// except where Require names the same module, and only its go line becomes
// the toolchain's.
//
// Every build is CGO_ENABLED=0 except External and CGO ones, so that a binary is the
// same whether or not a C compiler is installed, and the standard library
// compiled for one program is reused by every other of the same toolchain
// and flavour (the GOCACHE is keyed by compile flags: PIE, cgo and a PGO
// profile each compile it anew).
type Program struct {
	// Name starts the cached file's name, for people reading the cache.
	Name string
	// Src is the directory of the main package, absolute or relative to the
	// test's working directory.
	Src string
	// Toolchain is a GOTOOLCHAIN value such as "go1.21.13"; "" is the go
	// command on PATH.
	Toolchain string
	Flavour
	Tags []string
	// Require lists go.mod requirements ("golang.org/x/net v0.30.0"),
	// fetched from the module proxy; for a Src with a go.mod, each replaces
	// that module's requirement there (up or down).
	Require []string
}

// BuildCache is a directory of built test programs shared by every test
// package and every run on this machine. A program is keyed by its content:
// the resolved toolchain version, the flavour, tags, requirements and the
// bytes of every source file; a change to any of them builds anew, nothing
// else does. A file lock per key makes two test packages running at once
// (go test runs packages in parallel) build a program once between them.
//
// Old entries are never removed: delete the directory to reclaim space
// (about 10 MB a program).
type BuildCache struct {
	Dir string

	mu       sync.Mutex
	versions map[string]string // toolchain → go version, resolved once per process
}

var (
	sharedCacheOnce sync.Once
	sharedCache     *BuildCache
)

// SharedBuildCache returns the cache in $OBSD_TEST_BUILDS, else in
// <user cache dir>/obsd-test-builds ($XDG_CACHE_HOME or ~/.cache), else in
// the temporary directory.
func SharedBuildCache() *BuildCache {
	sharedCacheOnce.Do(func() {
		dir := os.Getenv("OBSD_TEST_BUILDS")
		if dir == "" {
			base, err := os.UserCacheDir()
			if err != nil {
				base = os.TempDir()
			}
			dir = filepath.Join(base, "obsd-test-builds")
		}
		sharedCache = &BuildCache{Dir: dir}
	})
	return sharedCache
}

// Build returns the path of p's executable, building it unless the cache
// holds it.
func (c *BuildCache) Build(p Program) (string, error) {
	src, err := filepath.Abs(p.Src)
	if err != nil {
		return "", err
	}
	files, err := sourceFiles(src)
	if err != nil {
		return "", fmt.Errorf("reading the sources of %s: %w", p.Name, err)
	}
	if err := addModFiles(src, files); err != nil {
		return "", fmt.Errorf("reading the module of %s: %w", p.Name, err)
	}
	version, err := c.goVersion(p.Toolchain)
	if err != nil {
		return "", err
	}
	var profile string
	if p.PGO {
		if profile, err = c.Profile(p.Toolchain); err != nil {
			return "", err
		}
	}
	h := sha256.New()
	fmt.Fprintf(h, "program v1\x00%s\x00%s\x00%q\x00%q\x00", version, p.Flavour.key(), p.Tags, p.Require)
	if err := hashFiles(h, files); err != nil {
		return "", err
	}
	if profile != "" {
		if err := hashFiles(h, map[string]string{"profile": profile}); err != nil {
			return "", err
		}
	}
	name := fmt.Sprintf("%s-%s-%s", p.Name, version, hex.EncodeToString(h.Sum(nil))[:16])
	return c.entry(name, func(out string) error {
		dir, env, err := c.module(src, files, p.Toolchain, version, p.Require)
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		args, env2 := buildFlags(p.Flavour, profile)
		if len(p.Tags) > 0 {
			args = append(args, "-tags", strings.Join(p.Tags, ","))
		}
		return GoBuild(dir, append(env, env2...), append(args, "-o", out, ".")...)
	})
}

// GoInstall returns the path of the executable `go install pkg` makes,
// installing it unless the cache holds it. pkg is a main package of the
// module proxy at an exact version
// ("github.com/bojand/ghz/cmd/ghz@v0.120.0"): built as go install builds
// it (its module's go.mod, DWARF kept, cgo as go env reports it), with the
// go command on PATH. It is keyed by pkg, that Go version and CGO_ENABLED,
// and stored in a directory of its own, so that the executable keeps the
// name go install gives it (a default service name, for obsd).
func (c *BuildCache) GoInstall(pkg string) (string, error) {
	if !installable.MatchString(pkg) {
		return "", fmt.Errorf("go install %s: want path@vX.Y.Z, an exact version", pkg)
	}
	version, err := c.goVersion("")
	if err != nil {
		return "", err
	}
	env := []string{toolchainEnv(""), "GOWORK=off", "GOFLAGS="}
	cgo, err := goEnv(env, "CGO_ENABLED")
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "install v1\x00%s\x00%s\x00cgo=%s\x00", pkg, version, cgo)
	path, _, _ := strings.Cut(pkg, "@")
	base := filepath.Base(path)
	if regexp.MustCompile(`^v\d+$`).MatchString(base) { // a major version suffix, as go install skips it
		base = filepath.Base(filepath.Dir(path))
	}
	name := fmt.Sprintf("%s-%s-%s", base, version, hex.EncodeToString(h.Sum(nil))[:16])
	dir, err := c.entry(name, func(out string) error {
		// Empty: a process of the same ID may have died installing here.
		if err := os.RemoveAll(out); err != nil {
			return err
		}
		if err := os.Mkdir(out, 0o755); err != nil {
			return err
		}
		cmd := exec.Command("go", "install", pkg)
		cmd.Dir = os.TempDir() // outside any module or workspace
		cmd.Env = append(append(os.Environ(), env...), "GOBIN="+out)
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go install %s: %w\n%s", pkg, err, b)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	if len(ents) != 1 {
		return "", fmt.Errorf("go install %s left %d files in %s, want 1", pkg, len(ents), dir)
	}
	return filepath.Join(dir, ents[0].Name()), nil
}

// installable is a package path at an exact version, so that it is a key.
var installable = regexp.MustCompile(`^[^@\s]+@v\d+\.\d+\.\d+\S*$`)

// goEnv returns one go env variable of the go command run with env.
func goEnv(env []string, name string) (string, error) {
	cmd := exec.Command("go", "env", name)
	cmd.Dir = os.TempDir() // outside any module, whose go line could switch toolchains
	cmd.Env = append(os.Environ(), env...)
	b, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return "", fmt.Errorf("go env %s: %w", name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Profile returns a CPU profile of net/http serving requests, recorded once
// per toolchain (and per change of the recorder) from ./pgoprofile built by
// that toolchain, so that it names that toolchain's net/http lines.
func (c *BuildCache) Profile(toolchain string) (string, error) {
	src := filepath.Join(RepoRoot(), "internal", "test", "e2e", "pgoprofile")
	files, err := sourceFiles(src)
	if err != nil {
		return "", err
	}
	version, err := c.goVersion(toolchain)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "profile v1\x00%s\x00", version)
	if err := hashFiles(h, files); err != nil {
		return "", err
	}
	name := fmt.Sprintf("pgo-%s-%s.pprof", version, hex.EncodeToString(h.Sum(nil))[:16])
	return c.entry(name, func(out string) error {
		dir, env, err := c.module(src, files, toolchain, version, nil)
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cmd := exec.Command("go", "run", ".", "-o", out)
		cmd.Dir = dir
		cmd.Env = append(append(os.Environ(), env...), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("recording a profile with %s: %w\n%s", version, err, b)
		}
		return nil
	})
}

// buildFlags are the go build arguments and environment of a flavour.
func buildFlags(f Flavour, profile string) (args, env []string) {
	var ldflags []string
	if f.Stripped {
		ldflags = append(ldflags, "-s", "-w")
	}
	env = []string{"CGO_ENABLED=0"}
	if f.CGO || f.External {
		env = []string{"CGO_ENABLED=1"}
	}
	if f.External {
		ldflags = append(ldflags, "-linkmode=external")
	}
	if len(ldflags) > 0 {
		args = append(args, "-ldflags="+strings.Join(ldflags, " "))
	}
	if f.PIE {
		args = append(args, "-buildmode=pie")
	}
	if f.Trimpath {
		args = append(args, "-trimpath")
	}
	if profile != "" {
		args = append(args, "-pgo="+profile)
	}
	return args, env
}

// entry returns the cached file name, running build (which writes the path
// it is given) under the entry's lock when the file is not there yet.
func (c *BuildCache) entry(name string, build func(out string) error) (string, error) {
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return "", fmt.Errorf("creating the build cache: %w", err)
	}
	out := filepath.Join(c.Dir, name)
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	lock, err := os.OpenFile(out+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("locking %s: %w", name, err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("locking %s: %w", name, err)
	}
	// Another process may have built it while this one waited.
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	tmp := fmt.Sprintf("%s.tmp%d", out, os.Getpid())
	defer os.RemoveAll(tmp) // a file, or GoInstall's directory
	if err := build(tmp); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", fmt.Errorf("storing %s: %w", name, err)
	}
	return out, nil
}

// goVersion resolves a GOTOOLCHAIN value ("" is the go command on PATH) to
// the version it runs, downloading the toolchain the first time. A full
// release name ("go1.22.12") is its own version: a cache hit then needs no
// download of that toolchain (about 70 MB, from the module proxy).
func (c *BuildCache) goVersion(toolchain string) (string, error) {
	if releaseName.MatchString(toolchain) {
		return toolchain, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.versions[toolchain]; ok {
		return v, nil
	}
	v, err := goEnv([]string{"GOWORK=off", toolchainEnv(toolchain)}, "GOVERSION")
	if err != nil {
		return "", fmt.Errorf("resolving toolchain %q: %w", toolchain, err)
	}
	if !regexp.MustCompile(`^go1\.\d+`).MatchString(v) {
		return "", fmt.Errorf("toolchain %q reports version %q", toolchain, v)
	}
	if c.versions == nil {
		c.versions = map[string]string{}
	}
	c.versions[toolchain] = v
	return v, nil
}

// releaseName is a GOTOOLCHAIN value naming one release, which runs as
// exactly that version.
var releaseName = regexp.MustCompile(`^go1\.\d+\.\d+$`)

// module writes files into a new temporary module whose go line is
// version's minor release, and returns it with the environment that selects
// the toolchain. When files hold a go.mod, that is the module's, edited.
func (c *BuildCache) module(src string, files map[string]string, toolchain, version string, require []string) (string, []string, error) {
	dir, err := os.MkdirTemp("", "obsd-build-")
	if err != nil {
		return "", nil, err
	}
	for name, path := range files {
		data, err := os.ReadFile(path)
		if err != nil {
			os.RemoveAll(dir)
			return "", nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			os.RemoveAll(dir)
			return "", nil, err
		}
	}
	env := []string{toolchainEnv(toolchain), "GOWORK=off", "GOFLAGS=-mod=mod"}
	minor := regexp.MustCompile(`^go(1\.\d+)`).FindStringSubmatch(version)[1]
	if _, ok := files["go.mod"]; ok {
		if err := editModule(dir, env, minor, require); err != nil {
			os.RemoveAll(dir)
			return "", nil, err
		}
		return dir, env, nil
	}
	mod := fmt.Sprintf("module %s\n\ngo %s\n", filepath.Base(src), minor)
	for _, r := range require {
		mod += "\nrequire " + r + "\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(mod), 0o644); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return dir, env, nil
}

// editModule sets the go line of the go.mod in dir to minor and each
// requirement of require ("path version") in it. go build -mod=mod then
// completes go.mod and go.sum as go mod tidy would, for the packages it
// builds (the same versions, fewer downloads).
func editModule(dir string, env []string, minor string, require []string) error {
	args := []string{"mod", "edit", "-go=" + minor}
	for _, r := range require {
		path, v, ok := strings.Cut(r, " ")
		if !ok {
			return fmt.Errorf("requirement %q is not \"path version\"", r)
		}
		args = append(args, "-require="+path+"@"+v)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, b)
	}
	return nil
}

// addModFiles adds src's go.mod and go.sum to files, if it has them.
func addModFiles(src string, files map[string]string) error {
	if _, err := os.Stat(filepath.Join(src, "go.mod")); errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	files["go.mod"] = filepath.Join(src, "go.mod")
	if _, err := os.Stat(filepath.Join(src, "go.sum")); err == nil {
		files["go.sum"] = filepath.Join(src, "go.sum")
	}
	return nil
}

// toolchainEnv selects toolchain ("" is the go command on PATH).
func toolchainEnv(toolchain string) string {
	if toolchain == "" {
		return "GOTOOLCHAIN=local"
	}
	return "GOTOOLCHAIN=" + toolchain
}

// sourceFiles maps the base name of each *.go file of dir to its path.
func sourceFiles(dir string) (map[string]string, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no Go files in %s", dir)
	}
	out := map[string]string{}
	for _, p := range paths {
		out[filepath.Base(p)] = p
	}
	return out, nil
}

// hashFiles writes the names and contents of files to h in a stable order.
func hashFiles(h io.Writer, files map[string]string) error {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		f, err := os.Open(files[n])
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00", n)
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return err
		}
		h.Write([]byte{0})
	}
	return nil
}

// GoBuild runs `go build` in dir with extra environment.
func GoBuild(dir string, env []string, args ...string) error {
	cmd := exec.Command("go", append([]string{"build"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}
