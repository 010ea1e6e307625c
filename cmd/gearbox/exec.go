package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/gearboxd/gearbox/internal/bulkout"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// sessionFlags are the flags exec and debug share.
type sessionFlags struct {
	interactive, tty bool
	env              []string
	user, workdir    string
}

func (s *sessionFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.SetInterspersed(false)
	f.BoolVarP(&s.interactive, "interactive", "i", false, "send stdin to the command")
	f.BoolVarP(&s.tty, "tty", "t", false, "give the command a terminal")
	f.StringArrayVarP(&s.env, "env", "e", nil, "set an environment variable (KEY=VALUE)")
	f.StringVarP(&s.user, "user", "u", "", "uid or uid:gid")
	f.StringVarP(&s.workdir, "workdir", "w", "", "working directory")
}

func (s *sessionFlags) launch(cmd *cobra.Command, id string, command []string) *agentv1.SessionLaunch {
	launch := &agentv1.SessionLaunch{ContainerId: id, Command: command, Env: s.env, Tty: s.tty}
	if cmd.Flags().Changed("user") {
		launch.User = &s.user
	}
	if cmd.Flags().Changed("workdir") {
		launch.WorkingDir = &s.workdir
	}
	return launch
}

func newExecCmd() *cobra.Command {
	var s sessionFlags
	cmd := &cobra.Command{
		Use:   "exec [-i] [-t] [-e K=V] [-u UID[:GID]] [-w DIR] ID CMD…",
		Short: "Run a command in a running container",
		Long: `Run a command in a running container, as docker exec. It exits with the
command's status. With -t the local terminal is put in raw mode (restored on
every exit) and size changes reach the command.`,
		Example: "  gearbox exec -it web sh\n  echo data | gearbox exec -i web cat",
		Args:    needArgs(2, "a container ID and a command"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSession(cmd, s.launch(cmd, args[0], args[1:]), s.interactive)
		},
	}
	s.add(cmd)
	return cmd
}

func newDebugCmd() *cobra.Command {
	var (
		s     sessionFlags
		image string
		res   resourceFlags
	)
	cmd := &cobra.Command{
		Use:   "debug [-i] [-t] --image IMAGE ID [CMD…]",
		Short: "Debug a running container from another image",
		Long: `Run IMAGE as a debug container that joins the target's pid, network and IPC
namespaces: its tools see the target's processes and sockets, so images
without a shell can be debugged. It has its own cgroup under the target's
(--cpus, --memory bound it) and is removed when the session ends. Without
CMD the image's own entrypoint and cmd run.`,
		Example: "  gearbox debug -it --image localhost/demo web sh\n  gearbox debug --image localhost/demo web ps",
		Args:    needArgs(1, "a container ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if image == "" {
				return &exitError{code: 125, err: errors.New("debug needs --image IMAGE (to run a command in the container's own image, use gearbox exec)")}
			}
			launch := s.launch(cmd, args[0], args[1:])
			launch.Image = image
			var err error
			if launch.Resources, err = res.proto(); err != nil {
				return &exitError{code: 125, err: err}
			}
			return runSession(cmd, launch, s.interactive)
		},
	}
	s.add(cmd)
	cmd.Flags().StringVar(&image, "image", "", "the debug container's image (present on the agent)")
	res.add(cmd.Flags(), false)
	return cmd
}

