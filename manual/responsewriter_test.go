package manual

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// capabilities lists which optional interfaces w has.
func capabilities(w http.ResponseWriter) string {
	var caps []string
	if _, ok := w.(http.Flusher); ok {
		caps = append(caps, "Flusher")
	}
	if _, ok := w.(http.Hijacker); ok {
		caps = append(caps, "Hijacker")
	}
	if _, ok := w.(http.Pusher); ok {
		caps = append(caps, "Pusher")
	}
	if _, ok := w.(io.ReaderFrom); ok {
		caps = append(caps, "ReaderFrom")
	}
	return strings.Join(caps, ",")
}

// TestWrapperKeepsExactlyTheWritersInterfaces compares, on real HTTP/1.1
// and HTTP/2 servers, what the handler sees with and without the wrapper.
func TestWrapperKeepsExactlyTheWritersInterfaces(t *testing.T) {
	for _, proto := range []string{"HTTP/1.1", "HTTP/2"} {
		t.Run(proto, func(t *testing.T) {
			var bare, wrapped string
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				bare = capabilities(w)
				_, ww := wrapWriter(w)
				wrapped = capabilities(ww)
				if r.ProtoMajor == 2 && proto != "HTTP/2" || r.ProtoMajor == 1 && proto != "HTTP/1.1" {
					t.Errorf("served over %s, want %s", r.Proto, proto)
				}
			})
			srv := httptest.NewUnstartedServer(h)
			if proto == "HTTP/2" {
				srv.EnableHTTP2 = true
				srv.StartTLS()
			} else {
				srv.Start()
			}
			defer srv.Close()
			resp, err := srv.Client().Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if bare == "" || bare != wrapped {
				t.Errorf("underlying writer has %q, wrapper exposes %q", bare, wrapped)
			}
		})
	}
	// Every combination maps to itself.
	for mask := range 16 {
		w := fakeWriter(mask)
		if got, want := capabilities(func() http.ResponseWriter { _, ww := wrapWriter(w); return ww }()), capabilities(w); got != want {
			t.Errorf("mask %04b: wrapper exposes %q, writer has %q", mask, got, want)
		}
	}
}

// fakeWriter builds a writer with the capabilities of mask (bit 0
// Flusher, 1 Hijacker, 2 Pusher, 3 ReaderFrom) around a ResponseRecorder.
func fakeWriter(mask int) http.ResponseWriter { return composed(httptest.NewRecorder(), mask) }

type flushOnly struct{ *httptest.ResponseRecorder }
type hijackOnly struct{ http.ResponseWriter }

func (hijackOnly) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return nil, nil, http.ErrNotSupported
}

type pushOnly struct{ http.ResponseWriter }

func (pushOnly) Push(string, *http.PushOptions) error { return http.ErrNotSupported }

type readFromOnly struct{ http.ResponseWriter }

func (r readFromOnly) ReadFrom(src io.Reader) (int64, error) { return io.Copy(r.ResponseWriter, src) }

// composed stacks capability wrappers; it exists only to enumerate masks.
func composed(rec *httptest.ResponseRecorder, mask int) http.ResponseWriter {
	type plain struct{ http.ResponseWriter }
	var w http.ResponseWriter = plain{rec}
	var ifaces []any
	if mask&1 != 0 {
		ifaces = append(ifaces, flushOnly{rec})
	}
	if mask&2 != 0 {
		ifaces = append(ifaces, hijackOnly{w})
	}
	if mask&4 != 0 {
		ifaces = append(ifaces, pushOnly{w})
	}
	if mask&8 != 0 {
		ifaces = append(ifaces, readFromOnly{w})
	}
	return multi{ResponseWriter: w, parts: ifaces}.build(mask)
}

type multi struct {
	http.ResponseWriter
	parts []any
}

