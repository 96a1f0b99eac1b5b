// Package inspect reads a Go executable on disk and answers what the uprobe engine needs: the Go
// toolchain and module versions it was built with, where a function lives (as a virtual address and
// as a file offset, which is what a uprobe attaches to), where its prologue's PUSHQ BP is, and struct
// field offsets from DWARF.
//
// A Binary holds the open file and lazily built indexes; Close releases them. Its methods are safe
// for concurrent use.
package inspect

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"regexp"
	"runtime/debug"
	"strings"
	"sync"
)

// Reasons name why a binary cannot be instrumented. They are the values of the reason label of
// obsd_instrumentation_errors_total, so they are short, stable and few.
const (
	ReasonUnreadable = "exe_unreadable"         // the file cannot be opened or read
	ReasonNotELF     = "not_elf"                // not an ELF file
	ReasonNotGo      = "not_go"                 // no Go build info
	ReasonGoVersion  = "go_version_unsupported" // set by the caller, declared here so all reasons sit together
	ReasonSymbol     = "symbol_missing"         // function not in .symtab nor .gopclntab
	ReasonPrologue   = "no_prologue"            // PUSHQ BP not found at the start of the function
	ReasonOffsets    = "offsets_unknown"        // set by the caller when neither DWARF nor the table knows a field
	// ReasonVersion: a module (grpc-go) whose version the offsets table does not list, in a binary
	// without DWARF. Set by the caller; offsets are never guessed for it.
	ReasonVersion = "unsupported_version"
	ReasonArch    = "arch_unsupported" // not amd64
	// ReasonCorrupt: a size, count or offset in the file points outside it, or a table does not
	// parse. A hostile or damaged executable is refused with it rather than trusted.
	ReasonCorrupt = "exe_corrupt"
	// ReasonInlined: a function obsd probes has inlined copies, which an entry probe never sees
	// (e.g. after profile-guided optimisation). Set by the caller from Binary.Inlined.
	ReasonInlined = "inlined"
)

// ReasonOther is what ReasonOf returns for an error that carries no reason.
const ReasonOther = "other"

// Error is an inspection failure with the reason to count it under.
type Error struct {
	Reason string
	Err    error
}

func (e *Error) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// ReasonOf returns the Reason of the first *Error in err's chain, ReasonOther if there is none, and
// "" for a nil error.
func ReasonOf(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ReasonOther
}

