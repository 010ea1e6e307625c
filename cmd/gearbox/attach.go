package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

func newAttachCmd() *cobra.Command {
	var (
		keys    string
		noStdin bool
	)
	cmd := &cobra.Command{
		Use:   "attach [--detach-keys KEYS] [--no-stdin] ID",
		Short: "Attach this terminal to a running container's main process",
		Long: `Attach to a container's main process, as docker attach: its output from now
on, and this terminal's input if the container was launched with -i -t. The
detach keys (ctrl-p ctrl-q by default) leave it running; otherwise attach
exits with the container's status when it ends. Any number of clients may
read the output; one at a time writes the input.`,
		Example: "  gearbox run -dit --name box localhost/demo sh\n  gearbox attach box",
		Args:    needArgs(1, "a container ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, closeConn, err := dial(cmd)
			if err != nil {
				return err
			}
			defer closeConn()
			ctx := ctxOf(cmd)
			resp, err := c.GetContainers(ctx, &agentv1.GetContainersRequest{All: true})
			if err != nil {
				return err
			}
			for _, ct := range resp.Containers {
				if ct.Id == args[0] {
					_, err := attachTo(ctx, c, ct.Id, ct.Stdin && !noStdin, ct.Tty, false, keys)
					return err
				}
			}
			return &exitError{code: 1, err: fmt.Errorf("container %q not found (gearbox ps -a lists them)", args[0])}
		},
	}
	cmd.Flags().StringVar(&keys, "detach-keys", "", "keys that detach and leave the container running (default ctrl-p,ctrl-q; none: no keys)")
	cmd.Flags().BoolVar(&noStdin, "no-stdin", false, "only read the output")
	return cmd
}

// attachTo follows a container's output (from its start with logs) and,
// with input, sends this process's stdin to it. It returns the container's
// exit as an exitError (nil for 0), or detached.
func attachTo(ctx context.Context, c agentv1.AgentClient, id string, input, tty, logs bool, keys string) (detached bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out, err := c.AttachContainerOutput(ctx, &agentv1.AttachOutputRequest{ContainerId: id, Logs: logs})
	if err != nil {
		return false, err
	}
	var (
		mu    sync.Mutex
		inErr error
	)
	if input {
		in, err := c.AttachContainerInput(ctx)
		if err != nil {
			return false, err
		}
		var sendMu sync.Mutex
		send := func(m *agentv1.AttachInputRequest) error {
			sendMu.Lock()
			defer sendMu.Unlock()
			return in.Send(m)
		}
		inFd, outFd := int(os.Stdin.Fd()), int(os.Stdout.Fd())
		start := &agentv1.AttachInputStart{ContainerId: id, DetachKeys: keys}
		if tty {
			if w, h, err := term.GetSize(outFd); err == nil && w > 0 && h > 0 {
				start.Size = &agentv1.WindowSize{Width: uint32(w), Height: uint32(h)}
			}
		}
		if err := send(&agentv1.AttachInputRequest{Frame: &agentv1.AttachInputRequest_Start{Start: start}}); err != nil {
			return false, streamErr(in, err)
		}
		if tty && term.IsTerminal(inFd) {
			restore, err := rawTerminal(inFd, outFd, func(w, h uint32) {
				send(&agentv1.AttachInputRequest{Frame: &agentv1.AttachInputRequest_Resize{Resize: &agentv1.WindowSize{Width: w, Height: h}}})
			})
			if err != nil {
				return false, err
			}
			defer restore()
		}
		go func() {
			buf := make([]byte, 32*1024)
			for {
				n, err := os.Stdin.Read(buf)
				if n > 0 && send(&agentv1.AttachInputRequest{Frame: &agentv1.AttachInputRequest_Stdin{Stdin: append([]byte(nil), buf[:n]...)}}) != nil {
					return
				}
				if err != nil {
					send(&agentv1.AttachInputRequest{Frame: &agentv1.AttachInputRequest_CloseStdin{CloseStdin: &agentv1.StdinClose{}}})
					in.CloseSend()
					return
				}
			}
		}()
		go func() {
			m, err := in.Recv()
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && m.GetDetached() != nil:
				detached = true
				cancel()
			case err != nil && !errors.Is(err, io.EOF) && ctx.Err() == nil:
				inErr = err
				cancel()
			}
		}()
	}
	for {
		m, err := out.Recv()
		if err != nil {
			mu.Lock()
			d, ie := detached, inErr
			mu.Unlock()
			switch {
			case d:
				fmt.Fprintf(os.Stderr, "\r\ndetached from %s: it runs on (gearbox attach %s)\r\n", id, id)
				return true, nil
			case ie != nil:
				return false, &exitError{code: 125, err: ie}
			case errors.Is(err, io.EOF):
				return false, &exitError{code: 125, err: errors.New("the attachment ended without the container's exit")}
			}
			return false, err
		}
		switch f := m.Frame.(type) {
		case *agentv1.AttachOutputResponse_Stdout:
			os.Stdout.Write(f.Stdout)
		case *agentv1.AttachOutputResponse_Stderr:
			os.Stderr.Write(f.Stderr)
		case *agentv1.AttachOutputResponse_Exit:
			return false, containerExit(f.Exit)
		}
	}
}