func (m multi) build(mask int) http.ResponseWriter {
	get := func(i int) any {
		for _, p := range m.parts {
			switch i {
			case 1:
				if v, ok := p.(flushOnly); ok {
					return v
				}
			case 2:
				if v, ok := p.(hijackOnly); ok {
					return v
				}
			case 4:
				if v, ok := p.(pushOnly); ok {
					return v
				}
			case 8:
				if v, ok := p.(readFromOnly); ok {
					return v
				}
			}
		}
		return nil
	}
	var fl http.Flusher
	var hj http.Hijacker
	var pu http.Pusher
	var rf io.ReaderFrom
	if v := get(1); v != nil {
		fl = v.(http.Flusher)
	}
	if v := get(2); v != nil {
		hj = v.(http.Hijacker)
	}
	if v := get(4); v != nil {
		pu = v.(http.Pusher)
	}
	if v := get(8); v != nil {
		rf = v.(io.ReaderFrom)
	}
	w := m.ResponseWriter
	switch mask {
	case 0:
		return w
	case 1:
		return struct {
			http.ResponseWriter
			http.Flusher
		}{w, fl}
	case 2:
		return struct {
			http.ResponseWriter
			http.Hijacker
		}{w, hj}
	case 3:
		return struct {
			http.ResponseWriter
			http.Flusher
			http.Hijacker
		}{w, fl, hj}
	case 4:
		return struct {
			http.ResponseWriter
			http.Pusher
		}{w, pu}
	case 5:
		return struct {
			http.ResponseWriter
			http.Flusher
			http.Pusher
		}{w, fl, pu}
	case 6:
		return struct {
			http.ResponseWriter
			http.Hijacker
			http.Pusher
		}{w, hj, pu}
	case 7:
		return struct {
			http.ResponseWriter
			http.Flusher
			http.Hijacker
			http.Pusher
		}{w, fl, hj, pu}
	case 8:
		return struct {
			http.ResponseWriter
			io.ReaderFrom
		}{w, rf}
	case 9:
		return struct {
			http.ResponseWriter
			http.Flusher
			io.ReaderFrom
		}{w, fl, rf}
	case 10:
		return struct {
			http.ResponseWriter
			http.Hijacker
			io.ReaderFrom
		}{w, hj, rf}
	case 11:
		return struct {
			http.ResponseWriter
			http.Flusher
			http.Hijacker
			io.ReaderFrom
		}{w, fl, hj, rf}
	case 12:
		return struct {
			http.ResponseWriter
			http.Pusher
			io.ReaderFrom
		}{w, pu, rf}
	case 13:
		return struct {
			http.ResponseWriter
			http.Flusher
			http.Pusher
			io.ReaderFrom
		}{w, fl, pu, rf}
	case 14:
		return struct {
			http.ResponseWriter
			http.Hijacker
			http.Pusher
			io.ReaderFrom
		}{w, hj, pu, rf}
	default:
		return struct {
			http.ResponseWriter
			http.Flusher
			http.Hijacker
			http.Pusher
			io.ReaderFrom
		}{w, fl, hj, pu, rf}
	}
}

// TestWrappedInterfacesWork drives flushing, sendfile through ReadFrom and
// a protocol upgrade through Hijack on a real HTTP/1.1 server, and checks
// the recorded status of each.
func TestWrappedInterfacesWork(t *testing.T) {
	file := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(file, []byte(strings.Repeat("x", 100_000)), 0o600); err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		status  int
		written int64
	}
	outcomes := make(chan outcome, 1)
	var status int
	var written int64
	// wait takes the handler's outcome once it returned: the client can
	// see the answer before that.
	wait := func() {
		o := <-outcomes
		status, written = o.status, o.written
	}
	record := func(next http.HandlerFunc) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rec, ww := wrapWriter(w)
			next(ww, r)
			outcomes <- outcome{rec.code(), rec.written}
		})
	}
	mux := http.NewServeMux()
	mux.Handle("/stream", record(func(w http.ResponseWriter, r *http.Request) {
		// Only reachable through Unwrap: the wrapper has no such method.
		if err := http.NewResponseController(w).SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
			t.Errorf("SetWriteDeadline through the wrapper: %v", err)
		}
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		io.WriteString(w, "second\n")
	}))
	mux.Handle("/file", record(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(file)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		if _, err := w.(io.ReaderFrom).ReadFrom(f); err != nil {
			t.Error(err)
		}
	}))
	mux.Handle("/upgrade", record(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
	}))
	mux.Handle("/teapot", record(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusEarlyHints)
		w.WriteHeader(http.StatusTeapot)
	}))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wait()
	if string(b) != "first\nsecond\n" || status != 200 || written != int64(len(b)) {
		t.Errorf("stream: body %q status %d written %d", b, status, written)
	}

	resp, err = http.Get(srv.URL + "/file")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	wait()
	if len(b) != 100_000 || status != 200 || written != 100_000 {
		t.Errorf("file: %d bytes, status %d, written %d", len(b), status, written)
	}

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	line, err := bufio.NewReader(conn).ReadString('\n')
	wait()
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 101") || status != 101 {
		t.Errorf("upgrade: %q %v, recorded status %d", line, err, status)
	}

	resp, err = http.Get(srv.URL + "/teapot")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	wait()
	if resp.StatusCode != http.StatusTeapot || status != http.StatusTeapot {
		t.Errorf("teapot: got %d, recorded %d; 1xx must not be recorded", resp.StatusCode, status)
	}

}