func newError(reason string, format string, args ...any) *Error {
	return &Error{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// Binary is an opened Go executable.
type Binary struct {
	Path string
	// GoVersion is the toolchain version from the build info in a clean form: "go1.26.8" for a
	// release (and "go1.20.0" for the older "go1.20" spelling of a .0 release); pre-release and
	// development toolchains keep their tag ("go1.27rc1", "go1.27-abcdef") so callers can refuse
	// them. GOEXPERIMENT suffixes such as " X:nodwarf5" are dropped; RawGoVersion keeps them.
	GoVersion    string
	RawGoVersion string
	// MainPath is the main package's import path, e.g. "github.com/acme/shop/cmd/api".
	MainPath string
	// Modules maps each dependency's module path to its version; for a replaced module the
	// replacement's version, which is "" when the replacement is a local directory.
	Modules map[string]string
	// Arch is the GOARCH the ELF machine corresponds to ("amd64", "arm64", ...), or the ELF
	// machine name if Go has no name for it.
	Arch string
	// PIE reports a position-independent executable (ELF type ET_DYN).
	PIE bool
	// Stripped reports that there is no .symtab, so functions are found through .gopclntab.
	Stripped bool
	// DWARF reports that the DWARF sections FieldOffset needs are present.
	DWARF bool

	file  io.ReaderAt
	size  int64 // of the file: every offset and size read from it is checked against this
	close func() error
	elf   *elf.File

	mu      sync.Mutex
	closed  bool
	funcs   map[string]Func     // built on first Func call
	fields  map[string][]member // struct name -> members, built on first FieldOffset call
	errFunc error               // why funcs could not be built, reported on every call
	errDw   error               // why fields could not be built, reported on every call
	lt      *lineTable          // built on first use
	errLT   error
}

// Open opens the executable at path (obsd passes "/proc/PID/exe") and reads its ELF headers and Go
// build info. Every error is an *Error with one of the reasons above.
func Open(path string) (*Binary, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &Error{Reason: ReasonUnreadable, Err: fmt.Errorf("open executable: %w", err)}
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, &Error{Reason: ReasonUnreadable, Err: fmt.Errorf("stat executable: %w", err)}
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, newError(ReasonUnreadable, "open executable %s: not a regular file", path)
	}
	b, err := open(path, f, st.Size())
	if err != nil {
		f.Close()
		return nil, err
	}
	b.close = f.Close
	return b, nil
}

// open reads the headers of the size bytes of f. The parsers it calls are the standard library's,
// which do not promise to survive every hostile input, so a panic in them is a corrupt file.
func open(path string, f io.ReaderAt, size int64) (b *Binary, err error) {
	defer func() {
		if r := recover(); r != nil {
			b, err = nil, newError(ReasonCorrupt, "read %s: corrupt executable: %v", path, r)
		}
	}()
	var magic [4]byte
	if _, err := f.ReadAt(magic[:], 0); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, newError(ReasonNotELF, "read %s: file shorter than an ELF header", path)
		}
		return nil, &Error{Reason: ReasonUnreadable, Err: fmt.Errorf("read %s: %w", path, err)}
	}
	if !bytes.Equal(magic[:], []byte(elf.ELFMAG)) {
		return nil, newError(ReasonNotELF, "read %s: no ELF magic", path)
	}
	ef, err := elf.NewFile(f)
	if err != nil {
		return nil, &Error{Reason: ReasonNotELF, Err: fmt.Errorf("parse ELF of %s: %w", path, err)}
	}
	if err := checkLayout(ef, size); err != nil {
		return nil, &Error{Reason: ReasonCorrupt, Err: fmt.Errorf("read %s: %w", path, err)}
	}
	bi, err := buildinfo.Read(io.NewSectionReader(f, 0, size))
	if err != nil && len(ef.Sections) == 0 {
		// Without section headers debug/buildinfo looks only in the first writable segment,
		// which in an internally linked PIE holds .data.rel.ro, not the build info.
		if bi2, err2 := segmentBuildInfo(ef, f); err2 == nil {
			bi, err = bi2, nil
		}
	}
	if err != nil {
		reason := ReasonNotGo
		var pe *fs.PathError
		if errors.As(err, &pe) {
			reason = ReasonUnreadable
		}
		return nil, &Error{Reason: reason, Err: fmt.Errorf("read Go build info of %s: %w", path, err)}
	}
	b = &Binary{
		Path:         path,
		GoVersion:    cleanGoVersion(bi.GoVersion),
		RawGoVersion: bi.GoVersion,
		MainPath:     bi.Path,
		Modules:      make(map[string]string, len(bi.Deps)),
		Arch:         goarch(ef.Machine),
		PIE:          ef.Type == elf.ET_DYN,
		Stripped:     ef.Section(".symtab") == nil || ef.Section(".symtab").Type == elf.SHT_NOBITS,
		DWARF:        hasDWARF(ef),
		file:         f,
		size:         size,
		elf:          ef,
	}
	for _, d := range bi.Deps {
		v := d.Version
		if d.Replace != nil {
			v = d.Replace.Version
		}
		b.Modules[d.Path] = v
	}
	return b, nil
}

// Close closes the file and drops the indexes. It is safe to call more than once.
func (b *Binary) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	b.funcs, b.fields, b.lt = nil, nil, nil
	if b.close == nil {
		return nil
	}
	if err := b.close(); err != nil {
		return fmt.Errorf("close %s: %w", b.Path, err)
	}
	return nil
}

var errClosed = errors.New("binary is closed")

// maxHeaders bounds the program and section headers obsd looks at; real Go executables have
// about ten and forty.
const maxHeaders = 1 << 12

// checkLayout checks every program header and every section that has bytes in the file against
// the file's size, so that nothing later reads or allocates what a header merely claims.
func checkLayout(f *elf.File, size int64) error {
	if len(f.Progs) > maxHeaders || len(f.Sections) > maxHeaders {
		return fmt.Errorf("%d program headers and %d sections: more than %d", len(f.Progs), len(f.Sections), maxHeaders)
	}
	fits := func(off, n uint64) bool { return off <= uint64(size) && n <= uint64(size)-off }
	for i, p := range f.Progs {
		if p.Type != elf.PT_LOAD && p.Type != elf.PT_DYNAMIC {
			continue
		}
		if !fits(p.Off, p.Filesz) {
			return fmt.Errorf("program header %d: %d bytes at offset %#x of a %d-byte file", i, p.Filesz, p.Off, size)
		}
		if p.Filesz > p.Memsz {
			return fmt.Errorf("program header %d: %d bytes in the file but %d in memory", i, p.Filesz, p.Memsz)
		}
		if p.Vaddr+p.Memsz < p.Vaddr {
			return fmt.Errorf("program header %d: address range wraps", i)
		}
	}
	for _, s := range f.Sections {
		if s.Type == elf.SHT_NOBITS || s.Type == elf.SHT_NULL {
			continue
		}
		if !fits(s.Offset, s.FileSize) {
			return fmt.Errorf("section %q: %d bytes at offset %#x of a %d-byte file", s.Name, s.FileSize, s.Offset, size)
		}
	}
	return nil
}

