package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gearboxd/gearbox/agent"
	"github.com/gearboxd/gearbox/internal/containerdproc"
	"github.com/gearboxd/gearbox/internal/demoimage"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

func newDevCmd() *cobra.Command {
	var (
		stateDir string
		busybox  string
		debug    bool
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a single-node gearbox to try it: containerd (private if none runs), an agent, a demo image and task",
		Long: `gearbox dev starts everything needed to try gearbox on this machine, as root:

  - containerd: the host's if one answers at /run/containerd/containerd.sock,
    otherwise a private one (CRI off) under --state-dir;
  - an agent serving ` + defaultAgent + ` (containerd namespace gearbox-dev);
  - the demo image ` + demoimage.Name + `, built from Debian's busybox-static;
  - a demo task, "demo", printing a line every few seconds.

Ctrl-C stops and removes everything it started and leaves nothing mounted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			quietContainerdClient(debug)
			return runDev(ctxOf(cmd), stateDir, busybox, newLogger(debug))
		},
	}
	cmd.Flags().StringVar(&stateDir, "state-dir", "/var/lib/gearbox-dev", "where dev keeps containerd's and the agent's state")
	cmd.Flags().StringVar(&busybox, "busybox", demoimage.DefaultBusybox, "static busybox binary for the demo image")
	cmd.Flags().BoolVar(&debug, "debug", false, "log at debug level")
	return cmd
}

func runDev(ctx context.Context, stateDir, busybox string, log *slog.Logger) error {
	if os.Geteuid() != 0 {
		return errors.New("gearbox dev runs containers and needs root: sudo make dev")
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// Build the demo image first: a missing busybox is found before
	// anything is started.
	img, err := demoimage.Build(busybox)
	if err != nil {
		return err
	}
	var archive bytes.Buffer
	if err := demoimage.WriteDockerArchive(&archive, img, demoimage.Name); err != nil {
		return fmt.Errorf("building the demo image: %w", err)
	}

	cfg := agent.DefaultConfig()
	cfg.Namespace = "gearbox-dev"
	cfg.WorkDir = filepath.Join(stateDir, "agent")
	var ctrd *containerdproc.Proc
	if containerdproc.Answers(ctx, cfg.ContainerdAddress) {
		log.Info("using the host's containerd", "address", cfg.ContainerdAddress)
	} else {
		log.Info("no containerd answers; starting a private one", "dir", filepath.Join(stateDir, "containerd"))
		if ctrd, err = containerdproc.Start(ctx, filepath.Join(stateDir, "containerd")); err != nil {
			return err
		}
		defer func() {
			if err := ctrd.Stop(); err != nil {
				log.Warn("stopping the private containerd", "err", err)
			}
		}()
		cfg.ContainerdAddress = ctrd.Address
	}

	a, err := agent.New(cfg, log)
	if err != nil {
		return err
	}
	agentCtx, stopAgent := context.WithCancel(context.WithoutCancel(ctx))
	agentDone := make(chan error, 1)
	go func() { agentDone <- a.Run(agentCtx) }()
	defer func() {
		stopAgent()
		if err := <-agentDone; err != nil {
			log.Warn("agent", "err", err)
		}
	}()
	select {
	case <-a.Ready():
	case err := <-agentDone:
		agentDone <- err
		return fmt.Errorf("agent: %w", err)
	}

	conn, err := grpc.NewClient(cfg.Listen, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	c := agentv1.NewAgentClient(conn)
	// Everything dev started goes when it stops, whatever happens below.
	defer cleanupDev(c, log)

	if err := importDemo(ctx, c, archive.Bytes()); err != nil {
		return fmt.Errorf("importing the demo image: %w", err)
	}
	c.RemoveContainer(ctx, &agentv1.RemoveContainerRequest{ContainerId: "demo", Force: true})
	if _, err := c.LaunchContainer(ctx, &agentv1.LaunchContainerRequest{
		ContainerId: "demo", Image: demoimage.Name,
		Cmd: &agentv1.StringList{Values: []string{"sh", "-c", `i=0; while true; do i=$((i+1)); echo "hello from the gearbox demo task ($i)"; sleep 5; done`}},
	}); err != nil {
		return fmt.Errorf("launching the demo task: %w", err)
	}

	fmt.Printf(`
gearbox dev is running.

  agent        %s
  containerd   %s
  demo image   %s
  demo task    demo (running)

In another terminal:

  bin/gearbox run %s echo hello
  bin/gearbox ps
  bin/gearbox logs -f demo
  bin/gearbox run --rm %s sh -c 'cat /etc/gearbox-demo; ls $GEARBOX_SANDBOX'

Ctrl-C stops everything dev started.
`, cfg.Listen, cfg.ContainerdAddress, demoimage.Name, demoimage.Name, demoimage.Name)

	select {
	case <-ctx.Done():
		fmt.Println("\nstopping: removing containers, stopping the agent and containerd…")
		return nil
	case err := <-agentDone:
		agentDone <- err
		return fmt.Errorf("agent stopped: %v", err)
	}
}

func importDemo(ctx context.Context, c agentv1.AgentClient, data []byte) error {
	st, err := c.ImportImage(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&agentv1.ImportImageRequest{Part: &agentv1.ImportImageRequest_Options{Options: &agentv1.ImportOptions{}}}); err != nil {
		return err
	}
	for len(data) > 0 {
		n := min(len(data), 1<<20)
		if err := st.Send(&agentv1.ImportImageRequest{Part: &agentv1.ImportImageRequest_Data{Data: data[:n]}}); err != nil {
			break
		}
		data = data[n:]
	}
	_, err = st.CloseAndRecv()
	return err
}

// cleanupDev removes every container of the dev namespace.
func cleanupDev(c agentv1.AgentClient, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := c.GetContainers(ctx, &agentv1.GetContainersRequest{All: true})
	if err != nil {
		log.Warn("listing containers to remove", "err", err)
		return
	}
	for _, ct := range resp.Containers {
		if _, err := c.RemoveContainer(ctx, &agentv1.RemoveContainerRequest{ContainerId: ct.Id, Force: true}); err != nil {
			log.Warn("removing container", "container_id", ct.Id, "err", err)
		}
	}
}
