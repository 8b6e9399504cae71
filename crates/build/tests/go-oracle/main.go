// Command go-oracle evaluates .dockerignore patterns with Go's
// github.com/moby/patternmatcher, the library Docker and BuildKit use, so
// kiln's matcher can be tested against it (crates/build/tests/go_oracle.rs).
//
// Input (stdin), repeated for each case; every string is hex-encoded bytes:
//
//	case <number of patterns> <number of paths>
//	<pattern>   (one line each)
//	<path>      (one line each)
//
// Output: per case either "newerr" (New rejected the patterns) or one line per
// path with two results, each T, F or E (error):
// MatchesOrParentMatches, then the walker's chain of MatchesUsingParentResults
// over every ancestor of the path (how BuildKit's fsutil walker asks).
package main

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"github.com/moby/patternmatcher"
)

func decode(line string) string {
	b, err := hex.DecodeString(strings.TrimSpace(line))
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-oracle: bad hex input:", err)
		os.Exit(2)
	}
	return string(b)
}

func verdict(m bool, err error) string {
	if err != nil {
		return "E"
	}
	if m {
		return "T"
	}
	return "F"
}

// guard runs f and turns a panic into an error. Debian's patternmatcher 0.5.0
// dereferences a nil regexp when a pattern whose regex failed to compile is
// evaluated a second time; upstream (0.6) returns ErrBadPattern instead.
func guard(f func() (bool, error)) (m bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			m, err = false, fmt.Errorf("panic: %v", r)
		}
	}()
	return f()
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<26)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		var np, nq int
		if _, err := fmt.Sscanf(in.Text(), "case %d %d", &np, &nq); err != nil {
			fmt.Fprintln(os.Stderr, "go-oracle: bad case header:", in.Text())
			os.Exit(2)
		}
		patterns := make([]string, 0, np)
		for i := 0; i < np && in.Scan(); i++ {
			patterns = append(patterns, decode(in.Text()))
		}
		paths := make([]string, 0, nq)
		for i := 0; i < nq && in.Scan(); i++ {
			paths = append(paths, decode(in.Text()))
		}
		pm, err := patternmatcher.New(patterns)
		if err != nil {
			fmt.Fprintln(out, "newerr")
			continue
		}
		for _, p := range paths {
			direct := verdict(guard(func() (bool, error) { return pm.MatchesOrParentMatches(p) }))
			parts := strings.Split(p, "/")
			var info patternmatcher.MatchInfo
			walked := "F"
			for i := range parts {
				var next patternmatcher.MatchInfo
				prefix := strings.Join(parts[:i+1], "/")
				m, err := guard(func() (bool, error) {
					m, n, err := pm.MatchesUsingParentResults(prefix, info)
					next = n
					return m, err
				})
				walked = verdict(m, err)
				if err != nil {
					break
				}
				info = next
			}
			fmt.Fprintln(out, direct+walked)
		}
	}
}
