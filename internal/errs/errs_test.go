package errs

import (
	"errors"
	"fmt"
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

func TestInfo(t *testing.T) {
	err := WithInfo(New(errdefs.ErrNotFound, "image %q is not present", "x"), "IMAGE_NOT_FOUND", "image", "x")
	wrapped := fmt.Errorf("launching task t-1: %w", err)
	info, ok := InfoOf(wrapped)
	if !ok || info.Reason != "IMAGE_NOT_FOUND" || info.Metadata["image"] != "x" {
		t.Errorf("info %+v %v", info, ok)
	}
	if !errdefs.IsNotFound(wrapped) || wrapped.Error() != `launching task t-1: image "x" is not present` {
		t.Errorf("class or message changed: %v", wrapped)
	}
	if _, ok := InfoOf(io.EOF); ok {
		t.Error("a plain error has info")
	}
}
