// Command std is the template offsetgen builds with each Go toolchain. It is linked, never run:
// serving HTTP keeps net/http's server types (Request, response, pattern) and net/url's URL
// reachable, and one client request the client's (Response, the errors a Transport returns), so
// the linker describes them in DWARF.
package main

import (
	"fmt"
	"log"
	"net/http"
	"net/url"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: std http://127.0.0.1:PORT/")
		os.Exit(2)
	}
	u, err := url.Parse(os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, r.Method, r.URL.Path, r.Proto, r.Host, r.RemoteAddr, len(r.Header), r.Context() != nil)
	})
	if resp, err := http.Get(u.String()); err == nil {
		fmt.Println(resp.StatusCode, resp.ProtoMajor, resp.ProtoMinor)
		resp.Body.Close()
	}
	srv := &http.Server{Addr: u.Host, Handler: mux}
	log.Fatal(srv.ListenAndServe())
}
