package allocator

import (
	"errors"
	"math"
	"testing"
)

func TestRangesAlgebra(t *testing.T) {
	r := func(b, e uint64) Range { return Range{b, e} }
	tests := []struct {
		name      string
		x, y      Ranges
		sum, diff Ranges
		xHasY     bool
	}{
		{"empty", nil, nil, nil, nil, true},
		{"adjacent merge", NewRanges(r(1, 5)), NewRanges(r(6, 9)), NewRanges(r(1, 9)), NewRanges(r(1, 5)), false},
		{"hole in the middle", NewRanges(r(31000, 32000)), NewRanges(r(31010, 31019)),
			NewRanges(r(31000, 32000)), NewRanges(r(31000, 31009), r(31020, 32000)), true},
		{"cut both ends", NewRanges(r(10, 20)), NewRanges(r(5, 12), r(18, 30)),
			NewRanges(r(5, 30)), NewRanges(r(13, 17)), false},
		{"remove all", NewRanges(r(10, 20), r(30, 40)), NewRanges(r(0, 100)), NewRanges(r(0, 100)), nil, false},
		{"single ports", NewRanges(r(80, 80), r(443, 443)), NewRanges(r(443, 443)),
			NewRanges(r(80, 80), r(443, 443)), NewRanges(r(80, 80)), true},
		{"max port", NewRanges(r(math.MaxUint64-1, math.MaxUint64)), NewRanges(r(math.MaxUint64, math.MaxUint64)),
			NewRanges(r(math.MaxUint64-1, math.MaxUint64)), NewRanges(r(math.MaxUint64-1, math.MaxUint64-1)), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.x.Add(tc.y); !equalRanges(got, tc.sum) {
				t.Errorf("%s + %s = %s, want %s", tc.x, tc.y, got, tc.sum)
			}
			if got := tc.x.Subtract(tc.y); !equalRanges(got, tc.diff) {
				t.Errorf("%s - %s = %s, want %s", tc.x, tc.y, got, tc.diff)
			}
			if got := tc.x.Contains(tc.y); got != tc.xHasY {
				t.Errorf("%s contains %s = %v, want %v", tc.x, tc.y, got, tc.xHasY)
			}
		})
	}
}

func equalRanges(a, b Ranges) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRangesOperandsUnchanged(t *testing.T) {
	x := NewRanges(Range{1, 10}, Range{20, 30})
	y := NewRanges(Range{5, 25})
	x.Add(y)
	x.Subtract(y)
	if !equalRanges(x, Ranges{{1, 10}, {20, 30}}) || !equalRanges(y, Ranges{{5, 25}}) {
		t.Fatalf("operands changed: x=%s y=%s", x, y)
	}
}

func TestResources(t *testing.T) {
	a := Resources{CPUs: 0.1, MemoryBytes: 100, Ports: NewRanges(Range{1, 10})}
	var sum Resources
	for range 10 {
		sum = sum.Add(a)
	}
	if sum.CPUs != 1 {
		t.Errorf("ten times 0.1 cpus = %v, want exactly 1 (fixed point)", sum.CPUs)
	}
	for range 10 {
		sum = sum.Subtract(a)
	}
	if !sum.Empty() {
		t.Errorf("sum minus all it holds = %s, want empty", sum)
	}
	big := Resources{CPUs: 2, MemoryBytes: 1 << 30, DiskBytes: 5, Ports: NewRanges(Range{31000, 32000})}
	small := Resources{CPUs: 1.5, MemoryBytes: 1 << 20, Ports: NewRanges(Range{31000, 31000})}
	if !big.Contains(small) || small.Contains(big) {
		t.Errorf("big %s contains small %s: want true, and not the reverse", big, small)
	}
	if big.Contains(Resources{Ports: NewRanges(Range{80, 80})}) {
		t.Error("contains a port it does not hold")
	}
	if got := small.Subtract(big); !got.Empty() {
		t.Errorf("small - big = %s, want empty (clamped at zero)", got)
	}
	if !big.Subtract(small).Add(small).Equal(big) {
		t.Error("(big - small) + small != big")
	}
	for _, bad := range []Resources{{CPUs: -1}, {CPUs: math.NaN()}, {MemoryBytes: -1}, {DiskBytes: -1},
		{Ports: Ranges{{5, 1}}}, {Ports: Ranges{{10, 20}, {1, 2}}}} {
		if err := bad.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("Validate(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestValidateRole(t *testing.T) {
	for _, ok := range []string{"*", "web", "a/b", "team-1/prod", "x.y"} {
		if err := ValidateRole(ok); err != nil {
			t.Errorf("ValidateRole(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "-x", "a//b", "/a", "a/", "a b", "a/*", `a\b`, "a/../b"} {
		if err := ValidateRole(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateRole(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

// FuzzRanges checks the ranges algebra against a bitset of ports 0..63.
func FuzzRanges(f *testing.F) {
	f.Add([]byte{1, 5, 9, 12}, []byte{3, 10})
	f.Add([]byte{0, 63}, []byte{0, 0, 63, 63})
	f.Add([]byte{}, []byte{7, 7})
	f.Fuzz(func(t *testing.T, xs, ys []byte) {
		x, xm := fuzzRanges(xs)
		y, ym := fuzzRanges(ys)
		for _, c := range []struct {
			op   string
			got  Ranges
			want uint64
		}{{"add", x.Add(y), xm | ym}, {"subtract", x.Subtract(y), xm &^ ym}, {"x", x, xm}} {
			if err := c.got.Validate(); err != nil {
				t.Fatalf("%s: %s not canonical: %v", c.op, c.got, err)
			}
			if m := mask(c.got); m != c.want {
				t.Fatalf("%s of %s and %s = %s (%b), want %b", c.op, x, y, c.got, m, c.want)
			}
			if n := c.got.Count(); n != uint64(popcount(c.want)) {
				t.Fatalf("%s: count %d, want %d", c.op, n, popcount(c.want))
			}
		}
		if got, want := x.Contains(y), ym&^xm == 0; got != want {
			t.Fatalf("%s contains %s = %v, want %v", x, y, got, want)
		}
	})
}

// fuzzRanges reads pairs of bytes as ranges of ports 0..63 (ends in any
// order, so some are empty) and returns them with their bitset.
func fuzzRanges(b []byte) (Ranges, uint64) {
	var rs []Range
	var m uint64
	for i := 0; i+1 < len(b); i += 2 {
		r := Range{uint64(b[i] % 64), uint64(b[i+1] % 64)}
		rs = append(rs, r)
		for p := r.Begin; p <= r.End && r.End >= r.Begin; p++ {
			m |= 1 << p
		}
	}
	return NewRanges(rs...), m
}

func mask(rs Ranges) uint64 {
	var m uint64
	for _, r := range rs {
		for p := r.Begin; p <= r.End; p++ {
			m |= 1 << p
		}
	}
	return m
}

func popcount(m uint64) int {
	n := 0
	for ; m != 0; m &= m - 1 {
		n++
	}
	return n
}
