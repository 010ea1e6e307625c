package agent

import (
	"bytes"
	"testing"
)

func TestParseDetachKeys(t *testing.T) {
	for in, want := range map[string][]byte{
		"": {16, 17}, "ctrl-p,ctrl-q": {16, 17}, "ctrl-a": {1}, "a,b": {'a', 'b'}, "ctrl-@": {0}, "ctrl-[,ctrl-_": {27, 31}, "CTRL-X": {24}, "none": nil,
	} {
		got, err := ParseDetachKeys(in)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%q: %v %v, want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"ctrl-1", "ctrl-", "ab", "ctrl-p,", "shift-a"} {
		if _, err := ParseDetachKeys(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// The sequence is found across chunks; what only looked like its start is
// passed on unchanged, in order.
func TestDetacher(t *testing.T) {
	type step struct {
		in       string
		out      string
		detached bool
	}
	for name, steps := range map[string][]step{
		"plain":            {{"hello", "hello", false}},
		"in one chunk":     {{"ab\x10\x11cd", "ab", true}},
		"across chunks":    {{"ab\x10", "ab", false}, {"\x11", "", true}},
		"false start":      {{"a\x10", "a", false}, {"b", "\x10b", false}},
		"repeated start":   {{"\x10\x10\x11", "\x10", true}},
		"start at the end": {{"x\x10", "x", false}, {"\x10", "\x10", false}, {"\x11", "", true}},
	} {
		d := &detacher{keys: []byte{16, 17}}
		for i, s := range steps {
			out, det := d.feed([]byte(s.in))
			if string(out) != s.out || det != s.detached {
				t.Errorf("%s, step %d: %q %v, want %q %v", name, i, out, det, s.out, s.detached)
			}
		}
	}
	d := &detacher{}
	if out, det := d.feed([]byte{16, 17}); det || len(out) != 2 {
		t.Error("no keys: detached")
	}
}
