package manual

import (
	"bufio"
	"io"
	"net"
	"net/http"
)

// statusWriter records the status code and body size of a response. It is
// handed to the wrapped handler through wrapWriter, which exposes exactly
// the optional interfaces (Flusher, Hijacker, Pusher, ReaderFrom) that the
// underlying writer has: claiming one it lacks would mislead handlers that
// probe for it (for example to detect HTTP/2 push), and hiding one would
// break streaming, websockets and sendfile.
type statusWriter struct {
	w       http.ResponseWriter
	status  int
	written int64
	wrote   bool
}

func (s *statusWriter) Header() http.Header { return s.w.Header() }

func (s *statusWriter) WriteHeader(code int) {
	// 1xx responses are informational; the final status is still to come.
	if !s.wrote && (code < 100 || code > 199 || code == http.StatusSwitchingProtocols) {
		s.status = code
		s.wrote = true
	}
	s.w.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	s.implicit200()
	n, err := s.w.Write(b)
	s.written += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.w }

func (s *statusWriter) implicit200() {
	if !s.wrote {
		s.status = http.StatusOK
		s.wrote = true
	}
}

// code is the status to record: 200 when the handler wrote nothing, as
// net/http sends then.
func (s *statusWriter) code() int {
	if !s.wrote {
		return http.StatusOK
	}
	return s.status
}

type flusher struct{ s *statusWriter }

func (f flusher) Flush() {
	f.s.implicit200()
	f.s.w.(http.Flusher).Flush()
}

type hijacker struct{ s *statusWriter }

func (h hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := h.s.w.(http.Hijacker).Hijack()
	if err == nil && !h.s.wrote {
		// The handler answers on the raw connection, typically with 101.
		h.s.status = http.StatusSwitchingProtocols
		h.s.wrote = true
	}
	return c, rw, err
}

type pusher struct{ s *statusWriter }

func (p pusher) Push(target string, opts *http.PushOptions) error {
	return p.s.w.(http.Pusher).Push(target, opts)
}

type readerFrom struct{ s *statusWriter }

func (r readerFrom) ReadFrom(src io.Reader) (int64, error) {
	r.s.implicit200()
	n, err := r.s.w.(io.ReaderFrom).ReadFrom(src)
	r.s.written += n
	return n, err
}

// wrapWriter returns the recorder and the writer to hand to the handler.
func wrapWriter(w http.ResponseWriter) (*statusWriter, http.ResponseWriter) {
	s := &statusWriter{w: w}
	const (
		fl = 1 << iota
		hj
		pu
		rf
	)
	var mask int
	if _, ok := w.(http.Flusher); ok {
		mask |= fl
	}
	if _, ok := w.(http.Hijacker); ok {
		mask |= hj
	}
	if _, ok := w.(http.Pusher); ok {
		mask |= pu
	}
	if _, ok := w.(io.ReaderFrom); ok {
		mask |= rf
	}
	f, h, p, r := flusher{s}, hijacker{s}, pusher{s}, readerFrom{s}
	switch mask {
	case 0:
		return s, s
	case fl:
		return s, struct {
			*statusWriter
			http.Flusher
		}{s, f}
	case hj:
		return s, struct {
			*statusWriter
			http.Hijacker
		}{s, h}
	case fl | hj:
		return s, struct {
			*statusWriter
			http.Flusher
			http.Hijacker
		}{s, f, h}
	case pu:
		return s, struct {
			*statusWriter
			http.Pusher
		}{s, p}
	case fl | pu:
		return s, struct {
			*statusWriter
			http.Flusher
			http.Pusher
		}{s, f, p}
	case hj | pu:
		return s, struct {
			*statusWriter
			http.Hijacker
			http.Pusher
		}{s, h, p}
	case fl | hj | pu:
		return s, struct {
			*statusWriter
			http.Flusher
			http.Hijacker
			http.Pusher
		}{s, f, h, p}
	case rf:
		return s, struct {
			*statusWriter
			io.ReaderFrom
		}{s, r}
	case fl | rf:
		return s, struct {
			*statusWriter
			http.Flusher
			io.ReaderFrom
		}{s, f, r}
	case hj | rf:
		return s, struct {
			*statusWriter
			http.Hijacker
			io.ReaderFrom
		}{s, h, r}
	case fl | hj | rf:
		return s, struct {
			*statusWriter
			http.Flusher
			http.Hijacker
			io.ReaderFrom
		}{s, f, h, r}
	case pu | rf:
		return s, struct {
			*statusWriter
			http.Pusher
			io.ReaderFrom
		}{s, p, r}
	case fl | pu | rf:
		return s, struct {
			*statusWriter
			http.Flusher
			http.Pusher
			io.ReaderFrom
		}{s, f, p, r}
	case hj | pu | rf:
		return s, struct {
			*statusWriter
			http.Hijacker
			http.Pusher
			io.ReaderFrom
		}{s, h, p, r}
	default: // all four
		return s, struct {
			*statusWriter
			http.Flusher
			http.Hijacker
			http.Pusher
			io.ReaderFrom
		}{s, f, h, p, r}
	}
}
