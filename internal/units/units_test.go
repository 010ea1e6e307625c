package units

import "testing"

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"512": 512, "64k": 64 << 10, "64K": 64 << 10, "10MiB": 10 << 20, "10mb": 10 << 20,
		"1g": 1 << 30, "1.5k": 1536, " 2 m ": 2 << 20, "0": 0, "7b": 7,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "k", "-1k", "ten", "1x", "1e400", "NaN", "99999999999t"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
	if s := FormatSize(10 << 20); s != "10MiB" {
		t.Errorf("FormatSize = %s", s)
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"64k", "1.5g", "", "-3", "1e9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := ParseSize(s); err == nil && n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
	})
}

func TestHuman(t *testing.T) {
	for in, want := range map[int64]string{
		1 << 30: "1.0 GiB", 64 << 20: "64.0 MiB", 258969204 << 10: "247.0 GiB", 1536: "1.5 KiB", 3<<40 + 1: "3.0 TiB", 100: "100 B", -5: "-5 B",
	} {
		if got := Human(in); got != want {
			t.Errorf("Human(%d) = %q, want %q", in, got, want)
		}
	}
}

// A size in a config file reads as its number of bytes and is written back
// as the same text.
func TestSizeText(t *testing.T) {
	for in, want := range map[string]Size{"10MiB": 10 << 20, "1g": 1 << 30, "512": 512, "0": 0} {
		var s Size
		if err := s.UnmarshalText([]byte(in)); err != nil || s != want {
			t.Errorf("%q read as %d (%v), want %d", in, s, err, want)
		}
		b, _ := s.MarshalText()
		var back Size
		if err := back.UnmarshalText(b); err != nil || back != s {
			t.Errorf("%d written as %q, read back as %d (%v)", s, b, back, err)
		}
	}
	s := Size(7)
	if err := s.UnmarshalText([]byte("lots")); err == nil || s != 7 {
		t.Errorf("bad size: %v, value now %d", err, s)
	}
}
