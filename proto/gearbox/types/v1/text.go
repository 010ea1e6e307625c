package typesv1

// Hand-written, next to the generated code: the text form of TaskState and
// Reason, so that every record gearbox keeps on disk (the master's registry,
// the agent's checkpoint, container labels) writes a state or a reason by
// its Mesos name, as it did when they were strings in Go. The unspecified
// value is written as "" (and "" reads back as it), so records written
// before the enums were used everywhere read back unchanged.

import (
	"fmt"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// Terminal says whether no further state can follow s, in Mesos's sense
// (protobuf_utils.cpp isTerminalState).
func (s TaskState) Terminal() bool {
	switch s {
	case TaskState_TASK_FINISHED, TaskState_TASK_FAILED, TaskState_TASK_KILLED, TaskState_TASK_ERROR,
		TaskState_TASK_LOST, TaskState_TASK_DROPPED, TaskState_TASK_GONE, TaskState_TASK_GONE_BY_OPERATOR:
		return true
	}
	return false
}

// Running says whether the task's process runs: TASK_RUNNING, or
// TASK_KILLING while a kill's grace period lasts.
func (s TaskState) Running() bool {
	return s == TaskState_TASK_RUNNING || s == TaskState_TASK_KILLING
}

// MarshalText writes s's name ("TASK_RUNNING"); TASK_STATE_UNSPECIFIED is "".
func (s TaskState) MarshalText() ([]byte, error) {
	if s == TaskState_TASK_STATE_UNSPECIFIED {
		return []byte{}, nil
	}
	return enumName(s.Descriptor(), protoreflect.EnumNumber(s), "task state")
}

// UnmarshalText reads a name MarshalText wrote; "" is TASK_STATE_UNSPECIFIED.
// An unknown name is an error and leaves s as it was.
func (s *TaskState) UnmarshalText(b []byte) error {
	n, err := enumNumber(TaskState(0).Descriptor(), string(b), "task state")
	if err == nil {
		*s = TaskState(n)
	}
	return err
}

// MarshalText writes r's name ("REASON_COMMAND_EXITED"); REASON_UNSPECIFIED is "".
func (r Reason) MarshalText() ([]byte, error) {
	if r == Reason_REASON_UNSPECIFIED {
		return []byte{}, nil
	}
	return enumName(r.Descriptor(), protoreflect.EnumNumber(r), "reason")
}

// UnmarshalText reads a name MarshalText wrote; "" is REASON_UNSPECIFIED.
// An unknown name is an error and leaves r as it was.
func (r *Reason) UnmarshalText(b []byte) error {
	n, err := enumNumber(Reason(0).Descriptor(), string(b), "reason")
	if err == nil {
		*r = Reason(n)
	}
	return err
}

func enumName(d protoreflect.EnumDescriptor, n protoreflect.EnumNumber, what string) ([]byte, error) {
	v := d.Values().ByNumber(n)
	if v == nil {
		return nil, fmt.Errorf("%s %d has no name in %s", what, n, d.FullName())
	}
	return []byte(v.Name()), nil
}

func enumNumber(d protoreflect.EnumDescriptor, name, what string) (protoreflect.EnumNumber, error) {
	if name == "" {
		return 0, nil
	}
	v := d.Values().ByName(protoreflect.Name(name))
	if v == nil {
		return 0, fmt.Errorf("unknown %s %q (not a value of %s; written by a newer gearbox?)", what, name, d.FullName())
	}
	return v.Number(), nil
}
