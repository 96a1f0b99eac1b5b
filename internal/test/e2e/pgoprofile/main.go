// Command pgoprofile writes a CPU profile in which net/http's server path is hot, for building
// test servers with profile-guided optimisation (go build -pgo=FILE): it serves requests in
// process, on loopback, and drives them from several clients while pprof records. Built by the
// toolchain under test, so the profile names that toolchain's net/http lines.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"sync"
	"time"
)

func main() {
	out := flag.String("o", "default.pgo", "profile to write")
	n := flag.Int("n", 30000, "requests to drive: the profile's weight comes from CPU time, which a busy machine hands out slowly")
	dur := flag.Duration("d", 90*time.Second, "at most this long")
	flag.Parse()
	if err := run(*out, *n, *dur); err != nil {
		log.Fatal(err)
	}
}

func run(out string, total int, dur time.Duration) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s\n", r.URL.Path)
	})
	go http.Serve(ln, mux)

	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	defer pprof.StopCPUProfile()
	url := "http://" + ln.Addr().String() + "/hello"
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	var failed error
	var mu sync.Mutex
	const clients = 4
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 5 * time.Second}
			for n := 0; n < total/clients && time.Now().Before(deadline); n++ {
				resp, err := client.Get(url)
				if err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	return failed
}
