//go:build race

package main_test

// raceEnabled builds the binary under test with the race detector too when
// the tests run with -race, so a data race in the wiring fails the test.
const raceEnabled = true
