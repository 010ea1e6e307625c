// sleep-framework is a complete small gearbox framework: it subscribes
// through the scheduler API, launches --tasks tasks of --image running
// --cmd on the offers it gets, acknowledges every status update, and when
// every task has ended tears itself down and exits (0 if all finished).
//
// With --id-file it keeps its framework ID there: started again within
// --failover-timeout it fails over to its tasks (it asks the master for
// their states and launches only those the master does not know).
//
//	sleep-framework --master unix:///run/gearbox-master.sock --tasks 3 --cmd "sleep 30"
//
// A replicated master (HA on etcd) is given as its list of masters,
// --master tcp://m1:5050,tcp://m2:5050,tcp://m3:5050: the framework
// subscribes with the leader and fails over with it.
//
// Every status update is printed as "task ID STATE [REASON] [message]".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/gearboxd/gearbox/internal/leaderconn"
	"github.com/gearboxd/gearbox/internal/tlsutil"
	"github.com/gearboxd/gearbox/master/schedclient"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	schedulerv1 "github.com/gearboxd/gearbox/proto/gearbox/scheduler/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

type options struct {
	master, role, name, image, cmd, idFile, prefix string
	tlsCA, tlsCert, tlsKey                         string
	tasks                                          int
	cpus                                           float64
	mem                                            int64
	failover                                       time.Duration
	partitionAware, group, keep                    bool
}

func main() {
	var o options
	flag.StringVar(&o.master, "master", "unix:///run/gearbox-master.sock", "the master: unix:///path or tcp://host:port (mutual TLS); a replicated master's, comma-separated")
	flag.StringVar(&o.role, "role", "*", "the role to register in")
	flag.StringVar(&o.name, "name", "sleep-framework", "the framework's name")
	flag.IntVar(&o.tasks, "tasks", 1, "how many tasks to run")
	flag.Float64Var(&o.cpus, "cpus", 0.1, "cpus of each task")
	flag.Int64Var(&o.mem, "mem", 32<<20, "memory of each task, bytes")
	flag.StringVar(&o.image, "image", "busybox", "the tasks' image (present on the agents)")
	flag.StringVar(&o.cmd, "cmd", "sleep 10", "the tasks' command (split on spaces)")
	flag.StringVar(&o.idFile, "id-file", "", "keeps the framework ID: a restarted framework fails over to its tasks")
	flag.StringVar(&o.prefix, "task-prefix", "sleep", "task IDs are PREFIX-N")
	flag.DurationVar(&o.failover, "failover-timeout", time.Minute, "how long the master keeps the tasks of a disconnected framework")
	flag.BoolVar(&o.partitionAware, "partition-aware", true, "see TASK_UNREACHABLE and TASK_GONE rather than TASK_LOST")
	flag.BoolVar(&o.group, "group", false, "launch all tasks in one LAUNCH_GROUP (one agent, all or none)")
	flag.BoolVar(&o.keep, "keep", false, "do not tear down when every task ended; wait for a signal")
	flag.StringVar(&o.tlsCA, "tls-ca", "", "CA of the master's certificate (tcp://)")
	flag.StringVar(&o.tlsCert, "tls-cert", "", "this framework's certificate: its name is its principal (tcp://)")
	flag.StringVar(&o.tlsKey, "tls-key", "", "its key")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, log); err != nil {
		fmt.Fprintln(os.Stderr, "sleep-framework:", err)
		os.Exit(1)
	}
}

// dialOptions are the masters' and how to reach them: mutual TLS for
// tcp:// masters, none on a unix socket.
func dialOptions(o options) ([]string, []grpc.DialOption, error) {
	masters, err := leaderconn.ParseList(o.master)
	if err != nil {
		return nil, nil, fmt.Errorf("--master: %w", err)
	}
	tcp := 0
	for _, m := range masters {
		if strings.HasPrefix(m, "tcp://") {
			tcp++
		}
	}
	if tcp == 0 {
		return masters, []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, nil
	}
	if tcp < len(masters) {
		return nil, nil, fmt.Errorf("--master %s: give every master as tcp://host:port (mutual TLS), or one unix:///path", o.master)
	}
	cfg, err := tlsutil.Client(o.tlsCA, o.tlsCert, o.tlsKey)
	if err != nil {
		return nil, nil, fmt.Errorf("--tls-ca, --tls-cert, --tls-key: %w", err)
	}
	return masters, []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}, nil
}

