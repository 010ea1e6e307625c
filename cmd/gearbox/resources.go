package main

import (
	"fmt"
	"io"
	"math"
	"os/signal"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/proto"

	"github.com/gearboxd/gearbox/internal/units"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// resourceFlags are --cpus, --memory, --memory-reservation, --pids and
// --blkio-weight, shared by run and update.
type resourceFlags struct {
	cpus, memory, memorySoft string
	pids                     int64
	blkioWeight              uint16
}

func (r *resourceFlags) add(f *pflag.FlagSet, withBlkio bool) {
	f.StringVar(&r.cpus, "cpus", "", "number of CPUs (0.5, 2)")
	f.StringVarP(&r.memory, "memory", "m", "", "memory limit (64m, 1g); no swap")
	f.StringVar(&r.memorySoft, "memory-reservation", "", "memory soft limit")
	f.Int64Var(&r.pids, "pids", 0, "process and thread limit")
	if withBlkio {
		f.Uint16Var(&r.blkioWeight, "blkio-weight", 0, "io weight, 10-1000")
	}
}

// proto reads the flags; nil when none was given.
func (r *resourceFlags) proto() (*agentv1.Resources, error) {
	out := &agentv1.Resources{Pids: r.pids, BlkioWeight: uint32(r.blkioWeight)}
	if r.cpus != "" {
		v, err := strconv.ParseFloat(r.cpus, 64)
		if err != nil || v <= 0 || math.IsInf(v, 0) || math.IsNaN(v) {
			return nil, fmt.Errorf("--cpus %q: give a positive number, such as 0.5 or 2", r.cpus)
		}
		out.Cpus = v
	}
	for _, m := range []struct {
		flag, val string
		dst       *int64
	}{{"--memory", r.memory, &out.Memory}, {"--memory-reservation", r.memorySoft, &out.MemorySoft}} {
		if m.val == "" {
			continue
		}
		n, err := units.ParseSize(m.val)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.flag, err)
		}
		*m.dst = n
	}
	if r.pids < 0 {
		return nil, fmt.Errorf("--pids %d: give a positive number", r.pids)
	}
	if proto.Equal(out, &agentv1.Resources{}) {
		return nil, nil
	}
	return out, nil
}

func newUpdateCmd() *cobra.Command {
	var rf resourceFlags
	cmd := &cobra.Command{
		Use:     "update [--cpus N] [--memory SIZE] [--memory-reservation SIZE] [--pids N] ID…",
		Short:   "Change running containers' resources in place",
		Example: "  gearbox update --memory 256m --cpus 1.5 web",
		Args:    needArgs(1, "a container ID"),
		RunE: func(cmd *cobra.Command, ids []string) error {
			res, err := rf.proto()
			if err != nil {
				return &exitError{code: 125, err: err}
			}
			if res == nil {
				return &exitError{code: 125, err: fmt.Errorf("update needs --cpus, --memory, --memory-reservation or --pids")}
			}
			return eachArg(cmd, ids, func(c agentv1.AgentClient, id string) (string, error) {
				_, err := c.UpdateContainer(ctxOf(cmd), &agentv1.UpdateContainerRequest{ContainerId: id, Resources: res})
				return id, err
			})
		},
	}
	rf.add(cmd.Flags(), false)
	return cmd
}

func newStatsCmd() *cobra.Command {
	var noStream bool
	var output string
	cmd := &cobra.Command{
		Use:   "stats [--no-stream] [-o json] [ID…]",
		Short: "Show running containers' resource usage (all running ones by default)",
		RunE: func(cmd *cobra.Command, ids []string) error {
			c, closeConn, err := dialFor(cmd, output, dial)
			if err != nil {
				return err
			}
			defer closeConn()
			ctx, stop := signal.NotifyContext(ctxOf(cmd), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			get := func() (*agentv1.GetContainerUsageResponse, error) {
				return c.GetContainerUsage(ctx, &agentv1.GetContainerUsageRequest{ContainerIds: ids})
			}
			prev, err := get()
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), protoList(prev.Usages)...)
			}
			// CPU % needs two samples.
			for first := true; ; first = false {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(time.Second):
				}
				cur, err := get()
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
				if !noStream && !first {
					fmt.Fprint(cmd.OutOrStdout(), "\x1b[2J\x1b[H") // redraw, as docker stats
				}
				printStats(cmd.OutOrStdout(), prev, cur)
				if noStream {
					return nil
				}
				prev = cur
			}
		},
	}
	cmd.Flags().BoolVar(&noStream, "no-stream", false, "print one sample and exit")
	addOutputFlag(cmd, &output)
	return cmd
}

