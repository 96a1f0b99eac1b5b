package discover

import (
	"fmt"
	"path"
	"strings"
	"unicode/utf8"
)

// glob is a compiled --exe pattern. The syntax is that of path.Match: '*'
// is any sequence of characters, '?' any one character, "[class]" one
// character of the class (c or lo-hi, negated by a leading '^'), and "\c"
// the character c; with one difference: '*' and '?' also match '/', so
// "*/bin/*" matches "/usr/local/bin/myservice" and "/opt/*" matches
// everything under /opt. A pattern with a '/' is matched against the whole
// absolute executable path; a pattern without one is matched against the
// base name only, so "myservice" or "my*" select by file name wherever it
// lives.
type glob struct {
	pattern string
	full    bool
	toks    []globTok
}

type globKind uint8

const (
	globLit globKind = iota
	globAny
	globStar
	globClass
)

type globTok struct {
	kind   globKind
	r      rune        // globLit
	neg    bool        // globClass
	ranges []runeRange // globClass
}

type runeRange struct{ lo, hi rune }

// compileGlob checks and compiles an --exe pattern.
func compileGlob(pattern string) (glob, error) {
	if pattern == "" {
		return glob{}, fmt.Errorf("exe glob: empty pattern")
	}
	g := glob{pattern: pattern, full: strings.Contains(pattern, "/")}
	// A path pattern must be able to match an absolute path; "bin/app"
	// never could, and silently matching nothing would hide the mistake.
	if g.full {
		if c := pattern[0]; c != '/' && c != '*' && c != '?' && c != '[' {
			return glob{}, fmt.Errorf("exe glob %q: a pattern with '/' is matched against the whole absolute path, so it must start with '/' or '*'", pattern)
		}
	}
	s := pattern
	for s != "" {
		r, n := utf8.DecodeRuneInString(s)
		s = s[n:]
		switch r {
		case '*':
			if len(g.toks) == 0 || g.toks[len(g.toks)-1].kind != globStar {
				g.toks = append(g.toks, globTok{kind: globStar})
			}
		case '?':
			g.toks = append(g.toks, globTok{kind: globAny})
		case '\\':
			if s == "" {
				return glob{}, fmt.Errorf("exe glob %q: trailing backslash", pattern)
			}
			r, n = utf8.DecodeRuneInString(s)
			s = s[n:]
			g.toks = append(g.toks, globTok{kind: globLit, r: r})
		case '[':
			tok, rest, err := compileClass(s)
			if err != nil {
				return glob{}, fmt.Errorf("exe glob %q: %w", pattern, err)
			}
			s = rest
			g.toks = append(g.toks, tok)
		default:
			g.toks = append(g.toks, globTok{kind: globLit, r: r})
		}
	}
	return g, nil
}

// compileClass compiles a character class; s starts after the '['.
func compileClass(s string) (globTok, string, error) {
	tok := globTok{kind: globClass}
	if rest, ok := strings.CutPrefix(s, "^"); ok {
		tok.neg, s = true, rest
	}
	// classChar reads one possibly escaped character of a class.
	classChar := func() (rune, error) {
		if s == "" {
			return 0, fmt.Errorf("unterminated character class")
		}
		r, n := utf8.DecodeRuneInString(s)
		s = s[n:]
		switch r {
		case '\\':
			if s == "" {
				return 0, fmt.Errorf("unterminated character class")
			}
			r, n = utf8.DecodeRuneInString(s)
			s = s[n:]
		case '-', ']':
			return 0, fmt.Errorf("unescaped %q in character class", r)
		}
		return r, nil
	}
	for {
		if rest, ok := strings.CutPrefix(s, "]"); ok && len(tok.ranges) > 0 {
			return tok, rest, nil
		}
		lo, err := classChar()
		if err != nil {
			return tok, "", err
		}
		hi := lo
		if rest, ok := strings.CutPrefix(s, "-"); ok {
			s = rest
			if hi, err = classChar(); err != nil {
				return tok, "", err
			}
			if hi < lo {
				return tok, "", fmt.Errorf("range %c-%c is reversed", lo, hi)
			}
		}
		tok.ranges = append(tok.ranges, runeRange{lo, hi})
	}
}

func (t globTok) matches(r rune) bool {
	switch t.kind {
	case globLit:
		return r == t.r
	case globAny:
		return true
	case globClass:
		in := false
		for _, rr := range t.ranges {
			if rr.lo <= r && r <= rr.hi {
				in = true
				break
			}
		}
		return in != t.neg
	}
	return false
}

// match reports whether the executable path exe matches the pattern.
func (g glob) match(exe string) bool {
	name := exe
	if !g.full {
		name = path.Base(exe)
	}
	// Every token but '*' consumes exactly one character, so on a mismatch
	// it suffices to let the most recent '*' swallow one more character and
	// retry from just after it; earlier stars never need to be revisited.
	ti, ni := 0, 0
	starTok, starName := -1, 0
	for ni < len(name) {
		if ti < len(g.toks) && g.toks[ti].kind == globStar {
			starTok, starName = ti, ni
			ti++
			continue
		}
		r, n := utf8.DecodeRuneInString(name[ni:])
		if ti < len(g.toks) && g.toks[ti].matches(r) {
			ti++
			ni += n
			continue
		}
		if starTok < 0 {
			return false
		}
		_, n = utf8.DecodeRuneInString(name[starName:])
		starName += n
		ti, ni = starTok+1, starName
	}
	for ti < len(g.toks) && g.toks[ti].kind == globStar {
		ti++
	}
	return ti == len(g.toks)
}