// buildInfoMagic starts the build info blob (cmd/link/internal/ld.Link.buildinfo), 16-byte aligned.
var buildInfoMagic = []byte("\xff Go buildinf:")

// maxBuildInfo bounds the build info blob: the module list of a large program is a few tens of KiB.
const maxBuildInfo = 1 << 20

// segmentBuildInfo finds the build info in the writable segments by its magic and reads the
// layout Go 1.18+ writes (flag 2: version and module strings inline, varint length-prefixed).
func segmentBuildInfo(ef *elf.File, r io.ReaderAt) (*debug.BuildInfo, error) {
	for _, p := range ef.Progs {
		if p.Type != elf.PT_LOAD || p.Flags&elf.PF_W == 0 || p.Flags&elf.PF_X != 0 {
			continue
		}
		n := min(p.Filesz, maxBuildInfo)
		data := make([]byte, n)
		if _, err := r.ReadAt(data, int64(p.Off)); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		for off := 0; off+32 <= len(data); off += 16 {
			if !bytes.HasPrefix(data[off:], buildInfoMagic) {
				continue
			}
			const flagsVersionInl = 0x2
			if data[off+15]&flagsVersionInl == 0 {
				return nil, errors.New("build info of a Go release before 1.18")
			}
			rest := data[off+32:]
			str := func() (string, error) {
				l, k := binary.Uvarint(rest)
				if k <= 0 || l > uint64(len(rest)-k) {
					return "", errors.New("build info string out of bounds")
				}
				s := string(rest[k : k+int(l)])
				rest = rest[k+int(l):]
				return s, nil
			}
			vers, err := str()
			if err != nil {
				return nil, err
			}
			mod, err := str()
			if err != nil {
				return nil, err
			}
			// The module list is framed by 16-byte sentinels.
			if len(mod) >= 33 && mod[len(mod)-17] == '\n' {
				mod = mod[16 : len(mod)-16]
			} else {
				mod = ""
			}
			bi, err := debug.ParseBuildInfo(mod)
			if err != nil {
				return nil, err
			}
			bi.GoVersion = vers
			return bi, nil
		}
	}
	return nil, errors.New("no build info in the writable segments")
}

func hasDWARF(f *elf.File) bool {
	present := func(name string) bool {
		s := f.Section(".debug_" + name)
		if s == nil {
			s = f.Section(".zdebug_" + name)
		}
		return s != nil && s.Type != elf.SHT_NOBITS && s.Size > 0
	}
	return present("info") && present("abbrev")
}

func goarch(m elf.Machine) string {
	switch m {
	case elf.EM_X86_64:
		return "amd64"
	case elf.EM_AARCH64:
		return "arm64"
	case elf.EM_386:
		return "386"
	case elf.EM_ARM:
		return "arm"
	case elf.EM_PPC64:
		return "ppc64"
	case elf.EM_S390:
		return "s390x"
	case elf.EM_RISCV:
		return "riscv64"
	case elf.EM_LOONGARCH:
		return "loong64"
	case elf.EM_MIPS:
		return "mips"
	}
	return m.String()
}

var goVersionRE = regexp.MustCompile(`^go1\.(\d+)(\.\d+)?(.*)$`)

// cleanGoVersion turns a build-info Go version into "go1.N.P" where it is a release.
func cleanGoVersion(v string) string {
	fields := strings.Fields(v)
	if len(fields) == 0 {
		return ""
	}
	tok := fields[0]
	if tok == "devel" && len(fields) > 1 {
		tok = fields[1]
	}
	m := goVersionRE.FindStringSubmatch(tok)
	if m == nil {
		return tok
	}
	if m[2] == "" && m[3] == "" {
		// "go1.20" is how 1.20 and older spell their .0 release.
		return tok + ".0"
	}
	return tok
}