func printStats(w io.Writer, prev, cur *agentv1.GetContainerUsageResponse) {
	before := map[string]*agentv1.ContainerUsage{}
	for _, u := range prev.Usages {
		before[u.ContainerId] = u
	}
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "CONTAINER ID\tCPU %\tMEM USAGE / LIMIT\tMEM PEAK\tPIDS\tTHROTTLED\tIO R / W")
	for _, u := range cur.Usages {
		cpu := "-"
		if p, ok := before[u.ContainerId]; ok {
			dt := u.Timestamp.AsTime().Sub(p.Timestamp.AsTime()).Seconds()
			used := (u.CpuUserSeconds + u.CpuSystemSeconds) - (p.CpuUserSeconds + p.CpuSystemSeconds)
			if dt > 0 {
				cpu = fmt.Sprintf("%.1f%%", 100*used/dt)
			}
		}
		limit := "-"
		if u.MemoryLimit > 0 && u.MemoryLimit < 1<<60 {
			limit = units.Human(int64(u.MemoryLimit))
		}
		pidsLimit := "-"
		if u.PidsLimit > 0 {
			pidsLimit = strconv.FormatUint(u.PidsLimit, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s / %s\t%s\t%d / %s\t%.2fs\t%s / %s\n", u.ContainerId, cpu, units.Human(int64(u.MemoryUsage)), limit,
			units.Human(int64(u.MemoryPeak)), u.Pids, pidsLimit, u.CpuThrottledSeconds, units.Human(int64(u.IoReadBytes)), units.Human(int64(u.IoWriteBytes)))
	}
	tw.Flush()
}

func newInfoCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "info", Short: "Show the agent: its ID, resources (total, allocated, free), attributes, runtimes", Args: cobra.NoArgs}
	return listCmd(cmd, dial, agentv1.AgentClient.GetState, &agentv1.GetStateRequest{},
		one, printInfo)
}

func printInfo(w io.Writer, st *agentv1.GetStateResponse) error {
	fmt.Fprintf(w, "Agent ID:     %s\nHostname:     %s\nContainers:   %d running, %d in all\n", st.AgentId, st.Hostname, st.ContainersRunning, st.ContainersTotal)
	switch {
	case st.Master == "":
		fmt.Fprintln(w, "Master:       none (the agent runs alone)")
	case st.MasterRefused != "":
		fmt.Fprintf(w, "Master:       %s, REFUSED: %s\n", st.Master, st.MasterRefused)
	default:
		conn := "connected"
		if !st.MasterConnected {
			conn = "NOT connected (retrying; see the agent's log)"
		}
		fmt.Fprintf(w, "Master:       %s, %s, %d status updates unacknowledged\n", st.Master, conn, st.PendingStatusUpdates)
	}
	for _, row := range []struct {
		name string
		r    *agentv1.ResourceSet
	}{{"Total", st.Total}, {"Allocated", st.Allocated}, {"Free", st.Free}} {
		fmt.Fprintf(w, "%-13s cpus %g, mem %s, disk %s\n", row.name+":", row.r.GetCpus(), units.Human(row.r.GetMemory()), units.Human(row.r.GetDisk()))
	}
	for k, v := range st.Attributes {
		fmt.Fprintf(w, "Attribute:    %s:%s\n", k, v)
	}
	for k, v := range st.ResourceLabels {
		fmt.Fprintf(w, "Label:        %s=%s\n", k, v)
	}
	for _, rt := range st.Runtimes {
		state := "available"
		if !rt.Available {
			state = "UNAVAILABLE: " + rt.UnavailableReason
		}
		fmt.Fprintf(w, "Runtime:      %s (%s %s) %s\n", rt.Name, rt.Type, rt.Binary, state)
	}
	return nil
}

// printUsage is inspect's usage section.
func printUsage(w io.Writer, u *agentv1.ContainerUsage) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "CPU time:\t%.2fs user, %.2fs system, throttled %d periods (%.2fs)\n", u.CpuUserSeconds, u.CpuSystemSeconds, u.CpuThrottledPeriods, u.CpuThrottledSeconds)
	fmt.Fprintf(tw, "Memory used:\t%s (rss %s, cache %s, peak %s)\n", units.Human(int64(u.MemoryUsage)), units.Human(int64(u.MemoryRss)), units.Human(int64(u.MemoryCache)), units.Human(int64(u.MemoryPeak)))
	fmt.Fprintf(tw, "Pids:\t%d\n", u.Pids)
	fmt.Fprintf(tw, "IO:\t%s read, %s written\n", units.Human(int64(u.IoReadBytes)), units.Human(int64(u.IoWriteBytes)))
	if u.DiskBytes > 0 {
		fmt.Fprintf(tw, "Sandbox disk:\t%s\n", units.Human(int64(u.DiskBytes)))
	}
	tw.Flush()
}
