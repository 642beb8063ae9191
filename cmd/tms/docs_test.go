package main_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	mdLink     = regexp.MustCompile(`\[[^\]]*\]\(([^)\s]+)\)`)
	codeSpan   = regexp.MustCompile("`([^`\n]+)`")
	repoPath   = regexp.MustCompile(`^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]*)+$`)
	headingRE  = regexp.MustCompile(`(?m)^#{1,6} (.+)$`)
	slugStrip  = regexp.MustCompile(`[^a-z0-9 _-]`)
	fencedCode = regexp.MustCompile("(?ms)^```.*?^```")
)

// TestDocLinksResolve: every relative link in README.md and docs/*.md
// names a file of the repository (and a heading, for a #fragment), and
// every repository path they quote (`workers/eta.go`, `ops/testkit`)
// exists, so the documents cannot point at something that is not there.
func TestDocLinksResolve(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) < 3 {
		t.Fatalf("docs/ has %d documents, want design.md, api.md and nats.md", len(docs))
	}
	tops, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	isTop := map[string]bool{}
	for _, e := range tops {
		isTop[e.Name()] = true
	}
	links := 0
	for _, doc := range append([]string{filepath.Join(root, "README.md")}, docs...) {
		raw, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		text := string(raw)
		name, _ := filepath.Rel(root, doc)
		prose := fencedCode.ReplaceAllString(text, "")
		for _, m := range mdLink.FindAllStringSubmatch(prose, -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			links++
			file, frag, _ := strings.Cut(target, "#")
			path := doc
			if file != "" {
				path = filepath.Join(filepath.Dir(doc), file)
				if _, err := os.Stat(path); err != nil {
					t.Errorf("%s: link %s: %v", name, target, err)
					continue
				}
			}
			if frag != "" && !hasHeading(t, path, frag) {
				t.Errorf("%s: link %s: no heading %q in %s", name, target, frag, path)
			}
		}
		for _, m := range codeSpan.FindAllStringSubmatch(prose, -1) {
			p := strings.TrimSuffix(m[1], "/")
			if !repoPath.MatchString(m[1]) || !isTop[strings.SplitN(p, "/", 2)[0]] {
				continue
			}
			if _, err := os.Stat(filepath.Join(root, p)); err != nil {
				t.Errorf("%s: quotes `%s`, which is not in the repository", name, m[1])
			}
		}
	}
	if links == 0 {
		t.Fatal("no relative links found: the pattern is broken")
	}
}

// hasHeading reports whether the markdown file at path has a heading
// whose GitHub anchor is frag.
func hasHeading(t *testing.T, path, frag string) bool {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range headingRE.FindAllStringSubmatch(fencedCode.ReplaceAllString(string(raw), ""), -1) {
		slug := strings.ReplaceAll(slugStrip.ReplaceAllString(strings.ToLower(m[1]), ""), " ", "-")
		if slug == frag {
			return true
		}
	}
	return false
}
