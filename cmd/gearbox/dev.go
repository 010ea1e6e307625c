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
	"github.com/gearboxd/gearbox/master"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

func newDevCmd() *cobra.Command {
	var (
		stateDir string
		busybox  string
		debug    bool
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a single-node gearbox to try it: containerd (private if none runs), a master, an agent, a demo image and task",
		Long: `gearbox dev starts everything needed to try gearbox on this machine, as root:

  - containerd: the host's if one answers at /run/containerd/containerd.sock,
    otherwise a private one (CRI off) under --state-dir;
  - a master on ` + defaultMaster + ` (root only; its TCP port ` + "127.0.0.1:5050" + `
    refuses plaintext clients, containers included) with a fresh registry
    under --state-dir;
  - an agent serving ` + defaultAgent + ` (containerd namespace gearbox-dev),
    registered with the master;
  - the demo image ` + demoimage.Name + `, built from Debian's busybox-static;
  - a demo task, "demo", launched through the master, printing a line every
    few seconds.

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
	stopContainerd, err := devContainerd(ctx, &cfg, stateDir, log)
	if err != nil {
		return err
	}
	defer stopContainerd()

	// The agent registers with the master started below, once leftovers
	// of an earlier run are gone (the registry is fresh on every run: dev
	// is for trying things, and its containers go when it stops).
	mcfg := master.DefaultConfig()
	mcfg.WorkDir = filepath.Join(stateDir, "master")
	os.RemoveAll(mcfg.WorkDir)
	os.Remove(filepath.Join(cfg.WorkDir, "meta", "master.json"))
	// The agent and the CLI reach the master on its unix socket: a
	// container shares the host's network, not its files.
	cfg.Master = "unix://" + mcfg.Socket

	a, err := agent.New(cfg, log)
	if err != nil {
		return err
	}
	agentDone, stopAgent, err := background(ctx, "agent", a.Run, a.Ready(), log)
	if err != nil {
		return err
	}
	defer stopAgent()

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
	cleanupDev(c, log) // what an earlier run that did not stop cleanly left
	m, err := master.New(mcfg, log)
	if err != nil {
		return err
	}
	_, stopMaster, err := background(ctx, "master", m.Run, m.Ready(), log)
	if err != nil {
		return err
	}
	defer func() {
		cleanupDev(c, log) // while the master hears the tasks end
		stopMaster()
	}()
	if err := launchDemo(ctx, m.SocketAddr()); err != nil {
		return fmt.Errorf("launching the demo task through the master: %w", err)
	}

	printDevBanner(m, cfg)

	select {
	case <-ctx.Done():
		fmt.Println("\nstopping: removing containers, stopping the agent and containerd…")
		return nil
	case err := <-agentDone:
		return fmt.Errorf("agent stopped: %v", err)
	}
}

// devContainerd points cfg at the host's containerd when one answers, and
// otherwise starts a private one under stateDir; stop ends what it started.
func devContainerd(ctx context.Context, cfg *agent.Config, stateDir string, log *slog.Logger) (stop func(), err error) {
	if containerdproc.Answers(ctx, cfg.ContainerdAddress) {
		log.Info("using the host's containerd", "address", cfg.ContainerdAddress)
		return func() {}, nil
	}
	log.Info("no containerd answers; starting a private one", "dir", filepath.Join(stateDir, "containerd"))
	ctrd, err := containerdproc.Start(ctx, filepath.Join(stateDir, "containerd"))
	if err != nil {
		return nil, err
	}
	cfg.ContainerdAddress = ctrd.Address
	return func() {
		if err := ctrd.Stop(); err != nil {
			log.Warn("stopping the private containerd", "err", err)
		}
	}, nil
}

// background runs run in a goroutine that outlives ctx's signals (dev
// stops its parts in order) and waits until ready is closed. The goroutine
// is owned by stop, which cancels run and waits for it; done yields run's
// error if it ends first (then stop has nothing left to wait for).
func background(ctx context.Context, name string, run func(context.Context) error, ready <-chan struct{}, log *slog.Logger) (done <-chan error, stop func(), err error) {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ended := make(chan error, 1)
	var result error
	finished := make(chan struct{})
	go func() {
		result = run(runCtx)
		close(finished)
		ended <- result
	}()
	stop = func() {
		cancel()
		<-finished
		if result != nil {
			log.Warn(name, "err", result)
		}
	}
	select {
	case <-ready:
		return ended, stop, nil
	case <-finished:
		cancel()
		return nil, nil, fmt.Errorf("%s: %w", name, result)
	}
}

// printDevBanner tells a person what dev started and what to try.
func printDevBanner(m *master.Master, cfg agent.Config) {
	fmt.Printf(`
gearbox dev is running.

  master       %s
  agent        %s (registered with the master)
  containerd   %s
  demo image   %s
  demo task    demo (launched through the master, running)

In another terminal:

  bin/gearbox agents
  bin/gearbox tasks
  bin/gearbox events
  bin/gearbox task launch --cpus 0.1 --memory 32m %s sh -c 'echo hi; sleep 30'
  bin/gearbox logs -f demo
  bin/gearbox run --rm %s sh -c 'cat /etc/gearbox-demo; ls $GEARBOX_SANDBOX'

Ctrl-C stops everything dev started.
`, m.SocketAddr()+" (TCP "+m.Addr()+": TLS or --insecure only)", cfg.Listen, cfg.ContainerdAddress, demoimage.Name, demoimage.Name, demoimage.Name)

}

// launchDemo launches the demo task through the master and waits until
// it runs.
func launchDemo(ctx context.Context, addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	c := masterv1.NewOperatorClient(conn)
	// The agent registers right after it serves; wait for it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		h, err := c.GetHealth(ctx, &masterv1.GetHealthRequest{})
		if err == nil && h.AgentsActive > 0 {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("the agent did not register with the master within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := c.LaunchTask(ctx, &masterv1.LaunchTaskRequest{
		TaskId: "demo", Image: demoimage.Name, Resources: &masterv1.Resources{Cpus: 0.1, MemoryBytes: 32 << 20},
		Command: []string{"sh", "-c", `i=0; while true; do i=$((i+1)); echo "hello from the gearbox demo task ($i)"; sleep 5; done`},
	}); err != nil {
		return err
	}
	for {
		r, err := c.ReconcileTasks(ctx, &masterv1.ReconcileTasksRequest{TaskIds: []string{"demo"}})
		if err != nil {
			return err
		}
		switch t := r.Tasks[0]; {
		case t.State == typesv1.TaskState_TASK_RUNNING:
			return nil
		case t.State != typesv1.TaskState_TASK_STAGING && t.State != typesv1.TaskState_TASK_STARTING:
			return fmt.Errorf("the demo task is %s: %s", t.State, t.Message)
		}
		if time.Now().After(deadline.Add(30 * time.Second)) {
			return errors.New("the demo task did not start within a minute")
		}
		time.Sleep(50 * time.Millisecond)
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
