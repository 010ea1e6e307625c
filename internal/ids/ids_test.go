package ids

import (
	"errors"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"web", true},
		{"a", true},
		{"A-1_b.c", true},
		{"0", true},
		{strings.Repeat("a", 64), true},
		{"", false},
		{strings.Repeat("a", 65), false},
		{"a/b", false},
		{"../etc", false},
		{"a..b", false},
		{".hidden", false},
		{"-flag", false},
		{"_x", false},
		{"sp ace", false},
		{"nul\x00", false},
		{"ünï", false},
	} {
		err := Validate(tc.id)
		if (err == nil) != tc.ok {
			t.Errorf("Validate(%q) = %v, want ok=%v", tc.id, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("Validate(%q) error %v does not wrap ErrInvalid", tc.id, err)
		}
	}
}

func TestNewIsValid(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := New()
		if err := Validate(id); err != nil {
			t.Fatal(err)
		}
		if seen[id] {
			t.Fatalf("New returned %q twice", id)
		}
		seen[id] = true
	}
}

func FuzzValidate(f *testing.F) {
	for _, s := range []string{"web", "", "a/b", "..", "a..b", strings.Repeat("x", 70)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if Validate(id) != nil {
			return
		}
		// Whatever passes must be safe as one path element and a containerd ID.
		if strings.ContainsAny(id, "/\\\x00 ") || strings.Contains(id, "..") || len(id) > MaxLen || id == "." {
			t.Fatalf("Validate accepted unsafe ID %q", id)
		}
	})
}

func TestSplitNested(t *testing.T) {
	for id, want := range map[string][2]string{"web.dbg": {"web", "dbg"}, "web.1.x-2": {"web.1", "x-2"}} {
		p, c, err := SplitNested(id)
		if err != nil || p != want[0] || c != want[1] {
			t.Errorf("%q: %q %q %v", id, p, c, err)
		}
	}
	for _, bad := range []string{"web", ".x", "web.", "web._x", "a..b", ""} {
		if _, _, err := SplitNested(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
