// Package ids validates and generates the identifiers gearbox accepts from
// outside: container IDs become paths, containerd names and labels, so they
// are checked before they reach any of them.
package ids

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
)

// MaxLen is the longest container ID accepted.
const MaxLen = 64

var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = fmt.Errorf("invalid container ID")

// Validate says whether id is a container ID gearbox accepts:
// [A-Za-z0-9][A-Za-z0-9_.-]{0,63}, with no "..".
func Validate(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: it is empty", ErrInvalid)
	case len(id) > MaxLen:
		return fmt.Errorf("%w %q: it is %d characters long, the limit is %d", ErrInvalid, truncate(id), len(id), MaxLen)
	case strings.Contains(id, ".."):
		return fmt.Errorf("%w %q: it must not contain \"..\"", ErrInvalid, id)
	case !validID.MatchString(id):
		return fmt.Errorf("%w %q: use letters, digits, '_', '.' and '-', starting with a letter or digit", ErrInvalid, id)
	}
	return nil
}

// New returns a random container ID of 12 hex digits, as Docker's short IDs.
func New() string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // the kernel's RNG does not fail
	}
	return hex.EncodeToString(b[:])
}

func truncate(s string) string {
	if len(s) > 24 {
		return s[:24] + "…"
	}
	return s
}

var validChild = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)

// SplitNested splits a nested container's ID, parent.child, at its last
// dot. The child part is letters, digits, '_' and '-'.
func SplitNested(id string) (parent, child string, err error) {
	if err := Validate(id); err != nil {
		return "", "", err
	}
	i := strings.LastIndexByte(id, '.')
	if i <= 0 {
		return "", "", fmt.Errorf("%w %q: a nested container's ID is PARENT.CHILD", ErrInvalid, id)
	}
	parent, child = id[:i], id[i+1:]
	if !validChild.MatchString(child) {
		return "", "", fmt.Errorf("%w %q: the part after the last dot (%q) must be letters, digits, '_' and '-', starting with a letter or digit", ErrInvalid, id, child)
	}
	return parent, child, nil
}
