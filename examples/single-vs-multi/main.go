// A small HTTP service for seed 003's Dockerfiles: it answers on :8080,
// reports its build version (set with -ldflags "-X main.version=...") and
// has a /health endpoint for HEALTHCHECK.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
)

// version is replaced at build time by -ldflags "-X main.version=...".
var version = "dev"

func greeting() string {
	return "Hello from a multi-stage Go build!"
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "version" {
		fmt.Println(version)
		return
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s (version %s)\n", greeting(), version)
	})
	http.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	log.Printf("listening on :8080 (version %s)", version)
	log.Fatal(http.ListenAndServe(":8080", nil))
}
