package plugin

import (
	"testing"

	isolatorv1 "github.com/gearboxd/gearbox/proto/gearbox/isolator/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// A plugin names its reason on the wire; a name the agent knows is that
// reason, and any other is the generic limitation with the name kept.
func TestLimitationFromProto(t *testing.T) {
	for _, c := range []struct {
		reason, message string
		want            typesv1.Reason
		wantMessage     string
	}{
		{"REASON_CONTAINER_LIMITATION_DISK", "over 1MiB", typesv1.Reason_REASON_CONTAINER_LIMITATION_DISK, "over 1MiB (isolator plugin dq)"},
		{"REASON_GPU_MELTED", "too hot", typesv1.Reason_REASON_CONTAINER_LIMITATION, "too hot (isolator plugin dq, reason REASON_GPU_MELTED)"},
		{"", "over", typesv1.Reason_REASON_CONTAINER_LIMITATION, "over (isolator plugin dq)"},
	} {
		l := limitationFromProto(&isolatorv1.Limitation{Reason: c.reason, Message: c.message}, "dq")
		if l.Reason != c.want || l.Message != c.wantMessage {
			t.Errorf("%q: %v %q, want %v %q", c.reason, l.Reason, l.Message, c.want, c.wantMessage)
		}
	}
}