func run(ctx context.Context, o options, log *slog.Logger) error {
	masters, dial, err := dialOptions(o)
	if err != nil {
		return err
	}
	info := &schedulerv1.FrameworkInfo{Name: o.name, Roles: []string{o.role}, FailoverTimeout: durationpb.New(o.failover),
		Capabilities: []schedulerv1.FrameworkInfo_Capability{schedulerv1.FrameworkInfo_TASK_KILLING_STATE}}
	if o.partitionAware {
		info.Capabilities = append(info.Capabilities, schedulerv1.FrameworkInfo_PARTITION_AWARE)
	}
	if o.idFile != "" {
		if b, err := os.ReadFile(o.idFile); err == nil {
			info.Id = strings.TrimSpace(string(b))
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	s := newSleeper(o, info.Id != "")
	c := schedclient.New(schedclient.Config{Masters: masters, DialOptions: dial, Info: info, Log: log, OnSubscribed: func(id string) error {
		fmt.Printf("subscribed %s\n", id)
		if o.idFile == "" {
			return nil
		}
		return os.WriteFile(o.idFile, []byte(id+"\n"), 0o600)
	}})
	err = c.Run(ctx, s.handle)
	if errors.Is(err, errDone) {
		return s.result()
	}
	return err
}

var errDone = errors.New("every task ended")

// sleeper is the framework's state: each task's last known state.
type sleeper struct {
	o options
	// states: task ID → its state; absent: not launched (or, failing
	// over, not known yet).
	states map[string]typesv1.TaskState
	// reconciling: failing over, waiting for the master's answer on
	// these tasks before launching any.
	reconciling map[string]bool
}

func newSleeper(o options, failover bool) *sleeper {
	s := &sleeper{o: o, states: map[string]typesv1.TaskState{}, reconciling: map[string]bool{}}
	if failover {
		for i := range o.tasks {
			s.reconciling[s.id(i)] = true
		}
	}
	return s
}

func (s *sleeper) id(i int) string { return fmt.Sprintf("%s-%d", s.o.prefix, i) }

func (s *sleeper) handle(ctx context.Context, c *schedclient.Client, ev *schedulerv1.Event) error {
	switch x := ev.GetEvent().(type) {
	case *schedulerv1.Event_Subscribed_:
		if len(s.reconciling) > 0 {
			ids := make([]string, 0, len(s.reconciling))
			for id := range s.reconciling {
				ids = append(ids, id)
			}
			return c.Reconcile(ids...)
		}
	case *schedulerv1.Event_Offers_:
		return s.offers(c, x.Offers.GetOffers())
	case *schedulerv1.Event_Update_:
		return s.update(c, x.Update.GetStatus())
	case *schedulerv1.Event_Error_:
		return fmt.Errorf("the master says: %s", x.Error.GetMessage())
	}
	return nil
}

// offers launches the tasks not launched yet on the offers that fit them,
// and declines the rest.
func (s *sleeper) offers(c *schedclient.Client, offers []*schedulerv1.Offer) error {
	want := &masterv1.Resources{Cpus: s.o.cpus, MemoryBytes: s.o.mem}
	var todo []string
	for i := range s.o.tasks {
		if _, known := s.states[s.id(i)]; !known && len(s.reconciling) == 0 {
			todo = append(todo, s.id(i))
		}
	}
	for _, of := range offers {
		have := schedclient.Resources(of)
		var tasks []*schedulerv1.TaskInfo
		for len(todo) > 0 && schedclient.Take(have, want) {
			tasks = append(tasks, schedclient.Task(todo[0], s.o.image, strings.Fields(s.o.cmd), want))
			todo = todo[1:]
		}
		if len(tasks) == 0 || (s.o.group && len(tasks) < s.o.tasks) {
			todo = append(todo, taskIDs(tasks)...)
			if err := c.Decline(schedclient.OfferIDs(of), 5); err != nil {
				return nil // not connected: offers are gone anyway
			}
			continue
		}
		op := schedclient.Launch(tasks...)
		if s.o.group {
			op = schedclient.LaunchGroup(tasks...)
		}
		for _, t := range tasks {
			s.states[t.GetTaskId()] = typesv1.TaskState_TASK_STAGING
		}
		if err := c.Accept(schedclient.OfferIDs(of), 5, op); err != nil {
			return nil
		}
	}
	return nil
}

func taskIDs(tasks []*schedulerv1.TaskInfo) []string {
	var out []string
	for _, t := range tasks {
		out = append(out, t.GetTaskId())
	}
	return out
}

func (s *sleeper) update(c *schedclient.Client, st *schedulerv1.TaskStatus) error {
	fmt.Printf("task %s %s %s %s\n", st.GetTaskId(), st.GetState(), st.GetReason(), st.GetMessage())
	id := st.GetTaskId()
	if s.reconciling[id] {
		delete(s.reconciling, id)
		if st.GetState() != typesv1.TaskState_TASK_UNKNOWN && st.GetState() != typesv1.TaskState_TASK_LOST {
			s.states[id] = st.GetState()
		}
	} else if _, mine := s.states[id]; mine {
		s.states[id] = st.GetState()
	}
	if err := c.Acknowledge(st); err != nil {
		return nil // resent after the next subscription
	}
	if s.o.keep || len(s.reconciling) > 0 || len(s.states) < s.o.tasks {
		return nil
	}
	for _, state := range s.states {
		if !state.Terminal() {
			return nil
		}
	}
	c.Teardown()
	return errDone
}

func (s *sleeper) result() error {
	for id, state := range s.states {
		if state != typesv1.TaskState_TASK_FINISHED {
			return fmt.Errorf("task %s ended %s", id, state)
		}
	}
	fmt.Println("done")
	return nil
}
