package main

import (
	"bytes"
	"os"
	"testing"
)

// TestGeneratedClientIsCurrent regenerates the client from the document
// (in memory, with the pinned library: nothing is downloaded) and fails
// when examples/apiclient/apiclient.gen.go differs: run go generate
// ./examples/apiclient.
func TestGeneratedClientIsCurrent(t *testing.T) {
	want, err := generate()
	if err != nil {
		t.Fatalf("generate: %v", err)
	}
	got, err := os.ReadFile("../../apiclient.gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("examples/apiclient/apiclient.gen.go is not what the document generates now; run: go generate ./examples/apiclient")
	}
}
