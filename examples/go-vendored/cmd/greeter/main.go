// A module whose dependency is vendored: built with -mod=vendor and no module proxy.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"

	"example.com/greet"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, greet.Shout("vendored "+r.URL.Query().Get("name")))
	})
	log.Fatal(http.ListenAndServe(":"+os.Getenv("PORT"), nil))
}
