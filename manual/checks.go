package manual

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"time"
)

// GoroutineCheck is a liveness check that fails when the process runs more
// than max goroutines (max itself passes): a leak that only grows is a
// reason to restart. obsd's own /healthz applies the same rule; the table
// in testdata/health_rules.json specifies both.
func GoroutineCheck(max int) Check {
	return func(context.Context) error {
		if n := runtime.NumGoroutine(); max < 0 || overLimit(uint64(n), uint64(max)) {
			return fmt.Errorf("%d goroutines, limit %d", n, max)
		}
		return nil
	}
}

// overLimit is the one rule of every limit check here and in obsd's
// internal/health: the limit is the largest healthy value.
func overLimit(value, limit uint64) bool { return value > limit }

// heapObjectsMetric is the live-plus-unswept heap, the same quantity as
// MemStats.HeapAlloc, read through runtime/metrics, which does not stop
// the world.
const heapObjectsMetric = "/memory/classes/heap/objects:bytes"

// HeapCheck is a liveness check that fails when the heap's allocated
// objects exceed maxBytes (maxBytes itself passes). It reads runtime/metrics, which is cheap and
// does not stop the world, so it is safe on every probe.
func HeapCheck(maxBytes uint64) Check {
	return func(context.Context) error {
		s := []metrics.Sample{{Name: heapObjectsMetric}}
		metrics.Read(s)
		if s[0].Value.Kind() != metrics.KindUint64 {
			return fmt.Errorf("reading %s: not supported by this Go runtime", heapObjectsMetric)
		}
		if v := s[0].Value.Uint64(); overLimit(v, maxBytes) {
			return fmt.Errorf("heap %d bytes, limit %d", v, maxBytes)
		}
		return nil
	}
}

// Heartbeat detects a stuck loop or a deadlock: the loop calls Beat on each
// iteration, and Check fails when the last beat is older than the allowed
// age. The zero value is not usable; use NewHeartbeat.
type Heartbeat struct {
	maxAge time.Duration
	// base carries a monotonic clock reading and last is an offset from
	// it, so a step of the wall clock (NTP, a VM resumed) neither fails
	// nor hides a stuck loop.
	base time.Time
	last atomic.Int64 // ns since base of the latest beat
}

// HeartbeatOpts configures NewHeartbeat.
type HeartbeatOpts struct {
	// MaxAge is how old the last beat may be before Check fails. Zero
	// means 30 s. Make it several times the loop's normal period.
	MaxAge time.Duration
}

// NewHeartbeat returns a Heartbeat whose first beat is now, so a loop has
// MaxAge to start.
func NewHeartbeat(opts HeartbeatOpts) *Heartbeat {
	hb := &Heartbeat{maxAge: opts.MaxAge, base: time.Now()}
	if hb.maxAge <= 0 {
		hb.maxAge = 30 * time.Second
	}
	return hb
}

// Beat records that the watched loop made progress. It costs one clock
// read and one atomic store.
func (hb *Heartbeat) Beat() { hb.last.Store(int64(time.Since(hb.base))) }

// Check is a liveness Check failing when no beat came within MaxAge (an
// age of exactly MaxAge passes). Ages are measured on the monotonic clock.
func (hb *Heartbeat) Check(context.Context) error {
	age := time.Since(hb.base) - time.Duration(hb.last.Load())
	if age > hb.maxAge {
		return fmt.Errorf("no heartbeat for %s, limit %s", age.Round(time.Millisecond), hb.maxAge)
	}
	return nil
}

// Pinger is what PingCheck needs; *sql.DB and *sql.Conn satisfy it.
type Pinger interface {
	PingContext(ctx context.Context) error
}

// PingCheck is a readiness check that pings a database through its pool.
// With *sql.DB the ping reuses an idle pooled connection, so it is cheap
// but proves little: with SQLite it passes after the database file is
// removed and while another process holds an exclusive lock, and a server
// that stopped answering may go unnoticed until the connection is dropped.
// Prefer SQLCheck, which tests the database the way it fails.
func PingCheck(db Pinger) Check {
	return func(ctx context.Context) error {
		if err := db.PingContext(ctx); err != nil {
			return fmt.Errorf("pinging database: %w", err)
		}
		return nil
	}
}

