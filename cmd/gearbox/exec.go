package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

func newExecCmd() *cobra.Command {
	var (
		interactive, tty bool
		env              []string
		user, workdir    string
	)
	cmd := &cobra.Command{
		Use:   "exec [-i] [-t] [-e K=V] [-u UID[:GID]] [-w DIR] ID CMD…",
		Short: "Run a command in a running container",
		Long: `Run a command in a running container, as docker exec. It exits with the
command's status. With -t the local terminal is put in raw mode (restored on
every exit) and size changes reach the command.`,
		Example: "  gearbox exec -it web sh\n  echo data | gearbox exec -i web cat",
		Args:    needArgs(2, "a container ID and a command"),
		RunE: func(cmd *cobra.Command, args []string) error {
			launch := &agentv1.SessionLaunch{ContainerId: args[0], Command: args[1:], Env: env, Tty: tty}
			if cmd.Flags().Changed("user") {
				launch.User = &user
			}
			if cmd.Flags().Changed("workdir") {
				launch.WorkingDir = &workdir
			}
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
			if err := send(&agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Launch{Launch: launch}}); err != nil {
				return err
			}
			if tty && term.IsTerminal(inFd) {
				old, err := term.MakeRaw(inFd)
				if err != nil {
					return fmt.Errorf("raw terminal: %w", err)
				}
				defer term.Restore(inFd, old)
				// Resizes, for as long as the session lasts.
				winch := make(chan os.Signal, 1)
				signal.Notify(winch, syscall.SIGWINCH)
				defer signal.Stop(winch)
				go func() {
					for range winch {
						if w, h, err := term.GetSize(outFd); err == nil && w > 0 && h > 0 {
							send(&agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Resize{Resize: &agentv1.WindowSize{Width: uint32(w), Height: uint32(h)}}})
						}
					}
				}()
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
				case *agentv1.SessionResponse_Exit:
					if f.Exit.ExitCode != 0 {
						return &exitError{code: int(f.Exit.ExitCode)}
					}
					return nil
				}
			}
		},
	}
	f := cmd.Flags()
	f.SetInterspersed(false)
	f.BoolVarP(&interactive, "interactive", "i", false, "send stdin to the command")
	f.BoolVarP(&tty, "tty", "t", false, "give the command a terminal")
	f.StringArrayVarP(&env, "env", "e", nil, "set an environment variable (KEY=VALUE)")
	f.StringVarP(&user, "user", "u", "", "uid or uid:gid")
	f.StringVarP(&workdir, "workdir", "w", "", "working directory")
	return cmd
}
