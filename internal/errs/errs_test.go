package errs

import (
	"errors"
	"io"
	"testing"

	"github.com/containerd/errdefs"
)

func TestNew(t *testing.T) {
	err := New(errdefs.ErrNotFound, "image %q is not present: %w", "x", io.EOF)
	if got, want := err.Error(), `image "x" is not present: EOF`; got != want {
		t.Errorf("message %q, want %q", got, want)
	}
	if !errdefs.IsNotFound(err) || !errors.Is(err, io.EOF) {
		t.Error("class or cause lost")
	}
	if errdefs.IsInvalidArgument(err) {
		t.Error("wrong class matched")
	}
}
