// Command hello is the smallest destination for trying ipprotd on a machine
// where nothing else listens: an HTTP server that answers every request
// with one line. README.md starts it in front of the proxy.
//
//	go run ./examples/hello -listen 127.0.0.1:8081
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8081", "address to serve on")
	flag.Parse()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from behind ipprotd: you asked for %s\n", r.URL.Path)
	})
	log.Printf("hello: serving on http://%s/", *listen)
	log.Fatal(http.ListenAndServe(*listen, nil))
}