// runSession runs a session to its end and exits with its status.
func runSession(cmd *cobra.Command, launch *agentv1.SessionLaunch, interactive bool) error {
	tty := launch.Tty
	inFd, outFd := int(os.Stdin.Fd()), int(os.Stdout.Fd())
	if tty {
		if w, h, err := term.GetSize(outFd); err == nil {
			launch.Size = &agentv1.WindowSize{Width: uint32(w), Height: uint32(h)}
		}
	}
	c, closeConn, err := dial(cmd)
	if err != nil {
		return err
	}
	defer closeConn()
	stream, err := c.LaunchNestedContainerSession(ctxOf(cmd))
	if err != nil {
		return err
	}
	// gRPC allows one Send at a time: stdin and resizes share it.
	var sendMu sync.Mutex
	send := func(m *agentv1.SessionRequest) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(m)
	}
	// Output to a file or a pipe needs no interleaving with stderr: ask
	// for it raw, on a connection of its own (the agent's unix socket
	// only; without an answer it comes in frames).
	bulk := bulkReceiver(cmd, outFd)
	launch.BulkOutput = bulk != nil
	defer bulk.Close()
	if err := send(&agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Launch{Launch: launch}}); err != nil {
		return streamErr(stream, err)
	}
	if tty && term.IsTerminal(inFd) {
		restore, err := rawTerminal(inFd, outFd, func(w, h uint32) {
			send(&agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Resize{Resize: &agentv1.WindowSize{Width: w, Height: h}}})
		})
		if err != nil {
			return err
		}
		defer restore()
	}
	if interactive {
		go func() {
			buf := make([]byte, 32*1024)
			for {
				n, err := os.Stdin.Read(buf)
				if n > 0 {
					if send(&agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Stdin{Stdin: append([]byte(nil), buf[:n]...)}}) != nil {
						return
					}
				}
				if err != nil {
					send(&agentv1.SessionRequest{Frame: &agentv1.SessionRequest_CloseStdin{CloseStdin: &agentv1.StdinClose{}}})
					return
				}
			}
		}()
	} else {
		send(&agentv1.SessionRequest{Frame: &agentv1.SessionRequest_CloseStdin{CloseStdin: &agentv1.StdinClose{}}})
	}
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return &exitError{code: 125, err: errors.New("the session ended without an exit status")}
		}
		if err != nil {
			return &exitError{code: commandExit(err), err: err}
		}
		switch f := m.Frame.(type) {
		case *agentv1.SessionResponse_Stdout:
			os.Stdout.Write(f.Stdout)
		case *agentv1.SessionResponse_Stderr:
			os.Stderr.Write(f.Stderr)
		case *agentv1.SessionResponse_BulkOutput:
			if bulk == nil {
				return &exitError{code: 125, err: errors.New("the agent sent bulk output that was not asked for")}
			}
			if err := bulk.Start(ctxOf(cmd), f.BulkOutput.Token); err != nil {
				return &exitError{code: 125, err: err}
			}
		case *agentv1.SessionResponse_Exit:
			if _, err := bulk.Wait(); err != nil {
				return &exitError{code: 125, err: err}
			}
			if f.Exit.ExitCode != 0 {
				return &exitError{code: int(f.Exit.ExitCode)}
			}
			return nil
		}
	}
}

// bulkReceiver is the receiver of a session's bulk output, when stdout is
// not a terminal and the agent is on a unix socket; nil otherwise.
func bulkReceiver(cmd *cobra.Command, outFd int) *bulkout.Receiver {
	path, ok := strings.CutPrefix(agentAddress(cmd), "unix://")
	if !ok || term.IsTerminal(outFd) {
		return nil
	}
	return bulkout.NewReceiver(path, os.Stdout)
}

// streamErr is why a stream refused a Send: io.EOF from Send means the
// server ended the stream, and its status comes from Recv.
func streamErr(stream interface{ RecvMsg(any) error }, err error) error {
	if errors.Is(err, io.EOF) {
		if rerr := stream.RecvMsg(new(emptypb.Empty)); rerr != nil && !errors.Is(rerr, io.EOF) {
			return rerr
		}
	}
	return err
}

// rawTerminal puts the local terminal in raw mode and calls resize with
// each new size (SIGWINCH) until the returned restore is called.
func rawTerminal(inFd, outFd int, resize func(w, h uint32)) (restore func(), err error) {
	old, err := term.MakeRaw(inFd)
	if err != nil {
		return nil, fmt.Errorf("raw terminal: %w", err)
	}
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-winch:
				if w, h, err := term.GetSize(outFd); err == nil && w > 0 && h > 0 {
					resize(uint32(w), uint32(h))
				}
			}
		}
	}()
	return func() {
		signal.Stop(winch)
		close(stop)
		term.Restore(inFd, old)
	}, nil
}