// SQLCheck is a readiness check that opens a fresh connection with
// sql.Open(driverName, dsn), never a pooled one, runs query under the
// check's deadline and reads every row. Use a query that touches your
// data ("SELECT 1 FROM users LIMIT 1"): "SELECT 1" passes on an empty
// database that a removed SQLite file leaves behind. Errors name the
// driver and the step (open, query, rows); the DSN is not echoed, since it
// may hold a password.
func SQLCheck(driverName, dsn, query string) Check {
	return func(ctx context.Context) error {
		db, err := sql.Open(driverName, dsn)
		if err != nil {
			return fmt.Errorf("opening %s database: %w", driverName, err)
		}
		defer db.Close()
		db.SetMaxIdleConns(0)
		db.SetMaxOpenConns(1)
		rows, err := db.QueryContext(ctx, query)
		if err != nil {
			return fmt.Errorf("querying %s database: %w", driverName, err)
		}
		defer rows.Close()
		for rows.Next() {
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("reading %s rows: %w", driverName, err)
		}
		return nil
	}
}

// DialCheck is a readiness check that opens and closes a connection to
// address. It proves only that something accepts connections: a Redis or
// a database that accepts but never answers passes. Prefer RedisCheck,
// HTTPCheck, SQLCheck or TCPCheck, which wait for an answer. network is as
// for net.Dial ("tcp", "tcp4", "unix", ...).
func DialCheck(network, address string) Check {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, address)
		if err != nil {
			return fmt.Errorf("dialing %s: %w", address, err)
		}
		return c.Close()
	}
}

// TCPCheck is a readiness check that connects to address, writes send and
// expects the answer to start with expect, all under the check's deadline:
// a dependency that accepts connections but never answers fails with a
// timeout. Empty send writes nothing (for servers that greet first, such
// as SMTP or MySQL); empty expect is an error from the check. network is
// as for net.Dial.
func TCPCheck(network, address string, send, expect []byte) Check {
	send, expect = bytes.Clone(send), bytes.Clone(expect)
	return func(ctx context.Context) error {
		if len(expect) == 0 {
			return errors.New("tcp check: nothing to expect")
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, network, address)
		if err != nil {
			return fmt.Errorf("dialing %s: %w", address, err)
		}
		defer c.Close()
		// Unblock reads and writes when ctx ends, whatever its deadline.
		stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
		defer stop()
		if dl, ok := ctx.Deadline(); ok {
			_ = c.SetDeadline(dl)
		}
		if len(send) > 0 {
			if _, err := c.Write(send); err != nil {
				return fmt.Errorf("writing to %s: %w", address, err)
			}
		}
		got := make([]byte, len(expect))
		if _, err := io.ReadFull(c, got); err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
				return fmt.Errorf("no answer from %s before the deadline: %w", address, err)
			}
			return fmt.Errorf("reading from %s: %w", address, err)
		}
		if !bytes.Equal(got, expect) {
			return fmt.Errorf("%s answered %q, want %q", address, got, expect)
		}
		return nil
	}
}

// RedisCheck is a readiness check that sends Redis PING to address
// ("redis:6379") and expects +PONG under the check's deadline. A server
// that needs AUTH answers -NOAUTH, which fails the check: give it the
// credentials through your client and a Check of your own.
func RedisCheck(address string) Check {
	return TCPCheck("tcp", address, []byte("*1\r\n$4\r\nPING\r\n"), []byte("+PONG\r\n"))
}

// HTTPCheck is a readiness check that sends GET url with client (nil means
// a client with no timeout of its own; the check's deadline bounds it) and
// expects status wantStatus; wantStatus 0 accepts any 2xx. The body is
// read and discarded, so connections are reused.
func HTTPCheck(client *http.Client, url string, wantStatus int) Check {
	if client == nil {
		client = &http.Client{}
	}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("building request for %s: %w", url, err)
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("GET %s: %w", url, err)
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		ok := resp.StatusCode == wantStatus || wantStatus == 0 && resp.StatusCode >= 200 && resp.StatusCode < 300
		if !ok {
			want := "2xx"
			if wantStatus != 0 {
				want = fmt.Sprint(wantStatus)
			}
			return fmt.Errorf("GET %s: status %d, want %s", url, resp.StatusCode, want)
		}
		return nil
	}
}

// FlagCheck is a readiness check that passes once flag is true, for
// conditions such as "configuration loaded" or "cache warmed".
// what names the condition in the failure message.
func FlagCheck(flag *atomic.Bool, what string) Check {
	return func(context.Context) error {
		if !flag.Load() {
			return errors.New(what + " not yet done")
		}
		return nil
	}
}
