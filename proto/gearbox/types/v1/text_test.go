package typesv1_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// Every state and reason is written by its name and reads back as itself;
// the unspecified value is "" both ways, as when these were strings.
func TestTextRoundTrip(t *testing.T) {
	for n, name := range typesv1.TaskState_name {
		s := typesv1.TaskState(n)
		b, err := s.MarshalText()
		want := name
		if s == typesv1.TaskState_TASK_STATE_UNSPECIFIED {
			want = ""
		}
		if err != nil || string(b) != want {
			t.Errorf("state %d written as %q (%v), want %q", n, b, err, want)
		}
		var back typesv1.TaskState
		if err := back.UnmarshalText(b); err != nil || back != s {
			t.Errorf("state %q read back as %v (%v)", b, back, err)
		}
	}
	for n, name := range typesv1.Reason_name {
		r := typesv1.Reason(n)
		b, err := r.MarshalText()
		want := name
		if r == typesv1.Reason_REASON_UNSPECIFIED {
			want = ""
		}
		if err != nil || string(b) != want {
			t.Errorf("reason %d written as %q (%v), want %q", n, b, err, want)
		}
		var back typesv1.Reason
		if err := back.UnmarshalText(b); err != nil || back != r {
			t.Errorf("reason %q read back as %v (%v)", b, back, err)
		}
	}
}

// In JSON a record keeps its string form, and a name this gearbox does not
// know is an error that leaves the field alone, never another state.
func TestJSON(t *testing.T) {
	type rec struct {
		State  typesv1.TaskState `json:"state"`
		Reason typesv1.Reason    `json:"reason,omitempty"`
	}
	b, err := json.Marshal(rec{State: typesv1.TaskState_TASK_KILLED})
	if err != nil || string(b) != `{"state":"TASK_KILLED"}` {
		t.Errorf("marshalled as %s (%v)", b, err)
	}
	var r rec
	if err := json.Unmarshal([]byte(`{"state":"TASK_FAILED","reason":"REASON_CONTAINER_LIMITATION_MEMORY"}`), &r); err != nil ||
		r.State != typesv1.TaskState_TASK_FAILED || r.Reason != typesv1.Reason_REASON_CONTAINER_LIMITATION_MEMORY {
		t.Errorf("unmarshalled as %+v (%v)", r, err)
	}
	s := typesv1.TaskState_TASK_RUNNING
	if err := s.UnmarshalText([]byte("TASK_EXPLODED")); err == nil || s != typesv1.TaskState_TASK_RUNNING {
		t.Errorf("unknown name: %v, state now %v", err, s)
	}
	if err := s.UnmarshalText([]byte("REASON_COMMAND_EXITED")); err == nil {
		t.Error("a reason's name was read as a state")
	}
}

func TestTerminal(t *testing.T) {
	for _, s := range []typesv1.TaskState{typesv1.TaskState_TASK_STAGING, typesv1.TaskState_TASK_STARTING,
		typesv1.TaskState_TASK_RUNNING, typesv1.TaskState_TASK_UNREACHABLE, typesv1.TaskState_TASK_UNKNOWN,
		typesv1.TaskState_TASK_STATE_UNSPECIFIED} {
		if s.Terminal() {
			t.Errorf("%v is terminal", s)
		}
	}
	for _, s := range []typesv1.TaskState{typesv1.TaskState_TASK_FINISHED, typesv1.TaskState_TASK_FAILED,
		typesv1.TaskState_TASK_KILLED, typesv1.TaskState_TASK_ERROR, typesv1.TaskState_TASK_LOST,
		typesv1.TaskState_TASK_DROPPED, typesv1.TaskState_TASK_GONE, typesv1.TaskState_TASK_GONE_BY_OPERATOR} {
		if !s.Terminal() {
			t.Errorf("%v is not terminal", s)
		}
	}
}

// The reason an agent or master attaches is what the other side reads,
// through wrapping; another domain's reason is not gearbox's.
func TestErrorReason(t *testing.T) {
	st := typesv1.WithErrorReason(status.New(codes.FailedPrecondition, "agent a-1 was marked gone"), typesv1.ErrorReasonAgentMarkedGone)
	if got := typesv1.ErrorReason(st.Err()); got != typesv1.ErrorReasonAgentMarkedGone {
		t.Errorf("reason %q", got)
	}
	if got := typesv1.ErrorReason(fmt.Errorf("registering: %w", st.Err())); got != typesv1.ErrorReasonAgentMarkedGone {
		t.Errorf("wrapped: reason %q", got)
	}
	// Over the wire: what a client's status carries.
	back := status.FromProto(st.Proto())
	if got := typesv1.ErrorReason(back.Err()); got != typesv1.ErrorReasonAgentMarkedGone {
		t.Errorf("after the wire: reason %q", got)
	}
	for _, err := range []error{nil, errors.New("plain"), status.Error(codes.Unavailable, "no details")} {
		if got := typesv1.ErrorReason(err); got != "" {
			t.Errorf("%v: reason %q", err, got)
		}
	}
}
