package tenants

import (
	"net/mail"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Input limits.
const (
	maxNameLen      = 200 // client_name, in characters
	maxEmailLen     = 254 // RFC 5321 path limit
	minPasswordLen  = 10  // characters
	maxPasswordLen  = 1024
	maxAgentNameLen = 100 // service_agents.name is varchar(100)
	maxSlugLen      = 40
)

// validateAccount checks create_account input and returns the cleaned
// name and e-mail.
func validateAccount(name, email, password string) (string, string, error) {
	name = strings.TrimSpace(name)
	switch {
	case name == "":
		return "", "", &FieldError{Field: "client_name", Reason: "must not be empty"}
	case !utf8.ValidString(name):
		return "", "", &FieldError{Field: "client_name", Reason: "must be valid UTF-8"}
	case utf8.RuneCountInString(name) > maxNameLen:
		return "", "", &FieldError{Field: "client_name", Reason: "must be at most 200 characters"}
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return "", "", &FieldError{Field: "client_name", Reason: "must not contain control characters"}
	}
	email = strings.TrimSpace(email)
	if email == "" {
		return "", "", &FieldError{Field: "official_email", Reason: "must not be empty"}
	}
	if len(email) > maxEmailLen {
		return "", "", &FieldError{Field: "official_email", Reason: "must be at most 254 characters"}
	}
	// The whole value must be one bare address: no display name, no
	// angle brackets, no comments.
	addr, err := mail.ParseAddress(email)
	if err != nil || addr.Address != email || addr.Name != "" || !strings.Contains(email, "@") {
		return "", "", &FieldError{Field: "official_email", Reason: "must be an e-mail address like name@example.com"}
	}
	if strings.IndexFunc(email, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }) >= 0 {
		return "", "", &FieldError{Field: "official_email", Reason: "must not contain spaces or control characters"}
	}
	switch {
	case !utf8.ValidString(password):
		return "", "", &FieldError{Field: "password", Reason: "must be valid UTF-8"}
	case strings.IndexFunc(password, unicode.IsControl) >= 0:
		// NUL, ESC, DEL and the C1 controls (Unicode Cc) are no part of
		// a password anyone types: they are the classic sign of an
		// encoding bug, and a NUL truncates the password in any C
		// library that later sees it.
		return "", "", &FieldError{Field: "password", Reason: "must not contain control characters"}
	case utf8.RuneCountInString(password) < minPasswordLen:
		return "", "", &FieldError{Field: "password", Reason: "must be at least 10 characters"}
	case len(password) > maxPasswordLen:
		return "", "", &FieldError{Field: "password", Reason: "must be at most 1024 bytes"}
	}
	return name, email, nil
}

// validateAgentName returns the trimmed name or a FieldError for "name".
func validateAgentName(name string) (string, error) {
	name = strings.TrimSpace(name)
	switch {
	case name == "":
		return "", &FieldError{Field: "name", Reason: "must not be empty"}
	case !utf8.ValidString(name):
		return "", &FieldError{Field: "name", Reason: "must be valid UTF-8"}
	case utf8.RuneCountInString(name) > maxAgentNameLen:
		return "", &FieldError{Field: "name", Reason: "must be at most 100 characters"}
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return "", &FieldError{Field: "name", Reason: "must not contain control characters"}
	}
	return name, nil
}

// slug derives a sub_domain candidate from a tenant name: accents
// dropped (NFD, then no combining marks), lower-case ASCII letters and
// digits kept, every other run of characters one '-', no
// leading or trailing '-', at most 40 characters; "tenant" if nothing is
// left.
func slug(name string) string {
	var b strings.Builder
	dash := false
	for _, r := range norm.NFD.String(strings.ToLower(name)) {
		if unicode.Is(unicode.Mn, r) {
			continue
		}
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			dash = false
			continue
		}
		if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	s := b.String()
	if len(s) > maxSlugLen {
		s = s[:maxSlugLen]
	}
	s = strings.Trim(s, "-")
	if s == "" {
		return "tenant"
	}
	return s
}

// withSuffix returns base-suffix, shortening base so the result stays
// within maxSlugLen.
func withSuffix(base, suffix string) string {
	suffix = "-" + suffix
	if len(base)+len(suffix) > maxSlugLen {
		base = strings.TrimRight(base[:maxSlugLen-len(suffix)], "-")
	}
	return base + suffix
}
