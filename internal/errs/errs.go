// Package errs attaches an error class (containerd's errdefs: ErrNotFound,
// ErrInvalidArgument, …) to an error without putting the class's name in
// the message: errors.Is finds the class, a person reads only the message.
package errs

import "fmt"

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
