// A Go module with no dependencies: the buildpack builds bin/hello and writes the
// Procfile (web: bin/hello). The page shows a value computed at request time.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"runtime"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "5000"
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		n := 0
		for i := 1; i <= 100; i++ {
			n += i * i
		}
		fmt.Fprintf(w, "Hello from Go %s: sum of squares to 100 is %d\n", runtime.Version(), n)
	})
	log.Printf("listening on :%s", port)
	log.Fatal(http.ListenAndServe(":"+port, nil))
}
