package allocator

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// Resources are quantities of an agent's resources: cpus, memory, disk and
// port ranges. A Resources value is immutable in use: Add and Subtract
// return new values and never change their operands (Ports included).
//
// CPUs are kept to three decimals, as Mesos keeps scalars in fixed point:
// every operation rounds its operands and its result to 0.001, so sums do
// not drift and do not depend on the order of the operations.
type Resources struct {
	CPUs        float64
	MemoryBytes int64
	DiskBytes   int64
	Ports       Ranges
}

// roundCPUs keeps cpus to Mesos's three decimals.
func roundCPUs(v float64) float64 { return math.Round(v*1000) / 1000 }

// Add returns r + o.
func (r Resources) Add(o Resources) Resources {
	return Resources{
		CPUs:        roundCPUs(roundCPUs(r.CPUs) + roundCPUs(o.CPUs)),
		MemoryBytes: r.MemoryBytes + o.MemoryBytes,
		DiskBytes:   r.DiskBytes + o.DiskBytes,
		Ports:       r.Ports.Add(o.Ports),
	}
}

// Subtract returns r - o; a quantity that would go below zero is zero, and
// ports not in r are ignored (Mesos drops what it cannot subtract).
func (r Resources) Subtract(o Resources) Resources {
	return Resources{
		CPUs:        max(0, roundCPUs(roundCPUs(r.CPUs)-roundCPUs(o.CPUs))),
		MemoryBytes: max(0, r.MemoryBytes-o.MemoryBytes),
		DiskBytes:   max(0, r.DiskBytes-o.DiskBytes),
		Ports:       r.Ports.Subtract(o.Ports),
	}
}

// Contains reports whether r holds at least o (every quantity and port).
func (r Resources) Contains(o Resources) bool {
	return roundCPUs(r.CPUs) >= roundCPUs(o.CPUs) &&
		r.MemoryBytes >= o.MemoryBytes &&
		r.DiskBytes >= o.DiskBytes &&
		r.Ports.Contains(o.Ports)
}

// Empty reports whether r holds nothing.
func (r Resources) Empty() bool {
	return roundCPUs(r.CPUs) <= 0 && r.MemoryBytes <= 0 && r.DiskBytes <= 0 && r.Ports.Empty()
}

// Equal reports whether r and o hold the same resources.
func (r Resources) Equal(o Resources) bool { return r.Contains(o) && o.Contains(r) }

// Validate reports a negative or non-finite quantity or a malformed range
// list, naming the field.
func (r Resources) Validate() error {
	switch {
	case math.IsNaN(r.CPUs) || math.IsInf(r.CPUs, 0) || r.CPUs < 0:
		return fmt.Errorf("%w: cpus %v: must be a finite number >= 0", ErrInvalid, r.CPUs)
	case r.MemoryBytes < 0:
		return fmt.Errorf("%w: memory_bytes %d: must be >= 0", ErrInvalid, r.MemoryBytes)
	case r.DiskBytes < 0:
		return fmt.Errorf("%w: disk_bytes %d: must be >= 0", ErrInvalid, r.DiskBytes)
	}
	if err := r.Ports.Validate(); err != nil {
		return fmt.Errorf("ports: %w", err)
	}
	return nil
}

// String is Mesos's text form, e.g. "cpus:2;mem:1024;disk:0;ports:[31000-32000]"
// (mem and disk in MiB, as Mesos writes them).
func (r Resources) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cpus:%g;mem:%g;disk:%g", roundCPUs(r.CPUs),
		float64(r.MemoryBytes)/(1<<20), float64(r.DiskBytes)/(1<<20))
	if !r.Ports.Empty() {
		fmt.Fprintf(&b, ";ports:%s", r.Ports)
	}
	return b.String()
}

// Range is the ports Begin..End, both included (Mesos's Value.Range).
type Range struct{ Begin, End uint64 }

// Ranges is a set of ports as sorted, disjoint, non-adjacent ranges (the
// canonical form every method returns). Build one with NewRanges.
type Ranges []Range

// NewRanges returns the canonical Ranges holding every port of rs; a range
// with End < Begin is ignored.
func NewRanges(rs ...Range) Ranges {
	var out Ranges
	for _, r := range rs {
		if r.End >= r.Begin {
			out = append(out, r)
		}
	}
	return canonical(out)
}

// canonical sorts and merges overlapping and adjacent ranges of rs in place.
func canonical(rs Ranges) Ranges {
	if len(rs) == 0 {
		return nil
	}
	slices.SortFunc(rs, func(a, b Range) int {
		switch {
		case a.Begin < b.Begin:
			return -1
		case a.Begin > b.Begin:
			return 1
		}
		return 0
	})
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if last.End == math.MaxUint64 || r.Begin <= last.End+1 {
			last.End = max(last.End, r.End)
			continue
		}
		out = append(out, r)
	}
	return out
}

// Validate reports whether rs is in canonical form with End >= Begin.
func (rs Ranges) Validate() error {
	for i, r := range rs {
		if r.End < r.Begin {
			return fmt.Errorf("%w: range [%d-%d]: end below begin", ErrInvalid, r.Begin, r.End)
		}
		if i > 0 && (rs[i-1].End == math.MaxUint64 || r.Begin <= rs[i-1].End+1) {
			return fmt.Errorf("%w: ranges %s: not sorted, disjoint and merged (use NewRanges)", ErrInvalid, rs)
		}
	}
	return nil
}

// Add returns the union of rs and o.
func (rs Ranges) Add(o Ranges) Ranges {
	if len(o) == 0 {
		return rs
	}
	if len(rs) == 0 {
		return o
	}
	out := make(Ranges, 0, len(rs)+len(o))
	out = append(append(out, rs...), o...)
	return canonical(out)
}

// Subtract returns the ports of rs not in o.
func (rs Ranges) Subtract(o Ranges) Ranges {
	if len(rs) == 0 || len(o) == 0 {
		return rs
	}
	var out Ranges
	j := 0
	for _, r := range rs {
		begin := r.Begin
		for j < len(o) && o[j].End < begin {
			j++
		}
		k := j
		done := false
		for ; k < len(o) && o[k].Begin <= r.End; k++ {
			if o[k].Begin > begin {
				out = append(out, Range{begin, o[k].Begin - 1})
			}
			if o[k].End >= r.End {
				done = true
				break
			}
			begin = o[k].End + 1
		}
		if !done {
			out = append(out, Range{begin, r.End})
		}
	}
	return out
}

// Contains reports whether every port of o is in rs.
func (rs Ranges) Contains(o Ranges) bool {
	i := 0
	for _, r := range o {
		for i < len(rs) && rs[i].End < r.Begin {
			i++
		}
		if i == len(rs) || rs[i].Begin > r.Begin || rs[i].End < r.End {
			return false
		}
	}
	return true
}

// Empty reports whether rs holds no port.
func (rs Ranges) Empty() bool { return len(rs) == 0 }

// Count returns how many ports rs holds (saturating at MaxUint64).
func (rs Ranges) Count() uint64 {
	var n uint64
	for _, r := range rs {
		w := r.End - r.Begin
		if n+w+1 < n || w == math.MaxUint64 {
			return math.MaxUint64
		}
		n += w + 1
	}
	return n
}

// String is Mesos's form, e.g. "[31000-31999, 32005-32005]".
func (rs Ranges) String() string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprintf("%d-%d", r.Begin, r.End)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}
