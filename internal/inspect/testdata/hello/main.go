// Command hello is a minimal net/http server that inspect's tests build (never run for long) in
// several link modes, so that serverHandler.ServeHTTP and (*response).finishRequest are linked in.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address (loopback only)")
	flag.Parse()

	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s %s\n", r.Method, r.URL.Path)
	})
	log.Fatal(http.ListenAndServe(*addr, mux))
}
