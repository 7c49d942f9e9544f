// Package greet stands in for a third-party module committed under vendor/.
package greet

import "strings"

// Shout greets name loudly.
func Shout(name string) string {
	return "HELLO, " + strings.ToUpper(name) + "!"
}
