package export

import (
	"strings"
	"unicode/utf8"
)

// CutMark ends every string obsd shortened, whoever cut it (the probe's
// fixed-size buffers or the limits below), so a cut value is never taken
// for the whole one. Spans also carry obsd.request.truncated=true when the
// probe cut the path or the pattern.
const CutMark = "…"

// MaxValueLen is the most bytes of any string obsd exports (label values,
// span attributes, resource attributes), CutMark included. The probe's own
// limits are smaller (128 bytes of path and pattern, 16 of method), so a
// value it cut still fits with its mark.
const MaxValueLen = 256

// Clean returns s as it may leave obsd: valid UTF-8 of at most max bytes.
// Each run of bytes that is not UTF-8 becomes U+FFFD. A string longer than
// max is cut on a character boundary and ends with CutMark. cut says s was
// already shortened at a byte count (by the probe), which may have split
// the last character: that partial character is dropped and CutMark added.
// Valid strings within max come back unchanged, without allocating.
func Clean(s string, max int, cut bool) string {
	if !cut && len(s) <= max && utf8.ValidString(s) {
		return s
	}
	if cut {
		s = dropPartialRune(s)
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	if !cut && len(s) <= max {
		return s
	}
	n := max - len(CutMark)
	if n < 0 {
		n = 0
	}
	if len(s) > n {
		// Back off to the start of a character: s is valid UTF-8 now.
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n]
	}
	return s + CutMark
}

// dropPartialRune removes an incomplete UTF-8 sequence at the end of s: the
// lead byte of a multi-byte character followed by fewer continuation bytes
// than it announces. Anything else is left for ToValidUTF8.
func dropPartialRune(s string) string {
	for i := len(s) - 1; i >= 0 && i >= len(s)-utf8.UTFMax; i-- {
		c := s[i]
		if c < utf8.RuneSelf {
			return s // ASCII: nothing partial after it
		}
		if !utf8.RuneStart(c) {
			continue // a continuation byte; look further back
		}
		var want int
		switch {
		case c&0xE0 == 0xC0:
			want = 2
		case c&0xF0 == 0xE0:
			want = 3
		case c&0xF8 == 0xF0:
			want = 4
		default:
			return s
		}
		if len(s)-i < want {
			return s[:i]
		}
		return s
	}
	return s
}
