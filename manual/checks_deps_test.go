package manual_test

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/obsd-dev/obsd/manual"
	_ "modernc.org/sqlite" // pure Go, test-only
)

// checkWithin runs c under a deadline of d and fails the test if it takes
// much longer: a dependency check must answer under its deadline.
func checkWithin(t *testing.T, c manual.Check, d time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := time.Now()
	err := c(ctx)
	if took := time.Since(start); took > d+300*time.Millisecond {
		t.Errorf("check took %s under a %s deadline", took, d)
	}
	return err
}

func newSQLite(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "shop.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE items (id INTEGER PRIMARY KEY); INSERT INTO items VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	return path
}

const itemsQuery = "SELECT id FROM items LIMIT 1"

func TestSQLCheckSeesARemovedDatabase(t *testing.T) {
	path := newSQLite(t)
	pooled, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer pooled.Close()
	for name, dsn := range map[string]string{"plain path": path, "mode=rw": "file:" + path + "?mode=rw"} {
		if err := checkWithin(t, manual.SQLCheck("sqlite", dsn, itemsQuery), time.Second); err != nil {
			t.Fatalf("%s: with the database present: %v", name, err)
		}
	}
	if err := manual.PingCheck(pooled)(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := checkWithin(t, manual.SQLCheck("sqlite", "file:"+path+"?mode=rw", itemsQuery), time.Second); err == nil {
		t.Error("SQLCheck (mode=rw) passed after the database file was removed")
	}
	os.Remove(path) // a plain path creates an empty database; the query still fails
	if err := checkWithin(t, manual.SQLCheck("sqlite", path, itemsQuery), time.Second); err == nil || !strings.Contains(err.Error(), "no such table") {
		t.Errorf("SQLCheck (plain path) after removal: %v, want no such table", err)
	}
}

// TestSQLiteLockerProcess is not a test: run by TestSQLCheckSeesALockedDatabase
// as another process, it holds an exclusive lock until its stdin closes.
func TestSQLiteLockerProcess(t *testing.T) {
	path := os.Getenv("MANUAL_TEST_SQLITE_LOCK")
	if path == "" {
		t.Skip("helper process only")
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(context.Background(), "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	fmt.Println("locked")
	bufio.NewReader(os.Stdin).ReadString('\n')
}

func TestSQLCheckSeesALockedDatabase(t *testing.T) {
	path := newSQLite(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestSQLiteLockerProcess$")
	cmd.Env = append(os.Environ(), "MANUAL_TEST_SQLITE_LOCK="+path)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "locked" {
		t.Fatalf("locker process: %q %v", line, err)
	}
	err = checkWithin(t, manual.SQLCheck("sqlite", path, itemsQuery), time.Second)
	if err == nil || !strings.Contains(err.Error(), "locked") {
		t.Errorf("SQLCheck while another process holds an exclusive lock: %v, want a locked error", err)
	}
}

// fakeRedis accepts connections and answers PING with reply, or never
// answers when reply is "".
func fakeRedis(t *testing.T, reply string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64)
				n, _ := c.Read(buf)
				if reply == "" || string(buf[:n]) != "*1\r\n$4\r\nPING\r\n" {
					c.Read(buf) // hold the connection, say nothing
					return
				}
				c.Write([]byte(reply))
			}()
		}
	}()
	return ln.Addr().String()
}

func TestRedisCheckWantsAnAnswer(t *testing.T) {
	mute := fakeRedis(t, "")
	if err := checkWithin(t, manual.DialCheck("tcp", mute), 300*time.Millisecond); err != nil {
		t.Fatalf("DialCheck: %v (it only proves accept)", err)
	}
	if err := checkWithin(t, manual.RedisCheck(mute), 300*time.Millisecond); err == nil || !strings.Contains(err.Error(), "no answer") {
		t.Errorf("RedisCheck on a Redis that never answers: %v, want no answer", err)
	}
	if err := checkWithin(t, manual.RedisCheck(fakeRedis(t, "+PONG\r\n")), time.Second); err != nil {
		t.Errorf("RedisCheck on a live Redis: %v", err)
	}
	if err := checkWithin(t, manual.RedisCheck(fakeRedis(t, "-NOAUTH Authentication required.\r\n")), time.Second); err == nil {
		t.Error("RedisCheck passed on -NOAUTH")
	}
	if err := checkWithin(t, manual.TCPCheck("tcp", fakeRedis(t, "+PONG\r\n"), []byte("*1\r\n$4\r\nPING\r\n"), nil), time.Second); err == nil {
		t.Error("TCPCheck without expect passed")
	}
}

func TestHTTPCheck(t *testing.T) {
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
		case "/teapot":
			w.WriteHeader(http.StatusTeapot)
		case "/hang":
			select {
			case <-hang:
			case <-r.Context().Done():
			}
		}
	}))
	t.Cleanup(srv.Close)
	for _, tt := range []struct {
		path    string
		want    int
		wantErr string
	}{
		{"/ok", 0, ""},
		{"/ok", 200, ""},
		{"/teapot", 0, "status 418, want 2xx"},
		{"/teapot", 418, ""},
		{"/ok", 204, "status 200, want 204"},
		{"/hang", 0, "context deadline exceeded"},
	} {
		err := checkWithin(t, manual.HTTPCheck(nil, srv.URL+tt.path, tt.want), 300*time.Millisecond)
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("GET %s want %d: %v, want %q", tt.path, tt.want, err, tt.wantErr)
		}
	}
}
