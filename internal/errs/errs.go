// Package errs attaches an error class (containerd's errdefs: ErrNotFound,
// ErrInvalidArgument, …) to an error without putting the class's name in
// the message: errors.Is finds the class, a person reads only the message.
package errs

import (
	"errors"
	"fmt"
)

type classified struct {
	class error
	err   error
}

func (e *classified) Error() string   { return e.err.Error() }
func (e *classified) Unwrap() []error { return []error{e.class, e.err} }

// New returns an error of class with the formatted message; %w in format
// wraps causes as fmt.Errorf does.
func New(class error, format string, a ...any) error {
	return &classified{class: class, err: fmt.Errorf(format, a...)}
}

// Info is what a client needs to tell what happened without reading the
// message: an ErrorInfo reason (typesv1's ErrorReason… constants) and
// metadata naming the objects ("image", "container_id"). The agent attaches
// it to the error's gRPC status; the CLI turns it into a hint of what to
// type next, which the message itself never says (the error may answer a
// master's launch, not a person at a shell).
type Info struct {
	Reason   string
	Metadata map[string]string
}

type withInfo struct {
	err  error
	info Info
}

func (e *withInfo) Error() string { return e.err.Error() }
func (e *withInfo) Unwrap() error { return e.err }

// WithInfo returns err carrying an ErrorInfo reason and metadata given as
// key, value pairs.
func WithInfo(err error, reason string, kv ...string) error {
	info := Info{Reason: reason}
	for i := 0; i+1 < len(kv); i += 2 {
		if info.Metadata == nil {
			info.Metadata = map[string]string{}
		}
		info.Metadata[kv[i]] = kv[i+1]
	}
	return &withInfo{err: err, info: info}
}

// InfoOf is the Info that err, or an error it wraps, carries.
func InfoOf(err error) (Info, bool) {
	var w *withInfo
	if errors.As(err, &w) {
		return w.info, true
	}
	return Info{}, false
}
