package allocator

import (
	"math"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

func TestRunHistogram(t *testing.T) {
	h := NewRunHistogram()
	h.ObserveRun(3 * time.Millisecond)
	h.ObserveRun(40 * time.Millisecond)
	if d := h.Desc().String(); !strings.Contains(d, `"gearbox_master_allocation_run_seconds"`) {
		t.Fatalf("histogram %s, want gearbox_master_allocation_run_seconds", d)
	}
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	hist := m.GetHistogram()
	if hist.GetSampleCount() != 2 || math.Abs(hist.GetSampleSum()-0.043) > 1e-9 {
		t.Fatalf("count %d sum %v, want 2 runs totalling 0.043 s", hist.GetSampleCount(), hist.GetSampleSum())
	}
	for _, b := range hist.GetBucket() {
		want := uint64(0)
		if b.GetUpperBound() >= 0.003 {
			want++
		}
		if b.GetUpperBound() >= 0.04 {
			want++
		}
		if b.GetCumulativeCount() != want {
			t.Errorf("bucket le=%v holds %d runs, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
		}
	}
}
